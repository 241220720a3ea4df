"""ResourcePolicy compilation: the Volcengine shape accepted, every bad field reported with its path, CRD agreement."""
from __future__ import annotations

import copy
from fractions import Fraction
from pathlib import Path

import jsonschema
import pytest
import yaml

from webhook.pools.model import (DENY, DO_NOT_SCHEDULE, SCHEDULE_ANYWAY, UNPLACED, PolicyError,
                                 compile_resource_policy)
from webhook.providers import VCI_BURST

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
    with pytest.raises(PolicyError, match=r"apiVersion: expected 'burstflow.io/v1alpha1'"):
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
    (with_spec(subsets=[]), "spec.subsets: required, a non-empty list of pools in priority order"),
    (with_spec(subsets=[{"name": "a"}, {"name": "a"}]), "spec.subsets[1].name: duplicate subset name 'a'"),
    (with_spec(selector={}), "spec.selector: must select something (an empty selector would manage every pod)"),
    (with_spec(selector={"matchExpressions": [{"key": "a", "operator": "Near"}]}), "spec.selector.matchExpressions[0].operator: must be one of In, NotIn, Exists, DoesNotExist, not 'Near'"),
    (with_spec(selector={"app": 5}), "spec.selector.app: value must be a string, not 5 (quote it in YAML)"),
    (with_spec(whenAllFull="Panic"), "spec.whenAllFull: must be one of LastPool, Unplaced, Deny, got 'Panic'"),
    (with_spec(whenUnavailable="Unplaced"), "spec.whenUnavailable: must be one of LastPool, Deny, got 'Unplaced'"),
], ids=lambda value: value if isinstance(value, str) and len(value) < 60 else None)
def test_bad_fields_are_reported_with_their_path(obj, message):
    with pytest.raises(PolicyError) as caught:
        compile_resource_policy(obj, source="policies/p.yaml")
    assert caught.value.errors == [message]
    assert str(caught.value) == f"policies/p.yaml: {message}"


def test_every_problem_is_reported_at_once():
    obj = with_subset(maxReplicas="5", whenNotReachMax="x")
    obj["metadata"] = {"name": "p"}
    with pytest.raises(PolicyError) as caught:
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
