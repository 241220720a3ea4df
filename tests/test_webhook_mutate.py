"""Tables for the pure mutation core: matching, precedence, seccomp, CEL at request time, idempotency, diffs."""
from __future__ import annotations

import copy
import json

import jsonpatch
import pytest
import yaml

from tests.conftest import load_admission
from tests.podschema import assert_valid_pod
from burstflow.webhook.loader import Document, compile_objects
from burstflow.webhook.mutate import PodDraft, decide, diff

ARGO_REQUEST = load_admission("pod-create-argo-workflow-pod.json")["body"]["request"]
VCI_NS = {"argo-jobs": {"vci": "true"}}


def profile(name: str, spec: dict | None = None) -> dict:
    return {"apiVersion": "burstflow.io/v1alpha1", "kind": "BurstProfile", "metadata": {"name": name},
            "spec": spec or {}}


def policies(*objects: dict):
    policy_set, errors = compile_objects([Document(f"test#{i}", o) for i, o in enumerate(objects)], compilers={})
    assert not errors, [str(e) for e in errors]
    return policy_set


def pod(labels=None, annotations=None, spec=None, namespace="argo-jobs") -> dict:
    metadata = {"name": "p", "namespace": namespace,
                "labels": {"workflows.argoproj.io/workflow": "wf"} if labels is None else labels}
    if annotations is not None:
        metadata["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
            "spec": spec if spec is not None else {"containers": [{"name": "main", "image": "alpine"}]}}


def request(obj: dict, *, operation="CREATE", kind="Pod", group="", namespace="argo-jobs", dry_run=False) -> dict:
    return {"uid": "u-1", "kind": {"group": group, "version": "v1", "kind": kind}, "operation": operation,
            "namespace": namespace, "object": obj, "dryRun": dry_run}


def run(obj, *objects, namespaces=VCI_NS, **kw):
    return decide(request(obj, **kw), policies=policies(*objects), namespaces=namespaces)


def applied_patch(decision, original):
    return jsonpatch.apply_patch(original, decision.patch())


VCI = profile("vci", {"match": {"namespaceSelector": {"matchLabels": {"vci": "true"}}},
                      "provider": {"volcengine-vci": {}}})


# --- which requests are looked at --------------------------------------------------------------------------------

@pytest.mark.parametrize("kw, reason", [
    ({"operation": "UPDATE"}, "operation UPDATE, only CREATE is mutated"),
    ({"operation": "DELETE"}, "operation DELETE, only CREATE is mutated"),
    ({"kind": "Workflow", "group": "argoproj.io"}, "not a Pod (kind argoproj.io/v1/Workflow)"),
], ids=["update", "delete", "workflow"])
def test_non_pod_create_is_allowed_unchanged(kw, reason):
    decision = run(pod(), VCI, **kw)
    assert (decision.outcome, decision.reason, decision.patch()) == ("skipped", reason, [])
    assert decision.response() == {"uid": "u-1", "allowed": True}


def test_object_that_is_not_a_pod_is_an_error_with_uid():
    decision = decide(request({"kind": "Workflow"}), policies=policies(VCI))
    assert decision.response() == {"uid": "u-1", "allowed": False,
                                   "status": {"code": 400, "message": "request.object must be a Pod object"}}


# --- matching ------------------------------------------------------------------------------------------------------

NS_AND_OBJ = {"match": {"namespaceSelector": {"matchLabels": {"vci": "true"}},
                        "objectSelector": {"matchExpressions": [{"key": "tier", "operator": "In",
                                                                 "values": ["batch"]}]}},
              "labels": {"hit": "yes"}}


@pytest.mark.parametrize("ns_labels, pod_labels, matched", [
    ({"vci": "true"}, {"workflows.argoproj.io/workflow": "wf", "tier": "batch"}, True),
    ({"vci": "true"}, {"workflows.argoproj.io/workflow": "wf", "tier": "web"}, False),
    ({}, {"workflows.argoproj.io/workflow": "wf", "tier": "batch"}, False),
    ({"vci": "false"}, {"workflows.argoproj.io/workflow": "wf", "tier": "batch"}, False),
    ({"vci": "true"}, {"tier": "batch"}, False),
], ids=["both match", "object selector misses", "namespace unlabelled", "namespace label differs",
        "not an Argo pod"])
def test_both_selectors_must_match(ns_labels, pod_labels, matched):
    decision = run(pod(labels=pod_labels), profile("p", NS_AND_OBJ), namespaces={"argo-jobs": ns_labels})
    assert (decision.applied == ("p",)) is matched
    response, outcome = decision.respond()
    assert outcome == ("mutated" if matched else "skipped")
    assert ("patch" in response) is matched


def test_namespace_lookup_accepts_namespace_objects_and_callables():
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "argo-jobs", "labels": {"vci": "true"}}}
    assert run(pod(), VCI, namespaces={"argo-jobs": namespace}).applied == ("vci",)
    assert run(pod(), VCI, namespaces=lambda name: namespace if name == "argo-jobs" else None).applied == ("vci",)
    assert run(pod(), VCI, namespaces=lambda name: None).applied == ()


def test_all_pods_switch_matches_pods_without_the_argo_label():
    all_pods = profile("all", {"match": {"workflowPodsOnly": False}, "labels": {"x": "y"}})
    assert run(pod(labels={}), all_pods).applied == ("all",)
    assert run(pod(labels={}), profile("argo-only", {"labels": {"x": "y"}})).applied == ()


@pytest.mark.parametrize("expression, matched, warned", [
    ("object.metadata.labels['workflows.argoproj.io/workflow'] == 'wf'", True, False),
    ("namespaceObject.metadata.labels.vci == 'true'", True, False),
    ("request.operation == 'CREATE' && !request.dryRun", True, False),
    ("object.spec.containers.exists(c, c.name == 'gpu')", False, False),
    ("object.metadata.labels['missing'] == 'x'", False, True),
    ("'a string, not a bool'", False, True),
], ids=["pod label", "namespace label", "request fields", "false", "evaluation error", "not a bool"])
def test_cel_match_conditions(expression, matched, warned):
    obj = pod()
    original = copy.deepcopy(obj)
    p = profile("cel", {"match": {"matchConditions": [{"name": "c", "expression": expression}]},
                        "labels": {"hit": "yes"}})
    decision = run(obj, p)
    assert (decision.applied == ("cel",)) is matched
    assert bool(decision.warnings) is warned
    if warned:
        assert "profile cel: matchConditions[c]" in decision.warnings[0]
        assert decision.response()["warnings"] == decision.warnings
    assert obj == original


def test_a_failing_condition_skips_only_its_profile():
    bad = profile("bad", {"priority": 10, "match": {"matchConditions": [
        {"name": "boom", "expression": "object.spec.nodeName == 'x'"}]}, "labels": {"bad": "1"}})
    good = profile("good", {"labels": {"good": "1"}})
    decision = run(pod(), bad, good)
    assert decision.applied == ("good",)
    assert decision.pod["metadata"]["labels"]["good"] == "1" and "bad" not in decision.pod["metadata"]["labels"]
    assert decision.outcome == "unchanged" and decision.response()["allowed"] is True


@pytest.mark.parametrize("template, expected, warned", [
    ("{{ object.metadata.labels['workflows.argoproj.io/workflow'] + '-x' }}", "wf-x", False),
    ("{{ size(object.spec.containers) }}", "1", False),
    ("{{ object.metadata.namespace == 'argo-jobs' }}", "true", False),
    ("{{ object.metadata.labels['nope'] }}", None, True),
    ("{{ null }}", None, False),
    ("{{ 'not a valid label value!' }}", None, True),
    ("{{ [1, 2] }}", None, True),
], ids=["string", "int", "bool", "error", "null skips", "invalid label value", "list"])
def test_cel_values(template, expected, warned):
    decision = run(pod(), profile("v", {"labels": {"computed": template}}))
    assert decision.pod["metadata"]["labels"].get("computed") == expected
    assert bool(decision.warnings) is warned


# --- precedence ----------------------------------------------------------------------------------------------------

HIGH = profile("high", {"priority": 10, "annotations": {"k": "high"}, "nodeSelector": {"zone": "a"}})
LOW = profile("low", {"annotations": {"k": "low", "only-low": "low"}, "nodeSelector": {"zone": "b"}})
LOW_OVERRIDE = profile("low-override", {"override": True, "annotations": {"k": "low", "mine": "profile"}})


@pytest.mark.parametrize("annotations, objects, expected", [
    ({}, [HIGH, LOW], {"k": "high", "only-low": "low"}),
    ({}, [LOW, HIGH], {"k": "high", "only-low": "low"}),
    ({"k": "pod"}, [HIGH, LOW], {"k": "pod", "only-low": "low"}),
    ({"mine": "pod"}, [LOW_OVERRIDE], {"k": "low", "mine": "profile"}),
    ({}, [HIGH, LOW_OVERRIDE], {"k": "high", "mine": "profile"}),
], ids=["higher priority wins", "declaration order does not matter", "pod value wins",
        "override replaces pod value", "override does not beat a higher priority profile"])
def test_precedence(annotations, objects, expected):
    decision = run(pod(annotations=annotations), *objects)
    got = {k: v for k, v in decision.pod["metadata"]["annotations"].items() if k != "burstflow.io/applied"}
    assert got == expected


def test_equal_priority_orders_by_name_and_is_recorded():
    decision = run(pod(), profile("b", {"annotations": {"k": "b"}}), profile("a", {"annotations": {"k": "a"}}))
    assert decision.applied == ("a", "b")
    assert decision.pod["metadata"]["annotations"] == {"k": "a", "burstflow.io/applied": "a,b"}


def test_node_selector_precedence_and_pod_value():
    decision = run(pod(spec={"containers": [{"name": "m", "image": "x"}], "nodeSelector": {"zone": "pod"}}),
                   HIGH, LOW)
    assert decision.pod["spec"]["nodeSelector"] == {"zone": "pod"}


def test_skip_annotation_opts_out():
    decision = run(pod(annotations={"burstflow.io/skip": "true"}), VCI)
    assert (decision.outcome, decision.patch()) == ("skipped", [])
    assert decision.reason.startswith("opted out")
    assert run(pod(annotations={"burstflow.io/skip": "false"}), VCI).applied == ("vci",)


def test_unmatched_pod_is_allowed_unchanged():
    decision = run(pod(namespace="other"), VCI, namespace="other")
    assert (decision.outcome, decision.reason) == ("skipped", "no profile matched")
    assert decision.response() == {"uid": "u-1", "allowed": True}


# --- tolerations, affinity ----------------------------------------------------------------------------------------

def test_tolerations_are_added_once():
    tol = {"key": "vci.vke.volcengine.com/node-type", "operator": "Equal", "value": "vci", "effect": "NoSchedule"}
    spec = {"containers": [{"name": "m", "image": "x"}], "tolerations": [dict(tol)]}
    assert run(pod(spec=spec), VCI).pod["spec"]["tolerations"] == [tol]
    assert run(pod(), VCI).pod["spec"]["tolerations"] == [tol]


def test_virtual_kubelet_affinity_is_anded_into_every_existing_term():
    terms = [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
             {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]}]
    spec = {"containers": [{"name": "m", "image": "x"}], "affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": copy.deepcopy(terms)}}}}
    vk = profile("vk", {"provider": {"virtual-kubelet": {"placement": "nodeAffinity"}}})
    decision = run(pod(spec=spec), vk)
    got = decision.pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    want = {"key": "type", "operator": "In", "values": ["virtual-kubelet"]}
    assert got["nodeSelectorTerms"] == [{"matchExpressions": t["matchExpressions"] + [want]} for t in terms]
    assert decision.pod["spec"]["tolerations"] == [
        {"key": "virtual-kubelet.io/provider", "operator": "Exists", "effect": "NoSchedule"}]
    assert_valid_pod(decision.pod)


def test_virtual_kubelet_node_selector_default():
    decision = run(pod(), profile("vk", {"provider": {"virtual-kubelet": {}}}))
    assert decision.pod["spec"]["nodeSelector"] == {"type": "virtual-kubelet"}


# --- seccomp -------------------------------------------------------------------------------------------------------

def _spec(**extra) -> dict:
    spec = {"containers": [{"name": "m", "image": "x"}]}
    spec.update(extra)
    return spec


@pytest.mark.parametrize("spec, annotations, expected", [
    (_spec(), None, {"seccompProfile": {"type": "RuntimeDefault"}}),
    (_spec(securityContext={"runAsUser": 1000}), None, {"runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}}),
    (_spec(securityContext={"seccompProfile": {"type": "Unconfined"}}), None, {"seccompProfile": {"type": "Unconfined"}}),
    ({"containers": [{"name": "m", "image": "x", "securityContext": {"seccompProfile": {"type": "Unconfined"}}}]},
     None, None),
    ({"containers": [{"name": "m", "image": "x"}],
      "initContainers": [{"name": "i", "image": "x", "securityContext": {"seccompProfile": {"type": "Localhost",
                                                                                            "localhostProfile": "p"}}}]},
     None, None),
    (_spec(ephemeralContainers=[{"name": "e", "image": "x", "securityContext": {"seccompProfile": {"type": "Unconfined"}}}]),
     None, None),
    (_spec(os={"name": "windows"}), None, None),
    (_spec(), {"seccomp.security.alpha.kubernetes.io/pod": "unconfined"}, None),
    (_spec(), {"container.seccomp.security.alpha.kubernetes.io/m": "unconfined"}, None),
    (_spec(os={"name": "linux"}), None, {"seccompProfile": {"type": "RuntimeDefault"}}),
], ids=["plain pod", "keeps other securityContext fields", "existing pod profile", "container profile",
        "init container profile", "ephemeral container profile", "windows", "legacy pod annotation",
        "legacy container annotation", "linux os"])
def test_seccomp(spec, annotations, expected):
    decision = run(pod(spec=spec, annotations=annotations), profile("s"))
    assert decision.pod["spec"].get("securityContext") == expected
    assert_valid_pod(decision.pod)


def test_seccomp_disabled():
    decision = run(pod(), profile("s", {"seccomp": "Disabled"}))
    assert "securityContext" not in decision.pod["spec"]
    assert decision.patch() == [{"op": "add", "path": "/metadata/annotations",
                                 "value": {"burstflow.io/applied": "s"}}]


@pytest.mark.parametrize("profiles, expected", [
    ([profile("off", {"priority": 10, "seccomp": "Disabled"}), profile("default", {"priority": -100})], None),
    ([profile("off", {"priority": -200, "seccomp": "Disabled"}), profile("default", {"priority": -100})],
     {"seccompProfile": {"type": "RuntimeDefault"}}),
], ids=["a higher-priority Disabled opts the pod out", "a lower-priority Disabled does not"])
def test_seccomp_first_profile_with_an_opinion_decides(profiles, expected):
    decision = run(pod(), *profiles)
    assert decision.pod["spec"].get("securityContext") == expected


def test_configmap_profiles_have_no_say_on_seccomp():
    vci_profile = {"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "vci-profile", "namespace": "kube-system"},
                   "data": {"selectors": '[{"name": "all", "namespaceSelector": {"matchLabels": {"vci": "true"}}}]'}}
    decision = run(pod(), vci_profile, profile("default", {"priority": -100}))
    assert decision.applied == ("vci-profile:all", "default")
    assert decision.pod["spec"]["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}


# --- provider presets through the whole profile step --------------------------------------------------------------

ECI_TOLERATION = {"key": "virtual-kubelet.io/provider", "operator": "Equal", "value": "alibabacloud",
                  "effect": "NoSchedule"}
OWN_AFFINITY = {"nodeAffinity": {
    "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]},
    "preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 5, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}}]}}


@pytest.mark.parametrize("settings, affinity", [
    ({"mode": "eci"}, {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": OWN_AFFINITY["nodeAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"],
        "preferredDuringSchedulingIgnoredDuringExecution": [
            *OWN_AFFINITY["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"],
            {"weight": 100, "preference": {"matchExpressions": [
                {"key": "type", "operator": "NotIn", "values": ["virtual-kubelet"]}]}}]}}),
    ({"mode": "eci_only"}, {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]},
                                  {"key": "type", "operator": "In", "values": ["virtual-kubelet"]}]}]},
        "preferredDuringSchedulingIgnoredDuringExecution": OWN_AFFINITY["nodeAffinity"][
            "preferredDuringSchedulingIgnoredDuringExecution"]}}),
    ({"mode": "eci", "scheduling": "burstResource"}, OWN_AFFINITY),
], ids=["eci: prefer ECS, tolerate ECI", "eci_only: require the virtual node", "legacy: annotation only"])
def test_alibaba_eci_pod_spec_keeps_the_pods_own_affinity(settings, affinity):
    eci = profile("eci", {"seccomp": "Disabled", "provider": {"alibaba-eci": settings}})
    original = pod(spec={"containers": [{"name": "main", "image": "alpine"}], "affinity": copy.deepcopy(OWN_AFFINITY)})
    decision = run(original, eci)
    assert decision.pod["spec"] == {"containers": [{"name": "main", "image": "alpine"}], "affinity": affinity,
                                    "tolerations": [ECI_TOLERATION]}
    legacy = {"alibabacloud.com/burst-resource": "eci"} if settings.get("scheduling") else {}
    assert decision.pod["metadata"]["annotations"] == {**legacy, "burstflow.io/applied": "eci"}
    assert applied_patch(decision, original) == decision.pod
    again = run(decision.pod, eci)
    assert again.patch() == []
    assert_valid_pod(decision.pod)


# --- enforce wins over pools ----------------------------------------------------------------------------------------

def resource_policy(name="pools", namespace="argo-jobs", selector=None):
    return {"apiVersion": "burstflow.io/v1alpha1", "kind": "ResourcePolicy",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"selector": selector or {"resource": "vci"}, "subsets": [{"name": "ecs", "maxReplicas": 5}]}}


def with_pools(*objects):
    policy_set, errors = compile_objects([Document(f"test#{i}", o) for i, o in enumerate(objects)])
    assert not errors, [str(e) for e in errors]
    return policy_set


ENFORCE_NOTE = ("burstflow: pod has vke.volcengine.com/burst-to-vci: enforce, so it goes to VCI and is not placed by "
                "ResourcePolicy argo-jobs/pools (enforce wins over pools, as on Volcengine); remove the annotation or "
                "the profile that sets it to let the pool decide")


@pytest.mark.parametrize("pod_annotations, objects, warnings", [
    ({"vke.volcengine.com/burst-to-vci": "enforce"}, [resource_policy()], [ENFORCE_NOTE]),
    (None, [VCI, resource_policy()], [ENFORCE_NOTE]),
    (None, [profile("auto", {"provider": {"volcengine-vci": {"mode": "auto"}}}), resource_policy()], []),
    (None, [VCI, resource_policy(selector={"resource": "ecs"})], []),
    (None, [VCI, resource_policy(namespace="other")], []),
    ({"burstflow.io/reservation": "t1"}, [VCI, resource_policy()], []),
], ids=["enforce from the workflow template", "enforce from a profile", "auto is soft: the pool decides",
        "policy selects other pods", "policy in another namespace", "already placed by a pool (reinvocation)"])
def test_enforce_wins_over_pools_with_a_warning(pod_annotations, objects, warnings):
    decision = decide(request(pod(labels={"workflows.argoproj.io/workflow": "wf", "resource": "vci"},
                                  annotations=pod_annotations)),
                      policies=with_pools(*objects), namespaces=VCI_NS)
    assert decision.warnings == warnings
    assert decision.response().get("warnings") == (warnings or None)


# --- idempotency, dry-run, patches ---------------------------------------------------------------------------------

ALL_KINDS = [VCI, profile("extra", {"priority": -1, "labels": {"team": "{{ 'data' }}"},
                                    "nodeSelector": {"disk": "ssd"}, "tolerations": [
                                        {"key": "batch", "operator": "Exists", "effect": "NoSchedule"}]}),
             profile("vk", {"priority": -2, "provider": {"virtual-kubelet": {"placement": "nodeAffinity"}}})]


def test_reinvocation_adds_nothing():
    first = decide(ARGO_REQUEST, policies=policies(*ALL_KINDS), namespaces=VCI_NS)
    assert first.outcome == "unchanged" and first.patch()
    patched_pod = applied_patch(first, ARGO_REQUEST["object"])
    assert patched_pod == first.pod
    second = decide(dict(ARGO_REQUEST, uid="u-2", object=patched_pod), policies=policies(*ALL_KINDS),
                    namespaces=VCI_NS)
    assert second.patch() == []
    assert second.response() == {"uid": "u-2", "allowed": True}
    assert_valid_pod(first.pod)


def test_applied_annotation_keeps_names_from_an_earlier_call():
    decision = run(pod(annotations={"burstflow.io/applied": "older"}), VCI)
    assert decision.pod["metadata"]["annotations"]["burstflow.io/applied"] == "older,vci"


def test_dry_run_is_mutated_the_same_way():
    dry = load_admission("pod-create-dry-run.json")["body"]["request"]
    assert dry["dryRun"] is True
    wet = decide(ARGO_REQUEST, policies=policies(VCI), namespaces=VCI_NS)
    assert decide(dry, policies=policies(VCI), namespaces=VCI_NS).patch() == wet.patch()


@pytest.mark.parametrize("spec", [
    {"os": "linux", "containers": [{"name": "m"}]},
    {"securityContext": "x", "containers": [{"name": "m"}]},
    {"tolerations": ["not-an-object", {"key": "k", "operator": "Exists"}], "containers": [{"name": "m"}]},
    {"tolerations": {"key": "k"}, "containers": [{"name": "m"}]},
    {"containers": {"name": "m"}},
    {"containers": [{"name": "m", "securityContext": "x"}]},
], ids=["os a string", "securityContext a string", "toleration a string", "tolerations an object",
        "containers an object", "container securityContext a string"])
def test_malformed_pod_fields_never_crash_the_core(spec):
    """The API server would reject these pods later; the webhook must still answer, with a patch that applies."""
    bad = pod(spec=spec)
    frozen = copy.deepcopy(bad)
    decision = run(bad, VCI)
    assert decision.applied == ("vci",)
    assert jsonpatch.apply_patch(copy.deepcopy(frozen), decision.patch()) == decision.pod
    assert bad == frozen


def test_request_object_is_never_modified():
    original = copy.deepcopy(ARGO_REQUEST)
    decision = decide(ARGO_REQUEST, policies=policies(*ALL_KINDS), namespaces=VCI_NS)
    decision.response()
    assert ARGO_REQUEST == original


def test_patch_escapes_slashes_and_adds_missing_parents():
    bare = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {
        "workflows.argoproj.io/workflow": "w"}}, "spec": {"containers": [{"name": "m", "image": "x"}]}}
    decision = run(bare, VCI)
    ops = {op["path"]: op for op in decision.patch()}
    assert ops["/metadata/annotations"]["op"] == "add"
    assert ops["/metadata/annotations"]["value"]["vke.volcengine.com/burst-to-vci"] == "enforce"
    assert ops["/spec/tolerations"]["op"] == "add"
    assert applied_patch(decision, bare) == decision.pod


def test_draft_edits_are_not_repeated():
    draft = PodDraft(copy.deepcopy(ARGO_REQUEST["object"]))
    requirement = [{"key": "type", "operator": "In", "values": ["vk"]}]
    assert (draft.require_node_affinity(requirement), draft.require_node_affinity(requirement)) == (True, False)


@pytest.mark.parametrize("edit", [
    lambda d: d.set_entry(("metadata", "labels"), "a/b", "1"),
    lambda d: d.writable_list("spec", "tolerations").append({"key": "k", "operator": "Exists"}),
    lambda d: d.require_node_affinity([{"key": "type", "operator": "In", "values": ["vk"]}]),
    lambda d: d.writable_dict("spec", "securityContext").update(runAsUser=1),
], ids=["label", "toleration", "affinity", "securityContext"])
def test_draft_is_copy_on_write_and_diff_matches_a_full_make_patch(edit):
    original = copy.deepcopy(ARGO_REQUEST["object"])
    frozen = copy.deepcopy(original)
    draft = PodDraft(original)
    assert edit(draft) is not False
    assert original == frozen
    assert draft.pod["spec"]["containers"] is original["spec"]["containers"]
    assert diff(original, draft.pod) == jsonpatch.make_patch(frozen, json.loads(json.dumps(draft.pod))).patch


@pytest.mark.parametrize("before, after", [
    ({"a": 1}, {"a": 1}),
    ({"a": 1}, {"a": 2}),
    ({"a": 1}, {}),
    ({}, {"a/b": {"c~d": [1]}}),
    ({"l": [1, 2]}, {"l": [1, 2, 3, 4]}),
    ({"l": [1, 2]}, {"l": [2]}),
    ({"l": [{"k": 1}]}, {"l": [{"k": 2}]}),
    ({"x": {"y": 1}}, {"x": [1]}),
    ({"x": None}, {"x": {}}),
    ({"x": 1}, {"x": True}),
    ({"m": {"a": "1", "b": "2"}}, {"m": {"b": "2", "c": "3"}}),
], ids=["equal", "replace", "remove", "escaped add", "append", "shrink", "list item changed", "type change",
        "null to object", "int to bool", "map keys"])
def test_diff_round_trips_through_jsonpatch(before, after):
    ops = diff(before, after)
    assert strict(jsonpatch.apply_patch(copy.deepcopy(before), ops)) == strict(after)
    assert (ops == []) is (strict(before) == strict(after))


def strict(value) -> str:
    """JSON text with sorted keys: unlike ==, tells true from 1 and 1 from 1.0."""
    return json.dumps(value, sort_keys=True)


@pytest.mark.parametrize("before, after", [
    ({"l": [1]}, {"l": [True]}),
    ({"l": [{"a": 1}]}, {"l": [{"a": True}, 2]}),
    ({"l": [0, 1]}, {"l": [False, 1, 2]}),
    ({"x": 1}, {"x": 1.0}),
    ({"m": {"a": [1, {"b": None}]}}, {"m": {"a": [1, {"b": 0}]}}),
    ({"a~/b": {"~1": 1}, "gone": 1}, {"a~/b": {"~1": 2, "/": 3}}),
    ({"l": [1, 2, 3]}, {"l": [3, 2, 1]}),
    ({"l": [1, 2]}, {"l": []}),
    ({"o": {}}, {"o": {"": ""}}),
], ids=["int to bool in a list", "nested bool in a list that grew", "false vs 0 in a prefix", "int to float",
        "null to 0 deep", "escaped keys, add and remove", "reordered list", "emptied list", "empty key"])
def test_diff_is_exact_where_python_equality_is_not(before, after):
    """Python's == says True == 1 == 1.0; JSON does not, and neither may the patch."""
    ops = diff(before, after)
    assert ops, "a difference visible in JSON must give a patch"
    assert strict(jsonpatch.apply_patch(copy.deepcopy(before), ops)) == strict(after)


def _random_edits(seed: int) -> tuple[dict, dict, list[str]]:
    """The Argo pod and an edited deep copy (1-4 random edits), with a description of the edits."""
    import random

    rng = random.Random(seed)
    original = copy.deepcopy(ARGO_REQUEST["object"])
    edited = copy.deepcopy(original)
    values = ["x", "", 0, 1, 1.5, True, False, None, {}, [], {"k/~": "v"}, ["a", 1]]
    log = []
    for _ in range(rng.randint(1, 4)):
        containers = []

        def walk(node, path):
            if isinstance(node, (dict, list)):
                containers.append((node, path))
                items = node.items() if isinstance(node, dict) else enumerate(node)
                for key, child in items:
                    walk(child, f"{path}/{key}")

        walk(edited, "")
        node, path = rng.choice(containers)
        action = rng.choice(["set", "add", "remove", "append"])
        if isinstance(node, dict):
            if action == "remove" and node:
                key = rng.choice(list(node))
                del node[key]
            else:
                key = rng.choice(list(node) + ["new", "a/b", "t~0"]) if action == "set" and node else \
                    rng.choice(["new", "a/b", "t~0", "x~1/y"])
                node[key] = copy.deepcopy(rng.choice(values))
        elif action == "append" or not node:
            node.append(copy.deepcopy(rng.choice(values)))
            key = len(node) - 1
        elif action == "remove":
            key = rng.randrange(len(node))
            del node[key]
        else:
            key = rng.randrange(len(node))
            node[key] = copy.deepcopy(rng.choice(values))
        log.append(f"{action} {path}/{key}")
    return original, edited, log


@pytest.mark.parametrize("seed", range(150))
def test_diff_of_random_edits_to_the_argo_pod_matches_jsonpatch(seed):
    """Whole-pod pairs with nothing shared (deep copies), so the differ walks every node; jsonpatch.make_patch on
    the same pair must agree on whether anything changed, and both patches must rebuild the edited pod."""
    original, edited, log = _random_edits(seed)
    frozen = copy.deepcopy(original)
    ops = diff(original, edited)
    assert original == frozen, log
    assert strict(jsonpatch.apply_patch(copy.deepcopy(original), ops)) == strict(edited), log
    reference = jsonpatch.make_patch(original, edited).patch
    assert strict(jsonpatch.apply_patch(copy.deepcopy(original), reference)) == strict(edited), log
    assert (ops == []) is (reference == []) is (strict(original) == strict(edited)), log


def test_diff_equals_make_patch_on_the_argo_pod():
    decision = decide(ARGO_REQUEST, policies=policies(*ALL_KINDS), namespaces=VCI_NS)
    key = lambda op: json.dumps(op, sort_keys=True)  # noqa: E731 - same ops, possibly in another order
    assert sorted(decision.patch(), key=key) == sorted(
        jsonpatch.make_patch(ARGO_REQUEST["object"], decision.pod).patch, key=key)


# --- PodAdmitter and PolicyStore ----------------------------------------------------------------------------------

from types import SimpleNamespace  # noqa: E402

from burstflow.webhook import admission  # noqa: E402
from burstflow.webhook.admitter import PodAdmitter, PolicyStore  # noqa: E402


async def test_admitter_is_not_ready_until_policies_are_installed():
    store = PolicyStore()
    admitter = PodAdmitter(store=store, namespaces=VCI_NS)
    assert not admitter.ready
    outcome = await admitter.admit(ARGO_REQUEST)
    assert (outcome.outcome, outcome.response["allowed"], "patch" in outcome.response) == ("skipped", True, False)
    assert store.update(policies(VCI)) is True
    assert admitter.ready
    outcome = await admitter.admit(ARGO_REQUEST)
    assert (outcome.outcome, outcome.profiles) == ("mutated", ("vci",))
    assert outcome.response["uid"] == ARGO_REQUEST["uid"]
    patched_pod = jsonpatch.apply_patch(ARGO_REQUEST["object"], admission.decode_patch(outcome.response))
    assert_valid_pod(patched_pod)


async def test_admitter_follows_reloads_and_namespace_relabels_between_admissions():
    """The profiles a namespace can get are remembered per policy set and namespace labels: a reload (a new set),
    a namespace relabel and a change of the pod's workflow label each take effect on the very next admission."""
    store = PolicyStore()
    labels = {"vci": "true"}
    admitter = PodAdmitter(store=store, namespaces=lambda name: labels)
    other = profile("other", {"match": {"namespaceSelector": {"matchLabels": {"team": "b"}}},
                              "labels": {"team": "b"}})
    everywhere = profile("everywhere", {"match": {"workflowPodsOnly": False}, "labels": {"seen": "yes"}})
    store.update(policies(VCI))
    assert (await admitter.admit(ARGO_REQUEST)).profiles == ("vci",)
    store.update(policies(other))
    assert (await admitter.admit(ARGO_REQUEST)).outcome == "skipped"
    labels = {"team": "b"}
    assert (await admitter.admit(ARGO_REQUEST)).profiles == ("other",)
    labels = {"vci": "true"}
    store.update(policies(VCI, everywhere))
    assert (await admitter.admit(ARGO_REQUEST)).profiles == ("everywhere", "vci")  # same priority: by name
    plain = dict(ARGO_REQUEST, object=pod(labels={}))
    assert (await admitter.admit(plain)).profiles == ("everywhere",)
    assert (await admitter.admit(ARGO_REQUEST)).profiles == ("everywhere", "vci")  # same priority: by name


def test_store_keeps_the_last_good_set_when_a_reload_has_errors():
    from burstflow.webhook.policy import PolicyError

    good, other = policies(VCI), policies(profile("other"))
    store = PolicyStore()
    assert store.update(good, [PolicyError("bad", source="x.yaml")]) is False
    assert store.policies is good  # first load: the valid part is installed
    assert store.update(other, [PolicyError("bad", source="x.yaml")]) is False
    assert store.policies is good and str(store.errors[0]) == "x.yaml: bad"
    assert store.update(other) is True and store.policies is other


class RecordingPlacer:
    def __init__(self, result):
        self.result = result
        self.calls = []

    async def place(self, pod, *, namespace, policies, dry_run=False):
        self.calls.append((pod, namespace, policies, dry_run))
        return self.result(pod) if callable(self.result) else self.result


async def test_placer_gets_the_profile_mutated_pod_and_can_edit_further():
    def shape(pod):
        draft = PodDraft(pod)
        draft.set_entry(("metadata", "labels"), "burstflow.io/pool", "vci")
        return SimpleNamespace(pod=draft.pod, denied=None, warnings=("pool note",))

    placer = RecordingPlacer(shape)
    admitter = PodAdmitter(store=PolicyStore(policies(VCI)), namespaces=VCI_NS, placer=placer)
    outcome = await admitter.admit(dict(ARGO_REQUEST, dryRun=True))
    pod_seen, namespace, rps, dry_run = placer.calls[0]
    assert pod_seen["metadata"]["annotations"]["vke.volcengine.com/burst-to-vci"] == "enforce"
    assert (namespace, rps, dry_run) == ("argo-jobs", (), True)
    patched_pod = jsonpatch.apply_patch(ARGO_REQUEST["object"], admission.decode_patch(outcome.response))
    assert patched_pod["metadata"]["labels"]["burstflow.io/pool"] == "vci"
    assert outcome.response["warnings"] == ["pool note"]


async def test_placer_denial_answers_with_its_code():
    placer = RecordingPlacer(SimpleNamespace(pod=None, denied=(429, "pool full"), warnings=()))
    admitter = PodAdmitter(store=PolicyStore(policies(VCI)), namespaces=VCI_NS, placer=placer)
    outcome = await admitter.admit(ARGO_REQUEST)
    assert outcome.outcome == "denied"
    assert outcome.response == {"uid": ARGO_REQUEST["uid"], "allowed": False,
                                "status": {"code": 429, "message": "pool full"}}


async def test_placer_is_not_called_for_opted_out_pods_or_other_kinds():
    placer = RecordingPlacer(None)
    admitter = PodAdmitter(store=PolicyStore(policies(VCI)), namespaces=VCI_NS, placer=placer)
    await admitter.admit(request(pod(annotations={"burstflow.io/skip": "true"})))
    await admitter.admit(request(pod(), operation="UPDATE"))
    assert placer.calls == []
    await admitter.admit(request(pod(namespace="elsewhere"), namespace="elsewhere"))  # unmatched, still placed
    assert len(placer.calls) == 1


async def test_cel_failures_are_logged_and_returned_as_warnings(caplog):
    bad = profile("bad", {"labels": {"x": "{{ object.metadata.labels['nope'] }}"}})
    admitter = PodAdmitter(store=PolicyStore(policies(bad)), namespaces=VCI_NS)
    outcome = await admitter.admit(ARGO_REQUEST)
    assert outcome.response["allowed"] is True
    assert "profile bad: labels[x]" in outcome.response["warnings"][0]
    assert "profile bad: labels[x]" in caplog.text
