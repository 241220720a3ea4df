"""Turns pool reservations into facts from the pods that exist: run by the one replica holding the Lease.

Level-triggered: every pass reads each ResourcePolicy and recomputes its slot maps from a complete view of the
pods carrying the pool label (a reflector's cache; a fresh list on start, which is how counts are rebuilt after a
restart or a leader change), then writes the status only if it changed, resourceVersion-guarded, re-reading on
409. Webhook replicas keep admitting while this runs anywhere or nowhere; without it reservations are never
freed, so pools fill up and stay full until a leader is back.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from burstflow import kube as k
from burstflow.clock import Clock
from burstflow.leader import LeaderElector
from webhook.pools.metrics import PoolMetrics
from webhook.pools.model import POOL_LABEL, PolicyError, ResourcePolicy, compile_resource_policy
from webhook.pools.usage import reconcile, status_from_usage, usage_from_status, with_status

log = logging.getLogger(__name__)

COMPONENT = "pool-reconciler"
# A pod shows up in the watch within about a second of its webhook's answer; 60 s covers the webhook timeout (at
# most 30 s), the rest of admission and a slow watch, so a live reservation is never expired before its pod is seen.
DEFAULT_RESERVATION_TIMEOUT = 60.0
# How often a leader reconciles: bounds its status writes to one per policy per interval during a burst.
DEFAULT_INTERVAL = 1.0
MAX_CONFLICT_RETRIES = 10


class PoolReconciler:
    """Reconciles every ResourcePolicy in `namespace` (all namespaces when None)."""

    def __init__(self, *, kube: k.Kube, clock: Clock, metrics: PoolMetrics | None = None,
                 namespace: str | None = None, reservation_timeout: float = DEFAULT_RESERVATION_TIMEOUT,
                 interval: float = DEFAULT_INTERVAL) -> None:
        self.kube = kube
        self.clock = clock
        self.metrics = metrics
        self.namespace = namespace
        self.reservation_timeout = reservation_timeout
        self.interval = interval
        self.passes = 0

    async def list_pods(self) -> list[dict[str, Any]]:
        listing = await self.kube.list(k.PODS, namespace=self.namespace, label_selector=POOL_LABEL)
        return list(listing.get("items") or [])

    async def reconcile_once(self, pods: Iterable[Mapping[str, Any]]) -> int:
        """One pass over every policy against `pods` (a complete view of the pool-labelled pods); returns the
        number of status writes that succeeded. API errors are logged and left for the next pass."""
        self.passes += 1
        pods = list(pods)
        try:
            listing = await self.kube.list(k.RESOURCEPOLICIES, namespace=self.namespace)
        except k.KubeError as error:
            log.warning("pool reconciler: listing ResourcePolicies failed: %s", error)
            return 0
        writes = 0
        for obj in listing.get("items") or []:
            try:
                policy = compile_resource_policy(obj)
            except PolicyError as error:
                log.warning("pool reconciler: skipping %s", error)
                continue
            mine = [pod for pod in pods if (pod.get("metadata") or {}).get("namespace") == policy.namespace]
            try:
                writes += await self._reconcile_policy(policy, obj, mine)
            except k.KubeError as error:
                log.warning("pool reconciler: %s/%s: %s", policy.namespace, policy.name, error)
        return writes

    async def _reconcile_policy(self, policy: ResourcePolicy, obj: dict[str, Any],
                                pods: list[Mapping[str, Any]]) -> int:
        for _ in range(MAX_CONFLICT_RETRIES):
            now = self.clock.now()
            old = obj.get("status") or {}
            usage = reconcile(policy, usage_from_status(policy, old), pods, now=now,
                              reservation_timeout=self.reservation_timeout)
            status = status_from_usage(policy, usage, now=now, previous=old)
            if self.metrics:
                self.metrics.observe_status(policy, status)
            if status == old:
                return 0
            try:
                await self.kube.replace(k.RESOURCEPOLICIES, with_status(obj, status), subresource="status")
            except k.Conflict:
                self._count("conflict")
                obj = await self.kube.get(k.RESOURCEPOLICIES, policy.name, namespace=policy.namespace)
                continue
            except k.NotFound:
                return 0
            except k.KubeError:
                self._count("error")
                raise
            self._count("ok")
            return 1
        log.warning("pool reconciler: %s/%s: still conflicting after %d attempts; next pass", policy.namespace,
                    policy.name, MAX_CONFLICT_RETRIES)
        return 0

    def _count(self, result: str) -> None:
        if self.metrics:
            self.metrics.status_writes.labels(result=result).inc()

    async def run(self) -> None:
        """Watch the pool-labelled pods and reconcile every `interval` until cancelled (the leader's work)."""
        reflector = k.Reflector(kube=self.kube, resource=k.PODS, namespace=self.namespace,
                                label_selector=POOL_LABEL, clock=self.clock)
        reflector.start()
        try:
            await reflector.wait_synced()
            while True:
                await self.reconcile_once(reflector.cache.values())
                await self.clock.sleep(self.interval)
        finally:
            await reflector.stop()


class ReconcilerLeadership:
    """Runs `reconciler` only while this replica holds the Lease `namespace/name`; drives the leader gauge."""

    def __init__(self, *, reconciler: PoolReconciler, kube: k.Kube, clock: Clock, identity: str, namespace: str,
                 name: str = "burstflow-pool-reconciler", metrics: PoolMetrics | None = None,
                 **election: Any) -> None:
        self.metrics = metrics
        if metrics:
            metrics.leader.labels(component=COMPONENT).set(0)
        self.reconciler = reconciler
        self.elector = LeaderElector(kube, name=name, namespace=namespace, identity=identity, clock=clock,
                                     on_change=self._changed, **election)

    def _changed(self, leading: bool) -> None:
        if self.metrics:
            self.metrics.leader.labels(component=COMPONENT).set(1 if leading else 0)

    def start(self) -> asyncio.Task[None]:
        return self.elector.start(on_start=self.reconciler.run)

    async def stop(self, *, release: bool = True) -> None:
        await self.elector.stop(release=release)
