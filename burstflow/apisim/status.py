"""Kubernetes `Status` bodies and the exception that carries them, worded the way kube-apiserver words them."""
from __future__ import annotations

from typing import Any

REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}

DNS1123_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start "
    "and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
DNS1123_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end "
    "with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)


def status_body(code: int, message: str, *, reason: str | None = None, details: dict | None = None,
                metadata: dict | None = None) -> dict[str, Any]:
    """A `Status` of kind Failure; `details` is omitted when None (as the 429 webhook denial shows)."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": metadata or {},
        "status": "Failure",
        "message": message,
        "reason": reason if reason is not None else REASONS.get(code, "Unknown"),
    }
    if details is not None:
        body["details"] = details
    body["code"] = code
    return body


class ApiError(Exception):
    """An API failure answered as HTTP `code` with a `Status` body; raised anywhere in the sim, encoded once."""

    def __init__(self, code: int, message: str, *, reason: str | None = None, details: dict | None = None,
                 metadata: dict | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.body = status_body(code, message, reason=reason, details=details, metadata=metadata)
        self.headers = headers or {}


def qualified(plural: str, group: str) -> str:
    """`pods` for core, `workflows.argoproj.io` for a group: how messages name a resource."""
    return f"{plural}.{group}" if group else plural


def _details(name: str, plural: str, group: str) -> dict:
    details: dict[str, Any] = {"name": name}
    if group:
        details["group"] = group
    details["kind"] = plural
    return details


def not_found(plural: str, group: str, name: str) -> ApiError:
    return ApiError(404, f'{qualified(plural, group)} "{name}" not found', details=_details(name, plural, group))


def already_exists(plural: str, group: str, name: str) -> ApiError:
    return ApiError(409, f'{qualified(plural, group)} "{name}" already exists', reason="AlreadyExists",
                    details=_details(name, plural, group))


def conflict(plural: str, group: str, name: str, why: str | None = None) -> ApiError:
    why = why or "the object has been modified; please apply your changes to the latest version and try again"
    return ApiError(409, f'Operation cannot be fulfilled on {qualified(plural, group)} "{name}": {why}',
                    reason="Conflict", details=_details(name, plural, group))


def invalid(kind: str, group: str, name: str, causes: list[dict]) -> ApiError:
    """422 Invalid; each cause is {"reason", "message", "field"}; one cause is printed bare, several in brackets."""
    parts = [f'{c["field"]}: {c["message"]}' for c in causes]
    joined = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    qualified_kind = f"{kind}.{group}" if group else kind
    details: dict[str, Any] = {"name": name}
    if group:
        details["group"] = group
    details["kind"] = kind
    details["causes"] = causes
    return ApiError(422, f'{qualified_kind} "{name}" is invalid: {joined}', details=details)


def bad_request(message: str) -> ApiError:
    """400 BadRequest: a real server's Status for it has no `details` (captured from kube-apiserver 1.24)."""
    return ApiError(400, message)


def resource_not_served() -> ApiError:
    return ApiError(404, "the server could not find the requested resource", details={})


def method_not_allowed() -> ApiError:
    return ApiError(405, "the server does not allow this method on the requested resource", details={})


def expired(message: str, *, metadata: dict | None = None) -> ApiError:
    return ApiError(410, message, reason="Expired", metadata=metadata)


def cause(reason: str, field: str, message: str) -> dict:
    return {"reason": reason, "message": message, "field": field}
