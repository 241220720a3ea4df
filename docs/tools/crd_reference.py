"""Writes docs/reference/crds.md, the field reference of every CRD in manifests/base/crds/, from the CRD schemas.

Run it after changing a CRD:   .venv/bin/python docs/tools/crd_reference.py
`tests/test_docs.py` regenerates the page in memory and fails when the committed file differs.

For each kind and served version: a table of every field (path, type, required, default, constraints: enum,
minimum/maximum, lengths, item and property counts, pattern, format, list and map types, and the
`x-kubernetes-validations` rules with their messages) and its description. A subtree below `spec`/`status`
larger than EXPAND_LIMIT bytes of schema (the CronWorkflow's `workflowSpec`, which carries Argo's whole Workflow schema) is one
row saying how many fields it holds, not expanded: that reference is Argo's.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "manifests" / "base" / "crds"
OUTPUT = ROOT / "docs" / "reference" / "crds.md"
COMMAND = ".venv/bin/python docs/tools/crd_reference.py"
# Argo's WorkflowSpec is ~1.2 MB of schema and ~10,000 fields; our own kinds' largest subtree is under 3 KB.
EXPAND_LIMIT = 64 * 1024
# libyaml when installed: the CronWorkflow CRD is 2.7 MB, 10 s to parse in pure Python, under 2 s in C.
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _cell(text: Any) -> str:
    """Text fit for one Markdown table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _code(text: Any) -> str:
    value = text if isinstance(text, str) else json.dumps(text, sort_keys=True)
    return "`" + _cell(value).replace("`", "'") + "`"


def _type(schema: Mapping[str, Any]) -> str:
    if schema.get("x-kubernetes-int-or-string"):
        return "int or string"
    kind = schema.get("type")
    if kind == "array":
        items = schema.get("items")
        return "[]" + (_type(items) if isinstance(items, Mapping) else "any")
    if kind == "object" and isinstance(schema.get("additionalProperties"), Mapping) and not schema.get("properties"):
        return "map[string]" + _type(schema["additionalProperties"])
    if not kind:
        return "any" if schema.get("x-kubernetes-preserve-unknown-fields") else "object"
    return kind + (f" ({schema['format']})" if schema.get("format") else "")


def _constraints(schema: Mapping[str, Any]) -> list[str]:
    out = []
    if "enum" in schema:
        out.append("one of " + ", ".join(_code(v) for v in schema["enum"]))
    for key, word in (("minimum", "≥"), ("maximum", "≤")):
        if key in schema:
            strict = schema.get("exclusive" + key.capitalize())
            out.append(f"{'>' if key == 'minimum' and strict else '<' if strict else word} {schema[key]}")
    for key, word in (("minLength", "length ≥"), ("maxLength", "length ≤"), ("minItems", "items ≥"),
                      ("maxItems", "items ≤"), ("minProperties", "keys ≥"), ("maxProperties", "keys ≤")):
        if key in schema:
            out.append(f"{word} {schema[key]}")
    if "pattern" in schema:
        out.append("pattern " + _code(schema["pattern"]))
    if schema.get("nullable"):
        out.append("nullable")
    if schema.get("x-kubernetes-list-type"):
        keys = schema.get("x-kubernetes-list-map-keys")
        out.append(f"list type {schema['x-kubernetes-list-type']}" + (f" (keys {', '.join(keys)})" if keys else ""))
    if schema.get("x-kubernetes-map-type"):
        out.append(f"map type {schema['x-kubernetes-map-type']}")
    if schema.get("x-kubernetes-preserve-unknown-fields") and schema.get("type"):
        out.append("unknown fields kept")
    for rule in schema.get("x-kubernetes-validations") or ():
        text = "rule " + _code(rule["rule"])
        if rule.get("message"):
            text += " — " + _cell(rule["message"])
        out.append(text)
    return out


def _count_fields(schema: Any) -> int:
    if not isinstance(schema, Mapping):
        return 0
    count = 0
    for sub in (schema.get("properties") or {}).values():
        count += 1 + _count_fields(sub)
    for key in ("items", "additionalProperties"):
        count += _count_fields(schema.get(key))
    return count


def fields(schema: Mapping[str, Any], path: str = "", required: bool = False
           ) -> Iterator[tuple[str, Mapping[str, Any], bool, str]]:
    """(path, schema, required, note) for every field under `schema`, pre-order; `items` add `[]` to the path,
    `additionalProperties` add `.<key>`. Subtrees over EXPAND_LIMIT yield one row with a note instead."""
    if path:
        if "." in path.replace("[]", ".") and len(json.dumps(schema)) > EXPAND_LIMIT:  # spec and status always open
            yield path, schema, required, f"{_count_fields(schema):,} nested fields, not listed here"
            return
        yield path, schema, required, ""
    needed = set(schema.get("required") or ())
    for name, sub in (schema.get("properties") or {}).items():
        yield from fields(sub, f"{path}.{name}" if path else name, name in needed)
    items = schema.get("items")
    if isinstance(items, Mapping) and (items.get("properties") or items.get("items")):
        for sub_path, sub, req, note in fields(items, "", False):
            yield f"{path}[].{sub_path}" if not sub_path.startswith("[") else f"{path}[]{sub_path}", sub, req, note
    extra = schema.get("additionalProperties")
    if isinstance(extra, Mapping) and (extra.get("properties") or extra.get("items")):
        for sub_path, sub, req, note in fields(extra, "", False):
            yield f"{path}.<key>.{sub_path}", sub, req, note


def render_crd(crd: Mapping[str, Any]) -> list[str]:
    spec = crd["spec"]
    names = spec["names"]
    lines = [f"## {names['kind']}", ""]
    short = ", ".join(f"`{n}`" for n in names.get("shortNames") or ())
    lines.append(f"`{spec['group']}`, {spec['scope'].lower()}; `kubectl get {names['plural']}.{spec['group']}`"
                 + (f" (short names: {short})" if short else "") + f". Source: `manifests/base/crds/{crd['_file']}`.")
    lines.append("")
    for version in spec["versions"]:
        if not version.get("served", True):
            continue
        schema = version["schema"]["openAPIV3Schema"]
        flags = ", ".join(f for f, on in (("served", version.get("served")), ("storage", version.get("storage"))) if on)
        subresources = ", ".join(sorted(version.get("subresources") or {}))
        lines += [f"### {names['kind']} {version['name']}", ""]
        lines.append(f"Version `{spec['group']}/{version['name']}` ({flags})"
                     + (f"; subresources: {subresources}" if subresources else "") + ".")
        if schema.get("description"):
            lines += ["", _cell(schema["description"])]
        rules = _constraints({"x-kubernetes-validations": schema.get("x-kubernetes-validations") or ()})
        if rules:
            lines += ["", "Rules on the whole object: " + "; ".join(rules) + "."]
        lines += ["", "| field | type | required | default | constraints | description |", "|---|---|---|---|---|---|"]
        top = {k: v for k, v in (schema.get("properties") or {}).items() if k not in ("apiVersion", "kind", "metadata")}
        for path, sub, required, note in fields({"properties": top, "required": schema.get("required") or ()}):
            default = _code(sub["default"]) if "default" in sub else ""
            constraints = "; ".join(_constraints(sub) + ([note] if note else []))
            lines.append(f"| `{path}` | {_cell(_type(sub))} | {'yes' if required else ''} | {default} | "
                         f"{constraints} | {_cell(sub.get('description', ''))} |")
        lines.append("")
    return lines


def render() -> str:
    """The whole page, from the CRDs on disk (sorted by kind, so the output is stable)."""
    crds = []
    for path in sorted(CRDS.glob("*.yaml")):
        for doc in yaml.load_all(path.read_text(), Loader=LOADER):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                crds.append({**doc, "_file": path.name})
    crds.sort(key=lambda c: c["spec"]["names"]["kind"])
    lines = ["# CRD field reference", "",
             f"<!-- Generated by `{COMMAND}` from manifests/base/crds/; do not edit by hand. -->", "",
             "Every field of Burstflow's custom resources, as the API server validates them. The concepts behind them: "
             "[BurstProfile](../concepts/burstprofile.md), [ResourcePolicy](../concepts/resourcepolicy.md), "
             "[CronWorkflow](../concepts/cronworkflow.md). `[]` in a path is any list item, `<key>` any map key.", ""]
    lines += [", ".join(f"[{c['spec']['names']['kind']}](#{c['spec']['names']['kind'].lower()})" for c in crds), ""]
    for crd in crds:
        lines += render_crd(crd)
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    OUTPUT.write_text(render())
    print(f"wrote {OUTPUT.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
