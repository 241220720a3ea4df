"""Prometheus metrics of the resource pools, registered into the registry the caller passes in."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge

from burstflow.webhook.pools.model import ResourcePolicy

# result label of burstflow_pool_placements_total
RESERVED = "reserved"          # a new slot was counted
REUSED = "reused"              # a reinvocation found its token: same pool, nothing counted
DRY_RUN = "dry-run"            # placed from the last known counts, nothing counted
OVERFLOW = "overflow"          # whenAllFull: LastPool put it over the last pool's max
UNRESERVED = "unreserved"      # the API was unreachable: placed in the last pool without a count
UNPLACED = "unplaced"
DENIED = "denied"


class PoolMetrics:
    """`placed`/`effective_max` mirror the counts of the last status this process wrote or read."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["namespace", "policy", "subset"]
        self.placed = Gauge("burstflow_pool_placed", "Pods counted in a pool (reservations + running pods).",
                            labels, registry=registry)
        self.effective_max = Gauge("burstflow_pool_effective_max",
                                   "A pool's limit at the current total (-1 when unlimited).", labels,
                                   registry=registry)
        self.placements = Counter("burstflow_pool_placements_total", "Placement answers, by result.",
                                  labels + ["result"], registry=registry)
        self.status_writes = Counter("burstflow_pool_status_writes_total",
                                     "ResourcePolicy status writes, by result (ok, conflict, error).", ["result"],
                                     registry=registry)
        self.status_write_bytes = Counter(
            "burstflow_pool_status_write_bytes", "Bytes of the ResourcePolicy objects written with a status write "
            "(as the API server answered them): follows the pods admitted recently, not the pods alive.",
            registry=registry)
        self.status_bytes = Gauge("burstflow_pool_status_object_bytes",
                                  "Size of the largest ResourcePolicy object this process has written.",
                                  registry=registry)
        self.rebuild_seconds = Gauge("burstflow_pool_reconciler_rebuild_seconds",
                                     "Time the reconciler took, after it became leader, to list every pool pod and "
                                     "node and write the counts rebuilt from them.", registry=registry)
        self.largest_write = 0
        self.leader = Gauge("burstflow_leader_is_leader", "1 while this replica holds the component's Lease.",
                            ["component"], registry=registry)

    def count_placement(self, policy: ResourcePolicy, subset: str, result: str) -> None:
        self.placements.labels(namespace=policy.namespace, policy=policy.name, subset=subset, result=result).inc()

    def count_write(self, result: str, written: Mapping[str, Any] | None = None) -> None:
        """One status write by `result` (ok, conflict, error); `written` is the object the server answered with."""
        self.status_writes.labels(result=result).inc()
        if written is not None:
            size = len(orjson.dumps(written))
            self.status_write_bytes.inc(size)
            if size > self.largest_write:
                self.largest_write = size
                self.status_bytes.set(size)

    def observe_status(self, policy: ResourcePolicy, status: Mapping[str, Any]) -> None:
        for item in status.get("subsets") or []:
            labels = {"namespace": policy.namespace, "policy": policy.name, "subset": item.get("name", "")}
            self.placed.labels(**labels).set(item.get("placed", 0))
            self.effective_max.labels(**labels).set(item.get("effectiveMax", -1))
