"""The patch written from the profile step's recorded edits (and remembered per pod shape) against the old path
(tests/mutate_reference.py: edit a copy-on-write draft, then diff): for the example policies, a set of static
profiles that write every kind of field, and the admission fixtures plus hundreds of variations of them (fields
already set, tolerations, seccomp at pod or container level, affinity, key orders, odd types), `decide` must give
the same pod, the same patch op for op, the same response bytes and the same records, on the first pod of a shape
and on every later one."""
from __future__ import annotations

import copy
import json
import random

from types import SimpleNamespace

import jsonpatch
import pytest

from burstflow.webhook import admission
from burstflow.webhook.admitter import PodAdmitter, PolicyStore
from burstflow.webhook.loader import Document, compile_objects, load
from burstflow.webhook.mutate import PodDraft, decide
from tests.conftest import POLICIES, load_admission
from tests.mutate_reference import reference_decide

FIXTURES = ["pod-create-argo-workflow-pod.json", "pod-create-dry-run.json", "pod-create-generatename.json",
            "pod-create-generatename-reinvocation.json", "workflow-create.json"]
NAMESPACES = {"argo-jobs": {"vci": "true", "burstflow.io/webhook": "enabled"}, "argo": {"vci": "true"},
              "eci": {"burstflow.io/burst-to": "alibaba-eci", "eci": "true"},
              "acs": {"burstflow.io/burst-to": "alibaba-acs"}, "vk": {"burstflow.io/burst-to": "virtual-kubelet"},
              "plain": {}}
VCI_TOLERATION = {"key": "vci.vke.volcengine.com/node-type", "operator": "Equal", "value": "vci",
                  "effect": "NoSchedule"}


def _profile(name: str, spec: dict) -> dict:
    return {"apiVersion": "burstflow.io/v1alpha1", "kind": "BurstProfile", "metadata": {"name": name}, "spec": spec}


# Template-free profiles touching every field kind, so pods take the remembered-shape path with all of them.
STATIC = [
    _profile("first", {"priority": 50, "override": True, "labels": {"team": "a", "created-by-vci": "no"},
                       "annotations": {"example.com/cost-center": "42"}, "nodeSelector": {"disk": "ssd"},
                       "tolerations": [dict(VCI_TOLERATION), {"key": "dedicated", "operator": "Exists"}]}),
    _profile("eci", {"priority": 20, "provider": {"alibaba-eci": {"mode": "eci", "specs": ["ecs.g7.xlarge"]}}}),
    _profile("vk", {"priority": 10, "provider": {"virtual-kubelet": {"placement": "nodeAffinity"}},
                    "nodeSelector": {"disk": "hdd", "zone": "a"}}),
    _profile("vci", {"match": {"namespaceSelector": {"matchLabels": {"vci": "true"}}},
                     "provider": {"volcengine-vci": {"subnetIds": ["subnet-1"]}}, "labels": {"team": "b"}}),
    _profile("secoff", {"priority": 30, "seccomp": "Disabled",
                        "match": {"objectSelector": {"matchLabels": {"secoff": "yes"}}}}),
    _profile("default", {"priority": -100, "seccomp": "RuntimeDefault"}),
]


def _compiled(objects: list[dict]):
    policy_set, errors = compile_objects([Document(f"test#{i}", o) for i, o in enumerate(objects)], compilers={})
    assert not errors, [str(e) for e in errors]
    return policy_set


def _example():
    policy_set, errors = load([str(POLICIES)])
    assert not errors, [str(e) for e in errors]
    return policy_set


def _requests() -> list[dict]:
    return [load_admission(name)["body"]["request"] for name in FIXTURES]


def _pod_variants(rng: random.Random, pod: dict) -> dict:
    """`pod` with a random mix of the things that change what the profiles do or how the patch is written."""
    pod = copy.deepcopy(pod)
    metadata = pod.setdefault("metadata", {})
    spec = pod.setdefault("spec", {})
    annotations = metadata.get("annotations")
    choice = rng.randrange(10)
    if choice == 0:
        metadata.pop("annotations", None)
    elif choice == 1:
        metadata["annotations"] = {}
    elif choice == 2:
        metadata["annotations"] = dict(annotations or {}, **{"vke.volcengine.com/burst-to-vci": "enforce"})
    elif choice == 3:
        metadata["annotations"] = dict(annotations or {}, **{"vke.volcengine.com/burst-to-vci": "auto",
                                                              "example.com/cost-center": "7"})
    elif choice == 4:
        metadata["annotations"] = dict(annotations or {}, **{"burstflow.io/applied": "someone-else"})
    elif choice == 5:
        metadata["annotations"] = None
    elif choice == 6:
        metadata["annotations"] = dict(annotations or {}, **{"seccomp.security.alpha.kubernetes.io/pod": "x"})
    elif choice == 7:
        metadata["annotations"] = dict(annotations or {},
                                       **{"container.seccomp.security.alpha.kubernetes.io/main": "runtime/default"})
    labels = metadata.get("labels")
    choice = rng.randrange(8)
    if choice == 0:
        metadata.pop("labels", None)
    elif choice == 1:
        metadata["labels"] = {k: v for k, v in (labels or {}).items() if k != "workflows.argoproj.io/workflow"}
    elif choice == 2:
        metadata["labels"] = dict(labels or {}, **{"created-by-vci": "true", "team": "a"})
    elif choice == 3:
        metadata["labels"] = dict(labels or {}, secoff="yes")
    elif choice == 4:
        metadata["labels"] = dict(labels or {}, resource="vci")  # the ResourcePolicy vke-resourcepolicy's selector
    if rng.random() < 0.3:  # annotations before labels: op order follows the pod's key order
        for key in ("labels", "annotations"):
            if key in metadata:
                metadata[key] = metadata.pop(key)
    choice = rng.randrange(7)
    if choice == 0:
        spec.pop("tolerations", None)
    elif choice == 1:
        spec["tolerations"] = []
    elif choice == 2:
        spec["tolerations"] = list(spec.get("tolerations") or []) + [dict(VCI_TOLERATION)]
    elif choice == 3:
        spec["tolerations"] = None
    elif choice == 4:
        spec["tolerations"] = ["not an object", {"key": "dedicated", "operator": "Exists"}]
    choice = rng.randrange(9)
    if choice == 0:
        spec["securityContext"] = {"seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"}}
    elif choice == 1:
        spec["securityContext"] = {"seccompProfile": None}
    elif choice == 2:
        spec.pop("securityContext", None)
    elif choice == 3:
        spec["securityContext"] = None
    elif choice == 4 and spec.get("containers"):
        spec["containers"][0]["securityContext"] = {"seccompProfile": {"type": "Unconfined"}}
    elif choice == 5:
        spec["os"] = {"name": "windows"}
    choice = rng.randrange(8)
    if choice == 0:
        spec["affinity"] = {}
    elif choice == 1:
        spec["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}}
    elif choice == 2:
        spec["affinity"] = {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 1, "preference": {"matchExpressions": [{"key": "x", "operator": "Exists"}]}}]}}
    elif choice == 3:
        spec["affinity"] = None
    elif choice == 4:
        spec["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": []}}}
    choice = rng.randrange(5)
    if choice == 0:
        spec["nodeSelector"] = {"disk": "nvme"}
    elif choice == 1:
        spec["nodeSelector"] = {"kubernetes.io/os": "linux"}
    if rng.random() < 0.3:  # another key order in spec
        for key in rng.sample(sorted(spec), k=min(3, len(spec))):
            spec[key] = spec.pop(key)
    if rng.random() < 0.1:
        spec["containers"] = [dict(c, resources={"limits": {"nvidia.com/gpu": 1}}) for c in spec.get("containers", [])]
    if rng.random() < 0.1:
        pod.pop("spec")
    return pod


def _strict(value):
    """JSON text with keys sorted: compares types as JSON does (true is not 1)."""
    return json.dumps(value, sort_keys=True)


def _assert_same(request: dict, policies, namespaces: dict, what: str) -> None:
    frozen = copy.deepcopy(request)
    new = decide(request, policies=policies, namespaces=namespaces)
    old = reference_decide(request, policies=policies, namespaces=namespaces)
    assert (new.outcome, new.reason, new.applied, new.code, new.opted_out) == (
        old.outcome, old.reason, old.applied, old.code, old.opted_out), what
    assert new.changes == old.changes, what
    assert new.warnings == old.warnings, what
    assert new.patch() == old.patch(), what  # op for op, in the same order
    if old.outcome != "error":
        response, _ = new.respond()
        assert response == admission.patched(old.uid, old.patch(), warnings=old.warnings or None), what
    if old.draft is not None:
        assert _strict(new.pod) == _strict(old.pod), what
        patched = jsonpatch.apply_patch(copy.deepcopy(request["object"]), new.patch())
        assert _strict(patched) == _strict(old.pod), what
    assert request == frozen, f"{what}: the request was changed"


@pytest.mark.parametrize("policy_set", ["example", "static"])
def test_fixtures_and_variations_give_the_old_paths_pod_and_patch(policy_set):
    policies = _example() if policy_set == "example" else _compiled(STATIC)
    rng = random.Random(13)
    requests = _requests()
    cases = []
    for request in requests:
        for namespace in NAMESPACES:
            cases.append(dict(request, namespace=namespace))
    pods = [r["object"] for r in requests if r["kind"]["kind"] == "Pod"]
    for number in range(400):
        namespace = rng.choice(sorted(NAMESPACES))
        cases.append(dict(requests[0], uid=f"u-{number}", namespace=namespace,
                          object=_pod_variants(rng, rng.choice(pods))))
    # Twice through, shuffled the second time: first pods of a shape and later ones, after other shapes.
    order = list(range(len(cases))) + rng.sample(range(len(cases)), len(cases))
    for index in order:
        _assert_same(cases[index], policies, NAMESPACES, f"{policy_set} case {index}")


def test_remembered_results_are_not_shared_with_callers():
    """Changing one admission's pod or patch must not change what the next pod of the same shape gets."""
    policies = _compiled(STATIC)
    request = dict(_requests()[0], namespace="vk")
    first = decide(request, policies=policies, namespaces=NAMESPACES)
    expected_pod, expected_patch = copy.deepcopy(first.pod), first.patch()
    first.pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"].append("changed")
    first.pod["spec"]["tolerations"][-1]["key"] = "changed"
    second = decide(dict(request, uid="u-2"), policies=policies, namespaces=NAMESPACES)
    for op in second.patch():
        if isinstance(op["value"], dict):
            op["value"]["changed"] = True
    third = decide(dict(request, uid="u-3"), policies=policies, namespaces=NAMESPACES)
    assert (third.pod, third.patch()) == (expected_pod, expected_patch)


def test_a_new_policy_set_is_not_answered_from_the_old_sets_results():
    request = dict(_requests()[0], namespace="plain")
    before = decide(request, policies=_compiled(STATIC), namespaces=NAMESPACES)
    changed = [dict(p, spec=dict(p["spec"], labels={"team": "z"})) if p["metadata"]["name"] == "first" else p
               for p in STATIC]
    after = decide(request, policies=_compiled(changed), namespaces=NAMESPACES)
    assert before.pod["metadata"]["labels"]["team"] == "a"
    assert after.pod["metadata"]["labels"]["team"] == "z"


class _Placer:
    def __init__(self, place) -> None:
        self._place = place

    def place(self, pod, *, namespace, policies, dry_run=False):
        return SimpleNamespace(pod=self._place(pod), denied=None, warnings=())


def _labelled(pod):
    draft = PodDraft(pod)
    draft.set_entry(("metadata", "labels"), "burstflow.io/pool", "vci")
    return draft.pod


@pytest.mark.parametrize("place", [lambda pod: pod, dict, _labelled], ids=["same pod", "shallow copy", "edited"])
async def test_the_patch_after_a_placer_is_the_diff_of_the_original_and_the_placed_pod(place):
    policies = _compiled(STATIC)
    for number, request in enumerate(_requests()[:4]):
        request = dict(request, namespace="argo-jobs")
        placed = []
        admitter = PodAdmitter(store=PolicyStore(policies), namespaces=NAMESPACES,
                               placer=_Placer(lambda pod: placed.append(place(pod)) or placed[-1]))
        for _ in range(2):  # the first pod of its shape, then one answered from the remembered result
            outcome = await admitter.admit(request)
            expected = reference_decide(request, policies=policies, namespaces=NAMESPACES)
            assert placed[-1] is not None
            ops = admission.decode_patch(outcome.response)
            assert _strict(jsonpatch.apply_patch(copy.deepcopy(request["object"]), ops)) == _strict(placed[-1])
            if place is not _labelled:
                assert ops == expected.patch(), number
