"""vci-profile / eci-profile ConfigMaps behave as profiles: which keys are honoured, which are ignored, errors."""
from __future__ import annotations

import json

import pytest

from burstflow.webhook.loader import Document, compile_objects
from burstflow.webhook.mutate import decide


def configmap(name: str, data: dict, namespace: str = "kube-system") -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace},
            "data": data}


def pod(labels: dict) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ns", "labels": labels},
            "spec": {"containers": [{"name": "m", "image": "x"}]}}


def run(cm: dict, ns_labels: dict, pod_labels: dict):
    policies, errors = compile_objects([Document("cm.yaml", cm)], compilers={})
    assert errors == []
    request = {"uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "operation": "CREATE",
               "namespace": "ns", "object": pod(pod_labels)}
    return decide(request, policies=policies, namespaces={"ns": ns_labels}), policies


VCI = configmap("vci-profile", {
    "preferredSubnetIds": "subnet-a, subnet-b", "enforceSelectorToVci": "true", "tlsEnable": "true",
    "selectors": json.dumps([{"name": "argo", "namespaceSelector": {"matchLabels": {"vci": "true"}},
                              "effect": {"annotations": {"vci.volcengine.com/tls-enable": "true"},
                                         "labels": {"created-by-vci": "true"}}}])})


def test_vci_profile_selector_applies_effect_subnets_enforce_and_toleration():
    decision, policies = run(VCI, {"vci": "true"}, {})  # every pod, not only Argo pods, as VKE does
    assert decision.applied == ("vci-profile:argo",)
    metadata, spec = decision.pod["metadata"], decision.pod["spec"]
    assert metadata["annotations"] == {
        "vke.volcengine.com/burst-to-vci": "enforce",
        "vke.volcengine.com/preferred-subnet-ids": "subnet-a,subnet-b",
        "vci.volcengine.com/tls-enable": "true",
        "burstflow.io/applied": "vci-profile:argo"}
    assert metadata["labels"] == {"created-by-vci": "true"}
    assert spec["tolerations"] == [{"key": "vci.vke.volcengine.com/node-type", "operator": "Equal", "value": "vci",
                                    "effect": "NoSchedule"}]
    assert "securityContext" not in spec  # ConfigMap profiles do not touch seccomp
    assert policies.warnings == ("cm.yaml: ConfigMap/kube-system/vci-profile: data.tlsEnable: ignored (not a pod "
                                 "mutation Burstflow performs)",)


@pytest.mark.parametrize("enforce", ["false", None], ids=["enforceSelectorToVci false", "not set"])
def test_vci_profile_without_enforce_prefers_vci_softly(enforce):
    """Volcengine's vci-profile is soft scheduling: prefer the virtual nodes, tolerate them, require nothing."""
    data = {k: v for k, v in VCI["data"].items() if k != "enforceSelectorToVci"}
    if enforce is not None:
        data["enforceSelectorToVci"] = enforce
    decision, _ = run(configmap("vci-profile", data), {"vci": "true"}, {})
    assert "vke.volcengine.com/burst-to-vci" not in decision.pod["metadata"]["annotations"]
    assert decision.pod["spec"] == {
        "containers": [{"name": "m", "image": "x"}],
        "tolerations": [{"key": "vci.vke.volcengine.com/node-type", "operator": "Equal", "value": "vci",
                         "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "preference": {"matchExpressions": [
                {"key": "type", "operator": "In", "values": ["virtual-kubelet"]}]}}]}}}


def test_vci_profile_with_enforce_has_no_preference():
    decision, _ = run(VCI, {"vci": "true"}, {})
    assert "affinity" not in decision.pod["spec"]


ECI = configmap("eci-profile", {
    "vSwitchIds": "vsw-1,vsw-2", "securityGroupId": "sg-1", "vpcId": "vpc-1",
    "selectors": json.dumps([{"name": "both", "namespaceSelector": {"matchLabels": {"eci": "true"}},
                              "objectSelector": {"matchLabels": {"eci": "true"}},
                              "effect": {"labels": {"created-by-eci": "true"}}}])})


@pytest.mark.parametrize("ns_labels, pod_labels, matched", [
    ({"eci": "true"}, {"eci": "true"}, True),
    ({"eci": "true"}, {}, False),
    ({}, {"eci": "true"}, False),
], ids=["both match", "pod selector misses", "namespace selector misses"])
def test_eci_profile_needs_both_selectors(ns_labels, pod_labels, matched):
    decision, _ = run(ECI, ns_labels, pod_labels)
    assert bool(decision.applied) is matched
    if matched:
        annotations = decision.pod["metadata"]["annotations"]
        assert annotations["k8s.aliyun.com/eci-vswitch"] == "vsw-1,vsw-2"
        assert annotations["k8s.aliyun.com/eci-security-group"] == "sg-1"
        assert decision.pod["spec"]["nodeSelector"] == {"type": "virtual-kubelet"}
        assert decision.pod["spec"]["tolerations"] == [{"key": "virtual-kubelet.io/provider", "operator": "Equal",
                                                        "value": "alibabacloud", "effect": "NoSchedule"}]
        assert decision.pod["metadata"]["labels"]["created-by-eci"] == "true"


@pytest.mark.parametrize("data, message", [
    ({"selectors": "[{not json"}, "cm.yaml: ConfigMap/kube-system/vci-profile: data.selectors: not valid JSON"),
    ({"selectors": '{"name": "x"}'}, "data.selectors: must be a JSON list of selectors"),
    ({"selectors": '[{"name": "x", "namespaceSelector": {"matchLabels": {"a": 1}}}]'},
     "data.selectors[0].namespaceSelector.matchLabels.a: value must be a string"),
    ({"selectors": '[{"name": "x", "effect": {"labels": {"a": "bad value!"}}}]'},
     "data.selectors[0].effect.labels[a]: label value"),
    ({"selectors": '[{"name": "x", "effect": {"env": {}}}]'}, "data.selectors[0].effect: must be an object"),
    ({"selectors": '[{"name": "x"}, {"name": "x"}]'}, "data.selectors[1].name: duplicate selector name 'x'"),
], ids=["not json", "not a list", "bad selector", "bad label", "unknown effect", "duplicate"])
def test_bad_configmaps_name_the_field(data, message):
    _, errors = compile_objects([Document("cm.yaml", configmap("vci-profile", data))], compilers={})
    assert len(errors) == 1 and message in str(errors[0]), [str(e) for e in errors]


def test_other_configmaps_are_ignored_with_a_warning():
    policies, errors = compile_objects([Document("c.yaml", configmap("vci-profile", VCI["data"], "default"))],
                                       compilers={})
    assert (errors, policies.profiles) == ([], ())
    assert "only kube-system/vci-profile and kube-system/eci-profile are read" in policies.warnings[0]


def test_selector_without_selectors_warns_that_it_selects_every_pod():
    policies, _ = compile_objects([Document("c.yaml", configmap("vci-profile", {"selectors": '[{"name": "all"}]'}))],
                                  compilers={})
    assert policies.warnings == ("c.yaml: ConfigMap/kube-system/vci-profile: data.selectors[0]: no namespaceSelector "
                                 "or objectSelector, so it selects every pod",)


def test_burstprofile_beats_configmap_at_equal_priority():
    profile = {"apiVersion": "burstflow.io/v1alpha1", "kind": "BurstProfile", "metadata": {"name": "zzz"},
               "spec": {"match": {"workflowPodsOnly": False},
                        "provider": {"volcengine-vci": {"mode": "auto", "subnetIds": ["subnet-own"]}}}}
    policies, errors = compile_objects([Document("a", VCI), Document("b", profile)], compilers={})
    request = {"uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "operation": "CREATE",
               "namespace": "ns", "object": pod({})}
    decision = decide(request, policies=policies, namespaces={"ns": {"vci": "true"}})
    assert decision.applied == ("zzz", "vci-profile:argo")
    annotations = decision.pod["metadata"]["annotations"]
    assert annotations["vke.volcengine.com/burst-to-vci"] == "auto"
    assert annotations["vke.volcengine.com/preferred-subnet-ids"] == "subnet-own"
