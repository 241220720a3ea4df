"""`ApiSim`: an in-memory Kubernetes API server on 127.0.0.1 that kubernetes-asyncio cannot tell from the real one
for what Burstflow does (REST verbs, watch, discovery, CRDs, mutating webhooks), plus hooks for tests."""
from __future__ import annotations

import asyncio
import base64
import copy
import json
import logging
import random
import uuid
from collections import Counter, OrderedDict
from dataclasses import dataclass
from datetime import timezone
from pathlib import Path
from typing import Any, Callable

import aiohttp
import orjson
import yaml
from aiohttp import web

from burstflow import kube
from burstflow.clock import Clock, SystemClock
from burstflow.selectors import SelectorError, parse_label_selector

from .admission import Attributes, Dispatcher
from .defaults import (crd_causes, crd_status, default_pod, lease_causes, lease_decode_check, metadata_causes,
                       pod_causes, qos_class, random_suffix)
from .faults import Faults, Target
from .fields import fields_match, parse_field_selector
from .patch import apply_patch
from .rules import crd_rule_causes
from .resources import BUILTIN_GROUPS, VERSION_INFO, ResourceType, builtin_types, crd_resource_type
from .status import (ApiError, already_exists, bad_request, conflict, expired, invalid, method_not_allowed,
                     not_found, resource_not_served, status_body)
from .store import Store, TooOld

log = logging.getLogger("burstflow.apisim")

# The resources the endpoint treats specially, as its store keys them: (group, plural) of the gateway's definitions.
PODS, LEASES, NAMESPACES, SECRETS, CRDS, MWCS = (
    r.key for r in (kube.PODS, kube.LEASES, kube.NAMESPACES, kube.SECRETS, kube.CRDS, kube.MUTATING_WEBHOOKS))
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
# Large enough for Argo's full CRDs (about 1.3 MB of JSON each).
MAX_BODY = 32 * 1024 * 1024
_META_ORDER = ("name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation",
               "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations",
               "ownerReferences", "finalizers", "managedFields")
_TRUE = ("true", "True", "1")
# Watch lines kept for the other watchers of the same change (`ApiSim._event_line`): a burst's worth of writes.
EVENT_LINES = 1024


def _str_map(v: Any) -> bool:
    return isinstance(v, dict) and all(isinstance(x, str) for x in v.values())


# Fields of ObjectMeta whose type the sim relies on; a real server refuses other types while decoding the body.
_META_TYPES: tuple[tuple[str, str, Callable[[Any], bool]], ...] = (
    ("name", "string", lambda v: isinstance(v, str)),
    ("generateName", "string", lambda v: isinstance(v, str)),
    ("namespace", "string", lambda v: isinstance(v, str)),
    ("resourceVersion", "string", lambda v: isinstance(v, str)),
    ("labels", "map[string]string", _str_map),
    ("annotations", "map[string]string", _str_map),
    ("finalizers", "[]string", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)),
    ("ownerReferences", "[]v1.OwnerReference", lambda v: isinstance(v, list) and all(isinstance(x, dict) for x in v)),
)
_GO_KINDS = {bool: "bool", int: "number", float: "number", str: "string", list: "array", dict: "object"}


def _unmarshal_error(field: str, value: Any, go_type: str, *, kind: str = "", version: str = "v1") -> str:
    """Go's json decoder's error, behind the prefix the server puts on a body it cannot decode into `kind`."""
    prefix = f'{kind} in version "{version}" cannot be handled as a {kind}: ' if kind else ""
    return (f"{prefix}json: cannot unmarshal {_GO_KINDS.get(type(value), 'value')} into Go struct field "
            f"{field} of type {go_type}")


def _ts(clock: Clock) -> str:
    return clock.now().astimezone(timezone.utc).replace(microsecond=0, tzinfo=None).isoformat() + "Z"


# The gateway's wire codec (orjson, the standard encoder for what it refuses): a 1,000-pod list page encodes ~8x
# faster than with the standard encoder alone.
_dumps = kube.encode_json


def _encode_continue(rv: int, start: str) -> str:
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": start}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_continue(token: str) -> tuple[int, str]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if data.get("v") != "meta.k8s.io/v1":
            raise ValueError("wrong version")
        return int(data["rv"]), str(data["start"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise bad_request(f"continue key is not valid: {exc}")


@dataclass
class Route:
    group: str
    version: str
    plural: str
    namespace: str | None
    name: str | None
    sub: str | None


class ApiSim:
    """The local Kubernetes API endpoint; see docs/development/local-endpoint.md.

    `history` is how many changes the watch cache keeps (a watch or continue token from before them answers
    410 Expired); `bookmark_interval` is the seconds between BOOKMARKs on watches that allow them; `clock` drives
    creation timestamps, watch timeouts, bookmarks, webhook timeouts and injected latency.
    """

    def __init__(self, *, history: int = 1000, bookmark_interval: float = 60.0, clock: Clock | None = None,
                 host: str = "127.0.0.1", port: int = 0, namespaces: tuple[str, ...] = (),
                 watch_timeout: float = 1800.0, seed: int | None = None) -> None:
        self.clock: Clock = clock or SystemClock()
        self.history = history
        self.bookmark_interval = bookmark_interval
        self.watch_timeout = watch_timeout
        self.host = host
        self.port = port
        self.faults = Faults()
        self.requests: Counter[tuple[str, str]] = Counter()
        self._rng = random.Random(seed)
        self._extra_namespaces = namespaces
        self.store = Store(history=history)
        self._types: dict[tuple[str, str], ResourceType] = {}
        for rt in builtin_types():
            self._types[rt.key] = rt
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._dispatcher: Dispatcher | None = None
        self._closing = asyncio.Event()
        # (object identity, event type, apiVersion) -> (object, its watch line): see `_event_line`.
        self._lines: OrderedDict[tuple[int, str, str], tuple[dict, bytes]] = OrderedDict()
        for ns in (*SYSTEM_NAMESPACES, *namespaces):
            if self.store.get(NAMESPACES, "", ns) is None:
                self.put_object("namespaces", {"metadata": {"name": ns}})

    # ----- lifecycle -------------------------------------------------------------------------------------------
    async def start(self) -> "ApiSim":
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._errors])
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._closing = asyncio.Event()
        # Watches end as soon as `_closing` is set, so a short grace is enough for in-flight requests.
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        sockets = site._server.sockets  # type: ignore[union-attr]
        self.port = sockets[0].getsockname()[1]
        self._session = aiohttp.ClientSession()
        self._dispatcher = Dispatcher(session=self._session, clock=self.clock)
        log.info("apisim serving on %s", self.url)
        return self

    async def stop(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> "ApiSim":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def kubeconfig(self, *, namespace: str = "default") -> dict:
        """A kubeconfig (as a dict) whose current context points at this server."""
        return {
            "apiVersion": "v1", "kind": "Config", "preferences": {},
            "clusters": [{"name": "apisim", "cluster": {"server": self.url}}],
            "users": [{"name": "apisim", "user": {"token": "apisim"}}],
            "contexts": [{"name": "apisim", "context": {"cluster": "apisim", "user": "apisim",
                                                          "namespace": namespace}}],
            "current-context": "apisim",
        }

    def write_kubeconfig(self, path: str | Path, *, namespace: str = "default") -> Path:
        path = Path(path)
        path.write_text(yaml.safe_dump(self.kubeconfig(namespace=namespace), sort_keys=False))
        return path

    # ----- test hooks ------------------------------------------------------------------------------------------
    def resource(self, name: str) -> ResourceType:
        """A served resource by plural (`pods`), `plural.group` (`workflows.argoproj.io`) or kind (`Pod`)."""
        matches = [rt for rt in self._types.values()
                   if name in (rt.plural, f"{rt.plural}.{rt.group}", rt.kind)]
        if name == "events":
            matches = [rt for rt in matches if rt.group == ""]
        if len(matches) != 1:
            served = sorted(f"{rt.plural}.{rt.group}" if rt.group else rt.plural for rt in self._types.values())
            raise KeyError(f"{name!r} names {len(matches)} served resources; served: {', '.join(served)}")
        return matches[0]

    def objects(self, resource: str, namespace: str | None = None) -> list[dict]:
        """Deep copies of the stored objects of `resource` (all namespaces when `namespace` is None)."""
        return copy.deepcopy(self.store.items(self.resource(resource).key, namespace))

    def get_object(self, resource: str, namespace: str | None, name: str) -> dict | None:
        obj = self.store.get(self.resource(resource).key, namespace or "", name)
        return copy.deepcopy(obj) if obj is not None else None

    def put_object(self, resource: str, obj: dict) -> dict:
        """Store `obj` directly (no admission, no validation), filling uid/creationTimestamp/resourceVersion as a
        create would; replaces an existing object of the same name. Emits ADDED or MODIFIED."""
        rt = self.resource(resource)
        obj = copy.deepcopy(obj)
        obj["kind"], obj["apiVersion"] = rt.kind, rt.api_version(rt.versions[0])
        meta = obj.setdefault("metadata", {})
        existing = self.store.get(rt.key, meta.get("namespace") or "", meta.get("name", ""))
        if existing is not None:
            meta["uid"] = existing["metadata"]["uid"]
            meta["creationTimestamp"] = existing["metadata"]["creationTimestamp"]
        else:
            self._prepare_create(rt, obj)
        stored = self.store.write(rt.key, self._ordered(rt, obj))
        self._after_write(rt, stored)
        return copy.deepcopy(stored)

    def set_pod_phase(self, namespace: str, name: str, phase: str, *, reason: str | None = None) -> dict:
        """Move a pod to `phase` as a kubelet would (Running adds the Ready condition and startTime); bumps the
        resourceVersion and emits MODIFIED. Raises KeyError for an unknown pod."""
        pod = self.store.get(PODS, namespace, name)
        if pod is None:
            raise KeyError(f"pod {namespace}/{name} not found")
        new = copy.deepcopy(pod)
        status = new.setdefault("status", {})
        status["phase"] = phase
        if phase in ("Running", "Succeeded", "Failed"):
            ready = "True" if phase == "Running" else "False"
            status["conditions"] = [{"type": "Ready", "status": ready, "lastProbeTime": None,
                                     "lastTransitionTime": None}]
            status.setdefault("startTime", _ts(self.clock))
        if reason:
            status["reason"] = reason
        return copy.deepcopy(self.store.write(PODS, new))

    # ----- HTTP plumbing ---------------------------------------------------------------------------------------
    @web.middleware
    async def _errors(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as err:
            return web.Response(body=_dumps(err.body), status=err.code, content_type="application/json",
                                headers=err.headers)
        except web.HTTPException:
            raise
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug of ours must still answer like a server, never drop the connection
            log.exception("apisim: unhandled error on %s %s", request.method, request.path_qs)
            body = status_body(500, f"Internal error occurred: {exc}", details={"causes": [{"message": str(exc)}]})
            return web.Response(body=_dumps(body), status=500, content_type="application/json")

    @staticmethod
    def _json(obj: Any, status: int = 200, warnings: list[str] | None = None) -> web.Response:
        headers = {}
        if warnings:
            headers["Warning"] = ", ".join(f'299 - {json.dumps(w)}' for w in warnings)
        return web.Response(body=_dumps(obj), status=status, content_type="application/json", headers=headers)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        delay = self.faults.delay_for(request.method, path)
        if delay > 0:
            await self.clock.sleep(delay)
        segs = [s for s in path.split("/") if s]
        if path in ("/healthz", "/livez", "/readyz"):
            return web.Response(text="ok")
        if not segs or segs[0] not in ("api", "apis", "version"):
            raise resource_not_served()
        discovery = self._discovery(segs)
        if discovery is not None:
            self.faults.check(request.method, path, Target())
            if request.method != "GET":
                raise method_not_allowed()
            return self._json(discovery)
        route = self._route(segs)
        rt = self._types.get((route.group, route.plural))
        if rt is None or route.version not in rt.versions:
            raise resource_not_served()
        if route.namespace is not None and not rt.namespaced:
            raise resource_not_served()
        if route.name is None and route.sub is not None:
            raise resource_not_served()
        if route.sub is not None and not (route.sub == "status" and rt.status_subresource):
            raise resource_not_served()
        q = request.query
        method = request.method
        verb = {"GET": "get" if route.name else ("watch" if q.get("watch") in _TRUE else "list"),
                "POST": "create", "PUT": "update", "PATCH": "patch",
                "DELETE": "delete" if route.name else "deletecollection"}.get(method)
        if verb is None or (verb == "create" and route.name) or (verb in ("update", "patch") and not route.name):
            raise method_not_allowed()
        self.requests[(verb, rt.plural + (f"/{route.sub}" if route.sub else ""))] += 1
        self.faults.check(method, path, Target(rt.plural, rt.group, route.name or ""))
        ns = route.namespace if rt.namespaced else None
        if verb == "get":
            return self._json(self._present(rt, route.version, self._get(rt, ns, route.name)))
        if verb == "list":
            return self._json(self._list(rt, route.version, ns, q))
        if verb == "watch":
            return await self._watch(request, rt, route.version, ns, q)
        dry_run = self._dry_run(q)
        if verb == "create":
            if rt.namespaced and ns is None:
                raise method_not_allowed()
            obj, warnings = await self._create(rt, route.version, ns, await self._body(request), q, dry_run)
            return self._json(self._present(rt, route.version, obj), 201, warnings)
        if verb == "update":
            body = await self._body(request)
            obj, warnings = await self._update(rt, route.version, ns, route.name, route.sub, body, q, dry_run)
            return self._json(self._present(rt, route.version, obj), 200, warnings)
        if verb == "patch":
            ctype = request.content_type
            patch = await self._body(request, any_json=True)
            obj, warnings = await self._patch(rt, route.version, ns, route.name, route.sub, ctype, patch, q,
                                              dry_run)
            return self._json(self._present(rt, route.version, obj), 200, warnings)
        raw = await request.read()
        options = self._parse(raw, request.content_type) if raw.strip() else {}
        if not isinstance(options, dict):
            raise bad_request("the body of a delete request must be a DeleteOptions object")
        dry_run = dry_run or (options.get("dryRun") or []) == ["All"]
        if verb == "delete":
            return self._json(self._delete(rt, route.version, ns, route.name, options, q, dry_run))
        return self._json(self._delete_collection(rt, route.version, ns, options, q, dry_run))

    @staticmethod
    def _dry_run(q) -> bool:
        values = q.getall("dryRun", [])
        for v in values:
            if v != "All":
                raise bad_request(f'Invalid value: "{v}": supported values: "All"')
        return bool(values)

    @staticmethod
    def _parse(raw: bytes, content_type: str) -> Any:
        try:
            if "yaml" in content_type:
                return yaml.safe_load(raw)
            try:
                return orjson.loads(raw)  # strict JSON, several times faster
            except ValueError:
                return json.loads(raw)  # what orjson refuses and json takes (big integers, NaN), or json's error
        except (ValueError, yaml.YAMLError) as exc:
            raise bad_request(f"couldn't get version/kind; json parse error: {exc}")

    async def _body(self, request: web.Request, *, any_json: bool = False) -> Any:
        raw = await request.read()
        if not raw.strip():
            raise bad_request("the body of the request was empty")
        body = self._parse(raw, request.content_type)
        if not any_json and not isinstance(body, dict):
            raise bad_request(f"couldn't get version/kind; json parse error: expected an object, got "
                              f"{type(body).__name__}")
        return body

    def _route(self, segs: list[str]) -> Route:
        if segs[0] == "api":
            group, version, rest = "", segs[1], segs[2:]
        else:
            group, version, rest = segs[1], segs[2], segs[3:]
        namespace = None
        namespace_subresource = len(rest) == 3 and rest[2] in ("status", "finalize")
        if rest and rest[0] == "namespaces" and len(rest) >= 3 and not namespace_subresource:
            namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            raise resource_not_served()
        return Route(group, version, rest[0], namespace, rest[1] if len(rest) > 1 else None,
                     rest[2] if len(rest) > 2 else None)

    # ----- discovery -------------------------------------------------------------------------------------------
    def _group_versions(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {name: list(versions) for name, versions, _ in BUILTIN_GROUPS}
        for rt in self._types.values():
            if rt.custom:
                have = groups.setdefault(rt.group, [])
                have.extend(v for v in rt.versions if v not in have)
        return groups

    def _group_doc(self, name: str, versions: list[str]) -> dict:
        preferred = next((p for g, _, p in BUILTIN_GROUPS if g == name), versions[0])
        return {"name": name,
                "versions": [{"groupVersion": f"{name}/{v}", "version": v} for v in versions],
                "preferredVersion": {"groupVersion": f"{name}/{preferred}", "version": preferred}}

    def _discovery(self, segs: list[str]) -> dict | None:
        """The discovery document for this path, None when the path names resources; 404 for unknown groups."""
        if len(segs) > (3 if segs[0] == "apis" else 2):
            return None  # a resource path (every request but discovery's): no group table to build
        if segs == ["version"]:
            return dict(VERSION_INFO)
        if segs[0] == "version":
            raise resource_not_served()
        if segs == ["api"]:
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": f"{self.host}:{self.port}"}]}
        if segs == ["apis"]:
            return {"kind": "APIGroupList", "apiVersion": "v1",
                    "groups": [self._group_doc(g, vs) for g, vs in self._group_versions().items()]}
        groups = self._group_versions()
        if segs[0] == "apis" and len(segs) == 2:
            if segs[1] not in groups:
                raise resource_not_served()
            return {"kind": "APIGroup", "apiVersion": "v1", **self._group_doc(segs[1], groups[segs[1]])}
        if segs[0] == "api" and len(segs) == 2:
            group, version = "", segs[1]
            if version != "v1":
                raise resource_not_served()
        elif segs[0] == "apis" and len(segs) == 3:
            group, version = segs[1], segs[2]
            if version not in groups.get(group, []):
                raise resource_not_served()
        else:
            return None
        resources = [e for rt in self._types.values() if rt.group == group and version in rt.versions
                     for e in rt.discovery_entries(version)]
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{group}/{version}" if group else
                version, "resources": resources}

    # ----- object shaping --------------------------------------------------------------------------------------
    @staticmethod
    def _ordered(rt: ResourceType, obj: dict) -> dict:
        """Key order as the server encodes: typed objects field by field, custom resources sorted."""
        meta = obj.get("metadata") or {}
        if rt.custom:
            out = {k: obj[k] for k in sorted(obj)}
            out["metadata"] = {k: meta[k] for k in sorted(meta)}
            return out
        out = {"kind": obj.get("kind"), "apiVersion": obj.get("apiVersion")}
        out["metadata"] = {k: meta[k] for k in _META_ORDER if k in meta}
        out["metadata"].update({k: v for k, v in meta.items() if k not in out["metadata"]})
        out.update({k: v for k, v in obj.items() if k not in out})
        return out

    @staticmethod
    def _present(rt: ResourceType, version: str, obj: dict) -> dict:
        api_version = rt.api_version(version)
        if obj.get("apiVersion") == api_version:
            return obj
        return {**obj, "apiVersion": api_version}

    def _check_kind(self, rt: ResourceType, version: str, obj: dict) -> None:
        kind, api_version = obj.get("kind"), obj.get("apiVersion")
        if kind and kind != rt.kind:
            raise bad_request(f"the server could not find the requested resource: {kind} is not {rt.kind}")
        if api_version and api_version != rt.api_version(version):
            raise bad_request(f"the API version in the data ({api_version}) does not match the expected API "
                              f"version ({rt.api_version(version)})")
        meta = obj.get("metadata", {})
        if not isinstance(meta, dict):
            raise bad_request(_unmarshal_error(f"{rt.kind}.metadata", meta, "v1.ObjectMeta", kind=rt.kind,
                                               version=version))
        for key, go_type, ok in _META_TYPES:
            if meta.get(key) is not None and not ok(meta[key]):
                # Built-ins decode into their typed struct; custom resources decode metadata on its own.
                where = f"ObjectMeta.{key}" if rt.custom else f"ObjectMeta.metadata.{key}"
                raise bad_request(_unmarshal_error(where, meta[key], go_type, kind=rt.kind, version=version))
        if rt.key == LEASES:
            lease_decode_check(obj)
        obj["kind"], obj["apiVersion"] = rt.kind, rt.api_version(version)

    @staticmethod
    def _normalize_secret(obj: dict) -> None:
        """Fold `stringData` into base64 `data` and default `type`, as the Secret REST storage does."""
        data = obj.get("data") or {}
        if not isinstance(data, dict):
            raise bad_request(_unmarshal_error("data", data, "map[string][]uint8"))
        for key, value in data.items():
            try:
                base64.b64decode(value, validate=True)
            except (ValueError, TypeError):
                raise bad_request(f"illegal base64 data in Secret data key {key!r}")
        string_data = obj.pop("stringData", None) or {}
        if not _str_map(string_data):
            raise bad_request(_unmarshal_error("stringData", string_data, "map[string]string"))
        for key, value in string_data.items():
            data[key] = base64.b64encode(value.encode()).decode()
        if data:
            obj["data"] = data
        obj.setdefault("type", "Opaque")

    def _prepare_create(self, rt: ResourceType, obj: dict) -> None:
        """BeforeCreate: generated name, uid, timestamps, generation and the status a fresh object starts with."""
        meta = obj["metadata"]
        if not meta.get("name") and meta.get("generateName"):
            for _ in range(16):
                candidate = meta["generateName"] + random_suffix(self._rng)
                if self.store.get(rt.key, meta.get("namespace") or "", candidate) is None:
                    break
            meta["name"] = candidate
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _ts(self.clock)
        for k in ("deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(k, None)
        meta["resourceVersion"] = ""  # holds its place in the key order; the store writes the real value
        if rt.custom or rt.key == CRDS:
            meta["generation"] = 1
        if rt.key == PODS:
            obj["status"] = {"phase": "Pending", "qosClass": qos_class(obj)}
        elif rt.key == NAMESPACES:
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta.get("name", "")
            obj.setdefault("spec", {})["finalizers"] = ["kubernetes"]
            obj["status"] = {"phase": "Active"}
        elif rt.key == CRDS:
            if not crd_causes(obj):
                obj["status"] = crd_status(obj, meta["creationTimestamp"])
        elif rt.custom and rt.status_subresource:
            obj.pop("status", None)
        elif rt.key == ("", "events"):
            for k, v in (("involvedObject", {}), ("source", {}), ("firstTimestamp", None), ("lastTimestamp", None)):
                obj.setdefault(k, v)
            obj.setdefault("eventTime", None)
            obj.setdefault("reportingComponent", "")
            obj.setdefault("reportingInstance", "")

    def _validate(self, rt: ResourceType, version: str, obj: dict, *, create: bool, old: dict | None = None
                  ) -> None:
        causes = []
        if create:
            causes += metadata_causes(obj, label=rt.key == NAMESPACES, check_names=rt.validate_names)
        if rt.key == PODS:
            causes += pod_causes(obj)
        elif rt.key == LEASES:
            causes += lease_causes(obj)
        elif rt.key == CRDS:
            causes += crd_causes(obj)
            if not causes:
                causes += crd_rule_causes(obj)
            if not causes:
                try:
                    crd_resource_type(obj)
                except Exception as exc:  # a schema jsonschema cannot compile is the CRD author's error
                    causes.append({"reason": "FieldValueInvalid", "message": f"Invalid value: {exc}",
                                   "field": "spec.versions[0].schema.openAPIV3Schema"})
        elif rt.custom and version in rt.schemas:
            causes += rt.schemas[version].causes(obj, old)
        if causes:
            # events.k8s.io Events are validated as the core Event they are stored as, so errors name no group.
            group = "" if rt.key == ("events.k8s.io", "events") else rt.group
            raise invalid(rt.kind, group, (obj.get("metadata") or {}).get("name") or "", causes)

    def _after_write(self, rt: ResourceType, stored: dict) -> None:
        if rt.key == CRDS and not stored["metadata"].get("deletionTimestamp"):
            new_rt = crd_resource_type(stored)
            self._types[new_rt.key] = new_rt

    # ----- verbs -----------------------------------------------------------------------------------------------
    def _get(self, rt: ResourceType, ns: str | None, name: str) -> dict:
        obj = self.store.get(rt.key, ns or "", name)
        if obj is None:
            raise not_found(rt.plural, rt.group, name)
        return obj

    def _namespace_labels(self, rt: ResourceType, ns: str | None) -> dict | None:
        if not rt.namespaced:
            return None
        nso = self.store.get(NAMESPACES, "", ns or "")
        if nso is None:
            raise not_found("namespaces", "", ns or "")
        return nso["metadata"].get("labels") or {}

    async def _admit(self, rt: ResourceType, version: str, operation: str, obj: dict, old: dict | None,
                     ns: str | None, dry_run: bool, q) -> tuple[dict, list[str]]:
        configs = self.store.items(MWCS)
        if not configs or rt.group == "admissionregistration.k8s.io" or self._dispatcher is None:
            return obj, []
        options: dict[str, Any] = {"kind": "CreateOptions" if operation == "CREATE" else "UpdateOptions",
                                   "apiVersion": "meta.k8s.io/v1"}
        if dry_run:
            options["dryRun"] = ["All"]
        for key in ("fieldManager", "fieldValidation"):
            if q.get(key):
                options[key] = q[key]
        attrs = Attributes(operation=operation, rt=rt, version=version, namespace=ns,
                           name=obj["metadata"].get("name") or None, obj=obj, old=old, dry_run=dry_run,
                           options=options, namespace_labels=self._namespace_labels(rt, ns))
        outcome = await self._dispatcher.admit(configs, attrs)
        return outcome.obj, outcome.warnings

    async def _create(self, rt: ResourceType, version: str, ns: str | None, obj: dict, q,
                      dry_run: bool) -> tuple[dict, list[str]]:
        self._check_kind(rt, version, obj)
        meta = obj.setdefault("metadata", {})
        if rt.namespaced:
            if meta.get("namespace") and meta["namespace"] != ns:
                raise bad_request("the namespace of the provided object does not match the namespace sent on the "
                                  "request")
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        if meta.get("resourceVersion"):
            raise ApiError(500, "resourceVersion should not be set on objects to be created",
                           details={"causes": [{"message": "resourceVersion should not be set on objects to be "
                                                           "created"}]})
        for k in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation"):
            meta.pop(k, None)
        if rt.namespaced:
            nso = self.store.get(NAMESPACES, "", ns or "")
            if nso is None:
                raise not_found("namespaces", "", ns or "")
            if nso["metadata"].get("deletionTimestamp"):
                raise ApiError(403, f"{rt.plural} \"{meta.get('name') or meta.get('generateName', '')}\" is "
                                    f"forbidden: unable to create new content in namespace {ns} because it is "
                                    f"being terminated", reason="Forbidden", details={})
        meta["creationTimestamp"] = None  # what a webhook sees: the timestamp is set after admission
        if rt.key == SECRETS:
            self._normalize_secret(obj)
        if rt.key == PODS:
            default_pod(obj, self._rng)
        obj, warnings = await self._admit(rt, version, "CREATE", self._ordered(rt, obj), None, ns, dry_run, q)
        if rt.namespaced:
            obj["metadata"]["namespace"] = ns
        else:
            obj["metadata"].pop("namespace", None)
        if rt.key == PODS:
            default_pod(obj, self._rng)
        self._prepare_create(rt, obj)
        self._validate(rt, version, obj, create=True)
        obj = self._ordered(rt, obj)
        name = obj["metadata"]["name"]
        if self.store.get(rt.key, ns or "", name) is not None:
            raise already_exists(rt.plural, rt.group, name)
        if dry_run:
            obj["metadata"].pop("resourceVersion", None)  # nothing was stored, so there is no version
            return obj, warnings
        stored = self.store.write(rt.key, obj)
        self._after_write(rt, stored)
        return stored, warnings

    async def _update(self, rt: ResourceType, version: str, ns: str | None, name: str, sub: str | None,
                      obj: dict, q, dry_run: bool) -> tuple[dict, list[str]]:
        self._check_kind(rt, version, obj)
        meta = obj.setdefault("metadata", {})
        if meta.get("name") and meta["name"] != name:
            raise bad_request(f"the name of the object ({meta['name']}) does not match the name on the URL ({name})")
        if rt.namespaced and meta.get("namespace") and meta["namespace"] != ns:
            raise bad_request("the namespace of the provided object does not match the namespace sent on the "
                              "request")
        existing = self._get(rt, ns, name)
        if rt.key == SECRETS:
            self._normalize_secret(obj)
        rv = meta.get("resourceVersion")
        if not rv and not rt.allow_unconditional_update:
            raise invalid(rt.kind, rt.group, name, [{"reason": "FieldValueInvalid", "message":
                          "Invalid value: 0x0: must be specified for an update", "field": "metadata.resourceVersion"}])
        if rv and rv != existing["metadata"]["resourceVersion"]:
            raise conflict(rt.plural, rt.group, name)
        return await self._replace(rt, version, existing, obj, sub, q, dry_run, guarded=bool(rv))

    async def _patch(self, rt: ResourceType, version: str, ns: str | None, name: str, sub: str | None,
                     ctype: str, patch: Any, q, dry_run: bool) -> tuple[dict, list[str]]:
        existing = self._get(rt, ns, name)
        patched = apply_patch(ctype, self._present(rt, version, existing), patch, custom=rt.custom)
        if not isinstance(patched, dict) or not isinstance(patched.get("metadata"), dict):
            raise invalid(rt.kind, rt.group, name, [{"reason": "FieldValueRequired", "message": "Required value",
                                                     "field": "metadata"}])
        rv = patched["metadata"].get("resourceVersion")
        if rv and rv != existing["metadata"]["resourceVersion"]:
            raise conflict(rt.plural, rt.group, name)
        self._check_kind(rt, version, patched)
        return await self._replace(rt, version, existing, patched, sub, q, dry_run, guarded=True)

    @staticmethod
    def _keep_system_metadata(meta: dict, old_meta: dict) -> None:
        """BeforeUpdate: what an update cannot change is taken from the stored object."""
        for k in ("name", "namespace", "uid", "creationTimestamp", "deletionTimestamp",
                  "deletionGracePeriodSeconds", "generation"):
            if k in old_meta:
                meta[k] = old_meta[k]
            else:
                meta.pop(k, None)

    async def _replace(self, rt: ResourceType, version: str, existing: dict, new: dict, sub: str | None, q,
                       dry_run: bool, *, guarded: bool) -> tuple[dict, list[str]]:
        """The shared tail of update and patch: subresource rules, generation, admission, validation, write."""
        old_meta = existing["metadata"]
        if sub == "status" and rt.key == PODS:
            # The pod status strategy keeps the spec and owner references and takes the rest of metadata (labels,
            # annotations, finalizers) from the request, as a real server does (unlike custom resources).
            status = new.get("status")
            # Shallow copies of the stored object suffice here and below: stored objects are never mutated (see
            # store.py), and only the top level and the metadata of `new` are written to.
            new = {**existing, "metadata": new["metadata"]}
            self._keep_system_metadata(new["metadata"], old_meta)
            for k in ("ownerReferences",):
                if k in old_meta:
                    new["metadata"][k] = old_meta[k]
                else:
                    new["metadata"].pop(k, None)
            if status is None:
                new.pop("status", None)
            else:
                new["status"] = status
        elif sub == "status":
            status = new.get("status")
            new = {**existing, "metadata": dict(old_meta)}
            if status is None:
                new.pop("status", None)
            else:
                new["status"] = status
        else:
            self._keep_system_metadata(new["metadata"], old_meta)
            if rt.status_subresource:
                if "status" in existing:
                    new["status"] = existing["status"]
                else:
                    new.pop("status", None)
        warnings: list[str] = []
        if sub is None:
            new, warnings = await self._admit(rt, version, "UPDATE", new, self._present(rt, version, existing),
                                              old_meta.get("namespace"), dry_run, q)
        if rt.custom or rt.key == CRDS:
            ignored = {"metadata", "status"} if rt.status_subresource else {"metadata"}
            before = {k: v for k, v in existing.items() if k not in ignored | {"apiVersion"}}
            after = {k: v for k, v in new.items() if k not in ignored | {"apiVersion"}}
            if before != after:
                new["metadata"]["generation"] = int(old_meta.get("generation", 1)) + 1
        self._validate(rt, version, new, create=False, old=existing)
        new["metadata"]["resourceVersion"] = old_meta["resourceVersion"]
        new = self._ordered(rt, {**new, "apiVersion": existing.get("apiVersion")})
        current = self.store.get(rt.key, old_meta.get("namespace") or "", old_meta["name"])
        if current is None:
            raise not_found(rt.plural, rt.group, old_meta["name"])
        if current["metadata"]["resourceVersion"] != old_meta["resourceVersion"]:
            if guarded:
                raise conflict(rt.plural, rt.group, old_meta["name"])
            new["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        if new == current or dry_run:
            return (current if new == current else new), warnings
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            return self._remove(rt, new, "Background"), warnings
        stored = self.store.write(rt.key, new)
        self._after_write(rt, stored)
        return stored, warnings

    def _delete(self, rt: ResourceType, version: str, ns: str | None, name: str, options: dict, q,
                dry_run: bool) -> dict:
        existing = self._get(rt, ns, name)
        pre = options.get("preconditions") or {}
        meta = existing["metadata"]
        if pre.get("uid") and pre["uid"] != meta["uid"]:
            raise conflict(rt.plural, rt.group, name, f"Precondition failed: UID in precondition: {pre['uid']}, "
                                                       f"UID in object meta: {meta['uid']}")
        if pre.get("resourceVersion") and pre["resourceVersion"] != meta["resourceVersion"]:
            raise conflict(rt.plural, rt.group, name,
                           f"Precondition failed: ResourceVersion in precondition: {pre['resourceVersion']}, "
                           f"ResourceVersion in object meta: {meta['resourceVersion']}")
        policy = options.get("propagationPolicy") or q.get("propagationPolicy") or "Background"
        if policy not in ("Background", "Foreground", "Orphan"):
            raise bad_request(f'Unsupported value: "{policy}": supported values: "Foreground", "Background", '
                              f'"Orphan"')
        if dry_run:
            result = existing
        elif meta.get("finalizers"):
            result = existing
            if not meta.get("deletionTimestamp"):
                marked = copy.deepcopy(existing)
                marked["metadata"]["deletionTimestamp"] = _ts(self.clock)
                marked["metadata"]["deletionGracePeriodSeconds"] = 0
                result = self.store.write(rt.key, marked)
        else:
            result = self._remove(rt, existing, policy)
        if rt.delete_returns_object:
            return self._present(rt, version, result)
        details: dict[str, Any] = {"name": name}
        if rt.group:
            details["group"] = rt.group
        details.update({"kind": rt.plural, "uid": meta["uid"]})
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}

    def _remove(self, rt: ResourceType, obj: dict, policy: str) -> dict:
        """Delete now (synchronously, so atomically) with everything a controller would do after: a pod's
        graceful MODIFIED first, a namespace's or CRD's contents, and owner-reference garbage collection."""
        result = obj
        if rt.key in (PODS, NAMESPACES, CRDS):
            marked = copy.deepcopy(obj)
            marked["metadata"].setdefault("deletionTimestamp", _ts(self.clock))
            if rt.key == PODS:
                marked["metadata"].setdefault("deletionGracePeriodSeconds", 0)
            if rt.key == NAMESPACES:
                marked["status"] = {"phase": "Terminating"}
            result = self.store.write(rt.key, marked)
            obj = result
        if rt.key == NAMESPACES:
            ns = obj["metadata"]["name"]
            for other in list(self._types.values()):
                if other.namespaced:
                    for child in self.store.items(other.key, ns):
                        if self.store.get(other.key, ns, child["metadata"]["name"]) is not None:
                            self._remove(other, child, "Background")
        if rt.key == CRDS:
            defined = crd_resource_type(obj)
            for child in self.store.items(defined.key):
                self._remove(defined, child, "Background")
            self._types.pop(defined.key, None)
            self.store.drop_resource(defined.key)
        final = self.store.remove(rt.key, obj)
        if rt.key not in (PODS, NAMESPACES, CRDS):
            result = final
        self._collect_garbage(obj["metadata"]["uid"], policy)
        return result

    def _collect_garbage(self, owner_uid: str, policy: str) -> None:
        for key, dep in self.store.dependents(owner_uid):
            dep_rt = self._types.get(key)
            if dep_rt is None:
                continue
            refs = dep["metadata"].get("ownerReferences") or []
            remaining = [r for r in refs if r.get("uid") != owner_uid]
            alive = [r for r in remaining if self.store.find_uid(r.get("uid", ""))]
            if policy == "Orphan" or alive:
                updated = copy.deepcopy(dep)
                if remaining:
                    updated["metadata"]["ownerReferences"] = remaining
                else:
                    updated["metadata"].pop("ownerReferences", None)
                self.store.write(key, updated)
            else:
                self._remove(dep_rt, dep, "Background")

    def _delete_collection(self, rt: ResourceType, version: str, ns: str | None, options: dict, q,
                           dry_run: bool) -> dict:
        listed = self._list(rt, version, ns, q)
        policy = options.get("propagationPolicy") or q.get("propagationPolicy") or "Background"
        deleted = []
        for item in listed["items"]:
            meta = item["metadata"]
            current = self.store.get(rt.key, meta.get("namespace") or "", meta["name"])
            if current is None:
                continue
            deleted.append(current if dry_run else self._remove(rt, current, policy))
        listed["items"] = [self._list_item(rt, version, o) for o in deleted]
        listed["metadata"] = {"resourceVersion": str(self.store.rv)}
        return listed

    def _list_item(self, rt: ResourceType, version: str, obj: dict) -> dict:
        if rt.custom:
            return self._present(rt, version, obj)
        return {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}

    def _selectors(self, rt: ResourceType, q) -> tuple[Callable[[dict], bool], bool]:
        try:
            labels = parse_label_selector(q.get("labelSelector"))
        except SelectorError as exc:
            raise bad_request(exc.message) from None
        fields = parse_field_selector(q.get("fieldSelector"), rt.fields, custom=rt.custom)

        def match(obj: dict) -> bool:
            return labels.matches(obj["metadata"].get("labels")) and fields_match(fields, obj, rt.fields)

        return match, not labels.empty or bool(fields)

    def _list(self, rt: ResourceType, version: str, ns: str | None, q) -> dict:
        match, selective = self._selectors(rt, q)
        try:
            limit = int(q.get("limit") or 0)
        except ValueError:
            raise bad_request(f'invalid limit "{q.get("limit")}": must be an integer')
        all_namespaces = rt.namespaced and ns is None

        def key_of(obj: dict) -> str:
            m = obj["metadata"]
            return f"{m['namespace']}/{m['name']}" if all_namespaces else m["name"]

        token = q.get("continue")
        if token:
            list_rv, start = _decode_continue(token)
            items = self.store.list_from(rt.key, ns, list_rv, start)
            if items is None:
                raise expired("The provided continue parameter is too old to display a consistent list result. "
                              "You can start a new list without the continue parameter, or use the continue token "
                              "in this response to retrieve the remainder of the results. Continuing with the "
                              "provided token results in an inconsistent list - objects that were created, "
                              "modified, or deleted between the time the first chunk was returned and now may "
                              "show up in the list.", metadata={"continue": _encode_continue(-1, start)})
        else:
            list_rv = self.store.rv
            items = self.store.list_from(rt.key, ns, list_rv, keep=bool(limit))
        # As etcd paging does: stop once the page is full and another key follows; the continue key is the last
        # key returned, and remainingItemCount is only known when no selector filtered the keys.
        page, more, last = [], False, -1
        for i, obj in enumerate(items):
            if limit and len(page) == limit:
                more = True
                break
            if match(obj):
                page.append(obj)
                last = i
        metadata: dict[str, Any] = {"resourceVersion": str(list_rv)}
        if more:
            metadata["continue"] = _encode_continue(list_rv, key_of(items[last]) + "\x00")
            if not selective:
                metadata["remainingItemCount"] = len(items) - last - 1
        elif rt.custom:
            metadata["continue"] = ""
        out_items = [self._list_item(rt, version, o) for o in page]
        if rt.custom:
            return {"apiVersion": rt.api_version(version), "items": out_items, "kind": rt.list_kind,
                    "metadata": metadata}
        return {"kind": rt.list_kind, "apiVersion": rt.api_version(version), "metadata": metadata,
                "items": out_items}

    def _event_line(self, rt: ResourceType, version: str, etype: str, obj: dict) -> bytes:
        """One watch event as its line on the wire, encoded once however many watchers it goes to: every watcher
        of a resource is handed the same stored object (stored objects are never mutated), so the line is kept
        by the object's identity (the entry holds the object, so the identity cannot be reused while kept)."""
        api_version = rt.api_version(version)
        key = (id(obj), etype, api_version)
        cached = self._lines.get(key)
        if cached is not None and cached[0] is obj:
            return cached[1]
        line = _dumps({"type": etype, "object": self._present(rt, version, obj)}) + b"\n"
        self._lines[key] = (obj, line)
        if len(self._lines) > EVENT_LINES:
            self._lines.popitem(last=False)
        return line

    def _bookmark(self, rt: ResourceType, version: str) -> dict:
        obj = {"kind": rt.kind, "apiVersion": rt.api_version(version),
               "metadata": {"resourceVersion": str(self.store.rv), **rt.bookmark_meta_extra}}
        obj.update(copy.deepcopy(rt.bookmark_body))
        return {"type": "BOOKMARK", "object": obj}

    async def _watch(self, request: web.Request, rt: ResourceType, version: str, ns: str | None,
                     q) -> web.StreamResponse:
        match, _ = self._selectors(rt, q)
        rv_param = q.get("resourceVersion")
        try:
            since = None if rv_param in (None, "", "0") else int(rv_param)
            timeout = float(q["timeoutSeconds"]) if q.get("timeoutSeconds") else self.watch_timeout
        except ValueError:
            raise bad_request(f'invalid watch parameters: resourceVersion "{rv_param}", timeoutSeconds '
                              f'"{q.get("timeoutSeconds")}"')
        bookmarks = q.get("allowWatchBookmarks") in _TRUE
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json",
                                                        "Cache-Control": "no-cache, private"})
        resp.enable_chunked_encoding()
        try:
            watcher = self.store.start_watch(rt.key, ns, match, since)
        except TooOld as exc:
            await resp.prepare(request)
            body = status_body(410, str(exc), reason="Expired")
            await resp.write(_dumps({"type": "ERROR", "object": body}) + b"\n")
            await resp.write_eof()
            return resp
        await resp.prepare(request)
        start = self.clock.monotonic()
        deadline = start + timeout
        next_bookmark = start + self.bookmark_interval
        closing = asyncio.ensure_future(self._closing.wait())
        getter: asyncio.Future | None = None
        sleeper: asyncio.Future | None = None
        try:
            while True:
                lines = []
                while not watcher.queue.empty():
                    etype, obj = watcher.queue.get_nowait()
                    lines.append(self._event_line(rt, version, etype, obj))
                if lines:
                    await resp.write(b"".join(lines))
                now = self.clock.monotonic()
                if now >= deadline:
                    if bookmarks:
                        await resp.write(_dumps(self._bookmark(rt, version)) + b"\n")
                    break
                if bookmarks and now >= next_bookmark:
                    await resp.write(_dumps(self._bookmark(rt, version)) + b"\n")
                    next_bookmark = now + self.bookmark_interval
                wake = min(deadline, next_bookmark) if bookmarks else deadline
                getter = asyncio.ensure_future(watcher.queue.get())
                sleeper = asyncio.ensure_future(self.clock.sleep(max(0.0, wake - now)))
                await asyncio.wait({getter, sleeper, closing}, return_when=asyncio.FIRST_COMPLETED)
                sleeper.cancel()
                if getter.done():
                    etype, obj = getter.result()
                    await resp.write(self._event_line(rt, version, etype, obj))
                else:
                    getter.cancel()
                if closing.done():
                    break
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            # Also when the handler itself is cancelled (client gone, server stopping): nothing left pending.
            for pending in (closing, getter, sleeper):
                if pending is not None:
                    pending.cancel()
            self.store.stop_watch(watcher)
        try:
            await resp.write_eof()
        except (ConnectionResetError, ConnectionError):
            pass
        return resp
