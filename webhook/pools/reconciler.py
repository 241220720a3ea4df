"""Turns pool reservations into facts from the pods that exist and where they run: run by the one replica holding
the Lease.

Level-triggered: every pass reads each ResourcePolicy and recomputes its running counts from a complete view of
the pods carrying the pool label (a reflector's cache; a fresh list on start, which is how counts are rebuilt after
a restart or a leader change) and of the nodes' labels (a bound pod counts in the pool whose nodeSelectorTerm
matches its node), drops the reservations whose pods it saw, then writes the status only if it changed,
resourceVersion-guarded, re-reading on 409. It keeps one small PodRecord per pod and the labels per node, never
the objects, so 100,000 pods cost tens of MiB. Webhook replicas keep admitting while this runs anywhere or nowhere;
without it reservations are never freed, so pools fill up and stay full until a leader is back.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from burstflow import kube as k
from burstflow.clock import Clock
from burstflow.leader import LeaderElector
from burstflow.webhook.pools.metrics import PoolMetrics
from burstflow.webhook.pools.model import POOL_LABEL, PolicyError, ResourcePolicy, compile_resource_policy
from burstflow.webhook.pools.usage import (PodRecord, PolicyPods, pod_record, reconcile_placements, status_from_usage,
                                 usage_from_status, with_status)

log = logging.getLogger(__name__)

COMPONENT = "pool-reconciler"
NODES = k.Resource("", "v1", "nodes", "Node", namespaced=False)
# A pod shows up in the watch within about a second of its webhook's answer; 60 s covers the webhook timeout (at
# most 30 s), the rest of admission and a slow watch, so a live reservation is never expired before its pod is seen.
DEFAULT_RESERVATION_TIMEOUT = 60.0
# How often a leader reconciles: bounds its status writes to one per policy per interval during a burst.
DEFAULT_INTERVAL = 1.0
MAX_CONFLICT_RETRIES = 10
# How long a new leader waits for the node list before counting bound pods by their label alone (a cluster whose
# RBAC lacks nodes, or a slow list): counts then move to the pools pods run in as soon as the nodes arrive.
NODE_SYNC_TIMEOUT = 5.0
# Pods per list page. Not smaller: these lists carry the pool label selector, and the gateway sends no selector
# page below kube.SELECTOR_MIN_PAGE_SIZE (2,048; affected API servers drop pods from smaller ones). Not bigger: a
# page is parsed whole before it is slimmed to PodRecords and is held while the next page's bytes arrive, and parsed
# size grows with the page (1,000 real pods with managedFields, default volumes and tolerations parse to about
# 20 MiB of dicts, so 2,048 to about 40 MiB), the reconciler's peak on top of the records. A rebuild of 100,000
# pods takes 49 round trips, each overlapped with slimming the page before it (the gateway asks for the next first).
POD_PAGE_SIZE = 2048


def node_labels(node: Mapping[str, Any]) -> dict[str, str]:
    """What counting needs of a Node: its labels."""
    return dict((node.get("metadata") or {}).get("labels") or {})


def watched_record(pod: Mapping[str, Any]) -> PodRecord:
    """The PodRecord of a watched pod; a pod no policy placed gets one that counts nowhere (policy "")."""
    record = pod_record(pod)
    if record is None:
        metadata = pod.get("metadata") or {}
        record = PodRecord(namespace=str(metadata.get("namespace") or ""), name=str(metadata.get("name") or ""),
                           token="", policy="", pool="", node="", finished=True)
    return record


class PodIndex:
    """The watched pods grouped per (namespace, policy), kept current event by event (a reflector's `on_event`),
    so a reconcile pass does not walk every pod."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], PodRecord] = {}
        self.by_policy: dict[tuple[str, str], PolicyPods] = defaultdict(PolicyPods)

    def put(self, record: PodRecord) -> None:
        key = (record.namespace, record.name)
        old = self.records.get(key)
        if old is not None:
            self.by_policy[(old.namespace, old.policy)].add(old, -1)
        self.records[key] = record
        self.by_policy[(record.namespace, record.policy)].add(record)

    def remove(self, record: PodRecord) -> None:
        old = self.records.pop((record.namespace, record.name), None)
        if old is not None:
            self.by_policy[(old.namespace, old.policy)].add(old, -1)

    async def on_event(self, event: k.WatchEvent) -> None:
        if event.type == "DELETED":
            self.remove(event.object)
        else:
            self.put(event.object)


class PoolReconciler:
    """Reconciles every ResourcePolicy in `namespace` (all namespaces when None)."""

    def __init__(self, *, kube: k.Kube, clock: Clock, metrics: PoolMetrics | None = None,
                 namespace: str | None = None, reservation_timeout: float = DEFAULT_RESERVATION_TIMEOUT,
                 interval: float = DEFAULT_INTERVAL, node_sync_timeout: float = NODE_SYNC_TIMEOUT) -> None:
        self.kube = kube
        self.clock = clock
        self.metrics = metrics
        self.namespace = namespace
        self.reservation_timeout = reservation_timeout
        self.interval = interval
        self.node_sync_timeout = node_sync_timeout
        self.passes = 0
        # Seconds from the start of `run` to the end of its first pass (list pods and nodes, count, write).
        self.rebuild_seconds: float | None = None
        self.nodes: Mapping[str, Mapping[str, str]] = {}

    async def list_pods(self) -> list[PodRecord]:
        """A fresh, complete view of the pool-labelled pods, as PodRecords."""
        listing = await self.kube.list(k.PODS, namespace=self.namespace, label_selector=POOL_LABEL,
                                       transform=pod_record, page_size=POD_PAGE_SIZE)
        return [record for record in listing.get("items") or [] if record is not None]

    async def list_nodes(self) -> dict[str, dict[str, str]]:
        """Every node's labels, by node name."""
        listing = await self.kube.list(NODES, transform=lambda node: (k.object_key(node)[1], node_labels(node)))
        return dict(listing.get("items") or [])

    async def reconcile_once(self, pods: Iterable[PodRecord | Mapping[str, Any] | None],
                             nodes: Mapping[str, Mapping[str, str]] | None = None) -> int:
        """One pass over every policy against `pods` (a complete view of the pool-labelled pods, as PodRecords or
        pod dicts) and `nodes` (node name -> labels; default: the watched nodes); returns the number of status
        writes that succeeded. API errors are logged and left for the next pass."""
        index = PodIndex()
        for pod in pods:
            record = pod if isinstance(pod, PodRecord) or pod is None else pod_record(pod)
            if record is not None:
                index.put(record)
        return await self.reconcile_index(index, self.nodes if nodes is None else nodes)

    async def reconcile_index(self, index: PodIndex, nodes: Mapping[str, Mapping[str, str]]) -> int:
        """One pass over every policy against `index` (complete and current); returns the successful writes."""
        self.passes += 1
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
            try:
                writes += await self._reconcile_policy(policy, obj, index.by_policy.get(policy.key) or PolicyPods(),
                                                       nodes)
            except k.KubeError as error:
                log.warning("pool reconciler: %s/%s: %s", policy.namespace, policy.name, error)
        return writes

    async def _reconcile_policy(self, policy: ResourcePolicy, obj: dict[str, Any], pods: PolicyPods,
                                nodes: Mapping[str, Mapping[str, str]]) -> int:
        for _ in range(MAX_CONFLICT_RETRIES):
            now = self.clock.now()
            old = obj.get("status") or {}
            usage = reconcile_placements(policy, usage_from_status(policy, old), pods, now=now,
                                         reservation_timeout=self.reservation_timeout, nodes=nodes)
            status = status_from_usage(policy, usage, now=now, previous=old)
            if self.metrics:
                self.metrics.observe_status(policy, status)
            if status == old:
                return 0
            try:
                written = await self.kube.replace(k.RESOURCEPOLICIES, with_status(obj, status), subresource="status")
            except k.Conflict:
                self._count("conflict")
                obj = await self.kube.get(k.RESOURCEPOLICIES, policy.name, namespace=policy.namespace)
                continue
            except k.NotFound:
                return 0
            except k.KubeError:
                self._count("error")
                raise
            self._count("ok", written)
            return 1
        log.warning("pool reconciler: %s/%s: still conflicting after %d attempts; next pass", policy.namespace,
                    policy.name, MAX_CONFLICT_RETRIES)
        return 0

    def _count(self, result: str, written: Mapping[str, Any] | None = None) -> None:
        if self.metrics:
            self.metrics.count_write(result, written)

    async def run(self) -> None:
        """Watch the pool-labelled pods and the nodes, and reconcile every `interval` until cancelled (the
        leader's work)."""
        started = time.perf_counter()  # a measurement for the rebuild metric, not scheduling logic
        index = PodIndex()
        pods = k.Reflector(kube=self.kube, resource=k.PODS, namespace=self.namespace, label_selector=POOL_LABEL,
                           clock=self.clock, transform=watched_record, page_size=POD_PAGE_SIZE,
                           on_event=index.on_event)
        nodes = k.Reflector(kube=self.kube, resource=NODES, clock=self.clock, transform=node_labels)
        self.nodes = {}
        pods.start()
        nodes.start()
        try:
            await pods.wait_synced()
            # asyncio.wait, not wait_for: on Python < 3.12 wait_for swallows a cancellation that arrives just as the
            # node list does, and this loop would then outlive stop() (the elector waits for it forever).
            synced = asyncio.ensure_future(nodes.wait_synced())
            try:
                done, _ = await asyncio.wait({synced}, timeout=self.node_sync_timeout)
            finally:
                synced.cancel()
            if not done:
                log.warning("pool reconciler: no node list within %.0fs; counting bound pods by their pool label "
                            "until it arrives", self.node_sync_timeout)
            # The reflector's cache is keyed (namespace, name); cluster-scoped nodes have namespace "".
            self.nodes = _NodeLabels(nodes.cache)
            while True:
                await self.reconcile_index(index, self.nodes)
                if self.rebuild_seconds is None:
                    self.rebuild_seconds = time.perf_counter() - started
                    if self.metrics:
                        self.metrics.rebuild_seconds.set(self.rebuild_seconds)
                await self.clock.sleep(self.interval)
        finally:
            await pods.stop()
            await nodes.stop()


class _NodeLabels(Mapping[str, Mapping[str, str]]):
    """A live view of a node reflector's cache as {node name: labels}."""

    def __init__(self, cache: dict[tuple[str, str], Any]) -> None:
        self._cache = cache

    def __getitem__(self, name: str) -> Mapping[str, str]:
        return self._cache[("", name)]

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return self._cache.get(("", name), default)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return (name for _, name in self._cache)

    def __len__(self) -> int:
        return len(self._cache)


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
