"""Validating an object against a CRD's OpenAPI v3 schema, the one implementation behind `burstflow policies
validate`, the policy compilers and the local API endpoint: the Kubernetes dialect (`nullable`,
`x-kubernetes-int-or-string`, `x-kubernetes-preserve-unknown-fields`) turned into JSON Schema, nulls pruned the way
kube-apiserver prunes them before it validates, each violation worded both as jsonschema words it (policy files)
and as kube-apiserver 1.24 words its 422 cause; and the schema's CEL rules (`x-kubernetes-validations`) evaluated
along the same walk."""
from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jsonschema

from burstflow import cel

_TYPE_NAMES = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object",
               type(None): "null"}
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


class FieldError(ValueError):
    """A value that is not valid at `path` (a field path relative to what was checked; empty for the whole value);
    `message` says why."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


def field_path(parts: Iterable[Any]) -> str:
    """A path as a policy author reads it: `spec.match.matchConditions[0]`, `spec.labels[bad key]` (keys that are
    not identifiers in brackets)."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif isinstance(part, str) and _IDENTIFIER.fullmatch(part):
            text += f".{part}" if text else part
        else:
            text += f"[{part}]"
    return text


def api_field(parts: Iterable[Any]) -> str:
    """A path as kube-apiserver prints it in a 422 cause: dotted keys, `[index]` for list items."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def to_json_schema(node: Any) -> Any:
    """OpenAPI v3 in the Kubernetes dialect -> JSON Schema: `nullable: true` admits null, an
    `x-kubernetes-int-or-string` field without its own type takes an integer or a string."""
    if isinstance(node, list):
        return [to_json_schema(n) for n in node]
    if not isinstance(node, Mapping):
        return node
    out = {k: to_json_schema(v) for k, v in node.items() if k != "nullable"}
    if node.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if node.get("x-kubernetes-int-or-string") and "type" not in node and "anyOf" not in node:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    return out


def prune_nulls(value: Any, schema: Any) -> Any:
    """`value` without the null object fields its schema does not mark `nullable` (what kube-apiserver drops before
    it validates and stores). Returns `value` itself when nothing was dropped. Objects are JSON-decoded dicts (the
    checks are `dict`, not `Mapping`: an ABC check per node costs more than the rest of the walk)."""
    if isinstance(value, dict) and isinstance(schema, dict):
        properties = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        out: dict[str, Any] | None = None
        for key, item in value.items():
            sub = properties.get(key, extra if isinstance(extra, dict) else None)
            if item is None and not (sub is not None and sub.get("nullable")):
                if sub is None and not properties and not isinstance(extra, dict):
                    continue  # not described (preserved unknown field): kept as written
                out = dict(value) if out is None else out
                del out[key]
                continue
            pruned = prune_nulls(item, sub)
            if pruned is not item:
                out = dict(value) if out is None else out
                out[key] = pruned
        return value if out is None else out
    if isinstance(value, list) and isinstance(schema, dict) and isinstance(schema.get("items"), dict):
        items = [prune_nulls(item, schema["items"]) for item in value]
        return value if all(a is b for a, b in zip(items, value)) else items
    return value


def _type_name(value: Any) -> str:
    return _TYPE_NAMES.get(type(value), "object")


@dataclass(frozen=True)
class Violation:
    """One way an object breaks its schema: where (`path` parts), which schema keyword (`keyword`, or "unknown"
    for a field the schema does not declare), the offending `value`, the keyword's `limit`, and `message` as
    jsonschema words it."""

    path: tuple[Any, ...]
    keyword: str
    value: Any
    limit: Any
    message: str

    def cause(self) -> dict[str, str]:
        """The 422 cause kube-apiserver 1.24 writes for this violation (messages captured from a real server)."""
        path = api_field(self.path)
        value, limit = self.value, self.limit
        if self.keyword == "type":
            expected = [t for t in limit if t != "null"] if isinstance(limit, list) else [limit]
            actual = _type_name(value)
            return {"reason": "FieldValueTypeInvalid",
                    "message": f'Invalid value: "{actual}": {path} in body must be of type {",".join(expected)}: '
                               f'"{actual}"',
                    "field": path}
        if self.keyword == "required":
            missing = self.message.split("'")[1] if "'" in self.message else ""
            return {"reason": "FieldValueRequired", "message": "Required value",
                    "field": f"{path}.{missing}" if path else missing}
        if self.keyword == "enum":
            supported = ", ".join(json.dumps(v) for v in limit)
            return {"reason": "FieldValueNotSupported",
                    "message": f"Unsupported value: {json.dumps(value)}: supported values: {supported}",
                    "field": path}
        if self.keyword == "maxLength":
            return {"reason": "FieldValueTooLong", "message": f"Too long: may not be longer than {limit}",
                    "field": path}
        if self.keyword in ("maxItems", "maxProperties"):
            return {"reason": "FieldValueTooMany",
                    "message": f"Too many: {len(value)}: must have at most {limit} items", "field": path}
        detail = {
            "minLength": f"should be at least {limit} chars long",
            "minItems": f"should have at least {limit} items",
            "minProperties": f"should have at least {limit} properties",
            "maximum": f"should be less than or equal to {limit}",
            "minimum": f"should be greater than or equal to {limit}",
            "pattern": f"should match '{limit}'",
        }.get(self.keyword)
        # kube-openapi prints the size, not the value, for the count limits.
        shown = len(value) if self.keyword in ("minItems", "minProperties") else value
        if detail is None:
            detail, shown = self.message, value
        return {"reason": "FieldValueInvalid",
                "message": f"Invalid value: {json.dumps(shown, default=str)[:200]}: {path} in body {detail}",
                "field": path}


class CrdSchema:
    """One CRD version's `openAPIV3Schema`, compiled once. `violations(obj)` checks types, enums, required fields,
    patterns and limits after pruning nulls as the server does; `unknown_fields(obj)` adds what strict field
    validation refuses (fields the schema does not declare, outside `x-kubernetes-preserve-unknown-fields`)."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self.schema = schema
        self._validator: jsonschema.Draft7Validator | None = None

    def child(self, name: str) -> CrdSchema:
        """The schema of property `name` (e.g. `spec`), for a caller that checks only that part of an object."""
        return CrdSchema((self.schema.get("properties") or {}).get(name) or {})

    def prune(self, obj: Any) -> Any:
        """`obj` with the nulls the API server would drop."""
        return prune_nulls(obj, self.schema)

    def violations(self, obj: Any) -> list[Violation]:
        """Every schema violation of `obj`, ordered by path; [] when it is valid."""
        if self._validator is None:  # compiled on first use: a caller may only prune or look for unknown fields
            self._validator = jsonschema.Draft7Validator(to_json_schema(self.schema))
        errors = sorted(self._validator.iter_errors(self.prune(obj)), key=lambda e: list(map(str, e.absolute_path)))
        return [Violation(tuple(e.absolute_path), str(e.validator), e.instance, e.validator_value, e.message)
                for e in errors]

    def unknown_fields(self, obj: Any, path: Sequence[Any] = ()) -> list[Violation]:
        """Fields of `obj` its schema does not declare, pre-order; `path` is where `obj` sits in its object."""
        found: list[Violation] = []
        _unknown(obj, self.schema, list(path), found)
        return found


def _unknown(value: Any, schema: Any, path: list[Any], found: list[Violation]) -> None:
    if isinstance(value, dict) and isinstance(schema, dict):
        properties = schema.get("properties")
        extra = schema.get("additionalProperties")
        strict = (properties is not None and extra is None
                  and not schema.get("x-kubernetes-preserve-unknown-fields"))
        for key, item in value.items():
            sub = properties.get(key) if properties is not None else None
            if sub is None:
                if strict:
                    known = ", ".join(sorted(properties))
                    found.append(Violation(tuple(path + [key]), "unknown", item, sorted(properties),
                                           f"unknown field {key!r} (known: {known})"))
                    continue
                sub = extra if isinstance(extra, dict) else None
            if sub is not None and item is not None:
                _unknown(item, sub, path + [key], found)
    elif isinstance(value, list) and isinstance(schema, dict) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            _unknown(item, schema["items"], path + [index], found)


def of_crd(crd: Mapping[str, Any], version: str) -> CrdSchema:
    """The compiled `openAPIV3Schema` of `version` in a CustomResourceDefinition; KeyError when it has none."""
    for entry in crd["spec"]["versions"]:
        if entry["name"] == version:
            return CrdSchema(entry["schema"]["openAPIV3Schema"])
    raise KeyError(f"CustomResourceDefinition {crd.get('metadata', {}).get('name')} has no version {version}")


@dataclass(frozen=True)
class RuleFailure:
    """An `x-kubernetes-validations` rule that did not hold: where (`path` parts), the schema node that carries it
    (`node`), the rule itself, and `error`, the CEL error when evaluating it failed (None when it returned false)."""

    path: tuple[Any, ...]
    node: Mapping[str, Any]
    rule: Mapping[str, Any]
    error: str | None

    @property
    def message(self) -> str:
        """The rule's message, or "failed rule: <rule>" when it has none (as kube-apiserver says)."""
        return self.rule.get("message") or f"failed rule: {self.rule.get('rule') or ''}"


@functools.lru_cache(maxsize=None)
def _rule_program(rule: str) -> cel.Program:
    return cel.compile(rule, variables=["self", "oldSelf"])


def rule_failures(schema: Mapping[str, Any], obj: Any, old: Any = None) -> list[RuleFailure]:
    """Evaluate every CEL rule of `schema` on `obj`, pre-order, as kube-apiserver does on a write: `self` is the
    value at the rule's node, `oldSelf` the old object's value at the same place; a transition rule (one that reads
    `oldSelf`) is skipped where there is no old value (a create, or a new list item)."""
    failures = []
    for value, old_value, node, path in walk(obj, schema, old):
        for rule in node.get("x-kubernetes-validations") or ():
            text = rule.get("rule") or ""
            if "oldSelf" in text and old_value is None:
                continue
            try:
                ok = _rule_program(text).evaluate({"self": value, "oldSelf": old_value})
            except cel.CelError as exc:
                failures.append(RuleFailure(tuple(path), node, rule, str(exc)))
                continue
            if ok is not True:
                failures.append(RuleFailure(tuple(path), node, rule, None))
    return failures


def walk(value: Any, schema: Any, old: Any = None, path: list[Any] | None = None
         ) -> Iterator[tuple[Any, Any, Mapping[str, Any], list[Any]]]:
    """(value, the old value at the same place or None, its schema, its path) for every non-null value the schema
    describes, pre-order. Properties the schema does not declare are followed through `additionalProperties`
    when that is a schema, else skipped; list items are paired with no old value (as kube-apiserver does for
    lists that are not maps). Objects and schemas are JSON/YAML-decoded dicts."""
    path = [] if path is None else path
    if value is None or not isinstance(schema, dict):
        return
    yield value, old, schema, path
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            sub = properties.get(key)
            if sub is None and isinstance(extra, dict):
                sub = extra
            if sub is not None:
                yield from walk(item, sub, old.get(key) if isinstance(old, dict) else None, path + [key])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            yield from walk(item, schema["items"], None, path + [index])
