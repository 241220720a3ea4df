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
    and its `!=` a one-value `NotIn` (which matches objects without the label, as the API server does); its `>` and
    `<` are `Gt` and `Lt` with one integer value."""

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
        if self.operator == "DoesNotExist":
            return self.key not in labels
        # Gt / Lt (query strings only): both sides must be integers, as the API server compares them.
        (bound,) = self.values
        value = labels.get(self.key)
        if value is None or not _INTEGER.match(value):
            return False
        return int(value) > int(bound) if self.operator == "Gt" else int(value) < int(bound)


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
# A port of apimachinery's labels.Parse (k8s.io/apimachinery/pkg/labels/selector.go, as in kube-apiserver 1.24):
# the same tokens, the same grammar, the same messages (checked against a real server, tests/test_selectors.py).

_END, _IDENTIFIER = "end of string", "identifier"
_SPECIAL = frozenset("=!(),><")
_WHITESPACE = frozenset(" \t\r\n")
_SYMBOLS = frozenset({")", ",", "!", "==", "=", ">", "<", "!=", "("})
_KEYWORDS = frozenset({"in", "notin"})
_BINARY = {"in": "In", "notin": "NotIn", "=": "In", "==": "In", "!=": "NotIn", ">": "Gt", "<": "Lt"}
_BINARY_NAMES = "in, notin, =, ==, !=, gt, lt"
_INTEGER = re.compile(r"^[+-]?[0-9]+$")
_QUALIFIED_NAME_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_QUALIFIED_NAME_MSG = ("must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
                       "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation "
                       f"is '{_QUALIFIED_NAME_FMT}')")
_SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and "
                  "must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation "
                  "is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
_LABEL_VALUE_MSG = ("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
                    "and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or "
                    f"'12345', regex used for validation is '({_QUALIFIED_NAME_FMT})?')")


def _lex(text: str) -> list[tuple[str, str]]:
    """(token, literal) pairs ending with the end-of-string token; a token is a symbol, a keyword or an
    identifier (anything else up to whitespace or a symbol character). Symbols are read greedily (`!=`, `==`)."""
    items: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in _WHITESPACE:
            i += 1
        if i == n:
            items.append((_END, ""))
            return items
        if text[i] in _SPECIAL:
            symbol = text[i]
            i += 1
            while i < n and symbol + text[i] in _SYMBOLS:
                symbol += text[i]
                i += 1
            items.append((symbol, symbol))
        else:
            start = i
            while i < n and text[i] not in _SPECIAL and text[i] not in _WHITESPACE:
                i += 1
            word = text[start:i]
            items.append((word if word in _KEYWORDS else _IDENTIFIER, word))


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _qualified_name_errors(key: str) -> list[str]:
    """apimachinery validation.IsQualifiedName."""
    parts = key.split("/")
    errors = []
    if len(parts) > 2:
        return [f"a qualified name {_QUALIFIED_NAME_MSG} with an optional DNS subdomain prefix and '/' (e.g. "
                "'example.com/MyName')"]
    name = parts[-1]
    if len(parts) == 2:
        prefix = parts[0]
        if not prefix:
            errors.append("prefix part must be non-empty")
        else:
            if len(prefix) > 253:
                errors.append("prefix part must be no more than 253 characters")
            if not DNS_SUBDOMAIN.match(prefix):
                errors.append(f"prefix part {_SUBDOMAIN_MSG}")
    if not name:
        errors.append("name part must be non-empty")
    elif len(name) > 63:
        errors.append("name part must be no more than 63 characters")
    if not _LABEL_NAME.match(name):
        errors.append(f"name part {_QUALIFIED_NAME_MSG}")
    return errors


def _label_value_errors(value: str) -> list[str]:
    """apimachinery validation.IsValidLabelValue."""
    errors = []
    if len(value) > 63:
        errors.append("must be no more than 63 characters")
    if value and not _LABEL_NAME.match(value):
        errors.append(_LABEL_VALUE_MSG)
    return errors


class _Parser:
    def __init__(self, text: str) -> None:
        self.items = _lex(text)
        self.position = 0

    def lookahead(self, values: bool) -> tuple[str, str]:
        token, literal = self.items[self.position]
        return (_IDENTIFIER if values and token in _KEYWORDS else token), literal

    def consume(self, values: bool) -> tuple[str, str]:
        found = self.lookahead(values)
        self.position += 1
        return found

    def parse(self) -> list[Requirement]:
        requirements = []
        while True:
            token, literal = self.lookahead(True)
            if token in (_IDENTIFIER, "!"):
                try:
                    requirements.append(self.requirement())
                except SelectorError as exc:
                    raise SelectorError("", f"unable to parse requirement: {exc.message}") from None
                token, literal = self.consume(True)
                if token == _END:
                    return requirements
                if token != ",":
                    raise SelectorError("", f"found '{literal}', expected: ',' or 'end of string'")
                following, literal = self.lookahead(True)
                if following not in (_IDENTIFIER, "!"):
                    raise SelectorError("", f"found '{literal}', expected: identifier after ','")
            elif token == _END:
                return requirements
            else:
                raise SelectorError("", f"found '{literal}', expected: !, identifier, or 'end of string'")

    def requirement(self) -> Requirement:
        token, key = self.consume(True)
        negated = token == "!"
        if negated:
            token, key = self.consume(True)
        if token != _IDENTIFIER:
            raise SelectorError("", f"found '{key}', expected: identifier")
        errors = _qualified_name_errors(key)
        if errors:
            raise SelectorError("", f"<nil>: Invalid value: {_quoted(key)}: {'; '.join(errors)}")
        if negated or self.lookahead(True)[0] in (_END, ","):
            return Requirement(key, "DoesNotExist" if negated else "Exists")
        token, literal = self.consume(False)
        operator = _BINARY.get(token)
        if operator is None:
            raise SelectorError("", f"found '{literal}', expected: {_BINARY_NAMES}")
        values = self.value_set() if token in _KEYWORDS else self.exact_value()
        return _requirement(key, operator, values)

    def value_set(self) -> set[str]:
        token, literal = self.consume(True)
        if token != "(":
            raise SelectorError("", f"found '{literal}' expected: '('")
        token, literal = self.lookahead(True)
        if token == ")":
            self.consume(True)
            return {""}
        if token not in (_IDENTIFIER, ","):
            raise SelectorError("", f"found '{literal}', expected: ',', ')' or identifier")
        values = self.identifiers()
        if self.consume(True)[0] != ")":
            raise SelectorError("", f"found '{literal}', expected: ')'")
        return values

    def identifiers(self) -> set[str]:
        values: set[str] = set()
        while True:
            token, literal = self.consume(True)
            if token == _IDENTIFIER:
                values.add(literal)
                following, literal = self.lookahead(True)
                if following == ")":
                    return values
                if following != ",":
                    raise SelectorError("", f"found '{literal}', expected: ',' or ')'")
            elif token == ",":
                if not values:
                    values.add("")  # "(,"
                following = self.lookahead(True)[0]
                if following == ")":
                    values.add("")  # ",)"
                    return values
                if following == ",":
                    self.consume(True)
                    values.add("")  # ",,"
            else:
                raise SelectorError("", f"found '{literal}', expected: ',', or identifier")

    def exact_value(self) -> set[str]:
        if self.lookahead(True)[0] in (_END, ","):
            return {""}
        token, literal = self.consume(True)
        if token != _IDENTIFIER:
            raise SelectorError("", f"found '{literal}', expected: identifier")
        return {literal}


def _requirement(key: str, operator: str, values: set[str]) -> Requirement:
    """apimachinery labels.NewRequirement's value checks, each error worded as a field.Error; several are listed
    in brackets as an aggregate error prints them."""
    ordered = sorted(values)
    errors = []
    if operator in ("Gt", "Lt"):
        if not _INTEGER.match(ordered[0]) or not -2 ** 63 <= int(ordered[0]) < 2 ** 63:
            errors.append(f"values[0]: Invalid value: {_quoted(ordered[0])}: for 'Gt', 'Lt' operators, the value "
                          "must be an integer")
    for index, value in enumerate(ordered):
        problems = _label_value_errors(value)
        if problems:
            errors.append(f"values[{index}][{key}]: Invalid value: {_quoted(value)}: {'; '.join(problems)}")
    if errors:
        raise SelectorError("", errors[0] if len(errors) == 1 else f"[{', '.join(errors)}]")
    return Requirement(key, operator, frozenset(values))


def parse_label_selector(text: str | None) -> Selector:
    """Parse the `labelSelector` query parameter (`a=b,c!=d,e in (f,g),h notin (i),j,!k,l>5`) as kube-apiserver
    does; an empty one matches everything. Raises SelectorError carrying the server's 400 message."""
    if not text or not text.strip():
        return EVERYTHING
    return Selector(tuple(_Parser(text).parse()))
