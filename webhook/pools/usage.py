"""Pool usage as stored in a ResourcePolicy's status: running counts and in-flight reservations, pure reads,
writes and merges.

What the status must guard is only what admissions and the reconciler race on, so per subset it holds:
`running` — how many live pods the reconciler last counted there (an integer, whatever the number of pods), and
`reservations` — slots promised by a webhook whose pod the reconciler has not seen yet, grouped by the second they
were reserved: `{reservedAt: "token token ..."}` (one key per second, not per pod, keeps the bytes per token low).
`placed` = running + reserved tokens. `status.unplaced` has the same fields for the policy's pods left without a
pool (they count towards ratios). Everything else in status is derived for people and printer columns. So a
status write costs bytes in proportion to the pods admitted in the last seconds, never to the pods alive.
"""
from __future__ import annotations

import copy
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from burstflow.webhook.pools.model import POLICY_ANNOTATION, POOL_LABEL, RESERVATION_ANNOTATION, ResourcePolicy
from burstflow.webhook.pools.placement import LEAVE_UNPLACED, PLACE, PoolChoice as Decision, choose_pool as decide
from burstflow.timefmt import format_time, parse_time

FINISHED_PHASES = ("Succeeded", "Failed")
FULL_CONDITION = "Full"
# The bucket key for pods left unplaced; subset names are never empty.
UNPLACED_BUCKET = ""


@dataclass
class Usage:
    """Per-bucket counts: `running` live pods the reconciler counted, `reservations` {token: reservedAt} not yet
    seen as pods. Buckets are subset names, or UNPLACED_BUCKET; missing buckets hold nothing."""

    reservations: dict[str, dict[str, str]] = field(default_factory=dict)
    running: dict[str, int] = field(default_factory=dict)

    def count(self, bucket: str) -> int:
        return len(self.reservations.get(bucket, {})) + self.running.get(bucket, 0)

    def placed(self, policy: ResourcePolicy) -> list[int]:
        return [self.count(subset.name) for subset in policy.subsets]

    @property
    def unplaced(self) -> int:
        return self.count(UNPLACED_BUCKET)

    def decide(self, policy: ResourcePolicy) -> Decision:
        return decide(policy, self.placed(policy), self.unplaced)

    def reserve(self, subset: str, token: str, now: datetime) -> None:
        # Whole seconds (truncated): reservation ages are compared in seconds, and reservations are grouped by it.
        self.reservations.setdefault(subset, {})[token] = format_time(now, timespec="seconds")

    def holder(self, token: str) -> str | None:
        """The bucket whose reservations hold `token`, if any."""
        for subset, tokens in self.reservations.items():
            if token in tokens:
                return subset
        return None


class PodRecord(NamedTuple):
    """What counting needs of one pool-labelled pod; the reconciler keeps only this, not the pod (100,000 pods
    fit in a few tens of MiB)."""

    namespace: str
    name: str
    token: str
    policy: str
    pool: str
    node: str
    finished: bool


def pod_record(pod: Mapping[str, Any]) -> PodRecord | None:
    """The PodRecord of a pod dict; None for a pod no ResourcePolicy placed (no token, policy or pool label)."""
    metadata = pod.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    token, policy = annotations.get(RESERVATION_ANNOTATION), annotations.get(POLICY_ANNOTATION)
    pool = (metadata.get("labels") or {}).get(POOL_LABEL)
    if not isinstance(token, str) or not isinstance(policy, str) or not isinstance(pool, str):
        return None
    # Interned: a namespace, policy, pool or node name is one string however many pods repeat it (at 100,000 pods
    # that is about a third of the reconciler's memory).
    return PodRecord(namespace=sys.intern(str(metadata.get("namespace") or "")), name=str(metadata.get("name") or ""),
                     token=token, policy=sys.intern(policy), pool=sys.intern(pool),
                     node=sys.intern(str((pod.get("spec") or {}).get("nodeName") or "")),
                     finished=(pod.get("status") or {}).get("phase") in FINISHED_PHASES)


def bucket_of(policy: ResourcePolicy, record: PodRecord, nodes: Mapping[str, Mapping[str, str]]) -> str | None:
    """Where `record` counts: before binding, the pool it was reserved in (its label); once bound to a node whose
    labels `nodes` knows, the pool whose nodeSelectorTerm matches that node — its own pool when it matches (or has
    no term), else the first matching pool in priority order, else still its own. Unplaced pods stay unplaced:
    they were admitted outside every pool. None for a label naming no subset of `policy`."""
    return bucket_for(policy, record.pool, record.node, nodes)


def bucket_for(policy: ResourcePolicy, pool: str, node: str, nodes: Mapping[str, Mapping[str, str]]) -> str | None:
    """`bucket_of` for a pod labelled `pool` bound to `node` ("" before binding)."""
    if pool == UNPLACED_BUCKET:
        return UNPLACED_BUCKET
    index = policy.subset_index(pool)
    if index is None:
        return None
    labels = nodes.get(node) if node else None
    if labels is None or policy.subsets[index].matches_node(labels, node) is not False:
        return pool
    for subset in policy.subsets:
        if subset.matches_node(labels, node):
            return subset.name
    return pool


def usage_from_status(policy: ResourcePolicy, status: Any) -> Usage:
    """Read `policy`'s buckets from a status object; malformed entries are ignored, never fatal.

    The layout before running counts (`reservations: {token: time}` and `pods: {token: podName}`) is read too, so
    an upgrade keeps its counts until the reconciler rewrites them.
    """
    usage = Usage()
    names = {subset.name for subset in policy.subsets}
    items = status.get("subsets") if isinstance(status, Mapping) else None
    buckets = [(item.get("name"), item) for item in (items if isinstance(items, list) else [])
               if isinstance(item, Mapping) and item.get("name") in names]
    if isinstance(status, Mapping) and isinstance(status.get("unplaced"), Mapping):
        buckets.append((UNPLACED_BUCKET, status["unplaced"]))
    for bucket, item in buckets:
        running = item.get("running")
        if isinstance(running, int) and not isinstance(running, bool) and running > 0:
            usage.running[bucket] = running
        legacy = item.get("pods")
        if isinstance(legacy, Mapping) and legacy:
            usage.running[bucket] = usage.running.get(bucket, 0) + len(legacy)
        slots = item.get("reservations")
        if isinstance(slots, Mapping) and slots:
            usage.reservations[bucket] = _read_reservations(slots)
    return usage


def _read_reservations(slots: Mapping[Any, Any]) -> dict[str, str]:
    tokens: dict[str, str] = {}
    for key, value in slots.items():
        if not isinstance(value, str):
            continue
        if parse_time(key) is not None:        # {reservedAt: "token token"}
            for token in value.split():
                tokens[token] = str(key)
        else:                                   # the old layout, {token: reservedAt}
            tokens[str(key)] = value
    return tokens


def _write_reservations(tokens: Mapping[str, str]) -> dict[str, str]:
    grouped: dict[str, list[str]] = {}
    for token, at in tokens.items():
        grouped.setdefault(at, []).append(token)
    return {at: " ".join(sorted(grouped[at])) for at in sorted(grouped)}


def reserve_batch(policy: ResourcePolicy, usage: Usage, tokens: Iterable[str], now: datetime) -> list[Decision]:
    """Decide each token in order against `usage`, recording a reservation for every placement (mutates `usage`).

    A token `usage` already holds keeps its subset and is not counted again, so retrying a write whose outcome was
    unknown (a 5xx or timeout after the server stored it) cannot count one pod twice. (The token cannot have
    become a running pod meanwhile: its pod is only created after this write's answer.)
    """
    decisions = []
    for token in tokens:
        holder = usage.holder(token)
        if holder == UNPLACED_BUCKET:
            decisions.append(Decision(LEAVE_UNPLACED))
            continue
        index = policy.subset_index(holder) if holder is not None else None
        if index is not None:
            decisions.append(Decision(PLACE, index))
            continue
        decision = usage.decide(policy)
        if decision.action == PLACE:
            usage.reserve(policy.subsets[decision.subset].name, token, now)
        elif decision.action == LEAVE_UNPLACED:
            usage.reserve(UNPLACED_BUCKET, token, now)
        decisions.append(decision)
    return decisions


def reconcile(policy: ResourcePolicy, usage: Usage, pods: Iterable[PodRecord | Mapping[str, Any]], *,
              now: datetime, reservation_timeout: float,
              nodes: Mapping[str, Mapping[str, str]] | None = None) -> Usage:
    """Turn reservations into facts, given every pool-labelled pod of the policy's namespace (PodRecords or pod
    dicts) and the labels of the nodes they may be bound to.

    A pod that exists and has not finished is running in the bucket `bucket_of` names (where it runs once bound,
    where it was reserved before); a reservation whose pod was seen, or that is older than `reservation_timeout`
    seconds, is dropped; a pod that finished or is gone holds nothing. `pods` must be a complete, synced view (a
    list, or a reflector's cache); `usage.running` is replaced, not added to.
    """
    placements = PolicyPods()
    for pod in pods:
        record = pod if isinstance(pod, PodRecord) else pod_record(pod)
        if record is not None and record.policy == policy.name \
                and (record.namespace or policy.namespace) == policy.namespace:
            placements.add(record)
    return reconcile_placements(policy, usage, placements, now=now, reservation_timeout=reservation_timeout,
                                nodes=nodes or {})


@dataclass
class PolicyPods:
    """What counting needs of one policy's pods, kept up to date pod by pod: live pods per (pool label, node) and
    every token seen (finished pods included). A reconcile pass then costs the number of (pool, node) pairs and
    reservations, not the number of pods."""

    live: dict[tuple[str, str], int] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)

    def add(self, record: PodRecord, sign: int = 1) -> None:
        self.tokens[record.token] = self.tokens.get(record.token, 0) + sign
        if not self.tokens[record.token]:
            del self.tokens[record.token]
        if not record.finished:
            where = (record.pool, record.node)
            self.live[where] = self.live.get(where, 0) + sign
            if not self.live[where]:
                del self.live[where]


def reconcile_placements(policy: ResourcePolicy, usage: Usage, pods: PolicyPods, *, now: datetime,
                         reservation_timeout: float, nodes: Mapping[str, Mapping[str, str]]) -> Usage:
    """`reconcile` over pods already grouped by (pool label, node)."""
    running: dict[str, int] = {}
    for (pool, node), count in pods.live.items():
        bucket = bucket_for(policy, pool, node, nodes)
        if bucket is not None:
            running[bucket] = running.get(bucket, 0) + count
    oldest = now - timedelta(seconds=reservation_timeout)
    reservations: dict[str, dict[str, str]] = {}
    for subset, slots in usage.reservations.items():
        kept = {token: at for token, at in slots.items()
                if token not in pods.tokens and (parse_time(at) or oldest) > oldest}
        if kept:
            reservations[subset] = kept
    return Usage(reservations=reservations, running=running)


def status_from_usage(policy: ResourcePolicy, usage: Usage, *, now: datetime, previous: Any = None) -> dict[str, Any]:
    """The whole status object for `usage`: running counts and reservations plus the derived counts, summary and
    `Full` condition.

    `effectiveMax` is each subset's limit for the next pod; the `Full` condition keeps its
    lastTransitionTime while its status does not change.
    """
    placed = usage.placed(policy)
    total = sum(placed) + usage.unplaced
    subsets = []
    parts = []
    for index, subset in enumerate(policy.subsets):
        limit = subset.effective_max(total + 1)
        item: dict[str, Any] = {"name": subset.name, "placed": placed[index],
                                "running": usage.running.get(subset.name, 0),
                                "pending": len(usage.reservations.get(subset.name, {}))}
        if subset.max_replicas is not None:
            item["max"] = subset.max_replicas
        if limit is not None:
            item["effectiveMax"] = limit
        item["reservations"] = _write_reservations(usage.reservations.get(subset.name, {}))
        subsets.append(item)
        parts.append(f"{subset.name} {placed[index]}/{'-' if limit is None else limit}")
    parts.append(f"unplaced {usage.unplaced}")
    decision = usage.decide(policy)
    full = decision.action != PLACE or decision.over_max
    condition = {"type": FULL_CONDITION, "status": "True" if full else "False",
                 "reason": "AllPoolsFull" if full else "RoomAvailable",
                 "message": decision.message if full else f"next pod goes to {policy.subsets[decision.subset].name}",
                 "lastTransitionTime": format_time(now, timespec="seconds")}
    old = _condition(previous, FULL_CONDITION)
    if old and old.get("status") == condition["status"] and old.get("lastTransitionTime"):
        condition["lastTransitionTime"] = old["lastTransitionTime"]
    unplaced = {"placed": usage.unplaced, "running": usage.running.get(UNPLACED_BUCKET, 0),
                "pending": len(usage.reservations.get(UNPLACED_BUCKET, {})),
                "reservations": _write_reservations(usage.reservations.get(UNPLACED_BUCKET, {}))}
    status: dict[str, Any] = {"placed": sum(placed), "managed": total, "summary": ", ".join(parts), "subsets": subsets,
                              "unplaced": unplaced, "conditions": [condition]}
    if policy.generation is not None:
        status["observedGeneration"] = policy.generation
    return status


def _condition(status: Any, kind: str) -> Mapping[str, Any] | None:
    conditions = status.get("conditions") if isinstance(status, Mapping) else None
    for item in conditions if isinstance(conditions, list) else []:
        if isinstance(item, Mapping) and item.get("type") == kind:
            return item
    return None


def with_status(obj: Mapping[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    """A copy of the ResourcePolicy `obj` (keeping its resourceVersion, so the write is guarded) with `status`."""
    result = {key: value for key, value in obj.items() if key != "status"}
    result["metadata"] = copy.deepcopy(dict(obj.get("metadata") or {}))
    result["status"] = status
    return result
