"""Label and field selectors as the list/watch query strings spell them, parsed once into pure match functions."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

from .status import bad_request

# An optional DNS-subdomain prefix and "/", then a name of alphanumerics, '-', '_' and '.'.
_KEY = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                  r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!exists"
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        if self.op in ("=", "in"):
            return present and labels[self.key] in self.values
        # "!=" and "notin" also match objects without the label, as the API server does.
        return not present or labels[self.key] not in self.values


def _split_top_level(text: str) -> list[str]:
    parts, depth, current = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def _check_key(key: str, text: str) -> str:
    if not key or not _KEY.match(key):
        raise bad_request(f'unable to parse requirement: invalid label key "{key}" in selector "{text}"')
    return key


def parse_label_selector(text: str | None) -> tuple[Requirement, ...]:
    """Parse `a=b,c!=d,e in (f,g),h notin (i),j,!k`; an empty selector matches everything; bad input -> 400."""
    if not text or not text.strip():
        return ()
    reqs = []
    for raw in _split_top_level(text):
        part = raw.strip()
        if not part:
            raise bad_request(f'unable to parse requirement: found \'\', expected: identifier in selector "{text}"')
        m = re.match(r"^(\S+?)\s+(in|notin)\s*\((.*)\)$", part)
        if m:
            values = tuple(v.strip() for v in m.group(3).split(",") if v.strip())
            reqs.append(Requirement(_check_key(m.group(1), text), m.group(2), values))
            continue
        if part.startswith("!"):
            reqs.append(Requirement(_check_key(part[1:].strip(), text), "!exists"))
            continue
        m = re.match(r"^([^=!\s]+)\s*(==|=|!=)\s*(.*)$", part)
        if m:
            op = "!=" if m.group(2) == "!=" else "="
            reqs.append(Requirement(_check_key(m.group(1), text), op, (m.group(3).strip(),)))
            continue
        if re.search(r"[\s()=!]", part):
            raise bad_request(f'unable to parse requirement: unexpected text in selector "{text}": "{part}"')
        reqs.append(Requirement(_check_key(part, text), "exists"))
    return tuple(reqs)


def labels_match(reqs: tuple[Requirement, ...], labels: dict[str, str] | None) -> bool:
    labels = labels or {}
    return all(r.matches(labels) for r in reqs)


def selector_from_label_selector(sel: dict | None) -> Callable[[dict], bool]:
    """A `metav1.LabelSelector` (matchLabels + matchExpressions) as used by webhooks; None or {} matches all."""
    if not sel:
        return lambda labels: True
    reqs = [Requirement(k, "=", (str(v),)) for k, v in (sel.get("matchLabels") or {}).items()]
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!exists"}
    for expr in sel.get("matchExpressions") or []:
        op = ops.get(expr.get("operator", ""))
        if op is None:
            raise ValueError(f'{expr.get("operator")!r} is not a valid label selector operator')
        reqs.append(Requirement(expr["key"], op, tuple(expr.get("values") or ())))
    frozen = tuple(reqs)
    return lambda labels: labels_match(frozen, labels)


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
