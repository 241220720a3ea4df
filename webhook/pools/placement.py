"""Pure pool placement: which subset a pod goes to given the counts, and how a placement is written into the pod."""
from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from webhook.policy import toleration_key
from webhook.providers import Effect
from webhook.pools.model import (DO_NOT_SCHEDULE, LAST_POOL, POLICY_ANNOTATION, POOL_LABEL, RESERVATION_ANNOTATION,
                                 UNPLACED, ResourcePolicy)

PLACE = "place"
LEAVE_UNPLACED = "unplaced"
DENY = "deny"

@dataclass(frozen=True)
class Decision:
    """`action` is place (into `subset`, an index), unplaced, or deny; `over_max` marks a LastPool overflow."""

    action: str
    subset: int | None = None
    over_max: bool = False
    message: str = ""


def effective_maxes(policy: ResourcePolicy, placed: Sequence[int], unplaced: int = 0) -> list[int | None]:
    """Each subset's effective max for the next pod.

    `managed` = every pod the policy counts (in a subset or left unplaced) plus the pod being placed.
    """
    managed = sum(placed) + unplaced + 1
    return [subset.effective_max(managed) for subset in policy.subsets]


def decide(policy: ResourcePolicy, placed: Sequence[int], unplaced: int = 0) -> Decision:
    """The first subset below its effective max; when all are full, the policy's `whenAllFull` choice.

    `placed[i]` is subset i's count (reservations + pods) before this pod; `unplaced` counts the policy's pods
    left without a pool (they still count towards the ratio base).
    """
    maxes = effective_maxes(policy, placed, unplaced)
    for index, limit in enumerate(maxes):
        if limit is None or placed[index] < limit:
            return Decision(PLACE, index)
    summary = ", ".join(f"{s.name} {placed[i]}/{maxes[i]}" for i, s in enumerate(policy.subsets))
    message = f"every pool of ResourcePolicy {policy.namespace}/{policy.name} is full ({summary})"
    if policy.when_all_full == LAST_POOL:
        return Decision(PLACE, len(policy.subsets) - 1, over_max=True,
                        message=f"{message}; placed in the last pool over its max (whenAllFull: LastPool)")
    if policy.when_all_full == UNPLACED:
        return Decision(LEAVE_UNPLACED, message=f"{message}; left unplaced (whenAllFull: Unplaced)")
    return Decision(DENY, message=f"{message}; retry later")


def previous_placement(pod: Mapping[str, Any], policy: ResourcePolicy) -> tuple[str, int | None] | None:
    """(token, subset index or None for unplaced) when an earlier call already decided this pod, else None.

    A reinvoked webhook gets a new request uid and, for generateName pods, no name, so the token this module wrote
    into the pod on its first call is the only identity that survives; the pool label says where it went.
    """
    metadata = pod.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    token = annotations.get(RESERVATION_ANNOTATION)
    if not isinstance(token, str) or not token:
        return None
    if annotations.get(POLICY_ANNOTATION, policy.name) != policy.name:
        return None
    pool = (metadata.get("labels") or {}).get(POOL_LABEL)
    return token, policy.subset_index(pool) if isinstance(pool, str) and pool else None


def required_terms(policy: ResourcePolicy, index: int) -> list[dict[str, Any]] | None:
    """The nodeSelectorTerms (ORed) a pod in subset `index` must satisfy; None when it may run anywhere.

    DoNotSchedule: only this subset's term. ScheduleAnyWay: this subset's or any later subset's term, so the
    scheduler can fall through. A subset without a term is unconstrained, which makes the whole OR unconstrained.
    """
    subset = policy.subsets[index]
    chosen = [subset] if subset.when_not_reach_max == DO_NOT_SCHEDULE else list(policy.subsets[index:])
    terms: list[dict[str, Any]] = []
    for candidate in chosen:
        if candidate.node_selector_term is None:
            return None
        if candidate.node_selector_term not in terms:
            terms.append(candidate.node_selector_term)
    return terms


def preferred_terms(policy: ResourcePolicy, index: int) -> list[dict[str, Any]]:
    """ScheduleAnyWay only: this and later subsets' terms as preferences, weights falling in pool order (100 first)."""
    if policy.subsets[index].when_not_reach_max == DO_NOT_SCHEDULE:
        return []
    terms: list[dict[str, Any]] = []
    for candidate in policy.subsets[index:]:
        if candidate.node_selector_term is not None and candidate.node_selector_term not in terms:
            terms.append(candidate.node_selector_term)
    count = len(terms)
    return [{"weight": max(1, round(100 * (count - k) / count)), "preference": copy.deepcopy(term)}
            for k, term in enumerate(terms)]


def _implies(term: Mapping[str, Any], other: Mapping[str, Any]) -> bool:
    """`term` already contains every requirement of `other` (so term AND other == term)."""
    return all(req in (term.get(kind) or []) for kind in ("matchExpressions", "matchFields")
               for req in other.get(kind) or [])


def _and(term: Mapping[str, Any], other: Mapping[str, Any]) -> dict[str, Any]:
    result = copy.deepcopy(dict(term))
    for kind in ("matchExpressions", "matchFields"):
        for req in other.get(kind) or []:
            if req not in (result.get(kind) or []):
                result.setdefault(kind, []).append(copy.deepcopy(req))
    return result


def merge_required(existing: Sequence[Mapping[str, Any]], ours: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """(existing OR ...) AND (ours OR ...), distributed into ORed terms whose requirements are ANDed.

    A term that already implies one of ours is kept as is, so applying the merge twice changes nothing.
    """
    if not existing:
        return [copy.deepcopy(dict(term)) for term in ours]
    result: list[dict[str, Any]] = []
    for term in existing:
        expanded = [dict(term)] if any(_implies(term, o) for o in ours) else [_and(term, o) for o in ours]
        for candidate in expanded:
            if candidate not in result:
                result.append(copy.deepcopy(candidate))
    return result


def _apply_affinity(spec: dict[str, Any], policy: ResourcePolicy, index: int) -> None:
    required = required_terms(policy, index)
    preferred = preferred_terms(policy, index)
    if required is None and not preferred:
        return
    affinity = spec.setdefault("affinity", {})
    node = affinity.setdefault("nodeAffinity", {})
    if required is not None:
        selector = node.setdefault("requiredDuringSchedulingIgnoredDuringExecution", {})
        selector["nodeSelectorTerms"] = merge_required(selector.get("nodeSelectorTerms") or [], required)
    if preferred:
        existing = node.setdefault("preferredDuringSchedulingIgnoredDuringExecution", [])
        present = [item.get("preference") for item in existing if isinstance(item, Mapping)]
        for item in preferred:
            if item["preference"] not in present:
                existing.append(item)


def _add_tolerations(spec: dict[str, Any], tolerations: Sequence[Mapping[str, Any]]) -> None:
    if not tolerations:
        return
    existing = spec.get("tolerations") or []
    present = {toleration_key(t) for t in existing if isinstance(t, Mapping)}
    for toleration in tolerations:
        # The same identity rule as BurstProfiles (operator defaults to Equal), so a toleration a profile
        # already added is not added again by the pool.
        if toleration_key(toleration) not in present:
            present.add(toleration_key(toleration))
            existing.append(copy.deepcopy(dict(toleration)))
    spec["tolerations"] = existing


def _apply_effect(pod: dict[str, Any], effect: Effect) -> None:
    """A subset's provider preset: keys the pod already has win; affinity requirements are ANDed into every term."""
    metadata = pod["metadata"]
    for key, value in effect.labels:
        metadata["labels"].setdefault(key, value)
    for key, value in effect.annotations:
        metadata["annotations"].setdefault(key, value)
    spec = pod["spec"]
    _add_tolerations(spec, effect.tolerations)
    if effect.node_selector:
        selector = spec.get("nodeSelector") or {}
        for key, value in effect.node_selector:
            selector.setdefault(key, value)
        spec["nodeSelector"] = selector
    if effect.node_affinity:
        node = spec.setdefault("affinity", {}).setdefault("nodeAffinity", {})
        selector = node.setdefault("requiredDuringSchedulingIgnoredDuringExecution", {})
        ours = [{"matchExpressions": [dict(r) for r in effect.node_affinity]}]
        selector["nodeSelectorTerms"] = merge_required(selector.get("nodeSelectorTerms") or [], ours)


def shape_pod(pod: Mapping[str, Any], *, policy: ResourcePolicy, subset: int, token: str) -> dict[str, Any]:
    """A copy of `pod` placed in `policy.subsets[subset]`: pool label, token and policy annotations, required (and
    for ScheduleAnyWay preferred) node affinity merged into the pod's own, the subset's tolerations, labels,
    annotations and provider preset. Values the pod already has win over the subset's; applying it twice to
    its own output changes nothing (a reinvoked webhook adds no duplicate term or toleration).
    """
    result = copy.deepcopy(dict(pod))
    target = policy.subsets[subset]
    metadata = result.setdefault("metadata", {})
    labels = metadata.get("labels") or {}
    annotations = metadata.get("annotations") or {}
    for key, value in target.labels.items():
        labels.setdefault(key, value)
    labels[POOL_LABEL] = target.name
    for key, value in target.annotations.items():
        annotations.setdefault(key, value)
    annotations.setdefault(RESERVATION_ANNOTATION, token)
    annotations[POLICY_ANNOTATION] = policy.name
    metadata["labels"] = labels
    metadata["annotations"] = annotations
    spec = result.setdefault("spec", {})
    _add_tolerations(spec, target.tolerations)
    _apply_affinity(spec, policy, subset)
    if target.provider is not None:
        _apply_effect(result, target.provider)
    return result


def mark_unplaced(pod: Mapping[str, Any], *, policy: ResourcePolicy, token: str) -> dict[str, Any]:
    """A copy of `pod` with the token and policy annotations and an empty pool label: counted as one of the policy's
    pods (for ratios) without any pool constraint; a reinvocation keeps it unplaced."""
    result = copy.deepcopy(dict(pod))
    metadata = result.setdefault("metadata", {})
    labels = metadata.get("labels") or {}
    labels[POOL_LABEL] = ""
    metadata["labels"] = labels
    annotations = metadata.get("annotations") or {}
    annotations.setdefault(RESERVATION_ANNOTATION, token)
    annotations[POLICY_ANNOTATION] = policy.name
    metadata["annotations"] = annotations
    return result


def select_policy(policies: Sequence[ResourcePolicy], pod: Mapping[str, Any],
                  namespace: str) -> tuple[ResourcePolicy | None, list[str]]:
    """The policy that manages `pod` (same namespace, selector matches), and warnings when several match.

    Several matching policies: the one named first alphabetically wins (deterministic across replicas).
    """
    matching = sorted((p for p in policies if p.namespace == namespace and p.matches(pod)), key=lambda p: p.name)
    if not matching:
        return None, []
    warnings = []
    if len(matching) > 1:
        warnings.append(f"pod matches ResourcePolicies {', '.join(p.name for p in matching)}; "
                        f"using {matching[0].name} (first by name)")
    return matching[0], warnings
