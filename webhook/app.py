"""The webhook service's one app factory and main: settings -> logging -> metrics -> clients -> the pure admission
core. `from_settings` builds the production `PodAdmitter` (policy files, or the cluster's watched policies with the
resource pools run by `ClusterServices`); `serve_command` is what `burstflow webhook serve` runs."""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import os
import sys
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry

from burstflow.clock import Clock, SystemClock
from burstflow.kube import ConfigError, Kube
from burstflow.logs import configure_logging
from burstflow.settings import pod_identity
from burstflow.webhook.admitter import RESOURCE_POLICY, PodAdmitter, PolicyStore
from burstflow.webhook.loader import load
from burstflow.webhook.metrics import WebhookMetrics
from burstflow.webhook.pools.stack import PoolStack
from burstflow.webhook.server import serve
from burstflow.webhook.settings import WebhookSettings, settings_from_args
from burstflow.webhook.sources import ClusterPolicySource

log = logging.getLogger("burstflow.webhook")
# Set by the kubelet in every container: the process runs in a pod and may use its service account.
IN_CLUSTER_ENV = "KUBERNETES_SERVICE_HOST"


def resolve_cluster_mode(settings: WebhookSettings, environ: Mapping[str, str]) -> bool:
    """Whether policies come from the cluster: the explicit setting, else (auto) when a kubeconfig is given or the
    process runs in a pod (KUBERNETES_SERVICE_HOST is set by the kubelet in every container)."""
    if settings.policies_from_cluster is not None:
        return bool(settings.policies_from_cluster)
    return bool(settings.kubeconfig) or bool(environ.get(IN_CLUSTER_ENV))


def from_settings(settings: WebhookSettings, *, metrics: WebhookMetrics | None = None, clock: Clock | None = None,
                  environ: Mapping[str, str] | None = None) -> PodAdmitter:
    """The production admitter for `burstflow webhook serve`; raises ValueError naming the flag to fix.

    Files only (`--policies`, no cluster): policies are loaded here, once. With the cluster: the admitter's
    `services` connect, watch policies (combined with any `--policies` files) and run the resource pools when the
    server starts; the admitter is not ready until the first full sync. Load errors and counts go to `metrics`.
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


def _from_files(settings: WebhookSettings, *, metrics: WebhookMetrics | None, explicit: bool) -> PodAdmitter:
    if not settings.policy_paths:
        if explicit:
            raise ValueError("--no-cluster-policies needs policy files: give --policies PATH (repeatable; or "
                             "BURSTFLOW_WEBHOOK_POLICY_PATHS)")
        raise ValueError("no policies to serve: give --policies PATH (policy files), or let the webhook watch the "
                         "cluster with --kubeconfig FILE (in a pod the service account is used automatically)")
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


class ClusterServices:
    """What `burstflow webhook serve` runs beside the HTTPS server when policies come from the cluster: one
    gateway connection, the `ClusterPolicySource` (its Namespace cache becomes the admitter's lookup) and the
    resource pools' `PoolStack` (its placer becomes the admitter's placer; its reconciler joins the Lease election
    as `identity`, in `lease_namespace`: the settings, else the pod's identity from burstflow.settings.pod_identity).
    An async context manager: entered when the server starts, exited after it has drained.
    A broken kubeconfig surfaces as ValueError on entry, so the server reports it and exits 1.
    """

    def __init__(self, *, settings: WebhookSettings, admitter: PodAdmitter, metrics: WebhookMetrics | None = None,
                 clock: Clock | None = None, environ: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self.admitter = admitter
        self.metrics = metrics
        self.clock = clock if clock is not None else SystemClock()
        self.registry = metrics.registry if metrics is not None else CollectorRegistry()
        pod = pod_identity(os.environ if environ is None else environ)
        self.identity = settings.identity or pod.name
        self.lease_namespace = settings.lease_namespace or pod.namespace
        self.kube: Kube | None = None
        self.source: ClusterPolicySource | None = None
        self.pools: PoolStack | None = None
        self._running = contextlib.AsyncExitStack()

    async def __aenter__(self) -> ClusterServices:
        s = self.settings
        try:
            self.kube = await Kube.connect(s.kubeconfig or None, clock=self.clock)
        except ConfigError as exc:
            raise ValueError(str(exc)) from exc
        # Closed in reverse: leave the election (releasing the Lease), stop watching, close the connection.
        self._running.push_async_callback(self._forget)
        self._running.push_async_callback(self.kube.close)
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
            self._running.push_async_callback(self.source.stop)
            await self.source.start()
            self._running.push_async_callback(self.pools.stop)
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
        running, self._running = self._running, contextlib.AsyncExitStack()
        await running.aclose()

    async def _forget(self) -> None:
        self.kube = self.source = self.pools = None


def serve_command(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> int:
    """`burstflow webhook serve`: settings (flags over `BURSTFLOW_WEBHOOK_*` over defaults), logging, then
    `serve` until SIGTERM with the production admitter built once the settings are logged. Exit status 2 for
    unusable settings, 1 when the server cannot start."""
    environ = os.environ if environ is None else environ
    try:
        settings = settings_from_args(args, environ)
    except ValueError as exc:
        print(f"burstflow webhook serve: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level)
    return asyncio.run(serve(settings, admitter_factory=functools.partial(from_settings, settings, environ=environ),
                             metrics=WebhookMetrics(CollectorRegistry()), clock=SystemClock()))
