"""`PodAdmitter`: the webhook's `Admitter` for pods — current policies from a `PolicyStore`, namespace labels from a
lookup, the pure mutation core, then an optional placement step (resource pools) before the patch is diffed; and
`from_settings`, the production wiring of `burstflow webhook serve` (policy files, or the cluster's watched
policies with the resource pools)."""
from __future__ import annotations

import contextlib
import inspect
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from burstflow.webhook import admission
from burstflow.webhook.admission import Outcome
from burstflow.webhook.mutate import NamespaceLookup, decide
from burstflow.webhook.policy import PolicyError, PolicySet

log = logging.getLogger("burstflow.webhook")
RESOURCE_POLICY = "ResourcePolicy"
IN_CLUSTER_ENV = "KUBERNETES_SERVICE_HOST"
SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


class PolicyStore:
    """Holds the compiled PolicySet in use; `update` swaps it in one assignment, so a request sees either the old
    set or the new one, never a mix. Not ready until a set has been installed."""

    def __init__(self, policies: PolicySet | None = None) -> None:
        self._policies = policies
        self._lock = threading.Lock()
        self.errors: tuple[PolicyError, ...] = ()

    @property
    def policies(self) -> PolicySet | None:
        return self._policies

    @property
    def ready(self) -> bool:
        return self._policies is not None

    def update(self, policies: PolicySet, errors: Iterable[PolicyError] = ()) -> bool:
        """Install `policies` unless the load had errors and a good set is already in use (then keep it: a bad
        update must not take working profiles away). The first load installs whatever compiled, so valid profiles
        work even when a sibling file is broken. Returns True when the new set was installed without errors."""
        errors = tuple(errors)
        with self._lock:
            self.errors = errors
            if errors and self._policies is not None:
                for error in errors:
                    log.error("policy reload rejected, keeping the last good set: %s", error)
                return False
            for error in errors:
                log.error("invalid policy left out: %s", error)
            self._policies = policies
            return not errors

    def install(self, policies: PolicySet, errors: Iterable[PolicyError] = ()) -> None:
        """Install `policies` unconditionally; for a source that already kept each object's last good version
        (webhook.sources.ClusterPolicySource), so `policies` is the complete good set. `errors` is informational."""
        with self._lock:
            self.errors = tuple(errors)
            self._policies = policies


class Placer(Protocol):
    """A step after the profiles (the resource pools' `webhook.pools.placer.PoolPlacer`).

    `place` gets the profile-mutated pod (read-only: return a changed copy, never edit it in place; PodDraft's
    copy-on-write methods keep the diff cheap), the ResourcePolicies compiled into the PolicySet, and `dry_run`
    (no side effects then). It returns an object with `pod` (the pod to continue with), `denied` ((code, message) or
    None) and `warnings`. May be sync or async.
    """

    def place(self, pod: Mapping[str, Any], *, namespace: str, policies: Sequence[Any], dry_run: bool = False) -> Any:
        ...


class PodAdmitter:
    """Implements `webhook.admission.Admitter`. `namespaces` maps a namespace name to its labels or its Namespace
    object (a dict, a callable such as a watched cache's getter, or an async callable, awaited once per request,
    such as `ClusterPolicySource.lookup_namespace`); None uses Namespace objects from the policy files. `services`,
    when given, is an async context manager run for the admitter's lifetime."""

    def __init__(self, *, store: PolicyStore, namespaces: NamespaceLookup | None = None,
                 placer: Placer | None = None, logger: logging.Logger | None = None,
                 services: contextlib.AbstractAsyncContextManager[Any] | None = None) -> None:
        self.store = store
        self.namespaces = namespaces
        self.placer = placer
        self.log = logger or log
        self.services = services

    async def __aenter__(self) -> PodAdmitter:
        """Start `services` (the cluster watches and pools of `ClusterServices`); the server enters the admitter
        while it starts and exits it after the last request has drained."""
        if self.services is not None:
            await self.services.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        if self.services is not None:
            await self.services.__aexit__(*exc_info)

    @property
    def namespaces(self) -> NamespaceLookup | None:
        return self._namespaces

    @namespaces.setter
    def namespaces(self, lookup: NamespaceLookup | None) -> None:
        # Told apart once here, not per admission: an async lookup may read the API.
        self._namespaces = lookup
        self._namespaces_async = inspect.iscoroutinefunction(lookup)

    @property
    def ready(self) -> bool:
        return self.store.ready

    async def admit(self, request: dict[str, Any]) -> Outcome:
        """Decide on one well-formed request; never raises for bad pods or failing CEL (warnings instead)."""
        uid = str(request.get("uid", ""))
        policies = self.store.policies
        if policies is None:
            return Outcome(admission.allowed(uid, warnings=["burstflow: policies are not loaded yet; pod admitted "
                                                            "unchanged"]), "skipped")
        namespaces: Any = self._namespaces if self._namespaces is not None else policies.namespaces
        if self._namespaces_async:  # may read the API (ClusterPolicySource.lookup_namespace)
            name = str(request.get("namespace") or "")
            found = await self._namespaces(name)
            namespaces = {name: found} if found is not None else {}
        decision = decide(request, policies=policies, namespaces=namespaces)
        for warning in decision.warnings:
            self.log.warning("%s (request %s, namespace %s)", warning, uid, request.get("namespace", ""))
        profiles = decision.applied
        if self.placer is not None and decision.draft is not None and not decision.opted_out:
            placement = self.placer.place(decision.draft.pod, namespace=str(request.get("namespace") or ""),
                                          policies=policies.compiled.get(RESOURCE_POLICY, ()),
                                          dry_run=bool(request.get("dryRun")))
            if inspect.isawaitable(placement):
                placement = await placement
            if placement is not None:
                decision.warnings.extend(placement.warnings)
                for warning in placement.warnings:
                    self.log.warning("%s (request %s)", warning, uid)
                if placement.denied is not None:
                    code, message = placement.denied
                    return Outcome(admission.denied(uid, message, code=code, warnings=decision.warnings or None),
                                   "denied", profiles)
                if placement.pod is not None:
                    decision.draft.pod = placement.pod
        response, outcome = decision.respond()
        return Outcome(response, outcome, profiles)


def resolve_cluster_mode(settings: Any, environ: Mapping[str, str]) -> bool:
    """Whether policies come from the cluster: the explicit setting, else (auto) when a kubeconfig is given or the
    process runs in a pod (KUBERNETES_SERVICE_HOST is set by the kubelet in every container)."""
    if settings.policies_from_cluster is not None:
        return bool(settings.policies_from_cluster)
    return bool(settings.kubeconfig) or bool(environ.get(IN_CLUSTER_ENV))


def from_settings(settings: Any, *, metrics: Any = None, clock: Any = None,
                  environ: Mapping[str, str] | None = None) -> PodAdmitter:
    """The production admitter for `burstflow webhook serve`; raises ValueError naming the flag to fix.

    Files only (`--policies`, no cluster): policies are loaded here, once. With the cluster: the admitter's
    `services` connect, watch policies (combined with any `--policies` files) and run the resource pools when the
    server starts; the admitter is not ready until the first full sync. Load errors and counts go to `metrics`
    (webhook.metrics.WebhookMetrics).
    """
    environ = os.environ if environ is None else environ
    if not resolve_cluster_mode(settings, environ):
        return _from_files(settings, metrics=metrics, explicit=settings.policies_from_cluster is False)
    if settings.kubeconfig:
        if not os.path.isfile(settings.kubeconfig):
            raise ValueError(f"--kubeconfig {settings.kubeconfig}: no such file (BURSTFLOW_WEBHOOK_KUBECONFIG)")
    elif not environ.get(IN_CLUSTER_ENV):
        raise ValueError("--cluster-policies needs the Kubernetes API: not running in a pod (KUBERNETES_SERVICE_HOST "
                         "is unset) and no --kubeconfig FILE given; pass --kubeconfig, or run from files only with "
                         "--no-cluster-policies --policies DIR")
    admitter = PodAdmitter(store=PolicyStore())
    admitter.services = ClusterServices(settings=settings, admitter=admitter, metrics=metrics, clock=clock,
                                        environ=environ)
    return admitter


def _from_files(settings: Any, *, metrics: Any, explicit: bool) -> PodAdmitter:
    if not settings.policy_paths:
        if explicit:
            raise ValueError("--no-cluster-policies needs policy files: give --policies PATH (repeatable; or "
                             "BURSTFLOW_WEBHOOK_POLICY_PATHS)")
        raise ValueError("no policies to serve: give --policies PATH (policy files), or let the webhook watch the "
                         "cluster with --kubeconfig FILE (in a pod the service account is used automatically)")
    from burstflow.webhook.loader import load

    policies, errors = load(settings.policy_paths)
    store = PolicyStore()
    store.update(policies, errors)
    for warning in policies.warnings:
        log.warning("%s", warning)
    pools = len(policies.compiled.get(RESOURCE_POLICY, ()))
    if pools:
        log.warning("%d ResourcePolic%s loaded from files, but pool placement needs the Kubernetes API (each pool's "
                    "counts live in the ResourcePolicy's status in the cluster): running without a cluster, matching "
                    "pods get their BurstProfiles only and are NOT placed in a pool (no burstflow.io/pool label, "
                    "affinity or pool tolerations). To place pods, run with --kubeconfig FILE or in a pod and create "
                    "the ResourcePolicies in the cluster.", pools, "y" if pools == 1 else "ies")
    if metrics is not None:
        for _ in errors:
            metrics.policy_load_errors.labels(source="files").inc()
        for kind, count in store.policies.counts().items():
            metrics.policies_loaded.labels(kind=kind).set(count)
    return PodAdmitter(store=store)


def _lease_namespace(settings: Any) -> str:
    if settings.lease_namespace:
        return settings.lease_namespace
    try:
        with open(SERVICE_ACCOUNT_NAMESPACE, encoding="utf-8") as file:
            return file.read().strip() or "default"
    except OSError:
        return "default"


class ClusterServices:
    """What `burstflow webhook serve` runs beside the HTTPS server when policies come from the cluster: one
    gateway connection, the `ClusterPolicySource` (its Namespace cache becomes the admitter's lookup) and the
    resource pools' `PoolStack` (its placer becomes the admitter's placer; its reconciler joins the Lease election
    as `identity`). An async context manager: entered when the server starts, exited after it has drained.
    A broken kubeconfig surfaces as ValueError on entry, so the server reports it and exits 1.
    """

    def __init__(self, *, settings: Any, admitter: PodAdmitter, metrics: Any = None, clock: Any = None,
                 environ: Mapping[str, str] | None = None) -> None:
        from prometheus_client import CollectorRegistry

        from burstflow.clock import SystemClock

        self.settings = settings
        self.admitter = admitter
        self.metrics = metrics
        self.clock = clock if clock is not None else SystemClock()
        self.registry = metrics.registry if metrics is not None else CollectorRegistry()
        self.identity = settings.identity or socket.gethostname()
        self.lease_namespace = _lease_namespace(settings)
        self.kube: Any = None
        self.source: Any = None
        self.pools: Any = None

    async def __aenter__(self) -> ClusterServices:
        from burstflow.kube import ConfigError, Kube
        from burstflow.webhook.pools.stack import PoolStack
        from burstflow.webhook.sources import ClusterPolicySource

        s = self.settings
        try:
            self.kube = await Kube.connect(s.kubeconfig or None, clock=self.clock)
        except ConfigError as exc:
            raise ValueError(str(exc)) from exc
        try:
            self.source = ClusterPolicySource(kube=self.kube, store=self.admitter.store, clock=self.clock,
                                              metrics=self.metrics, paths=s.policy_paths)
            self.pools = PoolStack(kube=self.kube, clock=self.clock, registry=self.registry, identity=self.identity,
                                   lease_namespace=self.lease_namespace,
                                   decision_timeout=s.pool_decision_timeout_seconds,
                                   reservation_timeout=s.pool_reservation_timeout_seconds,
                                   reconcile_interval=s.pool_reconcile_interval_seconds,
                                   lease_duration=s.lease_duration_seconds, renew_deadline=s.renew_deadline_seconds,
                                   retry_period=s.retry_period_seconds)
            self.admitter.namespaces = self.source.lookup_namespace
            self.admitter.placer = self.pools.placer
            await self.source.start()
            self.pools.start()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        log.info("watching policies in the cluster at %s%s; resource pools on, reconciler election as %r in "
                 "namespace %s", self.kube.host, f" (plus files {', '.join(s.policy_paths)})" if s.policy_paths
                 else "", self.identity, self.lease_namespace)
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        """Leave the election (releasing the Lease), stop watching, close the connection. Idempotent."""
        pools, self.pools = self.pools, None
        source, self.source = self.source, None
        kube, self.kube = self.kube, None
        if pools is not None:
            await pools.stop()
        if source is not None:
            await source.stop()
        if kube is not None:
            await kube.close()


def store_from_paths(paths: Iterable[str], *, loader: Callable[..., tuple[PolicySet, list[PolicyError]]] | None = None
                     ) -> PolicyStore:
    """A store loaded from policy files/directories (errors logged; valid profiles installed)."""
    from burstflow.webhook.loader import load

    policies, errors = (loader or load)(list(paths))
    store = PolicyStore()
    store.update(policies, errors)
    return store
