"""CRD `openAPIV3Schema` validation with jsonschema, reported as the 422 causes kube-apiserver writes."""
from __future__ import annotations

import json
from typing import Any

_TYPE_NAMES = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object",
               type(None): "null"}
UNCHECKED_RULES = ("some validation rules were not checked because the object was invalid; correct the existing "
                   "errors to complete validation")


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

        self._validator = jsonschema.Draft7Validator(_convert(schema))
        self.has_rules = _has_rules(schema)

    def causes(self, obj: dict) -> list[dict]:
        causes = []
        for err in sorted(self._validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path))):
            path = _field(err.absolute_path)
            if err.validator == "type":
                expected = err.validator_value
                expected = [t for t in expected if t != "null"] if isinstance(expected, list) else [expected]
                actual = _type_name(err.instance)
                causes.append({"reason": "FieldValueTypeInvalid",
                               "message": f'Invalid value: "{actual}": {path} in body must be of type '
                                          f'{",".join(expected)}: "{actual}"',
                               "field": path})
            elif err.validator == "required":
                missing = err.message.split("'")[1] if "'" in err.message else ""
                causes.append({"reason": "FieldValueRequired", "message": "Required value",
                               "field": f"{path}.{missing}" if path else missing})
            elif err.validator == "enum":
                supported = ", ".join(json.dumps(v) for v in err.validator_value)
                causes.append({"reason": "FieldValueNotSupported",
                               "message": f"Unsupported value: {json.dumps(err.instance)}: supported values: "
                                          f"{supported}",
                               "field": path})
            else:
                causes.append({"reason": "FieldValueInvalid",
                               "message": f"Invalid value: {json.dumps(err.instance)[:200]}: {path} in body "
                                          f"{err.message}",
                               "field": path})
        if causes and self.has_rules:
            causes.append({"reason": "FieldValueInvalid", "message": f'Invalid value: "null": {UNCHECKED_RULES}',
                           "field": "<nil>"})
        return causes
