"""Kubernetes label selectors, compiled once into a `Selector`: from a `metav1.LabelSelector` object
(matchLabels + matchExpressions, as in policies and webhook configurations) or from the list/watch query string
(`a=b,c in (d),!e`, as the local API endpoint receives it), both matched against label maps the same way."""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from burstflow.crdschema import FieldError

OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
# Kubernetes' syntax for names (apimachinery validation): a DNS subdomain (object names, label key prefixes), and a
# label name (label key names, label values) of alphanumerics, '-', '_' and '.'.
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_SET_REQUIREMENT = re.compile(r"^(\S+?)\s+(in|notin)\s*\((.*)\)$")
_EQUALITY_REQUIREMENT = re.compile(r"^([^=!\s]+)\s*(==|=|!=)\s*(.*)$")


def label_key_error(key: str) -> str | None:
    """Why `key` is not a valid label/annotation key (apimachinery IsQualifiedName), or None."""
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not DNS_SUBDOMAIN.match(prefix)):
        return f"key {key!r}: prefix must be a DNS subdomain"
    if not name or len(name) > 63 or not _LABEL_NAME.match(name):
        return f"key {key!r}: name must be 1-63 alphanumerics, '-', '_' or '.', starting and ending alphanumeric"
    return None


def label_value_error(value: str) -> str | None:
    """Why `value` is not a valid label value (apimachinery IsValidLabelValue), or None."""
    if value == "" or (len(value) <= 63 and _LABEL_NAME.match(value)):
        return None
    return (f"label value {value!r} must be at most 63 alphanumerics, '-', '_' or '.', starting and ending "
            "alphanumeric")


class SelectorError(FieldError):
    """A selector that is not valid; `path` is relative to the selector object (empty for a query string, whose
    message is worded as kube-apiserver words it)."""


@dataclass(frozen=True)
class Requirement:
    """One requirement in `metav1.LabelSelectorRequirement` terms; the query string's `=` is a one-value `In`
    and its `!=` a one-value `NotIn` (both match objects without the label, as the API server does)."""

    key: str
    operator: str
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "In":
            return labels.get(self.key) in self.values
        if self.operator == "NotIn":
            return self.key not in labels or labels[self.key] not in self.values
        if self.operator == "Exists":
            return self.key in labels
        return self.key not in labels


@dataclass(frozen=True)
class Selector:
    """A compiled label selector: every requirement must hold (AND), as in Kubernetes.

    An empty selector (`{}`, or an empty query string) matches every label set, including an empty one.

    Matching runs on every admission for every profile, so the requirements are also grouped, once, into checks
    that run as single C-level set operations on the label map: `key = value` pairs (matchLabels and one-value
    `In`) as one items-view inclusion, `Exists` keys as one keys-view inclusion, `DoesNotExist` keys as one
    disjointness test; only multi-value `In` and `NotIn` are checked one by one.
    """

    requirements: tuple[Requirement, ...] = ()
    _equal: dict[str, str] | None = field(init=False, repr=False, compare=False, default=None)
    _exists: frozenset[str] = field(init=False, repr=False, compare=False, default=frozenset())
    _absent: frozenset[str] = field(init=False, repr=False, compare=False, default=frozenset())
    _rest: tuple[Requirement, ...] = field(init=False, repr=False, compare=False, default=())

    def __post_init__(self) -> None:
        equal: dict[str, str] = {}
        exists: set[str] = set()
        absent: set[str] = set()
        rest: list[Requirement] = []
        for requirement in self.requirements:
            key, operator, values = requirement.key, requirement.operator, requirement.values
            if operator == "In" and len(values) == 1 and key not in equal:
                (equal[key],) = values
            elif operator == "Exists":
                exists.add(key)
            elif operator == "DoesNotExist":
                absent.add(key)
            else:
                rest.append(requirement)
        object.__setattr__(self, "_equal", equal or None)
        object.__setattr__(self, "_exists", frozenset(exists))
        object.__setattr__(self, "_absent", frozenset(absent))
        object.__setattr__(self, "_rest", tuple(rest))

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        if not self.requirements:
            return True
        if labels is None:
            labels = {}
        if self._equal is not None and not self._equal.items() <= labels.items():
            return False
        if self._exists and not labels.keys() >= self._exists:
            return False
        if self._absent and not self._absent.isdisjoint(labels):
            return False
        for requirement in self._rest:
            if not requirement.matches(labels):
                return False
        return True

    @property
    def empty(self) -> bool:
        return not self.requirements


EVERYTHING = Selector()


# --- metav1.LabelSelector objects -------------------------------------------------------------------------------


def compile_selector(raw: Any) -> Selector:
    """Compile a `metav1.LabelSelector` dict; raises SelectorError naming the offending field.

    `None` compiles to the match-everything selector (the field was not set).
    """
    if raw is None:
        return EVERYTHING
    if not isinstance(raw, Mapping):
        raise SelectorError("", f"must be an object with matchLabels/matchExpressions, not {type(raw).__name__}")
    unknown = sorted(set(raw) - {"matchLabels", "matchExpressions"})
    if unknown:
        raise SelectorError(unknown[0], "unknown field (a selector has matchLabels and matchExpressions)")
    requirements: list[Requirement] = []
    match_labels = raw.get("matchLabels") or {}
    if not isinstance(match_labels, Mapping):
        raise SelectorError("matchLabels", "must be a map of label key to value")
    for key, value in match_labels.items():
        if not isinstance(value, str):
            raise SelectorError(f"matchLabels.{key}", f"value must be a string, not {value!r} (quote it in YAML)")
        requirements.append(Requirement(str(key), "In", frozenset((value,))))
    expressions = raw.get("matchExpressions") or []
    if not isinstance(expressions, list):
        raise SelectorError("matchExpressions", "must be a list")
    for index, expression in enumerate(expressions):
        requirements.append(compile_requirement(expression, f"matchExpressions[{index}]"))
    return Selector(tuple(requirements))


def compile_requirement(raw: Any, path: str) -> Requirement:
    """One `{key, operator, values}` entry; In/NotIn need values, Exists/DoesNotExist must have none."""
    if not isinstance(raw, Mapping):
        raise SelectorError(path, "must be an object with key, operator and values")
    key = raw.get("key")
    if not isinstance(key, str) or not key:
        raise SelectorError(f"{path}.key", "is required")
    operator = raw.get("operator")
    if operator not in OPERATORS:
        raise SelectorError(f"{path}.operator", f"must be one of {', '.join(OPERATORS)}, not {operator!r}")
    values = raw.get("values") or []
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise SelectorError(f"{path}.values", "must be a list of strings")
    if operator in ("In", "NotIn") and not values:
        raise SelectorError(f"{path}.values", f"must be non-empty for operator {operator}")
    if operator in ("Exists", "DoesNotExist") and values:
        raise SelectorError(f"{path}.values", f"must be empty for operator {operator}")
    return Requirement(key, operator, frozenset(values))


# --- the list/watch query string --------------------------------------------------------------------------------


def _split_top_level(text: str) -> list[str]:
    """`text` split at the commas outside parentheses (a set requirement's values have their own commas)."""
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
    if not key or label_key_error(key):
        raise SelectorError("", f'unable to parse requirement: invalid label key "{key}" in selector "{text}"')
    return key


def parse_label_selector(text: str | None) -> Selector:
    """Parse the `labelSelector` query parameter, `a=b,c!=d,e in (f,g),h notin (i),j,!k`; an empty one matches
    everything. Raises SelectorError worded as kube-apiserver's 400 message."""
    if not text or not text.strip():
        return EVERYTHING
    requirements = []
    for raw in _split_top_level(text):
        part = raw.strip()
        if not part:
            raise SelectorError("", f'unable to parse requirement: found \'\', expected: identifier in selector '
                                    f'"{text}"')
        if match := _SET_REQUIREMENT.match(part):
            values = frozenset(v.strip() for v in match.group(3).split(",") if v.strip())
            operator = "In" if match.group(2) == "in" else "NotIn"
            requirements.append(Requirement(_check_key(match.group(1), text), operator, values))
        elif part.startswith("!"):
            requirements.append(Requirement(_check_key(part[1:].strip(), text), "DoesNotExist"))
        elif match := _EQUALITY_REQUIREMENT.match(part):
            operator = "NotIn" if match.group(2) == "!=" else "In"
            requirements.append(Requirement(_check_key(match.group(1), text), operator,
                                            frozenset((match.group(3).strip(),))))
        elif re.search(r"[\s()=!]", part):
            raise SelectorError("", f'unable to parse requirement: unexpected text in selector "{text}": "{part}"')
        else:
            requirements.append(Requirement(_check_key(part, text), "Exists"))
    return Selector(tuple(requirements))
