"""BurstProfile compile tables: the CRD schema is the first check, then semantics; errors carry file, object, path."""
from __future__ import annotations

import pytest
import yaml

from tests.conftest import POLICIES
from burstflow import data
from burstflow.webhook import policy
from burstflow.webhook.loader import Document, compile_objects, load
from burstflow.webhook.policy import Template
from burstflow.webhook.providers import Effect, PresetError, preset


def bp(spec=None, name="p", **top) -> dict:
    obj = {"apiVersion": "burstflow.io/v1alpha1", "kind": "BurstProfile", "metadata": {"name": name},
           "spec": {} if spec is None else spec}
    obj.update(top)
    return obj


def errors_of(obj) -> list[str]:
    _, errors = compile_objects([Document("policies/x.yaml", obj)], compilers={})
    return [str(e) for e in errors]


PREFIX = "policies/x.yaml: BurstProfile/p: "


# Each row: the object, then its one error in full (CEL rows: the start, up to the position the CEL library reports).
@pytest.mark.parametrize("obj, message", [
    (bp({"priorty": 5}), PREFIX + "spec.priorty: unknown field 'priorty' (known: annotations, labels, match, "
                                  "nodeSelector, override, priority, provider, seccomp, tolerations)"),
    (bp({"priority": "high"}), PREFIX + "spec.priority: 'high' is not of type 'integer'"),
    (bp({"priority": 5000}), PREFIX + "spec.priority: 5000 is greater than the maximum of 1000"),
    (bp({"seccomp": "Unconfined"}), PREFIX + "spec.seccomp: 'Unconfined' is not one of ['RuntimeDefault', 'Disabled']"),
    (bp({"provider": {}}), PREFIX + "spec.provider: {} should be non-empty"),
    (bp({"provider": {"volcengine-vci": {}, "alibaba-eci": {}}}),
     PREFIX + "spec.provider: {'volcengine-vci': {}, 'alibaba-eci': {}} has too many properties"),
    (bp({"provider": {"aws-fargate": {}}}), PREFIX + "spec.provider.aws-fargate: unknown field 'aws-fargate' (known: "
                                                     "alibaba-acs, alibaba-eci, virtual-kubelet, volcengine-vci)"),
    (bp({"provider": {"volcengine-vci": {"mode": "always"}}}),
     PREFIX + "spec.provider.volcengine-vci.mode: 'always' is not one of ['enforce', 'auto']"),
    (bp({"provider": {"alibaba-eci": {"spotStrategy": "SpotWithPriceLimit"}}}),
     PREFIX + "spec.provider.alibaba-eci: spotPriceLimit is required with, and only allowed with, spotStrategy "
              "SpotWithPriceLimit"),
    (bp({"match": {"namespaceSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}}),
     PREFIX + "spec.match.namespaceSelector.matchExpressions[0]: In and NotIn need values; Exists and DoesNotExist "
              "take none"),
    (bp({"match": {"objectSelector": {"matchExpressions": [{"key": "a", "operator": "Exists",
                                                             "values": ["x"]}]}}}),
     PREFIX + "spec.match.objectSelector.matchExpressions[0]: In and NotIn need values; Exists and DoesNotExist "
              "take none"),
    (bp({"match": {"matchConditions": [{"name": "a", "expression": "true"}, {"name": "a", "expression": "true"}]}}),
     PREFIX + "spec.match.matchConditions: matchConditions names must be unique"),
    (bp({"match": {"matchConditions": [{"name": "a", "expression": "object.metadata.labels["}]}}),
     PREFIX + "spec.match.matchConditions[0].expression: CEL: 1:24: Syntax error: "),
    (bp({"match": {"matchConditions": [{"name": "a", "expression": "pod.metadata.name == 'x'"}]}}),
     PREFIX + "spec.match.matchConditions[0].expression: CEL: 1:13: undeclared reference to 'pod.metadata.name'"),
    (bp({"annotations": {"a": "{{ object.metadata.( }}"}}), PREFIX + "spec.annotations[a]: CEL: 1:17: Syntax error: "),
    (bp({"labels": {"team": "not valid!"}}), PREFIX + "spec.labels[team]: label value 'not valid!' must be at most 63 "
                                                      "alphanumerics, '-', '_' or '.', starting and ending alphanumeric"),
    (bp({"labels": {"bad key": "x"}}), PREFIX + "spec.labels[bad key]: key 'bad key': name must be 1-63 alphanumerics, "
                                                "'-', '_' or '.', starting and ending alphanumeric"),
    (bp({"labels": {"n": 5}}), PREFIX + "spec.labels.n: 5 is not of type 'string'"),
    (bp({"tolerations": [{"key": "k", "operator": "Exists", "value": "v"}]}),
     PREFIX + "spec.tolerations[0]: a toleration with operator Exists must not have a value"),
    (bp({"tolerations": [{"key": "k", "effect": "Sometimes"}]}),
     PREFIX + "spec.tolerations[0].effect: 'Sometimes' is not one of ['NoSchedule', 'PreferNoSchedule', 'NoExecute']"),
    (bp({}, name="Not_A_Name"), "policies/x.yaml: BurstProfile/Not_A_Name: metadata.name: 'Not_A_Name' must be a "
                                "lowercase DNS subdomain (a-z, 0-9, '-', '.')"),
    (bp({}, name=""), "policies/x.yaml: BurstProfile/<unnamed>: metadata.name: is required"),
    (bp({}, apiVersion="burstflow.io/v1"),
     PREFIX + "apiVersion: apiVersion must be burstflow.io/v1alpha1, not 'burstflow.io/v1'"),
    (dict(bp({}), metadata={"name": "p", "namespace": "argo"}),
     PREFIX + "metadata.namespace: BurstProfile is cluster-scoped: remove metadata.namespace"),
], ids=["unknown field", "priority type", "priority range", "seccomp enum", "no provider", "two providers",
        "unknown provider", "provider mode", "spot price", "In without values", "Exists with values",
        "duplicate condition names", "condition syntax", "condition undeclared variable", "template syntax",
        "label value", "label key", "label not a string", "Exists with a value", "toleration effect",
        "bad name", "no name", "apiVersion", "namespaced"])
def test_invalid_profiles_name_file_object_and_field(obj, message):
    errors = errors_of(obj)
    assert len(errors) == 1, errors
    if ": CEL: " in message:
        assert errors[0].startswith(message), errors
    else:
        assert errors == [message]


def test_valid_profile_compiles_once_with_templates_and_preset_values():
    obj = bp({"priority": 7, "override": True, "seccomp": "Disabled",
              "match": {"workflowPodsOnly": False, "matchConditions": [{"name": "c", "expression": "true"}]},
              "provider": {"alibaba-eci": {"mode": "eci_only", "specs": ["a", "b"]}},
              "annotations": {"k8s.aliyun.com/eci-use-specs": "c", "who": "{{ object.metadata.name }}"}})
    policy_set, errors = compile_objects([Document("f", obj)], compilers={})
    assert errors == []
    (profile,) = policy_set.profiles
    assert (profile.priority, profile.override, profile.seccomp, profile.workflow_pods_only) == (7, True, False, False)
    annotations = dict(profile.annotations)
    assert profile.node_affinity == ({"key": "type", "operator": "In", "values": ["virtual-kubelet"]},)
    assert annotations["k8s.aliyun.com/eci-use-specs"] == "c"  # the profile's own value beats the preset's
    assert isinstance(annotations["who"], Template)
    assert profile.tolerations == ({"key": "virtual-kubelet.io/provider", "operator": "Equal",
                                    "value": "alibabacloud", "effect": "NoSchedule"},)


def test_a_bad_profile_is_left_out_and_the_others_still_load():
    policy_set, errors = compile_objects([Document("a.yaml", bp({"seccomp": "x"}, name="bad")),
                                          Document("b.yaml", bp({}, name="good"))], compilers={})
    assert [p.name for p in policy_set.profiles] == ["good"]
    assert [e.obj for e in errors] == ["BurstProfile/bad"]


def test_duplicate_names_are_rejected():
    _, errors = compile_objects([Document("a.yaml", bp()), Document("b.yaml", bp())], compilers={})
    assert [str(e) for e in errors] == ["b.yaml: BurstProfile/p: metadata.name: duplicate BurstProfile (also in a.yaml)"]


def test_yaml_syntax_errors_name_file_and_line(tmp_path):
    (tmp_path / "broken.yaml").write_text("apiVersion: v1\nkind: [unclosed\n")
    (tmp_path / "ok.yaml").write_text(yaml.safe_dump(bp()))
    policy_set, errors = load([tmp_path])
    assert [p.name for p in policy_set.profiles] == ["p"]
    assert len(errors) == 1 and str(errors[0]).startswith(f"{tmp_path / 'broken.yaml'}: line ")


def test_multi_document_files_and_lists(tmp_path):
    (tmp_path / "many.yaml").write_text(yaml.safe_dump_all([bp(name="a"), None, {
        "apiVersion": "v1", "kind": "List", "items": [bp(name="b"), bp({"seccomp": 1}, name="c")]}]))
    policy_set, errors = load([tmp_path])
    assert [p.name for p in policy_set.profiles] == ["a", "b"]
    assert str(errors[0]).startswith(f"{tmp_path / 'many.yaml'}#2.items[1]: BurstProfile/c: spec.seccomp")


def test_missing_path_is_an_error():
    _, errors = load(["/nonexistent/policies"])
    assert str(errors[0]) == "/nonexistent/policies: no such file or directory"


def test_unknown_kinds_are_warned_about_not_failed():
    policy_set, errors = compile_objects([Document("d.yaml", {"apiVersion": "apps/v1", "kind": "Deployment",
                                                              "metadata": {"name": "x"}})], compilers={})
    assert errors == []
    assert policy_set.warnings == ("d.yaml: Deployment/x: ignored (kind Deployment is not a webhook policy)",)


def test_order_is_priority_then_burstprofiles_then_name():
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "vci-profile", "namespace": "kube-system"},
          "data": {"selectors": '[{"name": "s"}]'}}
    policy_set, _ = compile_objects([Document("x", o) for o in (
        bp({}, name="zeta"), bp({"priority": 1}, name="late"), cm, bp({}, name="alpha"))], compilers={})
    assert [p.name for p in policy_set.profiles] == ["late", "alpha", "zeta", "vci-profile:s"]


def test_every_example_policy_is_valid():
    policy_set, errors = load([POLICIES])
    assert errors == []
    assert {p.provider for p in policy_set.profiles} >= {"volcengine-vci", "alibaba-eci", "alibaba-acs",
                                                         "virtual-kubelet", ""}
    assert "argo-jobs" in policy_set.namespaces


def test_crd_is_cluster_scoped_with_schema_and_printer_columns():
    crd = policy.crd()
    assert crd["spec"]["scope"] == "Cluster" and crd["spec"]["group"] == "burstflow.io"
    (version,) = crd["spec"]["versions"]
    assert version["name"] == "v1alpha1" and version["storage"] and version["served"]
    assert [c["name"] for c in version["additionalPrinterColumns"]] == ["Priority", "Seccomp", "Override", "Age"]
    text = data.crd_text(policy.CRD_FILE)
    assert "$ref" not in text  # structural schemas cannot use references


# --- provider presets: what each setting gives (whole Effects) ----------------------------------------------------

ECI_TOLERATION = {"key": "virtual-kubelet.io/provider", "operator": "Equal", "value": "alibabacloud",
                  "effect": "NoSchedule"}
ECS_FIRST = {"weight": 100, "preference": {"matchExpressions": [
    {"key": "type", "operator": "NotIn", "values": ["virtual-kubelet"]}]}}
ON_VIRTUAL_NODE = {"key": "type", "operator": "In", "values": ["virtual-kubelet"]}


@pytest.mark.parametrize("settings, effect", [
    ({}, Effect(tolerations=(ECI_TOLERATION,), preferred=(ECS_FIRST,))),
    ({"mode": "eci"}, Effect(tolerations=(ECI_TOLERATION,), preferred=(ECS_FIRST,))),
    ({"mode": "eci_only"}, Effect(tolerations=(ECI_TOLERATION,), node_affinity=(ON_VIRTUAL_NODE,))),
    ({"mode": "eci", "scheduling": "burstResource"},
     Effect(annotations=(("alibabacloud.com/burst-resource", "eci"),), tolerations=(ECI_TOLERATION,))),
    ({"mode": "eci_only", "scheduling": "burstResource"},
     Effect(annotations=(("alibabacloud.com/burst-resource", "eci_only"),), tolerations=(ECI_TOLERATION,))),
    ({"spotStrategy": "SpotAsPriceGo", "spotFallback": True},
     Effect(annotations=(("k8s.aliyun.com/eci-spot-strategy", "SpotAsPriceGo"),
                         ("k8s.aliyun.com/eci-spot-fallback", "true")),
            tolerations=(ECI_TOLERATION,), preferred=(ECS_FIRST,))),
    ({"spotStrategy": "SpotWithPriceLimit", "spotPriceLimit": "0.05", "spotFallback": False},
     Effect(annotations=(("k8s.aliyun.com/eci-spot-strategy", "SpotWithPriceLimit"),
                         ("k8s.aliyun.com/eci-spot-price-limit", "0.05")),
            tolerations=(ECI_TOLERATION,), preferred=(ECS_FIRST,))),
], ids=["default: ECS first, ECI when full", "eci", "eci_only: required virtual node", "legacy eci annotation",
        "legacy eci_only annotation", "spot with pay-as-you-go fallback", "fallback off"])
def test_alibaba_eci_preset_uses_native_scheduling(settings, effect):
    assert preset("alibaba-eci", settings) == effect


@pytest.mark.parametrize("settings, message", [
    ({"spotFallback": True}, "spotFallback: only applies with a spotStrategy (it falls back from spot to "
                             "pay-as-you-go)"),
    ({"spotStrategy": "SpotAsPriceGo", "spotFallback": "yes"}, "spotFallback: must be true or false, not 'yes'"),
    ({"scheduling": "annotation"}, "scheduling: must be one of nodeAffinity, burstResource, not 'annotation'"),
], ids=["fallback without spot", "fallback not a bool", "unknown scheduling"])
def test_alibaba_eci_preset_errors(settings, message):
    with pytest.raises(PresetError) as error:
        preset("alibaba-eci", settings)
    assert str(error.value) == message


@pytest.mark.parametrize("provider, message", [
    ({"alibaba-eci": {"spotFallback": True}},
     "spec.provider.alibaba-eci: spotFallback only applies with a spotStrategy"),
    ({"alibaba-eci": {"scheduling": "x"}}, "spec.provider.alibaba-eci.scheduling: 'x' is not one of ['nodeAffinity', "
                                           "'burstResource']"),
], ids=["CRD rule: fallback without spot", "CRD enum: scheduling"])
def test_crd_schema_checks_the_new_eci_settings(provider, message):
    assert errors_of(bp({"provider": provider})) == [PREFIX + message]


def test_seccomp_only_example_says_what_argo_does_and_how_to_opt_out():
    text = (POLICIES / "profile-seccomp-only.yaml").read_text()
    assert "Argo 3.6's own default" not in text
    for claim in ("Argo 3.6 sets RuntimeDefault only on the pods it runs for", "agent pod", "artifact-GC pods",
                  "resource-template pods", "the pod's own always wins", "seccomp: Disabled"):
        assert claim in text, claim


VCI_TOLERATION = {"key": "vci.vke.volcengine.com/node-type", "operator": "Equal", "value": "vci",
                  "effect": "NoSchedule"}


@pytest.mark.parametrize("mode, node_affinity", [
    (None, (ON_VIRTUAL_NODE,)), ("enforce", (ON_VIRTUAL_NODE,)), ("auto", ()),
], ids=["default enforce: requires the virtual nodes", "enforce", "auto: VKE's scheduler chooses"])
def test_volcengine_vci_enforce_is_hard_placement_on_any_scheduler(mode, node_affinity):
    settings = {} if mode is None else {"mode": mode}
    assert preset("volcengine-vci", settings) == Effect(
        annotations=(("vke.volcengine.com/burst-to-vci", mode or "enforce"),), tolerations=(VCI_TOLERATION,),
        node_affinity=node_affinity)
