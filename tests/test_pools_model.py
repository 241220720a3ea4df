"""ResourcePolicy compilation: the Volcengine shape accepted, every bad field reported with its path, CRD agreement."""
from __future__ import annotations

import copy
from fractions import Fraction
from pathlib import Path

import jsonschema
import pytest
import yaml

from burstflow.webhook.pools.model import (DENY, DO_NOT_SCHEDULE, SCHEDULE_ANYWAY, UNPLACED, ResourcePolicyError,
                                 compile_resource_policy)
from burstflow.webhook.providers import VCI_BURST

ROOT = Path(__file__).resolve().parent.parent
CRD = ROOT / "manifests" / "base" / "crds" / "resourcepolicies.burstflow.io.yaml"
VOLCENGINE = ROOT / "policies" / "resourcepolicy-volcengine.yaml"
POOLS = ROOT / "policies" / "resourcepolicy-pools.yaml"


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def crd_validator() -> jsonschema.Draft7Validator:
    crd = load(CRD)
    return jsonschema.Draft7Validator(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def test_volcengine_example_compiles_after_changing_only_apiversion():
    policy = compile_resource_policy(load(VOLCENGINE))
    assert (policy.namespace, policy.name) == ("argo", "vke-resourcepolicy")
    assert policy.selector.matches({"resource": "vci"}) and not policy.selector.matches({"resource": "ecs"})
    ecs, vci = policy.subsets
    assert (ecs.name, ecs.max_replicas, ecs.ratio, ecs.when_not_reach_max) == ("ecs-pool", 5, Fraction(1, 10),
                                                                                SCHEDULE_ANYWAY)
    assert ecs.node_selector_term == {"matchExpressions": [
        {"key": "cluster.vke.volcengine.com/machinepool-name", "operator": "In", "values": ["pcodl592d75mk89oame6g"]}]}
    assert vci.when_not_reach_max == DO_NOT_SCHEDULE
    assert vci.tolerations == ({"effect": "NoSchedule", "key": "vci.vke.volcengine.com/node-type",
                                "operator": "Equal", "value": "vci"},)
    assert policy.when_all_full == UNPLACED and policy.when_unavailable == DENY


def test_volcengine_original_apiversion_is_rejected_with_the_fix():
    original = load(VOLCENGINE)
    original["apiVersion"] = "scheduling.vke.volcengine.com/v1beta1"
    with pytest.raises(ResourcePolicyError, match=r"apiVersion: expected 'burstflow.io/v1alpha1'"):
        compile_resource_policy(original)


def test_pools_example_with_provider_preset_and_label_selector():
    policy = compile_resource_policy(load(POOLS))
    assert [s.name for s in policy.subsets] == ["own-nodes", "vci", "overflow"]
    assert [s.max_replicas for s in policy.subsets] == [5, 100, None]
    assert policy.subsets[1].provider.annotations == ((VCI_BURST, "enforce"),)
    assert policy.selector.matches({"workflows.argoproj.io/workflow-pool": "burst"})


@pytest.mark.parametrize("path", [VOLCENGINE, POOLS], ids=["volcengine", "pools"])
def test_examples_validate_against_the_crd_schema(path):
    assert list(crd_validator().iter_errors(load(path))) == []


def test_crd_schema_rejects_a_numeric_ratio_and_unknown_enum():
    policy = load(VOLCENGINE)
    policy["spec"]["subsets"][0]["maxReplicasRatio"] = 0.1
    policy["spec"]["whenAllFull"] = "Sometimes"
    messages = sorted(e.message for e in crd_validator().iter_errors(policy))
    assert messages == ["'Sometimes' is not one of ['LastPool', 'Unplaced', 'Deny']", "0.1 is not of type 'string'"]


def test_crd_is_namespaced_with_status_and_printer_columns():
    crd = load(CRD)
    version = crd["spec"]["versions"][0]
    assert crd["spec"]["scope"] == "Namespaced"
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == ["Pools", "Placed", "Full", "Age"]


BASE = {"apiVersion": "burstflow.io/v1alpha1", "kind": "ResourcePolicy",
        "metadata": {"name": "p", "namespace": "ns"},
        "spec": {"selector": {"app": "x"}, "subsets": [{"name": "a", "maxReplicas": 1}]}}


def with_spec(**changes):
    obj = copy.deepcopy(BASE)
    obj["spec"].update(changes)
    return obj


def with_subset(**changes):
    obj = copy.deepcopy(BASE)
    obj["spec"]["subsets"][0].update(changes)
    return obj


@pytest.mark.parametrize("obj,message", [
    (with_subset(maxReplicasRatio="1.5"), "spec.subsets[0].maxReplicasRatio: must be within [0, 1], got '1.5'"),
    (with_subset(maxReplica=5), "spec.subsets[0].maxReplica: unknown field 'maxReplica' (known: annotations, labels, "
                                "maxReplicas, maxReplicasRatio, name, nodeSelectorTerm, provider, tolerations, "
                                "whenNotReachMax)"),
    (with_subset(maxReplicasRatio=0.1), "spec.subsets[0].maxReplicasRatio: must be a string such as \"0.1\" (quote it), got 0.1"),
    (with_subset(maxReplicasRatio="ten"), "spec.subsets[0].maxReplicasRatio: expected a decimal between 0 and 1 such as \"0.1\", got 'ten'"),
    (with_subset(maxReplicas=-1), "spec.subsets[0].maxReplicas: must be an integer >= 0, got -1"),
    (with_subset(whenNotReachMax="Maybe"), "spec.subsets[0].whenNotReachMax: must be one of ScheduleAnyWay, DoNotSchedule, got 'Maybe'"),
    (with_subset(nodeSelectorTerm=[{"key": "type", "operator": "In"}]), "spec.subsets[0].nodeSelectorTerm[0].values: required and non-empty for operator In"),
    (with_subset(nodeSelectorTerm=[{"key": "cpu", "operator": "Gt", "values": ["x"]}]), "spec.subsets[0].nodeSelectorTerm[0].values: operator Gt needs exactly one integer value"),
    (with_subset(tolerations=[{"key": "k", "operator": "Maybe"}]), "spec.subsets[0].tolerations[0].operator: must be Equal or Exists, got 'Maybe'"),
    (with_subset(labels={"burstflow.io/pool": "x"}), "spec.subsets[0].labels.burstflow.io/pool: reserved, Burstflow sets it to the subset name"),
    (with_subset(annotations={"n": 1}), "spec.subsets[0].annotations.n: values are strings, got int (quote it)"),
    (with_subset(provider={"volcengine-vci": {"mode": "sometimes"}}), "spec.subsets[0].provider.volcengine-vci.mode: must be one of enforce, auto, not 'sometimes'"),
    (with_subset(provider={"no-such": {}}), "spec.subsets[0].provider.no-such: unknown provider 'no-such' (known: volcengine-vci, alibaba-eci, alibaba-acs, virtual-kubelet)"),
    (with_subset(name="Bad Name"), "spec.subsets[0].name: 'Bad Name' must be a valid label value (it becomes the burstflow.io/pool label)"),
    (with_subset(name="pöol"), "spec.subsets[0].name: 'pöol' must be a valid label value (it becomes the burstflow.io/pool label)"),
    (with_spec(subsets=[]), "spec.subsets: required, a non-empty list of pools in priority order"),
    (with_spec(subsets=[{"name": "a"}, {"name": "a"}]), "spec.subsets[1].name: duplicate subset name 'a'"),
    (with_spec(selector={}), "spec.selector: must select something (an empty selector would manage every pod)"),
    (with_spec(selector={"matchExpressions": [{"key": "a", "operator": "Near"}]}), "spec.selector.matchExpressions[0].operator: must be one of In, NotIn, Exists, DoesNotExist, not 'Near'"),
    (with_spec(selector={"app": 5}), "spec.selector.app: value must be a string, not 5 (quote it in YAML)"),
    (with_spec(whenAllFull="Panic"), "spec.whenAllFull: must be one of LastPool, Unplaced, Deny, got 'Panic'"),
    (with_spec(whenUnavailable="Unplaced"), "spec.whenUnavailable: must be one of LastPool, Deny, got 'Unplaced'"),
], ids=lambda value: value if isinstance(value, str) and len(value) < 60 else None)
def test_bad_fields_are_reported_with_their_path(obj, message):
    with pytest.raises(ResourcePolicyError) as caught:
        compile_resource_policy(obj, source="policies/p.yaml")
    assert caught.value.errors == [message]
    assert str(caught.value) == f"policies/p.yaml: {message}"


def test_nulls_are_pruned_as_the_api_server_prunes_them():
    # kube-apiserver 1.24 (dry run) drops null fields and map values a schema does not mark nullable before it
    # validates and stores the object: `annotations: {k: null}` is stored as `annotations: {}`.
    policy = compile_resource_policy(with_spec(whenAllFull=None, subsets=[{"name": "a", "maxReplicas": None,
                                                                            "annotations": {"k": None, "x": "y"}}]))
    assert policy.when_all_full == UNPLACED and policy.subsets[0].max_replicas is None
    assert dict(policy.subsets[0].annotations) == {"x": "y"}


def test_every_problem_is_reported_at_once():
    obj = with_subset(maxReplicas="5", whenNotReachMax="x")
    obj["metadata"] = {"name": "p"}
    with pytest.raises(ResourcePolicyError) as caught:
        compile_resource_policy(obj)
    assert caught.value.errors == [
        "metadata.namespace: required (a ResourcePolicy is namespaced, like the pods it places)",
        "spec.subsets[0].maxReplicas: must be an integer >= 0, got '5'",
        "spec.subsets[0].whenNotReachMax: must be one of ScheduleAnyWay, DoNotSchedule, got 'x'"]


def test_selector_forms_are_equivalent():
    plain = compile_resource_policy(with_spec(selector={"resource": "vci"}))
    selector = compile_resource_policy(with_spec(selector={"matchLabels": {"resource": "vci"}}))
    expressions = compile_resource_policy(with_spec(selector={"matchExpressions": [
        {"key": "resource", "operator": "In", "values": ["vci"]}]}))
    for policy in (plain, selector, expressions):
        assert policy.selector.matches({"resource": "vci", "other": "1"})
        assert not policy.selector.matches({"resource": "ecs"})


# --- maxReplicasRatio as Volcengine defines it --------------------------------------------------------------------

from datetime import datetime, timedelta, timezone  # noqa: E402

from burstflow.webhook.pools.model import node_term_matches  # noqa: E402
from burstflow.webhook.pools.placement import LEAVE_UNPLACED, PLACE, choose_pool  # noqa: E402
from burstflow.webhook.pools.usage import (PodRecord, Usage, bucket_of, pod_record, reconcile, reserve_batch,  # noqa: E402
                                 status_from_usage, usage_from_status)

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)


def test_volcengine_example_places_the_first_pod_in_ecs_and_the_second_in_vci():
    policy = compile_resource_policy(load(VOLCENGINE))
    placed, unplaced, where = [0, 0], 0, []
    for _ in range(12):
        decision = choose_pool(policy, placed, unplaced)
        if decision.action == PLACE:
            placed[decision.subset] += 1
            where.append(policy.subsets[decision.subset].name)
        else:
            assert decision.action == LEAVE_UNPLACED
            unplaced += 1
            where.append("unplaced")
    # Each pool's share before the pod: 0/0 -> ecs; ecs 1/1 exceeded, vci 0/1 -> vci; both 1/n > 0.1 until n = 10.
    assert where == ["ecs-pool", "vci-pool"] + ["unplaced"] * 8 + ["ecs-pool", "vci-pool"]


@pytest.mark.parametrize("ratio, max_replicas, managed, expected", [
    pytest.param("0.1", None, 1, 1, id="first pod: share 0 of 0 has not exceeded"),
    pytest.param("0.1", None, 10, 1, id="9 before: 1/9 exceeded, so still 1"),
    pytest.param("0.1", None, 11, 2, id="10 before: 1/10 has not exceeded, so a 2nd"),
    pytest.param("0.5", None, 3, 2, id="2 before: 1/2 not exceeded"),
    pytest.param("1", None, 7, 7, id="ratio 1 never limits"),
    pytest.param("0", None, 1, 0, id="ratio 0 takes none"),
    pytest.param("0.1", 1, 500, 1, id="maxReplicas stays a hard cap"),
    pytest.param(None, 3, 500, 3, id="maxReplicas alone"),
])
def test_effective_max_follows_the_share_before_the_pod(ratio, max_replicas, managed, expected):
    subset = {"name": "a", "maxReplicasRatio": ratio, "maxReplicas": max_replicas}
    policy = compile_resource_policy(with_subset(**subset))
    assert policy.subsets[0].effective_max(managed) == expected


# --- counting where pods run -------------------------------------------------------------------------------------

ECS_TERM = [{"key": "pool", "operator": "In", "values": ["ecs"]}]
VK_TERM = [{"key": "type", "operator": "In", "values": ["virtual-kubelet"]}]
RUNS = compile_resource_policy({
    "apiVersion": "burstflow.io/v1alpha1", "kind": "ResourcePolicy", "metadata": {"name": "p", "namespace": "ns"},
    "spec": {"selector": {"app": "wf"}, "subsets": [
        {"name": "ecs", "maxReplicas": 2, "whenNotReachMax": "ScheduleAnyWay", "nodeSelectorTerm": ECS_TERM},
        {"name": "vci", "maxReplicas": 1, "nodeSelectorTerm": VK_TERM},
        {"name": "any"}]}})
NODES = {"ecs-1": {"pool": "ecs"}, "vk-1": {"type": "virtual-kubelet"}, "other-1": {"zone": "a"}}


def record(token, pool, node="", finished=False, policy="p", namespace="ns"):
    return PodRecord(namespace=namespace, name=f"pod-{token}", token=token, policy=policy, pool=pool, node=node,
                     finished=finished)


@pytest.mark.parametrize("pod, expected", [
    pytest.param(record("t", "ecs"), "ecs", id="not bound yet: where it was reserved"),
    pytest.param(record("t", "ecs", "ecs-1"), "ecs", id="bound to its own pool's node"),
    pytest.param(record("t", "ecs", "vk-1"), "vci", id="ScheduleAnyWay pod fell through to a later pool's node"),
    pytest.param(record("t", "vci", "ecs-1"), "ecs", id="found on an earlier pool's node"),
    pytest.param(record("t", "ecs", "other-1"), "ecs", id="node matches no pool with a term: stays"),
    pytest.param(record("t", "ecs", "unknown-node"), "ecs", id="node labels not known (yet): stays"),
    pytest.param(record("t", "any", "vk-1"), "any", id="a pool without a term claims every node of its pods"),
    pytest.param(record("t", "", "ecs-1"), "", id="unplaced stays unplaced"),
    pytest.param(record("t", "gone"), None, id="label naming no subset: not counted"),
])
def test_a_bound_pod_counts_in_the_pool_whose_nodes_it_runs_on(pod, expected):
    assert bucket_of(RUNS, pod, NODES) == expected


@pytest.mark.parametrize("term, labels, name, expected", [
    ({"matchExpressions": ECS_TERM}, {"pool": "ecs"}, "n", True),
    ({"matchExpressions": ECS_TERM}, {"pool": "vci"}, "n", False),
    ({"matchExpressions": [{"key": "pool", "operator": "NotIn", "values": ["ecs"]}]}, {}, "n", True),
    ({"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}, {"gpu": ""}, "n", True),
    ({"matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}]}, {"gpu": "1"}, "n", False),
    ({"matchExpressions": [{"key": "cpus", "operator": "Gt", "values": ["8"]}]}, {"cpus": "16"}, "n", True),
    ({"matchExpressions": [{"key": "cpus", "operator": "Lt", "values": ["8"]}]}, {"cpus": "x"}, "n", False),
    ({"matchExpressions": ECS_TERM + VK_TERM}, {"pool": "ecs"}, "n", False),
    ({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n"]}]}, {}, "n", True),
])
def test_node_selector_terms_match_as_the_scheduler_does(term, labels, name, expected):
    assert node_term_matches(term, labels, name) is expected


def pod(token, pool, phase="Running", policy_name="p", node=""):
    return {"metadata": {"name": f"pod-{token}", "namespace": "ns", "labels": {"burstflow.io/pool": pool},
                         "annotations": {"burstflow.io/reservation": token,
                                         "burstflow.io/resource-policy": policy_name}},
            "spec": {"nodeName": node} if node else {}, "status": {"phase": phase}}


def test_reconcile_counts_running_pods_where_they_run_and_drops_seen_or_old_reservations():
    usage = Usage(reservations={"ecs": {"seen": "2026-11-23T09:59:50Z", "young": "2026-11-23T09:59:30Z",
                                        "old": "2026-11-23T09:58:59Z", "done": "2026-11-23T09:59:59Z"}},
                  running={"ecs": 7, "vci": 3})
    pods = [pod("seen", "ecs"), pod("finished", "vci", phase="Succeeded"), pod("done", "ecs", phase="Failed"),
            pod("moved", "vci"), pod("spilled", "ecs", node="vk-1"), pod("stranger", "ecs", policy_name="other")]
    result = reconcile(RUNS, usage, pods, now=NOW, reservation_timeout=60, nodes=NODES)
    assert result.reservations == {"ecs": {"young": "2026-11-23T09:59:30Z"}}
    assert result.running == {"ecs": 1, "vci": 2}
    assert [record for record in map(pod_record, pods)][4].node == "vk-1"


def test_status_holds_counts_not_pods_so_its_size_does_not_grow_with_live_pods():
    sizes = {}
    for live in (100, 100_000):
        usage = Usage(running={"ecs": 2, "vci": 1, "any": live - 3})
        reserve_batch(RUNS, usage, [f"token-{i:04d}" for i in range(200)], NOW)
        sizes[live] = len(str(status_from_usage(RUNS, usage, now=NOW)))
    # 200 reservations cost ~2,800 bytes; 99,900 more live pods only a few more digits in five counts and the summary.
    assert sizes[100_000] - sizes[100] <= 20


def test_reservations_are_grouped_by_second_and_read_back():
    usage = Usage()
    reserve_batch(RUNS, usage, ["t1", "t2"], NOW)
    reserve_batch(RUNS, usage, ["t3"], NOW + timedelta(seconds=1))
    status = status_from_usage(RUNS, usage, now=NOW)
    assert status["subsets"][0]["reservations"] == {"2026-11-23T10:00:00Z": "t1 t2"}
    assert status["subsets"][1]["reservations"] == {"2026-11-23T10:00:01Z": "t3"}
    assert [(s["placed"], s["running"], s["pending"]) for s in status["subsets"]] == [(2, 0, 2), (1, 0, 1), (0, 0, 0)]
    assert usage_from_status(RUNS, status) == usage


def test_status_round_trip_and_condition_transition_time_kept():
    usage = Usage(running={"any": 4})
    reserve_batch(RUNS, usage, ["t1", "t2", "t3"], NOW)
    status = status_from_usage(RUNS, usage, now=NOW)
    assert status["summary"] == "ecs 2/2, vci 1/1, any 4/-, unplaced 0"
    assert (status["placed"], status["managed"]) == (7, 7)
    assert status["conditions"][0]["status"] == "False"
    assert usage_from_status(RUNS, status) == usage
    later = status_from_usage(RUNS, usage, now=NOW + timedelta(minutes=5), previous=status)
    assert later == status


def test_the_earlier_per_pod_layout_is_read_on_upgrade():
    status = {"subsets": [{"name": "ecs", "placed": 2, "pods": {"a": "pod-a"},
                           "reservations": {"b": "2026-11-23T09:59:50Z"}}]}
    usage = usage_from_status(RUNS, status)
    assert (usage.running, usage.reservations) == ({"ecs": 1}, {"ecs": {"b": "2026-11-23T09:59:50Z"}})


def test_the_reconcilers_index_follows_pod_events_as_a_full_recount_would():
    from burstflow.webhook.pools.reconciler import PodIndex
    from burstflow.webhook.pools.usage import reconcile_placements

    index = PodIndex()
    a, b, c = record("a", "ecs"), record("b", "ecs"), record("c", "vci")
    for event in (a, b, c):
        index.put(event)
    index.put(b._replace(node="vk-1"))      # bound to a VCI node
    index.put(a._replace(finished=True))    # succeeded
    index.remove(c)                         # deleted
    pods = [a._replace(finished=True), b._replace(node="vk-1")]
    incremental = reconcile_placements(RUNS, Usage(), index.by_policy[("ns", "p")], now=NOW, reservation_timeout=60,
                                       nodes=NODES)
    assert incremental == reconcile(RUNS, Usage(), pods, now=NOW, reservation_timeout=60, nodes=NODES)
    assert (incremental.running, set(index.by_policy[("ns", "p")].tokens)) == ({"vci": 1}, {"a", "b"})
