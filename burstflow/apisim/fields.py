"""Field selectors as the list/watch query strings spell them (`metadata.name=x,status.phase!=Running`), parsed
once into pure match functions, with kube-apiserver's 400 messages."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

from .status import bad_request


@dataclass(frozen=True)
class FieldRequirement:
    field: str
    negate: bool
    value: str


def parse_field_selector(text: str | None, allowed: dict[str, Callable[[dict], Any]], *,
                         custom: bool) -> tuple[FieldRequirement, ...]:
    """Parse `metadata.name=x,status.phase!=Running`; fields outside `allowed` -> 400 worded as the server does."""
    if not text or not text.strip():
        return ()
    reqs = []
    for raw in text.split(","):
        part = raw.strip()
        m = re.match(r"^([^=!]+)(==|=|!=)(.*)$", part)
        if not m:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
        field = m.group(1).strip()
        if field not in allowed:
            if custom:
                raise bad_request(f'"{field}" is not a known field selector: only "metadata.name", '
                                  f'"metadata.namespace"')
            raise bad_request(f'field label not supported: {field}')
        reqs.append(FieldRequirement(field, m.group(2) == "!=", m.group(3).strip()))
    return tuple(reqs)


def fields_match(reqs: tuple[FieldRequirement, ...], obj: dict, allowed: dict[str, Callable[[dict], Any]]) -> bool:
    for r in reqs:
        actual = allowed[r.field](obj)
        actual = "" if actual is None else str(actual)
        if (actual == r.value) == r.negate:
            return False
    return True
