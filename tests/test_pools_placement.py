"""Pure placement: subset choice (maxes, floor ratios over growing totals, all-full choices), the affinity and
toleration shape written into pods (whole objects), merging with a pod's own affinity, idempotence, and the pure
usage bookkeeping the ledger and reconciler share."""
from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone

import pytest

from tests.conftest import load_admission
from webhook.pools.model import compile_resource_policy
from webhook.pools.placement import (DENY, LEAVE_UNPLACED, PLACE, Decision, decide, mark_unplaced, merge_required,
                                     previous_placement, select_policy, shape_pod)
from webhook.pools.usage import (Usage, reconcile, reserve_batch, status_from_usage, usage_from_status)

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)
ECS = {"key": "pool", "operator": "In", "values": ["ecs"]}
VCI = {"key": "type", "operator": "In", "values": ["virtual-kubelet"]}
ZONE = {"key": "zone", "operator": "In", "values": ["a"]}
VCI_TOLERATION = {"key": "vci.vke.volcengine.com/node-type", "operator": "Equal", "value": "vci",
                  "effect": "NoSchedule"}


def policy(*subsets, when_all_full=None, selector=None, name="p"):
    spec = {"selector": selector or {"app": "wf"}, "subsets": list(subsets)}
    if when_all_full:
        spec["whenAllFull"] = when_all_full
    return compile_resource_policy({"apiVersion": "burstflow.io/v1alpha1", "kind": "ResourcePolicy",
                                    "metadata": {"name": name, "namespace": "ns"}, "spec": spec})


POOLS_5_100_UNLIMITED = policy({"name": "ecs", "maxReplicas": 5, "nodeSelectorTerm": [ECS]},
                               {"name": "vci", "maxReplicas": 100, "nodeSelectorTerm": [VCI]},
                               {"name": "rest"})


@pytest.mark.parametrize("placed,expected", [
    ([0, 0, 0], Decision(PLACE, 0)),
    ([4, 0, 0], Decision(PLACE, 0)),
    ([5, 0, 0], Decision(PLACE, 1)),
    ([5, 99, 0], Decision(PLACE, 1)),
    ([5, 100, 0], Decision(PLACE, 2)),
    ([5, 100, 1000], Decision(PLACE, 2)),
    ([3, 100, 7], Decision(PLACE, 0)),
], ids=["empty", "first pool one left", "first full", "second one left", "both full -> unlimited",
        "unlimited stays open", "a slot freed in the first pool is reused"])
def test_first_subset_below_its_max(placed, expected):
    assert decide(POOLS_5_100_UNLIMITED, placed) == expected


RATIO = policy({"name": "ecs", "maxReplicas": 5, "maxReplicasRatio": "0.1"}, {"name": "vci"})


def test_ratio_limit_with_growing_totals_never_exceeds_its_share():
    placed = [0, 0]
    first_pool_at = []
    for pod in range(1, 101):
        decision = decide(RATIO, placed)
        placed[decision.subset] += 1
        if decision.subset == 0:
            first_pool_at.append(pod)
        assert placed[0] <= sum(placed) // 10, f"ecs holds {placed[0]} of {sum(placed)}"
    # floor(0.1 x managed): the 10th, 20th, ... pod may go first; maxReplicas 5 caps it after the 50th.
    assert first_pool_at == [10, 20, 30, 40, 50]
    assert placed == [5, 95]


def test_ratio_counts_unplaced_pods_in_the_base():
    volcengine = policy({"name": "ecs", "maxReplicasRatio": "0.5"})  # whenAllFull defaults to Unplaced
    assert decide(volcengine, [0], unplaced=0) == Decision(LEAVE_UNPLACED, message=decide(volcengine, [0]).message)
    assert decide(volcengine, [0], unplaced=1).action == PLACE
    assert decide(volcengine, [1], unplaced=1).action == LEAVE_UNPLACED
    assert decide(volcengine, [1], unplaced=2).action == PLACE


ALL_FULL = [{"name": "a", "maxReplicas": 1, "nodeSelectorTerm": [ECS]},
            {"name": "b", "maxReplicas": 2, "nodeSelectorTerm": [VCI]}]


@pytest.mark.parametrize("choice,action,subset,over", [
    ("LastPool", PLACE, 1, True), ("Unplaced", LEAVE_UNPLACED, None, False), ("Deny", DENY, None, False)])
def test_all_full_behaviour(choice, action, subset, over):
    decision = decide(policy(*ALL_FULL, when_all_full=choice), [1, 2])
    assert (decision.action, decision.subset, decision.over_max) == (action, subset, over)
    assert decision.message.startswith("every pool of ResourcePolicy ns/p is full (a 1/1, b 2/2)")


def argo_pod():
    pod = copy.deepcopy(load_admission("pod-create-argo-workflow-pod.json")["body"]["request"]["object"])
    pod["metadata"]["labels"]["app"] = "wf"
    return pod


def strip(pod):
    """The parts of a pod that placement may touch."""
    return {"labels": pod["metadata"].get("labels"), "annotations": pod["metadata"].get("annotations"),
            "affinity": pod["spec"].get("affinity"), "tolerations": pod["spec"].get("tolerations"),
            "nodeSelector": pod["spec"].get("nodeSelector")}


ANYWAY = policy({"name": "ecs", "maxReplicas": 5, "whenNotReachMax": "ScheduleAnyWay", "nodeSelectorTerm": [ECS]},
                {"name": "vci", "maxReplicas": 100, "whenNotReachMax": "DoNotSchedule", "nodeSelectorTerm": [VCI],
                 "tolerations": [VCI_TOLERATION], "annotations": {"team": "burst"},
                 "provider": {"volcengine-vci": {"mode": "auto"}}},
                {"name": "rest", "nodeSelectorTerm": [ZONE]})


def test_do_not_schedule_shape_whole_object():
    pod = argo_pod()
    shaped = shape_pod(pod, policy=ANYWAY, subset=1, token="t1")
    before = strip(pod)
    assert strip(shaped) == {
        "labels": {**before["labels"], "burstflow.io/pool": "vci"},
        "annotations": {**before["annotations"], "team": "burst", "burstflow.io/reservation": "t1",
                        "burstflow.io/resource-policy": "p", "vke.volcengine.com/burst-to-vci": "auto"},
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [VCI]}]}}},
        "tolerations": (before["tolerations"] or []) + [VCI_TOLERATION],
        "nodeSelector": before["nodeSelector"],
    }


def test_schedule_anyway_shape_whole_object():
    pod = argo_pod()
    shaped = shape_pod(pod, policy=ANYWAY, subset=0, token="t0")
    before = strip(pod)
    assert strip(shaped) == {
        "labels": {**before["labels"], "burstflow.io/pool": "ecs"},
        "annotations": {**before["annotations"], "burstflow.io/reservation": "t0",
                        "burstflow.io/resource-policy": "p"},
        "affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [ECS]}, {"matchExpressions": [VCI]}, {"matchExpressions": [ZONE]}]},
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 100, "preference": {"matchExpressions": [ECS]}},
                {"weight": 67, "preference": {"matchExpressions": [VCI]}},
                {"weight": 33, "preference": {"matchExpressions": [ZONE]}}]}},
        "tolerations": before["tolerations"],
        "nodeSelector": before["nodeSelector"],
    }


def test_an_unconstrained_later_subset_lifts_the_requirement_but_keeps_preferences():
    open_end = policy({"name": "ecs", "maxReplicas": 1, "whenNotReachMax": "ScheduleAnyWay", "nodeSelectorTerm": [ECS]},
                      {"name": "anywhere"})
    shaped = shape_pod(argo_pod(), policy=open_end, subset=0, token="t")
    assert shaped["spec"]["affinity"] == {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 100, "preference": {"matchExpressions": [ECS]}}]}}


def test_existing_required_terms_are_distributed_not_overwritten():
    # (A or B) and (ECS or VCI) -> A.ECS, A.VCI, B.ECS, B.VCI: terms ORed, expressions inside a term ANDed.
    a = {"matchExpressions": [{"key": "arch", "operator": "In", "values": ["amd64"]}]}
    b = {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}
    merged = merge_required([a, b], [{"matchExpressions": [ECS]}, {"matchExpressions": [VCI]}])
    assert merged == [
        {"matchExpressions": [a["matchExpressions"][0], ECS]},
        {"matchExpressions": [a["matchExpressions"][0], VCI]},
        {"matchFields": b["matchFields"], "matchExpressions": [ECS]},
        {"matchFields": b["matchFields"], "matchExpressions": [VCI]},
    ]
    assert merge_required(merged, [{"matchExpressions": [ECS]}, {"matchExpressions": [VCI]}]) == merged


def test_pod_affinity_and_pod_values_survive():
    pod = argo_pod()
    pod["metadata"]["annotations"]["team"] = "mine"
    pod["spec"]["affinity"] = {
        "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [ZONE]}]}},
        "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 1, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname"}}]}}
    shaped = shape_pod(pod, policy=ANYWAY, subset=1, token="t")
    assert shaped["metadata"]["annotations"]["team"] == "mine"
    assert shaped["spec"]["affinity"] == {
        "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [ZONE, VCI]}]}},
        "podAntiAffinity": pod["spec"]["affinity"]["podAntiAffinity"]}


@pytest.mark.parametrize("subset", [0, 1, 2])
def test_shaping_twice_changes_nothing(subset):
    once = shape_pod(argo_pod(), policy=ANYWAY, subset=subset, token="t")
    assert shape_pod(once, policy=ANYWAY, subset=subset, token="other") == once


def test_a_toleration_a_profile_already_added_is_not_added_again():
    """Same identity rule as BurstProfiles: an omitted operator means Equal, key order does not matter."""
    pod = argo_pod()
    assert VCI_TOLERATION["operator"] == "Equal"
    profile_added = {k: v for k, v in VCI_TOLERATION.items() if k != "operator"}
    pod["spec"]["tolerations"] = [*(pod["spec"].get("tolerations") or []), dict(reversed(profile_added.items()))]
    shaped = shape_pod(pod, policy=ANYWAY, subset=1, token="t1")
    assert shaped["spec"]["tolerations"] == pod["spec"]["tolerations"]


def test_previous_placement_reads_the_token_and_label():
    shaped = shape_pod(argo_pod(), policy=ANYWAY, subset=1, token="t1")
    assert previous_placement(shaped, ANYWAY) == ("t1", 1)
    unplaced = mark_unplaced(argo_pod(), policy=ANYWAY, token="t2")
    assert previous_placement(unplaced, ANYWAY) == ("t2", None)
    assert unplaced["metadata"]["labels"]["burstflow.io/pool"] == ""
    assert previous_placement(argo_pod(), ANYWAY) is None
    assert previous_placement(shaped, policy({"name": "vci"}, name="other")) is None


def test_select_policy_by_namespace_and_selector_first_by_name():
    b = policy({"name": "x"}, name="b")
    a = policy({"name": "x"}, name="a")
    other = policy({"name": "x"}, name="c", selector={"app": "other"})
    chosen, warnings = select_policy([b, other, a], argo_pod(), "ns")
    assert chosen is a and warnings == ["pod matches ResourcePolicies a, b; using a (first by name)"]
    assert select_policy([a], argo_pod(), "elsewhere") == (None, [])


# --- usage bookkeeping ------------------------------------------------------------------------------------------

SMALL = policy({"name": "a", "maxReplicas": 2}, {"name": "b", "maxReplicas": 1}, when_all_full="Deny")


def test_reserve_batch_decides_in_order_and_is_idempotent_per_token():
    usage = Usage()
    decisions = reserve_batch(SMALL, usage, ["t1", "t2", "t3", "t4"], NOW)
    assert [(d.action, d.subset) for d in decisions] == [(PLACE, 0), (PLACE, 0), (PLACE, 1), (DENY, None)]
    assert usage.placed(SMALL) == [2, 1]
    again = reserve_batch(SMALL, usage, ["t3", "t1"], NOW)
    assert [(d.action, d.subset) for d in again] == [(PLACE, 1), (PLACE, 0)]
    assert usage.placed(SMALL) == [2, 1]


def pod(token, pool, phase="Running", name=None, policy_name="p"):
    return {"metadata": {"name": name or f"pod-{token}", "namespace": "ns", "labels": {"burstflow.io/pool": pool},
                         "annotations": {"burstflow.io/reservation": token,
                                         "burstflow.io/resource-policy": policy_name}},
            "status": {"phase": phase}}


def test_reconcile_turns_reservations_into_facts():
    usage = Usage(reservations={"a": {"seen": "2026-11-23T09:59:50Z", "young": "2026-11-23T09:59:30Z",
                                      "old": "2026-11-23T09:58:59Z", "done": "2026-11-23T09:59:59Z"}},
                  pods={"a": {"gone": "pod-gone"}, "b": {"finished": "pod-finished"}})
    pods = [pod("seen", "a"), pod("finished", "b", phase="Succeeded"), pod("done", "a", phase="Failed"),
            pod("moved", "b"), pod("stranger", "a", policy_name="other")]
    result = reconcile(SMALL, usage, pods, now=NOW, reservation_timeout=60)
    assert result.reservations == {"a": {"young": "2026-11-23T09:59:30Z"}}
    assert result.pods == {"a": {"seen": "pod-seen"}, "b": {"moved": "pod-moved"}}


def test_status_round_trip_and_condition_transition_time_kept():
    usage = Usage()
    reserve_batch(SMALL, usage, ["t1", "t2", "t3"], NOW)
    status = status_from_usage(SMALL, usage, now=NOW)
    assert status["summary"] == "a 2/2, b 1/1, unplaced 0"
    assert (status["placed"], status["managed"]) == (3, 3)
    assert status["conditions"][0]["status"] == "True"
    assert usage_from_status(SMALL, status) == usage
    later = status_from_usage(SMALL, usage, now=NOW + timedelta(minutes=5), previous=status)
    assert later == status
