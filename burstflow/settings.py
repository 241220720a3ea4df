"""Settings for both services: a frozen dataclass declared field by field, loaded by one rule (flag, then
`BURSTFLOW_<SERVICE>_<FIELD>`, then the default), and the pod's identity taken from the downward API one way.

A service declares its settings as a frozen dataclass that subclasses `Settings`, names its `SERVICE`, and
declares each field with `setting(default, reason=...)`; this module converts, validates the types, adds the
argparse flags and names the flag and the variable in every error:

    @dataclass(frozen=True)
    class CronSettings(Settings):
        SERVICE: ClassVar[str] = "cron"
        workers: int = setting(32, reason="...")       # --workers, BURSTFLOW_CRON_WORKERS

    settings = CronSettings.from_args(args, os.environ)
"""
from __future__ import annotations

import argparse
import dataclasses
import socket
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

# The downward API sets these in both Deployments (fieldRef metadata.name / metadata.namespace).
POD_NAME_ENV = "POD_NAME"
POD_NAMESPACE_ENV = "POD_NAMESPACE"
# Mounted into every pod that runs under a service account (automountServiceAccountToken, the default).
SERVICE_ACCOUNT_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")
# `setting(flag=...)` value for a setting that has no flag (a secret would show in `ps`).
NO_FLAG = ""


class SettingsError(ValueError):
    """A setting the service cannot use; the message names the flag and the variable that set it."""


@dataclass(frozen=True)
class PodIdentity:
    """Who this replica is: its Lease holder name and the namespace it runs in."""

    name: str
    namespace: str


def pod_identity(environ: Mapping[str, str], *, namespace_file: str = SERVICE_ACCOUNT_NAMESPACE_FILE,
                 hostname: Callable[[], str] = socket.gethostname) -> PodIdentity:
    """The pod's name from `POD_NAME`, else the host name (in a pod, the pod name); its namespace from
    `POD_NAMESPACE`, else the service account's namespace file, else "default" (a process outside any pod)."""
    name = environ.get(POD_NAME_ENV, "").strip() or hostname()
    namespace = environ.get(POD_NAMESPACE_ENV, "").strip()
    if not namespace:
        try:
            with open(namespace_file, encoding="utf-8") as file:
                namespace = file.read().strip()
        except OSError:
            namespace = ""
    return PodIdentity(name=name, namespace=namespace or "default")


def setting(default: Any = dataclasses.MISSING, *, reason: str, default_factory: Any = dataclasses.MISSING,
            flag: str | None = None, off_flag: str | None = None, help: str | None = None,
            choices: tuple[str, ...] | None = None, secret: bool = False, aliases: tuple[str, ...] = (),
            pod: str | None = None, metavar: str | None = None) -> Any:
    """A settings field: its default, the `reason` for that default, and how it is set.

    - `flag`: the flag (default `--<field>` with `_seconds` dropped and `_` as `-`); `NO_FLAG` for none;
    - `off_flag`: for a bool, the flag that sets it to False (default `--no-<flag>`); the flag itself sets True;
    - `choices`: accepted values (compared in lower case); `secret`: redacted from the start-up log, no flag;
    - `aliases`: older variable names read when the service's own variable is unset, in this order;
    - `pod`: "name" or "namespace": when neither flag nor variable is given, the value comes from `pod_identity`;
    - a `tuple[str, ...]` field takes a comma-separated variable and a repeatable flag.
    """
    metadata = {"reason": reason, "flag": NO_FLAG if secret and flag is None else flag, "off_flag": off_flag,
                "help": help, "choices": choices, "secret": secret, "aliases": tuple(aliases), "pod": pod,
                "metavar": metavar}
    if pod not in (None, "name", "namespace"):
        raise ValueError(f"pod must be 'name' or 'namespace', not {pod!r}")
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata,
                             repr=not secret)


def flag_name(f: dataclasses.Field) -> str:
    """The flag that sets field `f` ("" when it has none)."""
    flag = f.metadata.get("flag")
    if flag is not None:
        return flag
    return "--" + f.name.removesuffix("_seconds").replace("_", "-")


def _off_flag(f: dataclasses.Field) -> str:
    return f.metadata.get("off_flag") or "--no-" + flag_name(f).removeprefix("--")


class Settings:
    """Base of a service's settings dataclass (frozen; each field declared with `setting`).

    Subclasses set `SERVICE` ("cron", "webhook"): the variables are `BURSTFLOW_<SERVICE>_<FIELD>`. Construction
    runs `validate()`, which raises `SettingsError` naming `self.source(field)`.
    """

    SERVICE: ClassVar[str] = ""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise `SettingsError` for a value of the right type that the service still cannot use."""

    @classmethod
    def env_prefix(cls) -> str:
        return f"BURSTFLOW_{cls.SERVICE.upper()}_"

    @classmethod
    def variable(cls, name: str) -> str:
        """The environment variable of field `name`."""
        return cls.env_prefix() + name.upper()

    @classmethod
    def source(cls, name: str) -> str:
        """How an error names field `name`: its flag and its variable, e.g. `--workers/BURSTFLOW_CRON_WORKERS`."""
        flag = flag_name(_field(cls, name))
        return f"{flag}/{cls.variable(name)}" if flag else cls.variable(name)

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: Any):
        """Settings from `environ`; `overrides` that are not None win (as flags do). See `load`."""
        return load(cls, environ, overrides=overrides)

    @classmethod
    def from_args(cls, args: argparse.Namespace, environ: Mapping[str, str]):
        """Settings from the flags in `args` (those given), then `environ`, then the defaults. See `load`."""
        return load(cls, environ, args=args)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser | Any, *, title: str | None = None) -> None:
        """Add one flag per field to `parser` (see `add_arguments`)."""
        add_arguments(parser, cls, title=title)

    def with_overrides(self, **overrides: Any):
        """A copy with every override that is not None applied."""
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def redacted(self) -> dict[str, Any]:
        """Every field for the start-up log line; a secret shows as "<redacted>" (or "" when unset)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if f.metadata.get("secret"):
                value = "<redacted>" if value else ""
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


def _field(cls: type, name: str) -> dataclasses.Field:
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f
    raise KeyError(name)


def _kinds(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _optional(kind: Any) -> tuple[Any, bool]:
    """(the type inside `X | None`, True) or (kind, False)."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        inner = [arg for arg in typing.get_args(kind) if arg is not type(None)]
        if len(inner) == 1 and len(typing.get_args(kind)) == 2:
            return inner[0], True
    return kind, False


def convert(raw: str, kind: Any, *, choices: tuple[str, ...] | None = None) -> Any:
    """`raw` (a variable's or flag's text) as a value of `kind`: bool, int, float, str, `X | None` (empty is None)
    or `tuple[str, ...]` (comma-separated, blanks dropped). Raises ValueError saying what was expected."""
    kind, optional = _optional(kind)
    text = raw.strip()
    if optional and not text:
        return None
    if kind is bool:
        lowered = text.lower()
        if lowered in TRUE_WORDS:
            return True
        if lowered in FALSE_WORDS:
            return False
        raise ValueError(f"expected true or false, not {raw!r}")
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"expected a whole number, not {raw!r}") from None
    if kind is float:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"expected a number, not {raw!r}") from None
    if typing.get_origin(kind) is tuple:
        return tuple(part.strip() for part in text.split(",") if part.strip())
    if kind is str:
        if choices is not None:
            lowered = text.lower()
            if lowered not in choices:
                raise ValueError(f"{raw!r} is not one of {', '.join(choices)}")
            return lowered
        return text
    raise TypeError(f"settings of type {kind!r} are not supported")


def load(cls: type, environ: Mapping[str, str], *, args: argparse.Namespace | None = None,
         overrides: Mapping[str, Any] | None = None, pod: PodIdentity | None = None):
    """An instance of the settings dataclass `cls`, each field from (first that applies):

    1. the flag in `args` (as added by `add_arguments`; absent flags are None) or a non-None `overrides[field]`;
    2. `BURSTFLOW_<SERVICE>_<FIELD>` in `environ`, then the field's `aliases` (unset or blank means not given);
    3. for a field declared with `pod=`, that part of `pod` (default `pod_identity(environ)`);
    4. the field's default.
    Raises `SettingsError` naming the flag and the variable for a value that does not convert or validate.
    """
    kinds = _kinds(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        meta, kind = f.metadata, kinds[f.name]
        given = getattr(args, f.name, None) if args is not None else None
        if given is None and overrides is not None:
            given = overrides.get(f.name)
        if given is not None:
            if isinstance(given, str):
                try:
                    given = convert(given, kind, choices=meta.get("choices"))
                except ValueError as error:
                    raise SettingsError(f"{cls.source(f.name)}: {error}") from None
            elif isinstance(given, list):
                given = tuple(given)
            values[f.name] = given
            continue
        for name in (cls.variable(f.name), *meta.get("aliases", ())):
            raw = environ.get(name, "")
            if raw.strip():
                try:
                    values[f.name] = convert(raw, kind, choices=meta.get("choices"))
                except ValueError as error:
                    where = cls.source(f.name) if name == cls.variable(f.name) else f"{name} ({cls.source(f.name)})"
                    raise SettingsError(f"{where}: {error}") from None
                break
        else:
            if meta.get("pod"):
                pod = pod or pod_identity(environ)
                values[f.name] = getattr(pod, meta["pod"])
    try:
        return cls(**values)
    except SettingsError:
        raise
    except ValueError as error:
        raise SettingsError(str(error)) from None


def add_arguments(parser: argparse.ArgumentParser | Any, cls: type, *, title: str | None = None) -> None:
    """One flag per field of `cls` (except those declared with `flag=NO_FLAG`), each defaulting to None so that
    only flags actually given override the environment. Values are converted by `load`, which names the flag
    and the variable in its errors. A bool gets an on and an off flag; a tuple a repeatable flag."""
    kinds = _kinds(cls)
    group = parser.add_argument_group(
        title or f"{cls.SERVICE} settings (each flag overrides its {cls.env_prefix()}* variable)")
    for f in dataclasses.fields(cls):
        flag = flag_name(f)
        if not flag:
            continue
        meta = f.metadata
        kind, _ = _optional(kinds[f.name])
        text = (meta.get("help") or meta.get("reason", "")).replace("%", "%%")  # argparse formats help with %
        default = f.default if f.default is not dataclasses.MISSING else None
        variable = cls.variable(f.name)
        if kind is bool:
            pair = group.add_mutually_exclusive_group()
            on_help = f"{text} ({variable}; default {'on' if default else 'off'})" if default is not None else \
                f"{text} ({variable})"
            pair.add_argument(flag, dest=f.name, action="store_const", const=True, default=None, help=on_help)
            pair.add_argument(_off_flag(f), dest=f.name, action="store_const", const=False, default=None,
                              help=f"the opposite of {flag}")
            continue
        shown = f"; default {default!r}" if default not in (None, "", ()) else ""
        choices = meta.get("choices")
        metavar = meta.get("metavar") or ("{" + ",".join(choices) + "}" if choices else None) or (
            "SECONDS" if f.name.endswith("_seconds") else None)
        if typing.get_origin(kind) is tuple:
            group.add_argument(flag, dest=f.name, action="append", default=None, metavar=metavar or "VALUE",
                               help=f"{text} (repeatable; {variable}, comma-separated)")
        else:
            group.add_argument(flag, dest=f.name, default=None, metavar=metavar,
                               help=f"{text} ({variable}{shown})")
