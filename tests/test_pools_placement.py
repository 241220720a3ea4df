"""Pure placement: subset choice (maxes, floor ratios over growing totals, all-full choices), the affinity and
toleration shape written into pods (whole objects), merging with a pod's own affinity, idempotence, and the pure
usage bookkeeping the ledger and reconciler share."""
from __future__ import annotations

import copy
from datetime import datetime, timezone

import pytest
import yaml

from tests.conftest import load_admission
from burstflow.webhook.pools.model import compile_resource_policy
from tests.conftest import POLICIES
from burstflow.webhook.loader import load
from burstflow.webhook.pools.placement import (DENY, LEAVE_UNPLACED, PLACE, PoolChoice, choose_pool, enforce_overlaps, mark_unplaced,
                                     merge_required, previous_placement, select_policy, shape_pod)
from burstflow.webhook.pools.usage import Usage, reserve_batch

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
    ([0, 0, 0], PoolChoice(PLACE, 0)),
    ([4, 0, 0], PoolChoice(PLACE, 0)),
    ([5, 0, 0], PoolChoice(PLACE, 1)),
    ([5, 99, 0], PoolChoice(PLACE, 1)),
    ([5, 100, 0], PoolChoice(PLACE, 2)),
    ([5, 100, 1000], PoolChoice(PLACE, 2)),
    ([3, 100, 7], PoolChoice(PLACE, 0)),
], ids=["empty", "first pool one left", "first full", "second one left", "both full -> unlimited",
        "unlimited stays open", "a slot freed in the first pool is reused"])
def test_first_subset_below_its_max(placed, expected):
    assert choose_pool(POOLS_5_100_UNLIMITED, placed) == expected


RATIO = policy({"name": "ecs", "maxReplicas": 5, "maxReplicasRatio": "0.1"}, {"name": "vci"})


def test_ratio_limit_with_growing_totals_never_exceeds_its_share():
    placed = [0, 0]
    first_pool_at = []
    for pod in range(1, 101):
        decision = choose_pool(RATIO, placed)
        placed[decision.subset] += 1
        if decision.subset == 0:
            first_pool_at.append(pod)
        before = sum(placed) - 1
        # Volcengine's rule: a pool takes the next pod while its share before that pod has not exceeded the ratio.
        assert decision.subset != 0 or placed[0] - 1 <= before / 10, f"ecs took a pod at {placed[0] - 1}/{before}"
    # The 1st pod may go there (share 0 of 0), then the 11th (1/10 = 0.1), 21st, ...; maxReplicas 5 caps it.
    assert first_pool_at == [1, 11, 21, 31, 41]
    assert placed == [5, 95]


def test_ratio_counts_unplaced_pods_in_the_base():
    volcengine = policy({"name": "ecs", "maxReplicasRatio": "0.5"})  # whenAllFull defaults to Unplaced
    assert choose_pool(volcengine, [1], unplaced=0) == PoolChoice(LEAVE_UNPLACED, message=choose_pool(volcengine, [1]).message)
    assert choose_pool(volcengine, [1], unplaced=1).action == PLACE
    assert choose_pool(volcengine, [2], unplaced=1).action == LEAVE_UNPLACED
    assert choose_pool(volcengine, [2], unplaced=2).action == PLACE


ALL_FULL = [{"name": "a", "maxReplicas": 1, "nodeSelectorTerm": [ECS]},
            {"name": "b", "maxReplicas": 2, "nodeSelectorTerm": [VCI]}]


@pytest.mark.parametrize("choice,action,subset,over", [
    ("LastPool", PLACE, 1, True), ("Unplaced", LEAVE_UNPLACED, None, False), ("Deny", DENY, None, False)])
def test_all_full_behaviour(choice, action, subset, over):
    decision = choose_pool(policy(*ALL_FULL, when_all_full=choice), [1, 2])
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
        # Spilling to vci needs its toleration (the subset's, and its preset's: the same one, added once); vci's
        # annotations and preset annotation (burst-to-vci) are not added: they would steer the pod to VCI.
        "tolerations": (before["tolerations"] or []) + [VCI_TOLERATION],
        "nodeSelector": before["nodeSelector"],
    }


def volcengine_example(when: str) -> object:
    """policies/resourcepolicy-volcengine.yaml, with the ECS pool's whenNotReachMax set to `when`."""
    [example] = [p for p in load([POLICIES / "resourcepolicy-volcengine.yaml"])[0].compiled["ResourcePolicy"]]
    raw = yaml.safe_load((POLICIES / "resourcepolicy-volcengine.yaml").read_text())
    raw["spec"]["subsets"][0]["whenNotReachMax"] = when
    compiled = compile_resource_policy(raw)
    assert compiled.subsets[1:] == example.subsets[1:]
    return compiled


MACHINE_POOL = {"matchExpressions": [{"key": "cluster.vke.volcengine.com/machinepool-name", "operator": "In",
                                      "values": ["pcodl592d75mk89oame6g"]}]}
VIRTUAL_NODES = {"matchExpressions": [VCI]}


# The README's "Placement rules" shows these pod specs; a pod placed in the ECS pool of the Volcengine example.
@pytest.mark.parametrize("when, spec", [
    ("ScheduleAnyWay", {
        "containers": [{"name": "main", "image": "busybox"}],
        "tolerations": [VCI_TOLERATION],
        "affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [MACHINE_POOL, VIRTUAL_NODES]},
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "preference": MACHINE_POOL},
                                                                {"weight": 50, "preference": VIRTUAL_NODES}]}}}),
    ("DoNotSchedule", {
        "containers": [{"name": "main", "image": "busybox"}],
        "affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [MACHINE_POOL]}}}}),
], ids=["ScheduleAnyWay: may spill to VCI, so it tolerates VCI", "DoNotSchedule: only its own pool"])
def test_volcengine_example_ecs_pool_pod_spec(when, spec):
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "step", "namespace": "argo",
                                                            "labels": {"resource": "vci"}},
           "spec": {"containers": [{"name": "main", "image": "busybox"}]}}
    shaped = shape_pod(pod, policy=volcengine_example(when), subset=0, token="t")
    assert shaped == {"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "step", "namespace": "argo", "labels": {"resource": "vci", "burstflow.io/pool": "ecs-pool"},
        "annotations": {"burstflow.io/reservation": "t", "burstflow.io/resource-policy": "vke-resourcepolicy"}},
        "spec": spec}


VK_ANY = {"key": "virtual-kubelet.io/provider", "operator": "Exists", "effect": "NoSchedule"}
ECI_TOLERATION = {"key": "virtual-kubelet.io/provider", "operator": "Equal", "value": "alibabacloud",
                  "effect": "NoSchedule"}
SPILL = policy({"name": "own", "whenNotReachMax": "ScheduleAnyWay", "nodeSelectorTerm": [ECS],
                "provider": {"alibaba-eci": {"mode": "eci"}}},
               {"name": "vk", "whenNotReachMax": "ScheduleAnyWay",
                "provider": {"virtual-kubelet": {"placement": "nodeSelector"}}},
               {"name": "vci", "nodeSelectorTerm": [ZONE], "provider": {"volcengine-vci": {"mode": "enforce"}}})


# The last pool's enforce preset requires the virtual nodes: that requirement joins its own term only.
ZONE_VCI = {"matchExpressions": [ZONE, VCI]}


@pytest.mark.parametrize("subset, tolerations, required, preferred", [
    (0, [ECI_TOLERATION, VK_ANY, VCI_TOLERATION],
     [{"matchExpressions": [ECS]}, {"matchExpressions": [VCI]}, ZONE_VCI],
     [{"weight": 100, "preference": {"matchExpressions": [ECS]}},
      {"weight": 67, "preference": {"matchExpressions": [VCI]}},
      {"weight": 33, "preference": ZONE_VCI},
      {"weight": 100, "preference": {"matchExpressions": [
          {"key": "type", "operator": "NotIn", "values": ["virtual-kubelet"]}]}}]),
    (1, [VK_ANY, VCI_TOLERATION], [{"matchExpressions": [VCI]}, ZONE_VCI],
     [{"weight": 100, "preference": {"matchExpressions": [VCI]}},
      {"weight": 50, "preference": ZONE_VCI}]),
    (2, [VCI_TOLERATION], [ZONE_VCI], None),
], ids=["first pool: every later pool's tolerations and node terms", "middle pool: its own and the last's",
        "last pool (DoNotSchedule): its own only"])
def test_spill_takes_later_pools_tolerations_and_preset_node_terms(subset, tolerations, required, preferred):
    shaped = shape_pod({"metadata": {}, "spec": {}}, policy=SPILL, subset=subset, token="t")
    node = shaped["spec"]["affinity"]["nodeAffinity"]
    assert shaped["spec"]["tolerations"] == tolerations
    assert node["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"] == required
    assert node.get("preferredDuringSchedulingIgnoredDuringExecution") == preferred
    assert "nodeSelector" not in shaped["spec"]  # a preset's node selector is part of its pool's term
    # Only the placed pool's preset annotations: a later pool's burst-to-vci would steer the pod to VCI.
    annotations = shaped["metadata"]["annotations"]
    assert ("vke.volcengine.com/burst-to-vci" in annotations) is (subset == 2)


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


@pytest.mark.parametrize("annotations, managed", [
    ({}, True),
    ({"vke.volcengine.com/burst-to-vci": "auto"}, True),
    ({"vke.volcengine.com/burst-to-vci": "enforce"}, False),
    ({"vke.volcengine.com/burst-to-vci": "enforce", "burstflow.io/reservation": "t1"}, True),
], ids=["plain pod", "auto: soft, the pool decides", "enforce wins: not placed",
        "placed earlier (a pool's preset set enforce): stays the pool's"])
def test_enforce_wins_over_pools(annotations, managed):
    pod = {"metadata": {"labels": {"app": "wf"}, "annotations": annotations}}
    chosen, _ = select_policy([POOLS_5_100_UNLIMITED], pod, "ns")
    assert (chosen is POOLS_5_100_UNLIMITED) is managed


def test_validate_warns_when_a_policy_selects_pods_a_profile_enforces_onto_vci():
    policies, errors = load([POLICIES])
    assert errors == []
    kwargs = {"profiles": policies.profiles, "resource_policies": policies.compiled["ResourcePolicy"]}
    unknown = enforce_overlaps(namespaces={}, **kwargs)
    assert unknown == [
        f"ResourcePolicy argo/{name}: pods it selects ({labels}) are enforced onto VCI "
        "(vke.volcengine.com/burst-to-vci: enforce) by vci-argo-jobs (if namespace argo is labelled vci=true), "
        "vci-profile:selector-argo-jobs-namespace (if namespace argo is labelled vci=true); such pods are not placed "
        "by this ResourcePolicy (enforce wins over pools, as on Volcengine)"
        for name, labels in (("workflow-pools", "workflows.argoproj.io/workflow-pool=burst"),
                             ("vke-resourcepolicy", "resource=vci"))]
    labelled = {"argo": {"metadata": {"name": "argo", "labels": {"vci": "true"}}}}
    assert [w.split(" by ")[1].split(";")[0] for w in enforce_overlaps(namespaces=labelled, **kwargs)] == \
        ["vci-argo-jobs, vci-profile:selector-argo-jobs-namespace"] * 2
    assert enforce_overlaps(namespaces={"argo": {"metadata": {"name": "argo"}}}, **kwargs) == []


@pytest.mark.parametrize("profile_selector, overlaps", [
    ({"matchLabels": {"resource": "vci"}}, True),
    ({"matchLabels": {"resource": "ecs"}}, False),
    ({"matchExpressions": [{"key": "resource", "operator": "NotIn", "values": ["vci"]}]}, False),
    ({"matchExpressions": [{"key": "resource", "operator": "DoesNotExist"}]}, False),
    ({"matchExpressions": [{"key": "team", "operator": "Exists"}]}, True),
], ids=["same label", "other value", "NotIn the value", "label must be absent", "another label"])
def test_overlap_is_decided_on_the_label_selectors(profile_selector, overlaps):
    from burstflow.webhook.loader import Document, compile_objects
    profile = {"apiVersion": "burstflow.io/v1alpha1", "kind": "BurstProfile", "metadata": {"name": "enf"},
               "spec": {"match": {"objectSelector": profile_selector}, "provider": {"volcengine-vci": {}}}}
    policies, errors = compile_objects([Document("p", profile)], compilers={})
    assert errors == []
    rp = policy({"name": "a"}, selector={"resource": "vci"})
    assert bool(enforce_overlaps(profiles=policies.profiles, resource_policies=[rp], namespaces={})) is overlaps


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


# The status layout and the reconciler's counting rules are tested in tests/test_pools_model.py.
