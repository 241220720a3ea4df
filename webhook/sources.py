"""Policies watched in the cluster: BurstProfiles, ResourcePolicies, the vci-/eci-profile ConfigMaps and Namespace
labels kept by reflectors, each object compiled once per change and the whole set swapped into the `PolicyStore`.

Contract, per object: a valid version is in effect; an invalid version is reported (log, counter, Warning Event on
that object) and left out, while the last valid version of the same object, if there was one, stays in effect.
Policy files given with `paths` are compiled once at start and combined with the cluster's objects; when both
define the same object (kind, namespace, name), the file's version is in effect.
"""
from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from burstflow import kube as k
from burstflow.clock import Clock, SystemClock
from burstflow.logs import fields
from burstflow.timefmt import parse_time
from burstflow.webhook.admitter import PolicyStore
from burstflow.webhook.configmaps import ECI_PROFILE, NAMESPACE as PROFILES_NAMESPACE, VCI_PROFILE
from burstflow.webhook.loader import Compiler, Document, compile_objects, read_documents
from burstflow.webhook.policy import PolicyError, PolicySet, new_environment, sort_profiles

log = logging.getLogger("burstflow.webhook.sources")

COMPONENT = "burstflow-webhook"
REASON_INVALID = "InvalidPolicy"
REASON_VALID_AGAIN = "PolicyValid"
REASON_SHADOWED = "PolicyShadowed"
# kubectl describe prints an Event message on one line, and events.k8s.io/v1 refuses notes over 1 KiB.
EVENT_MESSAGE_LIMIT = 1024
# The Kinds whose `burstflow_webhook_policies_loaded` gauge is always exported (0 when none are loaded), so a
# dashboard shows "none" rather than "no data".
GAUGE_KINDS = ("BurstProfile", "ConfigMapProfile", "ResourcePolicy")

# A first sync takes a few round trips; still waiting after this long means missing CRDs, RBAC or connectivity,
# so say which lists are missing (once per period) instead of leaving only a failing readiness probe.
SYNC_WARNING_SECONDS = 30.0

# A namespace the watch may not have caught up with is read once on the admission path: bounded well inside the
# webhook's 10 s timeoutSeconds, leaving the rest for the profiles, pool placement and the API server's round trip.
NAMESPACE_READ_TIMEOUT_SECONDS = 1.0
# A read namespace stands in for the watch for this long at most (normally the watch delivers the same
# resourceVersion within milliseconds and takes over); a namespace found missing is not read again within it.
NAMESPACE_READ_TTL = timedelta(seconds=30)
# "Created at or after the cache's last event", with room for creationTimestamp's one-second resolution and for
# the moment the ADDED event takes to arrive: a namespace created less than this before the last event.
CREATION_WINDOW = timedelta(seconds=2)

Key = tuple[str, str, str]  # (kind, namespace, name)


@dataclass
class _Entry:
    """One object's compile state: `active` is the compiled version in effect (None: nothing in effect)."""

    key: Key
    origin: str
    fingerprint: str = ""
    active: PolicySet | None = None
    active_version: str = ""
    errors: list[PolicyError] = field(default_factory=list)


def _typed(obj: Mapping[str, Any], resource: k.Resource) -> dict[str, Any]:
    """The object with apiVersion/kind filled in: real API servers leave them out of list items of built-in types."""
    if obj.get("apiVersion") and obj.get("kind"):
        return dict(obj)
    return {"apiVersion": resource.api_version, "kind": resource.kind, **obj}


def _key(obj: Mapping[str, Any], fallback: str = "") -> Key:
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
    return (str(obj.get("kind") or ""), str(metadata.get("namespace") or ""), str(metadata.get("name") or fallback))


def _ref(key: Key) -> str:
    kind, namespace, name = key
    return f"{kind}/{namespace}/{name}" if namespace else f"{kind}/{name}"


def _fields(key: Key) -> dict[str, Any]:
    """The log context fields naming one policy object."""
    kind, namespace, name = key
    return fields(kind=kind, namespace=namespace or None, name=name)


def fingerprint(obj: Mapping[str, Any]) -> str:
    """What compiling depends on: everything except `status` and the bookkeeping metadata the server changes on
    every write. A ResourcePolicy's status is rewritten by the pool ledger during a burst; those writes must not
    cost a recompile each."""
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
    kept = {key: value for key, value in metadata.items()
            if key not in ("resourceVersion", "managedFields", "generation", "uid", "creationTimestamp")}
    body = {key: value for key, value in obj.items() if key not in ("status", "metadata")}
    return json.dumps([kept, body], sort_keys=True, default=str)


def _rv_of(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def _details(errors: Sequence[PolicyError]) -> str:
    return "; ".join(f"{e.path}: {e.message}" if e.path else e.message for e in errors)


class ClusterPolicySource:
    """Watches the policy objects of one cluster and keeps `store` equal to their compiled, valid versions.

    `start()` reads the policy files, starts the reflectors and returns at once; the store receives its first set
    (and the webhook becomes ready) only once every reflector, the Namespace cache included, has listed: a webhook
    that admitted pods against a half-listed cluster would silently skip profiles. `namespace(name)` is the
    admitter's namespace lookup (the watched Namespace object, or None), so no request costs a GET;
    `lookup_namespace(name)` is its async form for the admission path, which also reads a namespace the watch may
    not have delivered yet (see there). `revision` counts the sets installed.
    """

    def __init__(self, *, kube: k.Kube, store: PolicyStore, clock: Clock | None = None, metrics: Any = None,
                 paths: Sequence[str] = (), compilers: Mapping[str, Compiler] | None = None,
                 watch_timeout_seconds: int = 300, component: str = COMPONENT) -> None:
        self.kube = kube
        self.store = store
        self.clock = clock
        self.metrics = metrics
        self.paths = tuple(paths)
        self.compilers = compilers
        self.component = component
        self.env = new_environment()
        self.revision = 0
        self.ready = asyncio.Event()
        self._files: dict[Key, _Entry] = {}
        self._cluster: dict[Key, _Entry] = {}
        self._gauge_kinds: set[str] = set(GAUGE_KINDS)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sync_task: asyncio.Task[None] | None = None
        self._live = False
        self._namespace_event_at: datetime | None = None
        self._read: dict[str, tuple[Mapping[str, Any], datetime]] = {}
        self._verified: dict[str, str] = {}
        self._reading: dict[str, asyncio.Task[Mapping[str, Any] | None]] = {}
        self.namespace_reads = 0

        def reflector(resource: k.Resource, *, namespace: str | None = None, field_selector: str | None = None,
                      on_event: Any = None) -> k.Reflector:
            on_event = on_event or (lambda event: self._on_event(resource, event))
            return k.Reflector(kube=kube, resource=resource, namespace=namespace, field_selector=field_selector,
                               on_event=on_event, clock=clock, watch_timeout_seconds=watch_timeout_seconds)

        # Two single-name reflectors rather than one on the namespace: RBAC can then be limited to these names,
        # and no other ConfigMap of kube-system is ever transferred.
        self.reflectors = [
            reflector(k.BURSTPROFILES),
            reflector(k.RESOURCEPOLICIES),
            reflector(k.CONFIGMAPS, namespace=PROFILES_NAMESPACE, field_selector=f"metadata.name={VCI_PROFILE}"),
            reflector(k.CONFIGMAPS, namespace=PROFILES_NAMESPACE, field_selector=f"metadata.name={ECI_PROFILE}"),
        ]
        self.namespaces = reflector(k.NAMESPACES, on_event=self._on_namespace_event)

    # --------------------------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Compile the policy files, start watching; returns without waiting for the first sync."""
        self._load_files()
        for reflector in (*self.reflectors, self.namespaces):
            reflector.start()
        self._sync_task = asyncio.get_running_loop().create_task(self._first_sync(), name="policy-source-sync")

    async def wait_ready(self) -> None:
        """Until the first full set is installed."""
        await self.ready.wait()

    async def stop(self) -> None:
        """Stop watching; Events still being written get a short grace, then are abandoned. Idempotent."""
        if self._sync_task is not None:
            self._sync_task.cancel()
            await asyncio.gather(self._sync_task, return_exceptions=True)
        for reflector in (*self.reflectors, self.namespaces):
            await reflector.stop()
        await self.flush_events(timeout=2.0)
        pending = [*self._tasks, *self._reading.values()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def __aenter__(self) -> ClusterPolicySource:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def flush_events(self, timeout: float | None = None) -> None:
        """Wait for the Kubernetes Events written so far (each is written in the background)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)

    def namespace(self, name: str) -> Mapping[str, Any] | None:
        """The watched Namespace object called `name`, or None (the admitter's namespace lookup)."""
        return self.namespaces.cache.get(("", name))

    async def lookup_namespace(self, name: str) -> Mapping[str, Any] | None:
        """The Namespace `name` for one admission: the watched object, unless the watch may not have caught up.

        Two cases are read from the API instead (one GET, bounded by NAMESPACE_READ_TIMEOUT_SECONDS, shared by
        concurrent admissions): the cache has no such namespace (created a moment ago, its ADDED event still on
        the way), or the cached namespace was created at or after the last event the cache received (so the cache
        has seen nothing after its creation, and a label set right after it may still be on the way). The result
        stands in for the watch until the watch delivers that same resourceVersion (or NAMESPACE_READ_TTL passes),
        and a cached version is checked at most once. A failed or slow read falls back to the cache: a namespace
        read never fails an admission.
        """
        cached = self.namespace(name)
        now = self._now()
        read = self._read.get(name)
        if read is not None:
            obj, at = read
            if now - at < NAMESPACE_READ_TTL:
                return obj
            del self._read[name]
        if cached is not None and (self._verified.get(name) == _rv_of(cached) or not self._maybe_behind(cached)):
            return cached
        if cached is not None:
            self._verified[name] = _rv_of(cached)
        task = self._reading.get(name)
        if task is None:
            task = self._reading[name] = asyncio.get_running_loop().create_task(self._get_namespace(name, now))
            task.add_done_callback(lambda _: self._reading.pop(name, None))
        # asyncio.wait leaves the shared read running for the other admissions when this one stops waiting.
        done, _ = await asyncio.wait({task}, timeout=NAMESPACE_READ_TIMEOUT_SECONDS)
        if not done:
            log.warning("reading namespace %s took longer than %g s; using the watched cache (%s)", name,
                        NAMESPACE_READ_TIMEOUT_SECONDS, "no such namespace yet" if cached is None else "as cached")
            return cached
        obj = task.result()
        return obj if obj is not None else cached

    async def _get_namespace(self, name: str, now: datetime) -> Mapping[str, Any] | None:
        self.namespace_reads += 1
        try:
            obj = _typed(await self.kube.get(k.NAMESPACES, name), k.NAMESPACES)
        except k.NotFound:
            return None
        except k.KubeError as exc:
            log.warning("cannot read namespace %s (the watch may not have delivered it yet): %s", name, exc)
            return None
        cached = self.namespace(name)
        if cached is None or _rv_of(cached) != _rv_of(obj):  # the watch has not delivered this version yet
            self._read[name] = (obj, now)
        return obj

    def _maybe_behind(self, cached: Mapping[str, Any]) -> bool:
        """Whether the cache may have seen nothing of this namespace after its creation."""
        created = parse_time((cached.get("metadata") or {}).get("creationTimestamp"))
        last = self._namespace_event_at
        return created is None or last is None or created + CREATION_WINDOW > last

    async def _on_namespace_event(self, event: k.WatchEvent) -> None:
        """Note when the cache last heard anything; a read version is dropped once the watch delivers it (events
        come in order, so everything after it is newer), and everything about a deleted namespace."""
        self._namespace_event_at = self._now()
        name = (event.object.get("metadata") or {}).get("name")
        read = self._read.get(name)
        if event.type == "DELETED":
            self._read.pop(name, None)
            self._verified.pop(name, None)
        elif read is not None and _rv_of(read[0]) == _rv_of(event.object):
            del self._read[name]
            self._verified[name] = _rv_of(event.object)  # already read: no need to read this version again

    def _now(self) -> datetime:
        return (self.clock or self.kube.clock or SystemClock()).now()

    async def _first_sync(self) -> None:
        clock = self.clock or self.kube.clock
        everything = (*self.reflectors, self.namespaces)
        synced = asyncio.ensure_future(asyncio.gather(*(reflector.wait_synced() for reflector in everything)))
        try:
            while not synced.done():
                nap = asyncio.ensure_future(clock.sleep(SYNC_WARNING_SECONDS))
                await asyncio.wait({synced, nap}, return_when=asyncio.FIRST_COMPLETED)
                nap.cancel()
                if not synced.done():
                    waiting = [f"{r.resource.plural} ({r.errors} failed attempts)" for r in everything
                               if not r.has_synced]
                    log.warning("not ready yet: still waiting for the first list of %s; are the CRDs installed "
                                "(kubectl apply -k manifests/base) and may the service account list and watch "
                                "them? (the reflector warnings above give each error)", ", ".join(waiting))
        finally:
            synced.cancel()
        self._live = True
        self._publish()
        self.ready.set()
        counts = ", ".join(f"{count} {kind}" for kind, count in self.store.policies.counts().items())
        log.info("policies from the cluster in effect after the first sync: %s", counts or "none")

    # ------------------------------------------------------------------------------------------------ files

    def _load_files(self) -> None:
        if not self.paths:
            return
        documents, errors = read_documents(self.paths)
        for document in documents:
            obj = document.obj
            key = _key(obj, fallback=document.source) if isinstance(obj, Mapping) else ("", "", document.source)
            entry = _Entry(key=key, origin=document.source, fingerprint=fingerprint(obj) if isinstance(
                obj, Mapping) else "")
            compiled, problems = compile_objects([document], env=self.env, compilers=self.compilers)
            self._log_warnings(compiled.warnings)
            if key in self._files and not problems:
                problems = [PolicyError(f"defined twice (also in {self._files[key].origin})", path="metadata.name",
                                        obj=_ref(key), source=document.source)]
            if problems:
                errors.extend(problems)
                continue
            entry.active = compiled
            self._files[key] = entry
        for error in errors:
            log.error("invalid policy file left out: %s", error)
            if self.metrics is not None:
                self.metrics.policy_load_errors.labels(source="files").inc()

    # ---------------------------------------------------------------------------------------------- cluster

    async def _on_event(self, resource: k.Resource, event: k.WatchEvent) -> None:
        self.apply(resource, event)

    def apply(self, resource: k.Resource, event: k.WatchEvent) -> None:
        """Take one watch event into account (compiling the object when its content changed) and, once the first
        sync is done, install the new set. Synchronous, so a request never sees a half-applied change."""
        obj = _typed(event.object, resource)
        key = _key(obj)
        metadata = obj.get("metadata") or {}
        version = str(metadata.get("resourceVersion") or "")
        if event.type == "DELETED":
            if self._cluster.pop(key, None) is not None:
                log.info("%s deleted; no longer in effect", _ref(key), extra=_fields(key))
                self._publish()
            return
        content = fingerprint(obj)
        entry = self._cluster.get(key)
        if entry is not None and entry.fingerprint == content:
            return
        if entry is None:
            entry = self._cluster[key] = _Entry(key=key, origin="cluster")
        entry.fingerprint = content
        if key in self._files:
            message = (f"{_ref(key)} is also defined in the policy file {self._files[key].origin}; the file's "
                       f"version is in effect and this object is ignored")
            log.warning("%s", message, extra=_fields(key))
            entry.active, entry.errors = None, []
            self._emit(obj, REASON_SHADOWED, message, "Warning")
            return
        compiled, errors = compile_objects([Document("cluster", obj)], env=self.env, compilers=self.compilers)
        if errors:
            self._reject(entry, obj, version, errors)
        else:
            self._log_warnings(compiled.warnings)
            if entry.errors:
                message = (f"{_ref(key)} is valid again; resourceVersion {version} is in effect")
                log.info("%s", message, extra=_fields(key))
                self._emit(obj, REASON_VALID_AGAIN, message, "Normal")
            entry.active, entry.active_version, entry.errors = compiled, version, []
            log.info("%s (resourceVersion %s) compiled; in effect", _ref(key), version, extra=_fields(key))
        self._publish()

    def _reject(self, entry: _Entry, obj: Mapping[str, Any], version: str, errors: list[PolicyError]) -> None:
        entry.errors = errors
        if entry.active is not None:
            outcome = f"the last valid version (resourceVersion {entry.active_version}) stays in effect"
        else:
            outcome = "it is not in effect until it is fixed"
        message = f"{_ref(entry.key)} (resourceVersion {version}) is invalid: {_details(errors)}; {outcome}"
        log.error("%s", message, extra=_fields(entry.key))
        if self.metrics is not None:
            self.metrics.policy_load_errors.labels(source="cluster").inc()
        if len(message) > EVENT_MESSAGE_LIMIT:
            message = message[:EVENT_MESSAGE_LIMIT - len(outcome) - 6] + " ...; " + outcome
        self._emit(obj, REASON_INVALID, message, "Warning")

    def _emit(self, obj: Mapping[str, Any], reason: str, message: str, type_: str) -> None:
        task = asyncio.get_running_loop().create_task(
            self.kube.emit_event(dict(obj), reason=reason, message=message, type=type_, component=self.component))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    def _log_warnings(warnings: Iterable[str]) -> None:
        for warning in warnings:
            log.warning("%s", warning)

    # --------------------------------------------------------------------------------------------- publishing

    def errors(self) -> list[PolicyError]:
        """The problems of every object's current version (cluster objects only)."""
        return [error for entry in self._cluster.values() for error in entry.errors]

    def merged(self) -> PolicySet:
        """Every version in effect, files first, as one PolicySet (profiles in application order)."""
        profiles: list[Any] = []
        compiled: dict[str, list[Any]] = {}
        namespaces: dict[str, Mapping[str, Any]] = {}
        warnings: list[str] = []
        parts = [entry.active for entry in self._files.values()]
        parts += [entry.active for key, entry in self._cluster.items() if key not in self._files]
        for part in parts:
            if part is None:
                continue
            profiles.extend(part.profiles)
            for kind, items in part.compiled.items():
                compiled.setdefault(kind, []).extend(items)
            namespaces.update(part.namespaces)
            warnings.extend(part.warnings)
        return PolicySet(profiles=sort_profiles(profiles), namespaces=namespaces,
                         compiled={kind: tuple(items) for kind, items in compiled.items()}, env=self.env,
                         warnings=tuple(warnings))

    def _publish(self) -> None:
        if not self._live:
            return
        policies = self.merged()
        self.store.install(policies, self.errors())
        self.revision += 1
        if self.metrics is not None:
            counts = policies.counts()
            self._gauge_kinds.update(counts)
            for kind in self._gauge_kinds:
                self.metrics.policies_loaded.labels(kind=kind).set(counts.get(kind, 0))

