"""A custom resource's schema check on the local endpoint: `burstflow.crdschema` violations, then the schema's CEL
rules, reported as the 422 causes kube-apiserver 1.24 writes."""
from __future__ import annotations

from typing import Any

from burstflow.crdschema import CrdSchema

from .rules import BLOCKING_REASONS, UNCHECKED_RULES, rule_causes


def _has_rules(node: Any) -> bool:
    if isinstance(node, dict):
        return "x-kubernetes-validations" in node or any(_has_rules(v) for v in node.values())
    if isinstance(node, list):
        return any(_has_rules(v) for v in node)
    return False


class SchemaValidator:
    """Compiled once per CRD version; `causes(obj)` returns [] for a valid object."""

    def __init__(self, schema: dict) -> None:
        self.schema = schema
        self._schema = CrdSchema(schema)
        self.has_rules = _has_rules(schema)

    def causes(self, obj: dict, old: dict | None = None) -> list[dict]:
        """Schema errors first; the CEL rules run unless one of them is blocking (required, too long, too many,
        wrong type), in which case one "some validation rules were not checked" cause says so, as on the server."""
        causes = [violation.cause() for violation in self._schema.violations(obj)]
        if not self.has_rules:
            return causes
        if any(c["reason"] in BLOCKING_REASONS for c in causes):
            causes.append({"reason": "FieldValueInvalid", "message": f'Invalid value: "null": {UNCHECKED_RULES}',
                           "field": "<nil>"})
            return causes
        return causes + rule_causes(self.schema, obj, old)
