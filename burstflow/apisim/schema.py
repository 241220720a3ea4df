"""CRD `openAPIV3Schema` validation with jsonschema, then the schema's CEL rules, reported as the 422 causes
kube-apiserver 1.24 writes (messages captured from a real server)."""
from __future__ import annotations

import json
from typing import Any

from .rules import BLOCKING_REASONS, UNCHECKED_RULES, rule_causes

_TYPE_NAMES = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object",
               type(None): "null"}


def _convert(node: Any) -> Any:
    """OpenAPI v3 (Kubernetes dialect) -> JSON Schema: `nullable`, `x-kubernetes-int-or-string`, and null tolerated.

    Null is accepted for every typed field because a real server prunes nulls of non-nullable fields before it
    validates, and this sim does not prune.
    """
    if isinstance(node, list):
        return [_convert(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _convert(v) for k, v in node.items() if k != "nullable"}
    if isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if node.get("x-kubernetes-int-or-string") and "type" not in node and "anyOf" not in node:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    return out


def _has_rules(node: Any) -> bool:
    if isinstance(node, dict):
        return "x-kubernetes-validations" in node or any(_has_rules(v) for v in node.values())
    if isinstance(node, list):
        return any(_has_rules(v) for v in node)
    return False


def _field(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _type_name(value: Any) -> str:
    return _TYPE_NAMES.get(type(value), "object")


class SchemaValidator:
    """Compiled once per CRD version; `causes(obj)` returns [] for a valid object."""

    def __init__(self, schema: dict) -> None:
        import jsonschema  # imported here: only CRDs with a schema need it

        self.schema = schema
        self._validator = jsonschema.Draft7Validator(_convert(schema))
        self.has_rules = _has_rules(schema)

    def causes(self, obj: dict, old: dict | None = None) -> list[dict]:
        """Schema errors first; the CEL rules run unless one of them is blocking (required, too long, too many,
        wrong type), in which case one "some validation rules were not checked" cause says so, as on the server."""
        causes = [self._cause(err) for err in sorted(self._validator.iter_errors(obj),
                                                     key=lambda e: list(map(str, e.absolute_path)))]
        if not self.has_rules:
            return causes
        if any(c["reason"] in BLOCKING_REASONS for c in causes):
            causes.append({"reason": "FieldValueInvalid", "message": f'Invalid value: "null": {UNCHECKED_RULES}',
                           "field": "<nil>"})
            return causes
        return causes + rule_causes(self.schema, obj, old)

    @staticmethod
    def _cause(err: Any) -> dict:
        path = _field(err.absolute_path)
        value, limit = err.instance, err.validator_value
        if err.validator == "type":
            expected = [t for t in limit if t != "null"] if isinstance(limit, list) else [limit]
            actual = _type_name(value)
            return {"reason": "FieldValueTypeInvalid",
                    "message": f'Invalid value: "{actual}": {path} in body must be of type {",".join(expected)}: '
                               f'"{actual}"',
                    "field": path}
        if err.validator == "required":
            missing = err.message.split("'")[1] if "'" in err.message else ""
            return {"reason": "FieldValueRequired", "message": "Required value",
                    "field": f"{path}.{missing}" if path else missing}
        if err.validator == "enum":
            supported = ", ".join(json.dumps(v) for v in limit)
            return {"reason": "FieldValueNotSupported",
                    "message": f"Unsupported value: {json.dumps(value)}: supported values: {supported}",
                    "field": path}
        if err.validator == "maxLength":
            return {"reason": "FieldValueTooLong", "message": f"Too long: may not be longer than {limit}",
                    "field": path}
        if err.validator in ("maxItems", "maxProperties"):
            return {"reason": "FieldValueTooMany",
                    "message": f"Too many: {len(value)}: must have at most {limit} items", "field": path}
        detail = {
            "minLength": f"should be at least {limit} chars long",
            "minItems": f"should have at least {limit} items",
            "minProperties": f"should have at least {limit} properties",
            "maximum": f"should be less than or equal to {limit}",
            "minimum": f"should be greater than or equal to {limit}",
            "pattern": f"should match '{limit}'",
        }.get(err.validator)
        # kube-openapi prints the size, not the value, for the count limits.
        shown = len(value) if err.validator in ("minItems", "minProperties") else value
        if detail is None:
            detail, shown = err.message, value
        return {"reason": "FieldValueInvalid",
                "message": f"Invalid value: {json.dumps(shown)[:200]}: {path} in body {detail}", "field": path}
