"""Pool usage as stored in a ResourcePolicy's status: per-subset reservations and pods, pure reads, writes and merges.

Layout of `status.subsets[i]` (everything else in status is derived for people and printer columns):
`reservations: {token: reservedAt}` — slots promised by a webhook whose pod the reconciler has not seen yet;
`pods: {token: podName}` — slots held by a pod that exists and has not finished. `placed` = both together.
`status.unplaced` has the same two maps for the policy's pods left without a pool (they count towards ratios).
"""
from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from webhook.pools.model import POLICY_ANNOTATION, POOL_LABEL, RESERVATION_ANNOTATION, ResourcePolicy
from webhook.pools.placement import LEAVE_UNPLACED, PLACE, Decision, decide
from burstflow.timefmt import format_time as _format_time, parse_time  # noqa: F401

FINISHED_PHASES = ("Succeeded", "Failed")
FULL_CONDITION = "Full"
# The bucket key for pods left unplaced; subset names are never empty.
UNPLACED_BUCKET = ""


def format_time(when: datetime) -> str:
    """Whole seconds, as metav1.Time: reservation ages are compared in seconds."""
    return _format_time(when.replace(microsecond=0))


@dataclass
class Usage:
    """Mutable per-subset slot maps, keyed by subset name; subsets missing from the maps hold nothing."""

    reservations: dict[str, dict[str, str]] = field(default_factory=dict)
    pods: dict[str, dict[str, str]] = field(default_factory=dict)

    def count(self, bucket: str) -> int:
        return len(self.reservations.get(bucket, {})) + len(self.pods.get(bucket, {}))

    def placed(self, policy: ResourcePolicy) -> list[int]:
        return [self.count(subset.name) for subset in policy.subsets]

    @property
    def unplaced(self) -> int:
        return self.count(UNPLACED_BUCKET)

    def decide(self, policy: ResourcePolicy) -> Decision:
        return decide(policy, self.placed(policy), self.unplaced)

    def reserve(self, subset: str, token: str, now: datetime) -> None:
        self.reservations.setdefault(subset, {})[token] = format_time(now)

    def holder(self, token: str) -> str | None:
        """The subset already holding `token`, if any."""
        for slots in (self.reservations, self.pods):
            for subset, tokens in slots.items():
                if token in tokens:
                    return subset
        return None


def usage_from_status(policy: ResourcePolicy, status: Any) -> Usage:
    """Read the slot maps of `policy`'s subsets from a status object; malformed entries are ignored, never fatal."""
    usage = Usage()
    names = {subset.name for subset in policy.subsets}
    items = status.get("subsets") if isinstance(status, Mapping) else None
    buckets = [(item.get("name"), item) for item in (items if isinstance(items, list) else [])
               if isinstance(item, Mapping) and item.get("name") in names]
    if isinstance(status, Mapping) and isinstance(status.get("unplaced"), Mapping):
        buckets.append((UNPLACED_BUCKET, status["unplaced"]))
    for bucket, item in buckets:
        for attribute in ("reservations", "pods"):
            slots = item.get(attribute)
            if isinstance(slots, Mapping) and slots:
                getattr(usage, attribute)[bucket] = {str(k): str(v) for k, v in slots.items()}
    return usage


def reserve_batch(policy: ResourcePolicy, usage: Usage, tokens: Iterable[str], now: datetime) -> list[Decision]:
    """Decide each token in order against `usage`, recording a reservation for every placement (mutates `usage`).

    A token `usage` already holds keeps its subset and is not counted again, so retrying a write whose outcome was
    unknown (a 5xx or timeout after the server stored it) cannot count one pod twice.
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


def reconcile(policy: ResourcePolicy, usage: Usage, pods: Iterable[Mapping[str, Any]], *, now: datetime,
              reservation_timeout: float) -> Usage:
    """Turn reservations into facts, given every pod of the policy's namespace carrying the pool label.

    A pod that exists and has not finished holds a slot in the subset its label names (whatever was reserved);
    a reservation whose pod was seen, or that is older than `reservation_timeout` seconds, is dropped; a pod that
    finished or is gone holds nothing. `pods` must be a complete, synced view (a list, or a reflector's cache).
    """
    names = {subset.name for subset in policy.subsets} | {UNPLACED_BUCKET}
    seen: set[str] = set()
    holding: dict[str, dict[str, str]] = {}
    for pod in pods:
        metadata = pod.get("metadata") or {}
        annotations = metadata.get("annotations") or {}
        token = annotations.get(RESERVATION_ANNOTATION)
        if not isinstance(token, str) or annotations.get(POLICY_ANNOTATION) != policy.name:
            continue
        if metadata.get("namespace", policy.namespace) != policy.namespace:
            continue
        seen.add(token)
        if (pod.get("status") or {}).get("phase") in FINISHED_PHASES:
            continue
        pool = (metadata.get("labels") or {}).get(POOL_LABEL)
        if pool in names:
            holding.setdefault(pool, {})[token] = str(metadata.get("name") or "")
    oldest = now - timedelta(seconds=reservation_timeout)
    reservations: dict[str, dict[str, str]] = {}
    for subset, slots in usage.reservations.items():
        kept = {token: at for token, at in slots.items()
                if token not in seen and (parse_time(at) or oldest) > oldest}
        if kept:
            reservations[subset] = kept
    return Usage(reservations=reservations, pods=holding)


def status_from_usage(policy: ResourcePolicy, usage: Usage, *, now: datetime, previous: Any = None) -> dict[str, Any]:
    """The whole status object for `usage`: slot maps plus the derived counts, summary and `Full` condition.

    `effectiveMax` is each subset's limit at the current total; the `Full` condition keeps its
    lastTransitionTime while its status does not change.
    """
    placed = usage.placed(policy)
    total = sum(placed) + usage.unplaced
    subsets = []
    parts = []
    for index, subset in enumerate(policy.subsets):
        limit = subset.effective_max(total)
        item: dict[str, Any] = {"name": subset.name, "placed": placed[index],
                                "pending": len(usage.reservations.get(subset.name, {}))}
        if subset.max_replicas is not None:
            item["max"] = subset.max_replicas
        if limit is not None:
            item["effectiveMax"] = limit
        item["reservations"] = dict(sorted(usage.reservations.get(subset.name, {}).items()))
        item["pods"] = dict(sorted(usage.pods.get(subset.name, {}).items()))
        subsets.append(item)
        parts.append(f"{subset.name} {placed[index]}/{'-' if limit is None else limit}")
    parts.append(f"unplaced {usage.unplaced}")
    decision = usage.decide(policy)
    full = decision.action != PLACE or decision.over_max
    condition = {"type": FULL_CONDITION, "status": "True" if full else "False",
                 "reason": "AllPoolsFull" if full else "RoomAvailable",
                 "message": decision.message if full else f"next pod goes to {policy.subsets[decision.subset].name}",
                 "lastTransitionTime": format_time(now)}
    old = _condition(previous, FULL_CONDITION)
    if old and old.get("status") == condition["status"] and old.get("lastTransitionTime"):
        condition["lastTransitionTime"] = old["lastTransitionTime"]
    unplaced = {"placed": usage.unplaced, "pending": len(usage.reservations.get(UNPLACED_BUCKET, {})),
                "reservations": dict(sorted(usage.reservations.get(UNPLACED_BUCKET, {}).items())),
                "pods": dict(sorted(usage.pods.get(UNPLACED_BUCKET, {}).items()))}
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
