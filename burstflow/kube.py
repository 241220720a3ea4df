"""The narrow gateway to the Kubernetes API: plain-dict CRUD, list, watch and events over kubernetes-asyncio, an error tree of our own, and the Reflector that keeps a watched cache exact.

This is the only module that imports `kubernetes_asyncio`. Objects go in and come out as plain JSON dicts, never
as typed client models (those drop fields they do not know, such as everything in a custom resource). Every call
builds the raw API path itself, asks the library's `ApiClient.update_params_for_auth` for the credentials (so
rotating service-account tokens and exec plugins keep working) and sends through the aiohttp session of the
library's REST client (`RESTClientObject.pool_manager`, with the proxy and TLS server name the REST client would
pass). The library thus contributes what it is good at: kubeconfig / in-cluster loading, TLS, token authentication
and its connection pool. `ApiClient.call_api` is not used: for plain dicts its generic parameter sanitising walks
every body a second time and adds coroutine layers, about an eighth of the client CPU of a small write; nor is
`RESTClientObject.request`: it encodes every body with the standard `json` module and tests its content type with a
regular expression, where one orjson encoding of the body does (a fifth of the client CPU of a small write).
"""
from __future__ import annotations

import asyncio
import gc
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal
from urllib.parse import quote, urlencode

import aiohttp
import orjson
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.config.config_exception import ConfigException
from yarl import URL

from burstflow.aio import cancel_and_wait
from burstflow.clock import Clock, SystemClock

log = logging.getLogger(__name__)

JSON = dict[str, Any]


# --------------------------------------------------------------------------------------------------- resources


@dataclass(frozen=True)
class Resource:
    """One API resource type: where it lives on the API server and what kind its objects are.

    `group` is "" for the core API (`/api/v1`); `namespaced` says whether objects live in a namespace.
    """

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def key(self) -> tuple[str, str]:
        """(group, plural): what names the resource regardless of version (the local endpoint's store key)."""
        return self.group, self.plural

    @property
    def api_version(self) -> str:
        """The `apiVersion` its objects carry: "v1" for core, else "group/version"."""
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
        """The API path of the collection (no `name`) or of one object, optionally its subresource.

        A namespaced resource without `namespace` addresses the collection across all namespaces (list and watch
        only); asking for one object of a namespaced resource without a namespace raises ValueError, and so does a
        namespace on a cluster-scoped resource.
        """
        if self.namespaced and name is not None and not namespace:
            raise ValueError(f"{self.plural}.{self.group or 'core'}: namespaced resource needs a namespace for {name!r}")
        if not self.namespaced and namespace:
            raise ValueError(f"{self.plural}.{self.group or 'core'}: cluster-scoped resource takes no namespace "
                             f"(got {namespace!r})")
        if subresource is not None and name is None:
            raise ValueError(f"{self.plural}: subresource {subresource!r} needs an object name")
        parts = ["/api/v1" if not self.group else f"/apis/{self.group}/{self.version}"]
        if self.namespaced and namespace:
            parts.append(f"namespaces/{_segment(namespace)}")
        parts.append(self.plural)
        if name is not None:
            if not name:
                raise ValueError(f"{self.plural}: empty object name")
            parts.append(_segment(name))
        if subresource:
            parts.append(subresource)
        return "/".join(parts)


def _segment(value: str) -> str:
    return quote(value, safe="")


PODS = Resource("", "v1", "pods", "Pod")
NAMESPACES = Resource("", "v1", "namespaces", "Namespace", namespaced=False)
CONFIGMAPS = Resource("", "v1", "configmaps", "ConfigMap")
SECRETS = Resource("", "v1", "secrets", "Secret")
EVENTS = Resource("", "v1", "events", "Event")
LEASES = Resource("coordination.k8s.io", "v1", "leases", "Lease")
WORKFLOWS = Resource("argoproj.io", "v1alpha1", "workflows", "Workflow")
BURSTPROFILES = Resource("burstflow.io", "v1alpha1", "burstprofiles", "BurstProfile", namespaced=False)
RESOURCEPOLICIES = Resource("burstflow.io", "v1alpha1", "resourcepolicies", "ResourcePolicy")
CRON_WORKFLOWS = Resource("burstflow.io", "v1alpha1", "cronworkflows", "CronWorkflow")
CRDS = Resource("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition",
                namespaced=False)
MUTATING_WEBHOOKS = Resource("admissionregistration.k8s.io", "v1", "mutatingwebhookconfigurations",
                             "MutatingWebhookConfiguration", namespaced=False)


def resource_for_crd(crd: JSON, version: str | None = None) -> Resource:
    """The Resource a CustomResourceDefinition serves: its `version`, else the storage version."""
    spec = crd["spec"]
    versions = spec.get("versions") or []
    if version is None:
        storage = [v["name"] for v in versions if v.get("storage")] or [v["name"] for v in versions]
        if not storage:
            raise ValueError(f"CRD {crd.get('metadata', {}).get('name')!r} declares no versions")
        version = storage[0]
    return Resource(spec["group"], version, spec["names"]["plural"], spec["names"]["kind"],
                    namespaced=spec.get("scope", "Namespaced") == "Namespaced")


# ------------------------------------------------------------------------------------------------------ errors


class KubeError(Exception):
    """An API call that did not succeed, carrying the server's Status (or a synthetic one).

    `code` is the HTTP status (0 when no response arrived), `reason` the Status reason ("NotFound", "Conflict",
    ...), `message` the server's human-readable message, `status` the whole Status body when there was one.
    """

    def __init__(self, code: int, reason: str, message: str, status: JSON | None = None) -> None:
        super().__init__(f"{code} {reason}: {message}")
        self.code = code
        self.reason = reason
        self.message = message
        self.status = status


class NotFound(KubeError):
    """404: the object (or its namespace, or the resource type) does not exist."""


class Conflict(KubeError):
    """409 Conflict: a write carried a stale resourceVersion; re-read and decide again."""


class AlreadyExists(KubeError):
    """409 AlreadyExists: a create found an object with that name (a deterministic name is a lock)."""


class Gone(KubeError):
    """410: the resourceVersion or continue token is older than the server keeps; list again from scratch."""


class Invalid(KubeError):
    """422: the object failed validation; `status["details"]["causes"]` names the fields."""


class TooManyRequests(KubeError):
    """429: throttled, or a webhook denied with code 429 ("try later"); a transient condition."""


class Unavailable(KubeError):
    """5xx, connection failures and timeouts, and a 422 reporting the server's internal error: the API server could
    not be reached or could not answer."""


_BY_CODE: dict[int, type[KubeError]] = {404: NotFound, 410: Gone, 422: Invalid, 429: TooManyRequests}


def _internal_error(message: str, status: JSON | None) -> bool:
    """A 422 that is the API server's own fault, not a verdict on the object: a field.InternalError (cause type
    "InternalError", message "Internal error: ..."). kube-apiserver 1.24 answers concurrent custom-resource writes now
    and then with "internal error: runtime error: index out of range ... evaluating rule" from a CRD validation rule,
    and the same write then succeeds (benchmarks/cron_scale.py against ../shared/harness: 4 of 2,000 creates)."""
    causes = ((status or {}).get("details") or {}).get("causes") or []
    return (any(isinstance(c, dict) and c.get("reason") == "InternalError" for c in causes)
            or "internal error:" in message.lower())


def error_from_status(code: int, body: JSON | bytes | str | None) -> KubeError:
    """Map an HTTP code and its body (a Status dict, raw bytes, or nothing) to the matching KubeError subclass.

    409 is told apart by `reason`: "AlreadyExists" -> AlreadyExists, anything else -> Conflict. Any 5xx is
    Unavailable, and so is a 422 that reports an internal error of the server (`_internal_error`): retried like any
    outage rather than taken as the object's fault. A body that is not a Status keeps its first 200 characters as
    the message.
    """
    info: JSON = {}
    status: JSON | None = None
    if isinstance(body, (bytes, str)):
        try:
            parsed = orjson.loads(body) if body else None
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            info = status = parsed
        elif body:
            text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
            info = {"message": text.strip()[:200]}
    elif isinstance(body, dict):
        info = status = body
    reason = str(info.get("reason") or _default_reason(code))
    message = str(info.get("message") or f"HTTP {code}")
    if code == 409:
        cls: type[KubeError] = AlreadyExists if reason == "AlreadyExists" else Conflict
    elif code >= 500 or (code == 422 and _internal_error(message, status)):
        cls = Unavailable
    else:
        cls = _BY_CODE.get(code, KubeError)
    return cls(code, reason, message, status)


def _default_reason(code: int) -> str:
    return {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed",
            409: "Conflict", 410: "Expired", 422: "Invalid", 429: "TooManyRequests",
            500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout"}.get(code, "Unknown")


class ConfigError(Exception):
    """No usable connection settings: the kubeconfig is missing or broken, or we are not running in a pod."""


# -------------------------------------------------------------------------------------------------- the gateway


@dataclass(frozen=True)
class WatchEvent:
    """One watch event: `type` is ADDED, MODIFIED, DELETED or BOOKMARK; `object` the object as a dict.

    A BOOKMARK's object carries only `metadata.resourceVersion` (and the kind), as real servers send it.
    """

    type: str
    object: JSON


PatchType = Literal["merge", "json", "strategic"]
_PATCH_CONTENT_TYPES: dict[str, str] = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
}
# client-go's reflector pages lists by 500: big enough for few round trips, small enough to bound one response.
DEFAULT_PAGE_SIZE = 500
# The smallest `limit` a selector list sends: kube-apiserver 1.24.0 (and 1.21-1.23 before kubernetes/kubernetes#110652)
# loses matches on smaller pages, kubernetes/kubernetes#110625. When the selector filters a page's first etcd read, the
# server reads again and grows its result slice (capped at 2048) by copying into an empty one, dropping what it held;
# from 2,048 on, the first read already allocates the cap, so it never grows again.
SELECTOR_MIN_PAGE_SIZE = 2048
# A watch ends on the server's timeout; waiting this much longer on our side tells a dead connection from a quiet one.
_WATCH_GRACE_SECONDS = 30.0
USER_AGENT = "burstflow/0.1"
_AUTH_SETTINGS = ["BearerToken"]
# kubernetes-asyncio's own read buffer: one watch line (one object) can be as large as etcd's 1.5 MiB request limit.
_READ_BUFSIZE = 2**21


def _api_client(configuration: k8s_client.Configuration, *, trust_env: bool) -> k8s_client.ApiClient:
    """The library's ApiClient for `configuration`; without `trust_env`, its REST client's aiohttp session is
    replaced by one that ignores HTTP(S)_PROXY / NO_PROXY / .netrc from the environment.

    kubernetes-asyncio opens its session with `trust_env=True`, and aiohttp then resolves the proxy
    (`asyncio.to_thread`) and, since the bearer token is a header rather than aiohttp auth, looks up ~/.netrc
    (`run_in_executor`) on every request: two thread hops per call, measured at about 0.25 ms of client CPU per
    write, half of what the write costs without them (`benchmarks/cron_scale.py --trust-env` compares). The
    replacement keeps the library's connector, so its TLS context (CA, client certificate, verification settings)
    and pool size are unchanged; a kubeconfig `proxy-url` (Configuration.proxy) is still honoured by the REST
    client.
    """
    api = k8s_client.ApiClient(configuration)
    if not trust_env:
        rest = api.rest_client
        library_session = rest.pool_manager
        rest.pool_manager = aiohttp.ClientSession(connector=library_session.connector, trust_env=False,
                                                  read_bufsize=_READ_BUFSIZE)
        library_session.detach()
    return api


class Kube:
    """A connection to one API server. Open it with `await Kube.connect(...)`, close it with `close()` or
    `async with`. All methods take and return plain dicts; every failure is a KubeError subclass (connection
    errors and timeouts are Unavailable), except `emit_event`, which never raises. `Kube(api)` wraps an ApiClient
    exactly as given (a plain `ApiClient` trusts the environment's proxy settings; see `connect`).
    """

    def __init__(self, api: k8s_client.ApiClient, *, request_timeout: float = 10.0,
                 clock: Clock | None = None) -> None:
        self._api = api
        self._api.user_agent = USER_AGENT
        self._rest = api.rest_client
        self.request_timeout = request_timeout
        self.clock: Clock = clock or SystemClock()

    @classmethod
    async def connect(cls, kubeconfig: str | None = None, *, context: str | None = None,
                      request_timeout: float = 10.0, clock: Clock | None = None, trust_env: bool = False) -> Kube:
        """Connect with the kubeconfig file at `kubeconfig` (its `context`, else the current one), or, when
        `kubeconfig` is None, with the pod's service account (in-cluster config). Raises ConfigError when
        neither works. `request_timeout` bounds every call except watches, which are bounded by their own timeout.

        `trust_env=False` (the default) ignores HTTP(S)_PROXY, NO_PROXY and ~/.netrc: in-cluster API access
        rarely wants a proxy from the environment, and honouring it costs two thread hops per request. Pass
        `trust_env=True` to route through an environment proxy (a `proxy-url` in the kubeconfig works either way).
        """
        configuration = k8s_client.Configuration()
        try:
            if kubeconfig is not None:
                await k8s_config.load_kube_config(config_file=kubeconfig, context=context,
                                                  client_configuration=configuration, persist_config=False)
            else:
                k8s_config.load_incluster_config(client_configuration=configuration)
        except (ConfigException, OSError, ValueError, KeyError, TypeError) as exc:
            where = f"kubeconfig {kubeconfig!r}" if kubeconfig is not None else "in-cluster config (no kubeconfig given)"
            raise ConfigError(f"cannot load {where}: {exc}") from exc
        return cls(_api_client(configuration, trust_env=trust_env), request_timeout=request_timeout, clock=clock)

    @property
    def host(self) -> str:
        """The API server's base URL."""
        return self._api.configuration.host

    async def close(self) -> None:
        await self._api.close()

    async def __aenter__(self) -> Kube:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ------------------------------------------------------------------------------------------------ plumbing

    async def _open(self, method: str, path: str, *, query: list[tuple[str, str]] | None = None,
                    body: Any = None, content_type: str = "application/json",
                    timeout: aiohttp.ClientTimeout | float | None = None) -> aiohttp.ClientResponse:
        """Send one request through the REST client's session: what `RESTClientObject.request` sends (its
        headers, proxy, TLS server name), with the body encoded once by orjson (see `_encode_body`) and the URL
        built already percent-encoded (every path segment is quoted by `Resource.path`, the query by urlencode)."""
        headers = {"Accept": "application/json", "Content-Type": content_type, "User-Agent": USER_AGENT}
        params = query or []
        rest = self._rest
        try:
            await self._api.update_params_for_auth(headers, params, _AUTH_SETTINGS)
            url = self._api.configuration.host + path
            if params:
                url += "?" + urlencode(params)
            options: dict[str, Any] = {}
            if rest.proxy:
                options["proxy"] = rest.proxy
            if rest.proxy_headers:
                options["proxy_headers"] = rest.proxy_headers
            if rest.server_hostname:
                options["server_hostname"] = rest.server_hostname
            return await rest.pool_manager.request(
                method, URL(url, encoded=True), headers=headers,
                data=_encode_body(body) if body is not None else None,
                timeout=_client_timeout(timeout if timeout is not None else self.request_timeout), **options)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise Unavailable(0, "Unavailable", f"{method} {path}: {type(exc).__name__}: {exc}") from exc

    async def _call(self, method: str, path: str, **kwargs: Any) -> JSON:
        return _decode(method, path, *await self._call_raw(method, path, **kwargs))

    async def _call_raw(self, method: str, path: str, **kwargs: Any) -> tuple[int, bytes]:
        """The status and body of a successful call, undecoded; a failure raises its KubeError."""
        response = await self._open(method, path, **kwargs)
        try:
            raw = await response.read()
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise Unavailable(0, "Unavailable", f"{method} {path}: reading the response: {exc}") from exc
        finally:
            response.release()
        if not 200 <= response.status < 300:
            raise error_from_status(response.status, raw)
        return response.status, raw

    # ------------------------------------------------------------------------------------------------ reading

    async def get(self, resource: Resource, name: str, *, namespace: str | None = None,
                  subresource: str | None = None) -> JSON:
        """The object, or NotFound."""
        return await self._call("GET", resource.path(namespace, name, subresource))

    async def list(self, resource: Resource, *, namespace: str | None = None, label_selector: str | None = None,
                   field_selector: str | None = None, page_size: int | None = DEFAULT_PAGE_SIZE,
                   transform: Callable[[JSON], Any] | None = None) -> JSON:
        """Every matching object as one List dict: `items` from all pages, `metadata.resourceVersion` of the
        snapshot (start a watch from it). With `transform`, `items` holds `transform(object)` instead, applied
        page by page, so a big list never holds all its full objects at once. The next page is requested before
        this one is transformed, so the server prepares it meanwhile.

        Pages of `page_size` are followed through `metadata.continue` (None asks for everything at once). With a
        label or field selector a page is never smaller than SELECTOR_MIN_PAGE_SIZE: affected API servers drop
        matches from smaller selector pages. When a continue token expires (410, the server compacted its history
        mid-list) the list restarts from scratch once; a second expiry raises Gone.
        """
        for attempt in (1, 2):
            try:
                return await self._list_pages(resource, namespace=namespace, label_selector=label_selector,
                                              field_selector=field_selector, page_size=page_size,
                                              transform=transform)
            except _ContinueExpired as expired:
                if attempt == 2:
                    raise expired.error from None
                log.info("list %s: continue token expired, listing again from the start", resource.plural)
        raise AssertionError("unreachable")

    async def _list_pages(self, resource: Resource, *, namespace: str | None, label_selector: str | None,
                          field_selector: str | None, page_size: int | None,
                          transform: Callable[[JSON], Any] | None = None) -> JSON:
        path = resource.path(namespace)
        limit = max(page_size, SELECTOR_MIN_PAGE_SIZE) if page_size and (label_selector or field_selector) \
            else page_size

        async def fetch(token: str | None) -> tuple[int, bytes]:
            query = _selectors(label_selector, field_selector)
            if limit:
                query.append(("limit", str(limit)))
            if token:
                query.append(("continue", token))
            try:
                return await self._call_raw("GET", path, query=query)
            except Gone as gone:
                if token:
                    raise _ContinueExpired(gone) from gone
                raise

        items: list[JSON] = []
        first: JSON | None = None
        token: str | None = None
        following: asyncio.Task[tuple[int, bytes]] | None = None
        try:
            raw: tuple[int, bytes] | None = await fetch(None)
            while raw is not None:
                with _gc_paused():
                    page = _decode("GET", path, *raw)
                raw = None
                previous, token = token, (page.get("metadata") or {}).get("continue") or None
                if token and token == previous:
                    raise KubeError(200, "InvalidResponse",
                                    f"list {path}: the server repeated continue token {token!r}")
                # Ask for the next page before slimming this one: the server prepares it while we transform.
                following = asyncio.ensure_future(fetch(token)) if token else None
                if first is None:
                    first = {key: value for key, value in page.items() if key != "items"}
                with _gc_paused():
                    items.extend(map(transform, page.get("items") or []) if transform else page.get("items") or [])
                    # Drop the page before the next one is decoded: with `transform` one page of whole objects is
                    # held at a time (and the next one's bytes), however long the list.
                    del page
                if following is not None:
                    raw = await following
        finally:
            await cancel_and_wait(following)
            if following is not None and not following.cancelled():
                following.exception()  # retrieved: the error that matters is the one already raising, if any
        assert first is not None
        metadata = {k: v for k, v in (first.get("metadata") or {}).items()
                    if k not in ("continue", "remainingItemCount")}
        return {"apiVersion": first.get("apiVersion", resource.api_version),
                "kind": first.get("kind", f"{resource.kind}List"), "metadata": metadata, "items": items}

    async def watch(self, resource: Resource, *, namespace: str | None = None, resource_version: str | None = None,
                    label_selector: str | None = None, field_selector: str | None = None,
                    timeout_seconds: int | None = None, allow_bookmarks: bool = True) -> AsyncIterator[WatchEvent]:
        """Changes after `resource_version`, one WatchEvent per line of the streaming response, until the server
        ends the stream (at `timeout_seconds`). BOOKMARK events are yielded (they only advance the
        resourceVersion).

        Raises Gone when the resourceVersion is too old, whether the server answers HTTP 410 or, as current
        servers do, HTTP 200 with an in-stream ERROR event carrying Status 410 Expired; any other ERROR event
        raises its mapped KubeError; a line that is not a watch event raises KubeError("InvalidResponse").
        A consumer that stops early should wrap the iterator in `contextlib.aclosing` so the connection is
        released at once rather than when the generator is garbage-collected.
        """
        query = _selectors(label_selector, field_selector)
        query.append(("watch", "1"))
        if resource_version:
            query.append(("resourceVersion", resource_version))
        if allow_bookmarks:
            query.append(("allowWatchBookmarks", "true"))
        if timeout_seconds is not None:
            query.append(("timeoutSeconds", str(int(timeout_seconds))))
        total = timeout_seconds + _WATCH_GRACE_SECONDS if timeout_seconds is not None else None
        timeout = aiohttp.ClientTimeout(total=total, connect=self.request_timeout,
                                        sock_connect=self.request_timeout)
        path = resource.path(namespace)
        response = await self._open("GET", path, query=query, timeout=timeout)
        try:
            if response.status != 200:
                raise error_from_status(response.status, await response.read())
            buffer = b""
            lineno = 0
            try:
                async for chunk in response.content.iter_any():
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        lineno += 1
                        if line.strip():
                            yield _parse_watch_line(path, lineno, line)
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                raise Unavailable(0, "Unavailable", f"watch {path}: stream broken: {type(exc).__name__}: {exc}") from exc
            if buffer.strip():
                yield _parse_watch_line(path, lineno + 1, buffer)
        finally:
            response.close()

    # ------------------------------------------------------------------------------------------------ writing

    async def create(self, resource: Resource, body: JSON | bytes, *, namespace: str | None = None,
                     dry_run: bool = False) -> JSON:
        """Create `body` (in `namespace`, else its `metadata.namespace`); returns the stored object, whose name
        the server chose when the body has only `metadata.generateName`. AlreadyExists when the name is taken;
        with `dry_run` the server validates and admits but stores nothing. A body already encoded (JSON bytes) is
        sent as it is and needs `namespace`.
        """
        ns = _namespace_of(resource, body, namespace)
        query = [("dryRun", "All")] if dry_run else []
        return await self._call("POST", resource.path(ns), query=query, body=body)

    async def replace(self, resource: Resource, body: JSON, *, namespace: str | None = None,
                      subresource: str | None = None) -> JSON:
        """PUT `body` over the object it names. When `body.metadata.resourceVersion` is set the write only
        succeeds if the object has not changed since (else Conflict). `subresource="status"` writes only status.
        """
        ns = _namespace_of(resource, body, namespace)
        name = (body.get("metadata") or {}).get("name")
        if not name:
            raise ValueError(f"replace {resource.plural}: body has no metadata.name")
        return await self._call("PUT", resource.path(ns, name, subresource), body=body)

    async def patch(self, resource: Resource, name: str, patch: JSON | list[JSON], *,
                    namespace: str | None = None, patch_type: PatchType = "merge",
                    subresource: str | None = None) -> JSON:
        """Apply a merge patch (RFC 7386, a dict), a JSON patch (RFC 6902, a list of ops; a failing `test` op is
        Invalid) or a strategic merge patch; returns the patched object.
        """
        if patch_type not in _PATCH_CONTENT_TYPES:
            raise ValueError(f"patch_type must be one of {sorted(_PATCH_CONTENT_TYPES)}, not {patch_type!r}")
        return await self._call("PATCH", resource.path(namespace, name, subresource), body=patch,
                                content_type=_PATCH_CONTENT_TYPES[patch_type])

    async def delete(self, resource: Resource, name: str, *, namespace: str | None = None,
                     propagation: Literal["Foreground", "Background", "Orphan"] | None = None,
                     resource_version: str | None = None, grace_period_seconds: int | None = None) -> JSON:
        """Delete the object; returns what the server answers (the deleted object, or a Success Status).
        `resource_version` makes it a precondition (Conflict if the object changed); NotFound if absent.
        """
        options: JSON = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if propagation:
            options["propagationPolicy"] = propagation
        if resource_version:
            options["preconditions"] = {"resourceVersion": resource_version}
        if grace_period_seconds is not None:
            options["gracePeriodSeconds"] = grace_period_seconds
        return await self._call("DELETE", resource.path(namespace, name), body=options)

    async def emit_event(self, involved: JSON, *, reason: str, message: str, type: str = "Normal",
                         component: str) -> JSON | None:
        """Record a core/v1 Event about `involved` (any object dict) with a server-generated name
        (`<object name>.<random>`). Never raises: a failure is logged and None returned, because losing an
        Event must never fail the work it reports on.
        """
        try:
            meta = involved.get("metadata") or {}
            namespace = meta.get("namespace") or "default"
            now = self.clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")
            ref = {"apiVersion": involved.get("apiVersion"), "kind": involved.get("kind"),
                   "namespace": meta.get("namespace"), "name": meta.get("name"), "uid": meta.get("uid"),
                   "resourceVersion": meta.get("resourceVersion")}
            event = {
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"generateName": f"{meta.get('name') or 'object'}.", "namespace": namespace},
                "involvedObject": {k: v for k, v in ref.items() if v},
                "reason": reason, "message": message, "type": type,
                "source": {"component": component},
                "firstTimestamp": now, "lastTimestamp": now, "count": 1,
                "reportingComponent": component,
            }
            return await self.create(EVENTS, event, namespace=namespace)
        except Exception as exc:  # noqa: BLE001 - the contract is "never raises"
            log.warning("could not record event %s on %s/%s: %s", reason, involved.get("kind"),
                        (involved.get("metadata") or {}).get("name"), exc)
            return None


def encode_json(value: Any) -> bytes:
    """JSON bytes as the API server writes them (the wire codec of the gateway and the local endpoint). orjson
    writes non-ASCII as UTF-8 (as kube-apiserver does) and is several times faster than the standard encoder
    kubernetes-asyncio's REST client would use; what it refuses (integers beyond 64 bits, non-string keys) goes
    through the standard encoder."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, separators=(",", ":")).encode()


def _encode_body(body: Any) -> bytes:
    """A request body as JSON bytes (`encode_json`); bytes are sent as given."""
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body)
    return encode_json(body)


@lru_cache(maxsize=64)
def _timeout_of(seconds: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=seconds)


def _client_timeout(timeout: aiohttp.ClientTimeout | float) -> aiohttp.ClientTimeout:
    """The aiohttp timeout of a call: a ClientTimeout as given, a number of seconds as the total (one object per
    value, not one per request)."""
    return timeout if isinstance(timeout, aiohttp.ClientTimeout) else _timeout_of(float(timeout))


def _decode(method: str, path: str, status: int, raw: bytes) -> JSON:
    try:
        data = orjson.loads(raw) if raw else {}
    except ValueError as exc:
        raise KubeError(status, "InvalidResponse", f"{method} {path}: response is not JSON: {raw[:200]!r}") from exc
    if not isinstance(data, dict):
        raise KubeError(status, "InvalidResponse", f"{method} {path}: response is not a JSON object")
    return data


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for a synchronous stretch (no await inside, so no other task runs).

    Decoding and slimming a list page allocates tens of thousands of dicts at once; with the collector on, those
    allocations trigger collections that walk everything the process holds (at 100,000 pods the records kept so
    far), which measured as two thirds of a rebuild's CPU. Reference counting still frees the page when it is
    dropped; only the cycle hunt is deferred to the next allocation after the stretch.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class _ContinueExpired(Exception):
    def __init__(self, error: Gone) -> None:
        super().__init__(str(error))
        self.error = error


def _selectors(label_selector: str | None, field_selector: str | None) -> list[tuple[str, str]]:
    query: list[tuple[str, str]] = []
    if label_selector:
        query.append(("labelSelector", label_selector))
    if field_selector:
        query.append(("fieldSelector", field_selector))
    return query


def _namespace_of(resource: Resource, body: JSON, namespace: str | None) -> str | None:
    if not resource.namespaced:
        return None
    if not namespace and isinstance(body, bytes):
        raise ValueError(f"{resource.plural}: an encoded body needs the namespace given")
    ns = namespace or (body.get("metadata") or {}).get("namespace")
    if not ns:
        raise ValueError(f"{resource.plural}: no namespace given and body has no metadata.namespace")
    return ns


def _parse_watch_line(path: str, lineno: int, line: bytes) -> WatchEvent:
    try:
        data = orjson.loads(line)
    except ValueError as exc:
        raise KubeError(0, "InvalidResponse", f"watch {path}: line {lineno} is not JSON: {line[:200]!r}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("type"), str) or not isinstance(data.get("object"), dict):
        raise KubeError(0, "InvalidResponse",
                        f"watch {path}: line {lineno} is not a watch event (needs type and object): {line[:200]!r}")
    if data["type"] == "ERROR":
        status = data["object"]
        raise error_from_status(int(status.get("code") or 500), status)
    return WatchEvent(data["type"], data["object"])


# -------------------------------------------------------------------------------------------------- reflector

ObjectKey = tuple[str, str]
EventCallback = Callable[[WatchEvent], Awaitable[None]]


def object_key(obj: JSON) -> ObjectKey:
    """(namespace, name) of an object; namespace is "" for cluster-scoped objects."""
    meta = obj.get("metadata") or {}
    return (meta.get("namespace") or "", meta.get("name") or "")


@dataclass
class Reflector:
    """Keeps `cache` ({(namespace, name): object}, one dict for the reflector's lifetime, so consumers may hold
    it) equal to the server's objects of one resource, and tells `on_event` about every change.

    It lists, then watches from the list's resourceVersion, tracking the resourceVersion through events and
    BOOKMARKs so a re-watch loses nothing. When the server says Gone it lists again and delivers a resync:
    synthetic ADDED for objects it did not have, MODIFIED for objects whose resourceVersion changed, DELETED
    (with the last known object) for objects that vanished, so a consumer that mirrors the events ends up exact.
    The cache is updated before `on_event` is awaited, so the callback reads the new state. BOOKMARKs are not
    delivered. Errors back off exponentially on the injected clock (`backoff_initial` doubling up to
    `backoff_max`); an exception raised by `on_event` is logged and does not stop the reflector.
    `synced` is set once the first list has been delivered. With `transform`, the cache and the events hold
    `transform(object)` (a slimmer value, keyed as the object was) instead of the object itself. With `keep`, only
    objects whose key `(namespace, name)` it accepts are cached and delivered; the others are dropped as their list
    page or watch event arrives (a shard's reflector holds only its namespaces' share).
    """

    kube: Kube
    resource: Resource
    namespace: str | None = None
    label_selector: str | None = None
    field_selector: str | None = None
    on_event: EventCallback | None = None
    clock: Clock | None = None
    # client-go's reflector re-watches every 5-10 minutes; a fixed 5 minutes keeps servers' watch caches happy.
    watch_timeout_seconds: int = 300
    backoff_initial: float = 0.8
    backoff_max: float = 30.0
    page_size: int | None = DEFAULT_PAGE_SIZE
    transform: Callable[[JSON], Any] | None = None
    keep: Callable[[ObjectKey], bool] | None = None
    cache: dict[ObjectKey, JSON] = field(default_factory=dict, init=False)
    resource_version: str | None = field(default=None, init=False)
    synced: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    relists: int = field(default=0, init=False)
    errors: int = field(default=0, init=False)
    _task: asyncio.Task[None] | None = field(default=None, init=False, repr=False)
    _stopping: bool = field(default=False, init=False, repr=False)

    @property
    def has_synced(self) -> bool:
        return self.synced.is_set()

    def start(self) -> asyncio.Task[None]:
        """Run in a background task (idempotent); returns the task."""
        if self._task is None or self._task.done():
            self._stopping = False
            self._task = asyncio.get_running_loop().create_task(self.run(), name=f"reflector-{self.resource.plural}")
        return self._task

    async def wait_synced(self) -> None:
        await self.synced.wait()

    async def stop(self) -> None:
        """Stop watching and wait for the task to end. The cache keeps its last contents."""
        self._stopping = True
        await cancel_and_wait(self._task)

    async def __aenter__(self) -> Reflector:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def run(self) -> None:
        """List and watch until `stop()`; never returns on its own."""
        clock = self.clock or self.kube.clock
        delay = self.backoff_initial
        need_list = True
        while not self._stopping:
            try:
                if need_list:
                    await self._relist()
                    need_list = False
                    delay = self.backoff_initial
                async for event in self.kube.watch(
                        self.resource, namespace=self.namespace, resource_version=self.resource_version,
                        label_selector=self.label_selector, field_selector=self.field_selector,
                        timeout_seconds=self.watch_timeout_seconds, allow_bookmarks=True):
                    await self._apply(event)
                    delay = self.backoff_initial
            except Gone as exc:
                log.info("watch %s: %s; listing again", self.resource.plural, exc.message)
                need_list = True
            except KubeError as exc:
                self.errors += 1
                log.warning("reflector %s: %s; retrying in %.1fs", self.resource.plural, exc, delay)
                await clock.sleep(delay)
                delay = min(delay * 2, self.backoff_max)

    async def _relist(self) -> None:
        transform = self.transform
        keyed = (lambda obj: (object_key(obj), transform(obj))) if transform else (lambda obj: (object_key(obj), obj))
        if self.keep is not None:  # dropped page by page, before `transform` (None items are left out below)
            keep, whole = self.keep, keyed
            keyed = lambda obj: whole(obj) if keep(object_key(obj)) else None  # noqa: E731
        listing = await self.kube.list(self.resource, namespace=self.namespace, label_selector=self.label_selector,
                                       field_selector=self.field_selector, page_size=self.page_size, transform=keyed)
        with _gc_paused():
            items = listing.get("items") or []
            fresh = dict(items if self.keep is None else filter(None, items))
            changes: list[WatchEvent] = []
            for key, obj in fresh.items():
                old = self.cache.get(key)
                if old is None:
                    changes.append(WatchEvent("ADDED", obj))
                elif (old != obj) if transform else _rv(old) != _rv(obj):
                    changes.append(WatchEvent("MODIFIED", obj))
            for key, old in self.cache.items():
                if key not in fresh:
                    changes.append(WatchEvent("DELETED", old))
            self.cache.clear()
            self.cache.update(fresh)
        self.resource_version = (listing.get("metadata") or {}).get("resourceVersion") or self.resource_version
        if self.has_synced:
            self.relists += 1
        for change in changes:
            await self._deliver(change)
        self.synced.set()

    async def _apply(self, event: WatchEvent) -> None:
        rv = _rv(event.object)
        if rv:
            self.resource_version = rv
        if event.type == "BOOKMARK":
            return
        key = object_key(event.object)
        if self.keep is not None and not self.keep(key):
            return
        if self.transform:
            event = WatchEvent(event.type, self.transform(event.object))
        if event.type == "DELETED":
            self.cache.pop(key, None)
        else:
            self.cache[key] = event.object
        await self._deliver(event)

    async def _deliver(self, event: WatchEvent) -> None:
        if self.on_event is None:
            return
        try:
            await self.on_event(event)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a consumer bug must not stop the cache from tracking the server
            log.exception("reflector %s: on_event failed for %s %s", self.resource.plural, event.type,
                          object_key(event.object))


def _rv(obj: JSON) -> str | None:
    return (obj.get("metadata") or {}).get("resourceVersion")
