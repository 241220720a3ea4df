"""Walking an object along a CRD's OpenAPI v3 schema: the one traversal shared by the policy compilers
(`burstflow policies validate`, unknown fields and `x-kubernetes-validations` rules) and the local API endpoint
(rules evaluated on custom resource writes, with `oldSelf` for transition rules)."""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any


def walk(value: Any, schema: Any, old: Any = None, path: list[Any] | None = None
         ) -> Iterator[tuple[Any, Any, Mapping[str, Any], list[Any]]]:
    """(value, the old value at the same place or None, its schema, its path) for every non-null value the schema
    describes, pre-order. Properties the schema does not declare are followed through `additionalProperties`
    when that is a schema, else skipped; list items are paired with no old value (as kube-apiserver does for
    lists that are not maps)."""
    path = [] if path is None else path
    if value is None or not isinstance(schema, Mapping):
        return
    yield value, old, schema, path
    if isinstance(value, Mapping):
        properties = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            sub = properties.get(key)
            if sub is None and isinstance(extra, Mapping):
                sub = extra
            if sub is not None:
                yield from walk(item, sub, old.get(key) if isinstance(old, Mapping) else None, path + [key])
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for index, item in enumerate(value):
            yield from walk(item, schema["items"], None, path + [index])
