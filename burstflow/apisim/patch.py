"""The three PATCH bodies a client may send: JSON merge patch, JSON patch, and strategic merge patch (a subset)."""
from __future__ import annotations

import copy
from typing import Any

import jsonpatch

from .status import ApiError

MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
APPLY = "application/apply-patch+yaml"

# patchMergeKey of the list fields our objects carry (k8s.io/api struct tags); other lists are replaced.
_MERGE_KEYS = {
    "containers": "name", "initContainers": "name", "ephemeralContainers": "name", "volumes": "name",
    "env": "name", "volumeMounts": "mountPath", "ports": "containerPort", "imagePullSecrets": "name",
    "conditions": "type", "ownerReferences": "uid", "tolerations": "key", "containerStatuses": "name",
    "initContainerStatuses": "name",
}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = merge_patch(result.get(k), v)
    return result


def strategic_merge_patch(target: Any, patch: Any, field: str | None = None) -> Any:
    """Merge patch, except lists with a known merge key merge item by item (`$patch: delete` removes an item)."""
    if isinstance(patch, list) and isinstance(target, list) and field in _MERGE_KEYS:
        key = _MERGE_KEYS[field]
        result = [copy.deepcopy(t) for t in target]
        for item in patch:
            if not isinstance(item, dict) or key not in item:
                return copy.deepcopy(patch)
            idx = next((i for i, t in enumerate(result) if isinstance(t, dict) and t.get(key) == item[key]), None)
            if item.get("$patch") == "delete":
                if idx is not None:
                    result.pop(idx)
            elif idx is None:
                result.append(copy.deepcopy(item))
            else:
                result[idx] = strategic_merge_patch(result[idx], item)
        return result
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if k.startswith("$"):
            continue
        if v is None:
            result.pop(k, None)
        else:
            result[k] = strategic_merge_patch(result.get(k), v, k)
    return result


def apply_patch(content_type: str, obj: dict, patch: Any, *, custom: bool) -> dict:
    """The patched copy of `obj`; raises ApiError 415/400/422 worded as kube-apiserver does."""
    if content_type == MERGE:
        if not isinstance(patch, dict):
            raise ApiError(400, "json: cannot unmarshal array into Go value of type map[string]interface {}",
                           details={})
        return merge_patch(obj, patch)
    if content_type == JSON_PATCH:
        if not isinstance(patch, list):
            raise ApiError(400, "json: cannot unmarshal object into Go value of type jsonpatch.Patch", details={})
        try:
            return jsonpatch.JsonPatch(patch).apply(copy.deepcopy(obj))
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError, KeyError, IndexError,
                ValueError, AttributeError):
            # kube-apiserver answers every failed op (a `test` that does not hold, a missing path) this way.
            raise ApiError(422, "the server rejected our request due to an error in our request", details={})
    if content_type == STRATEGIC and not custom:
        if not isinstance(patch, dict):
            raise ApiError(400, "json: cannot unmarshal array into Go value of type map[string]interface {}",
                           details={})
        return strategic_merge_patch(obj, patch)
    accepted = "application/json-patch+json, application/merge-patch+json"
    if not custom:
        accepted += ", application/strategic-merge-patch+json"
    raise ApiError(415, f"the body of the request was in an unknown format - accepted media types include: "
                        f"{accepted}", details={})
