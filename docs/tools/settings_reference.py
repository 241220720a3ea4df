"""Writes the settings tables of docs/reference/settings.md from the services' settings dataclasses.

Run it after changing a setting:   .venv/bin/python docs/tools/settings_reference.py
`tests/test_docs.py` regenerates the tables in memory and fails when the committed page differs.

Each service's table sits between `<!-- settings: SERVICE -->` and `<!-- end settings -->` in the page; the prose
around the tables is written by hand. A row per field of `WebhookSettings` / `CronSettings`
(burstflow.settings): its flag (and the flag that turns a boolean off), its variable and the older names still
read, its default, and the reason for that default as the code states it.
"""
from __future__ import annotations

import dataclasses
import re
import sys
import typing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from burstflow.cron.settings import CronSettings  # noqa: E402
from burstflow.settings import flag_name  # noqa: E402
from burstflow.webhook.settings import WebhookSettings  # noqa: E402

OUTPUT = ROOT / "docs" / "reference" / "settings.md"
COMMAND = ".venv/bin/python docs/tools/settings_reference.py"
SERVICES = {"webhook": WebhookSettings, "cron": CronSettings}
BLOCK = re.compile(r"(<!-- settings: (\w+) -->\n).*?(<!-- end settings -->)", re.S)


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _default(f: dataclasses.Field) -> str:
    if f.metadata.get("pod") == "name":
        return "`$POD_NAME`, else the host name"
    if f.metadata.get("pod") == "namespace":
        return "`$POD_NAMESPACE`, else the service account's namespace, else `default`"
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = f.default_factory()  # type: ignore[misc]
    else:
        return "required"
    if value is None:
        return "automatic"
    if value in ("", ()):
        return "empty"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{value}`"


def table(cls: type) -> str:
    lines = ["| flag | variable | default | why this default |", "|---|---|---|---|"]
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        flag = flag_name(f)
        if flag and hints[f.name] in (bool, bool | None):  # a boolean flag and the flag that turns it off
            off = f.metadata.get("off_flag") or "--no-" + flag.removeprefix("--")
            flag = f"`{flag}` / `{off}`"
        elif flag:
            flag = f"`{flag}`"
        else:
            flag = "—"
        variables = ", ".join(f"`{name}`" for name in (cls.variable(f.name), *f.metadata.get("aliases", ())))
        reason = f.metadata.get("reason", "")
        if f.metadata.get("secret"):
            reason += " (logged as `<redacted>`)"
        if f.metadata.get("choices"):
            reason += "; one of " + ", ".join(f"`{c}`" for c in f.metadata["choices"])
        lines.append(f"| {flag} | {variables} | {_default(f)} | {_cell(reason)} |")
    return "\n".join(lines) + "\n"


def render(text: str) -> str:
    """`text` (the page) with every settings table regenerated."""
    def replace(match: re.Match) -> str:
        if match[2] not in SERVICES:
            raise SystemExit(f"{OUTPUT}: unknown service {match[2]!r} in a settings marker")
        return match[1] + "\n" + table(SERVICES[match[2]]) + "\n" + match[3]

    return BLOCK.sub(replace, text)


def main() -> int:
    OUTPUT.write_text(render(OUTPUT.read_text()))
    print(f"wrote the settings tables of {OUTPUT.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
