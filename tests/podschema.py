"""Validates a pod against `io.k8s.api.core.v1.Pod` from the real API server's OpenAPI v2 document (fixtures)."""
from __future__ import annotations

import functools
import json
from typing import Any

import jsonschema

from tests.conftest import FIXTURES

POD = "io.k8s.api.core.v1.Pod"


@functools.lru_cache(maxsize=1)
def _validator() -> jsonschema.Draft4Validator:
    document = json.loads((FIXTURES / "api" / "openapi-v2-core-subset.json").read_text())
    # The document's refs are "#/definitions/..."; keep them resolvable by validating inside the whole document.
    schema = {"$ref": f"#/definitions/{POD}", "definitions": document["definitions"]}
    # int-or-string and quantity fields carry `format` only; Kubernetes' own formats are not JSON Schema formats.
    return jsonschema.Draft4Validator(schema)


def _without_nulls(value: Any) -> Any:
    # The API server decodes `null` as "unset" (it sends `creationTimestamp: null` itself); OpenAPI v2 cannot say so.
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def pod_errors(pod: Any) -> list[str]:
    """Every schema violation as "field.path: message" (empty when the pod is valid)."""
    return [f"{'.'.join(map(str, e.absolute_path)) or '<pod>'}: {e.message}"
            for e in _validator().iter_errors(_without_nulls(pod))]


def assert_valid_pod(pod: Any) -> None:
    errors = pod_errors(pod)
    assert not errors, "not a valid Pod:\n" + "\n".join(errors)
