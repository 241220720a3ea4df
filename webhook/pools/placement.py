"""Pure pool placement: which subset a pod goes to given the counts, how a placement is written into the pod (with
everything it needs on each pool it may spill to), and the pods that `burst-to-vci: enforce` takes away from pools."""
from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from burstflow.webhook.policy import Profile, toleration_key
from burstflow.webhook.providers import VCI_BURST, Effect, enforced_to_vci
from burstflow.webhook.pools.model import (DO_NOT_SCHEDULE, LAST_POOL, POLICY_ANNOTATION, POOL_LABEL, RESERVATION_ANNOTATION,
                                 UNPLACED, ResourcePolicy, Subset)
from burstflow.selectors import Requirement, Selector

# The label Argo's controller puts on every workflow pod (what BurstProfiles' workflowPodsOnly looks for).
WORKFLOW_POD_LABEL = "workflows.argoproj.io/workflow"

PLACE = "place"
LEAVE_UNPLACED = "unplaced"
DENY = "deny"

@dataclass(frozen=True)
class PoolChoice:
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


def choose_pool(policy: ResourcePolicy, placed: Sequence[int], unplaced: int = 0) -> PoolChoice:
    """The first subset below its effective max; when all are full, the policy's `whenAllFull` choice.

    `placed[i]` is subset i's count (reservations + pods) before this pod; `unplaced` counts the policy's pods
    left without a pool (they still count towards the ratio base).
    """
    maxes = effective_maxes(policy, placed, unplaced)
    for index, limit in enumerate(maxes):
        if limit is None or placed[index] < limit:
            return PoolChoice(PLACE, index)
    summary = ", ".join(f"{s.name} {placed[i]}/{maxes[i]}" for i, s in enumerate(policy.subsets))
    message = f"every pool of ResourcePolicy {policy.namespace}/{policy.name} is full ({summary})"
    if policy.when_all_full == LAST_POOL:
        return PoolChoice(PLACE, len(policy.subsets) - 1, over_max=True,
                        message=f"{message}; placed in the last pool over its max (whenAllFull: LastPool)")
    if policy.when_all_full == UNPLACED:
        return PoolChoice(LEAVE_UNPLACED, message=f"{message}; left unplaced (whenAllFull: Unplaced)")
    return PoolChoice(DENY, message=f"{message}; retry later")


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


def reachable(policy: ResourcePolicy, index: int) -> list[Subset]:
    """The subsets a pod placed in subset `index` may run in: DoNotSchedule, only that one; ScheduleAnyWay, that one
    and every later one, so the scheduler can fall through when the pool's nodes are full."""
    subset = policy.subsets[index]
    return [subset] if subset.when_not_reach_max == DO_NOT_SCHEDULE else list(policy.subsets[index:])


def pool_term(subset: Subset) -> dict[str, Any] | None:
    """The node selector term of a subset's nodes: its `nodeSelectorTerm` ANDed with the node requirements of its
    provider preset (required node affinity, and node selector entries as `In` requirements). None when the subset
    constrains nothing (its pods may run anywhere)."""
    term = copy.deepcopy(subset.node_selector_term) if subset.node_selector_term else {}
    effect = subset.provider
    if effect is not None:
        extra = [dict(r) for r in effect.node_affinity]
        extra += [{"key": key, "operator": "In", "values": [value]} for key, value in effect.node_selector]
        for requirement in extra:
            if requirement not in (term.get("matchExpressions") or []):
                term.setdefault("matchExpressions", []).append(requirement)
    return term or None


def required_terms(policy: ResourcePolicy, index: int) -> list[dict[str, Any]] | None:
    """The nodeSelectorTerms (ORed) a pod in subset `index` must satisfy; None when it may run anywhere.

    DoNotSchedule: only this subset's term. ScheduleAnyWay: this subset's or any later subset's term, so the
    scheduler can fall through. A subset without a term is unconstrained, which makes the whole OR unconstrained.
    """
    terms: list[dict[str, Any]] = []
    for candidate in reachable(policy, index):
        term = pool_term(candidate)
        if term is None:
            return None
        if term not in terms:
            terms.append(term)
    return terms


def preferred_terms(policy: ResourcePolicy, index: int) -> list[dict[str, Any]]:
    """ScheduleAnyWay only: this and later subsets' terms as preferences, weights falling in pool order (100 first)."""
    if policy.subsets[index].when_not_reach_max == DO_NOT_SCHEDULE:
        return []
    terms: list[dict[str, Any]] = []
    for candidate in reachable(policy, index):
        term = pool_term(candidate)
        if term is not None and term not in terms:
            terms.append(term)
    count = len(terms)
    return [{"weight": max(1, round(100 * (count - k) / count)), "preference": copy.deepcopy(term)}
            for k, term in enumerate(terms)]


def spill_tolerations(policy: ResourcePolicy, index: int) -> list[dict[str, Any]]:
    """Every toleration a pod in subset `index` needs on the nodes it may land on: the subset's own and its
    provider preset's, and under ScheduleAnyWay those of every later subset too (without the VCI toleration a pod
    that spills from an ECS pool stays Pending beside a VCI node with room). In pool order, without repeats."""
    result: list[dict[str, Any]] = []
    seen: set[tuple[Any, ...]] = set()
    for candidate in reachable(policy, index):
        provided = candidate.provider.tolerations if candidate.provider is not None else ()
        for toleration in (*candidate.tolerations, *provided):
            key = toleration_key(toleration)
            if key not in seen:
                seen.add(key)
                result.append(dict(toleration))
    return result


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
    """The placed subset's provider preset, beyond what `pool_term` and `spill_tolerations` already wrote: its labels
    and annotations (keys the pod already has win) and its preferred node-affinity terms."""
    metadata = pod["metadata"]
    for key, value in effect.labels:
        metadata["labels"].setdefault(key, value)
    for key, value in effect.annotations:
        metadata["annotations"].setdefault(key, value)
    if effect.preferred:
        node = pod["spec"].setdefault("affinity", {}).setdefault("nodeAffinity", {})
        existing = node.setdefault("preferredDuringSchedulingIgnoredDuringExecution", [])
        present = [item.get("preference") for item in existing if isinstance(item, Mapping)]
        for item in effect.preferred:
            if item["preference"] not in present:
                existing.append(copy.deepcopy(dict(item)))


def shape_pod(pod: Mapping[str, Any], *, policy: ResourcePolicy, subset: int, token: str) -> dict[str, Any]:
    """A copy of `pod` placed in `policy.subsets[subset]`: pool label, token and policy annotations, required (and
    for ScheduleAnyWay preferred) node affinity merged into the pod's own, the tolerations of every subset it may
    land on (`spill_tolerations`), and the placed subset's labels, annotations and provider preset. Later subsets
    contribute only tolerations and terms: their labels, annotations and presets (e.g. `burst-to-vci`) would claim
    or steer the pod. Values the pod already has win over the subset's; applying it twice to its own output changes
    nothing (a reinvoked webhook adds no duplicate term or toleration).
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
    _add_tolerations(spec, spill_tolerations(policy, subset))
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


def enforce_wins(pod: Mapping[str, Any]) -> bool:
    """True for a pod that carries `vke.volcengine.com/burst-to-vci: enforce` and that no pool has placed yet.

    Volcengine documents the precedence: enforce hard-schedules the pod to VCI and the ResourcePolicy does not
    apply to it. A pod placed earlier (it has our reservation token, e.g. from a pool whose provider preset set
    enforce) stays the pool's, so a reinvoked webhook keeps its placement and counts.
    """
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    return enforced_to_vci(annotations) and RESERVATION_ANNOTATION not in annotations


def bypassed_policies(pod: Mapping[str, Any], policies: Sequence[ResourcePolicy], namespace: str) -> list[str]:
    """Names of the ResourcePolicies that would manage `pod` but do not because enforce wins (`enforce_wins`)."""
    if not enforce_wins(pod):
        return []
    return sorted(p.name for p in policies if p.namespace == namespace and p.matches(pod))


def select_policy(policies: Sequence[ResourcePolicy], pod: Mapping[str, Any],
                  namespace: str) -> tuple[ResourcePolicy | None, list[str]]:
    """The policy that manages `pod` (same namespace, selector matches), and warnings when several match.

    Several matching policies: the one named first alphabetically wins (deterministic across replicas). A pod with
    `vke.volcengine.com/burst-to-vci: enforce` is managed by none: Volcengine documents that enforce hard-schedules
    the pod to VCI and the ResourcePolicy does not apply (the profile step, `webhook.mutate.enforce_note`, warns).
    """
    if enforce_wins(pod):
        return None, []
    matching = sorted((p for p in policies if p.namespace == namespace and p.matches(pod)), key=lambda p: p.name)
    if not matching:
        return None, []
    warnings = []
    if len(matching) > 1:
        warnings.append(f"pod matches ResourcePolicies {', '.join(p.name for p in matching)}; "
                        f"using {matching[0].name} (first by name)")
    return matching[0], warnings


# --- validation: ResourcePolicies that profiles enforcing VCI take pods away from ------------------------------------


def _satisfiable(requirements: Sequence[Requirement]) -> bool:
    """Whether some label set meets every requirement (AND), e.g. {a In [x]} with {a NotIn [x]} cannot."""
    by_key: dict[str, list[Requirement]] = {}
    for requirement in requirements:
        by_key.setdefault(requirement.key, []).append(requirement)
    for group in by_key.values():
        operators = {r.operator for r in group}
        if "DoesNotExist" in operators:
            if operators & {"In", "Exists"}:
                return False
            continue
        allowed: frozenset[str] | None = None
        for requirement in group:
            if requirement.operator == "In":
                allowed = requirement.values if allowed is None else allowed & requirement.values
        if allowed is not None:
            excluded = frozenset().union(*(r.values for r in group if r.operator == "NotIn"))
            if not allowed - excluded:
                return False
    return True


def _describe(selector: Selector) -> str:
    parts = []
    for r in selector.requirements:
        values = ",".join(sorted(r.values))
        parts.append({"In": f"{r.key}={values}" if len(r.values) == 1 else f"{r.key} in ({values})",
                      "NotIn": f"{r.key} notin ({values})", "Exists": r.key,
                      "DoesNotExist": f"!{r.key}"}[r.operator])
    return ", ".join(parts) or "any labels"


def enforce_overlaps(*, profiles: Sequence[Profile], resource_policies: Sequence[ResourcePolicy],
                     namespaces: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Warnings for `burstflow policies validate`: a ResourcePolicy selects pods that a profile enforces onto VCI
    (it sets `vke.volcengine.com/burst-to-vci: enforce` as a literal value), so those pods are not placed by it.

    Pods overlap when the ResourcePolicy's selector and the profile's object selector (plus the Argo-pod label when
    the profile only selects workflow pods) can hold together. The profile's namespace selector is checked against
    the ResourcePolicy's namespace when a Namespace object gives its labels; otherwise the warning says which labels
    would make it apply. CEL matchConditions are not evaluated (they can only narrow the overlap).
    """
    warnings = []
    enforcing = [p for p in profiles if dict(p.annotations).get(VCI_BURST) == "enforce"]
    for policy in resource_policies:
        definite, conditional = [], []
        for profile in enforcing:
            required = list(policy.selector.requirements) + list(profile.object_selector.requirements)
            if profile.workflow_pods_only:
                required.append(Requirement(WORKFLOW_POD_LABEL, "Exists"))
            if not _satisfiable(required):
                continue
            namespace = namespaces.get(policy.namespace)
            if profile.namespace_selector.empty:
                definite.append(profile.name)
            elif namespace is not None:
                labels = (namespace.get("metadata") or {}).get("labels") or {}
                if profile.namespace_selector.matches(labels):
                    definite.append(profile.name)
            else:
                conditional.append(f"{profile.name} (if namespace {policy.namespace} is labelled "
                                   f"{_describe(profile.namespace_selector)})")
        if definite or conditional:
            warnings.append(
                f"ResourcePolicy {policy.namespace}/{policy.name}: pods it selects ({_describe(policy.selector)}) "
                f"are enforced onto VCI ({VCI_BURST}: enforce) by {', '.join(definite + conditional)}; such pods are "
                f"not placed by this ResourcePolicy (enforce wins over pools, as on Volcengine)")
    return warnings
