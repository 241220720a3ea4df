"""`burstflow mutate` and `burstflow policies validate`, run as the installed console script would run them."""
from __future__ import annotations

import io
import json
import subprocess
import sys

import jsonpatch
import pytest
import yaml

from burstflow.cli import main
from tests.conftest import FIXTURES, POLICIES, ROOT

ARGO = FIXTURES / "admission" / "pod-create-argo-workflow-pod.json"


def run(argv, capsys, stdin: str | None = None, monkeypatch=None):
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def argo_pod() -> dict:
    return json.loads(ARGO.read_text())["body"]["request"]["object"]


@pytest.mark.parametrize("shape", ["captured", "review", "pod-yaml"])
def test_mutate_accepts_every_input_shape(shape, tmp_path, capsys):
    captured = json.loads(ARGO.read_text())
    path = tmp_path / "input"
    if shape == "captured":
        path.write_text(json.dumps(captured))
    elif shape == "review":
        path.write_text(json.dumps(captured["body"]))
    else:
        path.write_text(yaml.safe_dump(argo_pod()))
    code, out, err = run(["mutate", "--policies", str(POLICIES), str(path), "-o", "json"], capsys)
    assert code == 0, err
    golden = json.loads((ROOT / "tests" / "golden" / "pod-create-argo-workflow-pod.expected.json").read_text())
    assert json.loads(out) == golden["object"]
    assert "# profiles applied, in order: vci-argo-jobs, vci-profile:selector-argo-jobs-namespace, " \
           "seccomp-runtime-default" in err
    assert "#   vci-argo-jobs: set metadata.annotations[vke.volcengine.com/burst-to-vci] = 'enforce'" in err


def test_mutate_patch_output_applies_to_the_input(capsys):
    code, out, _ = run(["mutate", "-p", str(POLICIES), str(ARGO), "-o", "patch"], capsys)
    assert code == 0
    mutated = jsonpatch.apply_patch(argo_pod(), json.loads(out))
    assert mutated["metadata"]["annotations"]["vke.volcengine.com/burst-to-vci"] == "enforce"


def test_mutate_diff_and_stdin(capsys, monkeypatch):
    code, out, _ = run(["mutate", "-p", str(POLICIES), "-", "-o", "diff"], capsys, stdin=yaml.safe_dump(argo_pod()),
                       monkeypatch=monkeypatch)
    assert code == 0
    assert out.startswith("--- original\n+++ mutated\n")
    assert "+    vke.volcengine.com/burst-to-vci: enforce\n" in out
    assert "+  - key: vci.vke.volcengine.com/node-type\n" in out


def test_mutate_namespace_label_flag_and_unknown_namespace_note(tmp_path, capsys):
    pod = argo_pod()
    pod["metadata"]["namespace"] = "team-b"
    path = tmp_path / "pod.yaml"
    path.write_text(yaml.safe_dump(pod))
    _, out, err = run(["mutate", "-p", str(POLICIES), str(path)], capsys)
    assert "note: namespace 'team-b' is unknown" in err
    assert "vke.volcengine.com/burst-to-vci" not in out
    code, out, err = run(["mutate", "-p", str(POLICIES), str(path), "--namespace-label",
                          "burstflow.io/burst-to=alibaba-eci"], capsys)
    assert code == 0
    mutated = yaml.safe_load(out)
    assert mutated["spec"]["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"] == [
        {"weight": 100, "preference": {"matchExpressions": [
            {"key": "type", "operator": "NotIn", "values": ["virtual-kubelet"]}]}}]  # ECS first, then ECI
    assert mutated["metadata"]["labels"]["burstflow.io/workflow"] == "argo-vci-demo-x7k2p"  # the CEL value


def test_mutate_explains_unchanged_inputs(capsys):
    code, out, err = run(["mutate", "-p", str(POLICIES), str(FIXTURES / "admission" / "workflow-create.json")],
                         capsys)
    assert code == 0
    assert "# not a Pod (kind argoproj.io/v1alpha1/Workflow)" in err
    assert yaml.safe_load(out)["kind"] == "Workflow"


@pytest.mark.parametrize("content, message", [
    ("kind: Deployment\n", "expected a Pod or an AdmissionReview, not kind 'Deployment'"),
    ("a: [\n", "not valid YAML or JSON"),
    ("kind: Pod\n---\nkind: Pod\n", "expected exactly one object, found 2 documents"),
], ids=["deployment", "not yaml", "two documents"])
def test_mutate_bad_input(content, message, tmp_path, capsys):
    path = tmp_path / "in.yaml"
    path.write_text(content)
    code, _, err = run(["mutate", "-p", str(POLICIES), str(path)], capsys)
    assert code == 2 and message in err


def test_mutate_refuses_invalid_policies(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("apiVersion: burstflow.io/v1alpha1\nkind: BurstProfile\nmetadata: {name: b}\n"
                                       "spec: {seccomp: Sometimes}\n")
    code, out, err = run(["mutate", "-p", str(tmp_path), str(ARGO)], capsys)
    assert code == 1 and out == ""
    assert f"error: {tmp_path / 'bad.yaml'}: BurstProfile/b: spec.seccomp: 'Sometimes' is not one of" in err


def test_validate_ok_lists_profiles_in_application_order(capsys):
    code, out, err = run(["policies", "validate", str(POLICIES)], capsys)
    assert code == 0, err
    assert out.startswith("ok: 5 BurstProfile, 2 ConfigMapProfile")
    names = [line.split()[1] for line in out.splitlines()[1:]]
    assert names[0] == "vci-argo-jobs" and names[-1] == "seccomp-runtime-default"
    assert f"warning: {POLICIES / 'configmap-vci-profile.yaml'}: ConfigMap/kube-system/vci-profile: data.tlsEnable: ignored" in err


def test_validate_reports_each_error_and_exits_1(tmp_path, capsys):
    (tmp_path / "a.yaml").write_text("apiVersion: burstflow.io/v1alpha1\nkind: BurstProfile\nmetadata: {name: a}\n"
                                     "spec:\n  match:\n    matchConditions:\n    - {name: x, expression: 'object.('}\n")
    (tmp_path / "b.yaml").write_text("apiVersion: burstflow.io/v1alpha1\nkind: BurstProfile\nmetadata: {name: b}\n"
                                     "spec: {labels: {team: 'a b'}}\n")
    code, _, err = run(["policies", "validate", str(tmp_path)], capsys)
    assert code == 1
    assert f"error: {tmp_path / 'a.yaml'}: BurstProfile/a: spec.match.matchConditions[0].expression: CEL:" in err
    assert f"error: {tmp_path / 'b.yaml'}: BurstProfile/b: spec.labels[team]: label value 'a b'" in err
    assert "2 error(s)" in err


def test_console_script_end_to_end(tmp_path):
    """The installed `burstflow` entry point, in a subprocess, as a user runs it."""
    result = subprocess.run([str(ROOT / ".venv" / "bin" / "burstflow"), "mutate", "--policies", str(POLICIES),
                             str(ARGO), "-o", "patch"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert {"op": "add", "path": "/spec/securityContext/seccompProfile", "value": {"type": "RuntimeDefault"}} in \
        json.loads(result.stdout)


def test_webhook_serve_is_registered(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["webhook", "serve", "--help"])
    assert exit_info.value.code == 0
    assert "usage: burstflow webhook serve" in capsys.readouterr().out


def pool_pod(labels: dict | None = None, namespace: str = "argo") -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "step-1", "namespace": namespace,
                         "labels": {"workflows.argoproj.io/workflow-pool": "burst"} if labels is None else labels},
            "spec": {"containers": [{"name": "main", "image": "busybox"}]}}


def write_pod(tmp_path, pod: dict):
    path = tmp_path / "pod.yaml"
    path.write_text(yaml.safe_dump(pod))
    return path


INSTANCE_TERM = {"matchExpressions": [{"key": "node.kubernetes.io/instance-type", "operator": "In",
                                       "values": ["ecs.g7.2xlarge"]}]}
VIRTUAL_TERM = {"matchExpressions": [{"key": "type", "operator": "In", "values": ["virtual-kubelet"]}]}


def test_mutate_places_a_selected_pod_in_the_first_pool(tmp_path, capsys):
    code, out, err = run(["mutate", "-p", str(POLICIES), str(write_pod(tmp_path, pool_pod()))], capsys)
    assert code == 0, err
    expected = pool_pod()
    expected["metadata"]["labels"]["burstflow.io/pool"] = "own-nodes"
    expected["metadata"]["annotations"] = {"burstflow.io/resource-policy": "workflow-pools"}
    # ScheduleAnyWay may spill to vci and overflow, so the pod tolerates both (the pools' own tolerations and the
    # vci pool's preset), without the vci pool's burst-to-vci annotation.
    expected["spec"]["tolerations"] = [
        {"key": "vci.vke.volcengine.com/node-type", "operator": "Equal", "value": "vci", "effect": "NoSchedule"},
        {"key": "virtual-kubelet.io/provider", "operator": "Exists", "effect": "NoSchedule"}]
    expected["spec"]["affinity"] = {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [INSTANCE_TERM, VIRTUAL_TERM]},
        "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "preference": INSTANCE_TERM},
                                                            {"weight": 50, "preference": VIRTUAL_TERM}]}}
    assert yaml.safe_load(out) == expected
    assert "# pool: own-nodes (ResourcePolicy argo/workflow-pools; usage assumed: own-nodes 0/5, vci 0/100, " \
           "overflow 0/-)\n" in err
    assert "# pool placement is a dry run: no reservation token, no API call" in err


def test_mutate_pool_usage_moves_the_pod_to_the_next_pool(tmp_path, capsys):
    path = write_pod(tmp_path, pool_pod())
    code, out, err = run(["mutate", "-p", str(POLICIES), str(path), "-o", "patch", "--pool-usage", "own-nodes=5"],
                         capsys)
    assert code == 0, err
    assert json.loads(out) == [
        {"op": "add", "path": "/metadata/labels/burstflow.io~1pool", "value": "vci"},
        {"op": "add", "path": "/metadata/annotations",
         "value": {"burstflow.io/resource-policy": "workflow-pools", "vke.volcengine.com/burst-to-vci": "enforce"}},
        {"op": "add", "path": "/spec/tolerations", "value": [
            {"key": "vci.vke.volcengine.com/node-type", "operator": "Equal", "value": "vci", "effect": "NoSchedule"}]},
        {"op": "add", "path": "/spec/affinity", "value": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [VIRTUAL_TERM]}}}},
    ]
    assert "# pool: vci (ResourcePolicy argo/workflow-pools; usage assumed: own-nodes 5/5, vci 0/100, " \
           "overflow 0/-)\n" in err
    code, out, err = run(["mutate", "-p", str(POLICIES), str(path), "-o", "json", "--pool-usage",
                          "own-nodes=5,vci=100"], capsys)
    mutated = json.loads(out)
    assert mutated["metadata"]["labels"]["burstflow.io/pool"] == "overflow"
    assert mutated["spec"]["tolerations"] == [{"key": "virtual-kubelet.io/provider", "operator": "Exists",
                                               "effect": "NoSchedule"}]


def test_mutate_diff_shows_the_pool(tmp_path, capsys):
    code, out, _ = run(["mutate", "-p", str(POLICIES), str(write_pod(tmp_path, pool_pod())), "-o", "diff",
                        "--pool-usage", "own-nodes=5", "--pool-usage", "vci=3"], capsys)
    assert code == 0
    assert "+    burstflow.io/pool: vci\n" in out
    assert "+    vke.volcengine.com/burst-to-vci: enforce\n" in out


def test_mutate_pod_not_selected_is_untouched_by_pools(tmp_path, capsys):
    code, out, err = run(["mutate", "-p", str(POLICIES), str(write_pod(tmp_path, pool_pod(labels={}))), "-o", "patch",
                          "--pool-usage", "own-nodes=5"], capsys)
    assert code == 0 and json.loads(out) == []
    assert "# pool: none (no ResourcePolicy in namespace 'argo' selects this pod)\n" in err
    code, out, err = run(["mutate", "-p", str(POLICIES), str(ARGO), "-o", "json"], capsys)
    golden = json.loads((ROOT / "tests" / "golden" / "pod-create-argo-workflow-pod.expected.json").read_text())
    assert json.loads(out) == golden["object"]
    assert "# pool: none (no ResourcePolicy in namespace 'argo-jobs' selects this pod)\n" in err


def test_mutate_leaves_a_pod_unplaced_when_its_policy_says_so(tmp_path, capsys):
    """vke-resourcepolicy caps each pool at 10 % of its pods (Volcengine's rule: a pool takes the next pod while its
    share so far is within the ratio): with one pod in each pool, the third fits nowhere and is left unplaced."""
    code, out, err = run(["mutate", "-p", str(POLICIES), str(write_pod(tmp_path, pool_pod({"resource": "vci"}))),
                          "--pool-usage", "ecs-pool=1,vci-pool=1"], capsys)
    assert code == 0, err
    metadata = yaml.safe_load(out)["metadata"]
    assert metadata["labels"] == {"resource": "vci", "burstflow.io/pool": ""}
    assert metadata["annotations"] == {"burstflow.io/resource-policy": "vke-resourcepolicy"}
    assert "# pool: none, left unplaced (ResourcePolicy argo/vke-resourcepolicy; usage assumed: ecs-pool 1/1, " \
           "vci-pool 1/1)\n" in err


def test_mutate_reports_a_denial_with_exit_3(tmp_path, capsys):
    (tmp_path / "rp.yaml").write_text(
        "apiVersion: burstflow.io/v1alpha1\nkind: ResourcePolicy\nmetadata: {name: small, namespace: argo}\n"
        "spec:\n  selector: {matchLabels: {app: x}}\n  whenAllFull: Deny\n  subsets:\n  - {name: a, maxReplicas: 2}\n")
    pod = write_pod(tmp_path, pool_pod({"app": "x"}))
    code, out, err = run(["mutate", "-p", str(tmp_path / "rp.yaml"), str(pod), "--pool-usage", "a=2"], capsys)
    assert code == 3 and out == ""
    assert "# pool: denied (HTTP 429: every pool of ResourcePolicy argo/small is full (a 2/2); retry later) " \
           "(ResourcePolicy argo/small; usage assumed: a 2/2)\n" in err


@pytest.mark.parametrize("value, message", [
    ("own-nodes", "--pool-usage 'own-nodes': expected SUBSET=N (e.g. own-nodes=5)"),
    ("=3", "--pool-usage '=3': expected SUBSET=N (e.g. own-nodes=5)"),
    ("vci=x", "--pool-usage 'vci=x': N must be a whole number >= 0, not 'x'"),
    ("vci=-1", "--pool-usage 'vci=-1': N must be a whole number >= 0, not '-1'"),
    ("vci=", "--pool-usage 'vci=': N must be a whole number >= 0, not ''"),
    ("vci=1,vci=2", "--pool-usage: subset 'vci' is given twice"),
    ("gpu=1", "--pool-usage gpu=1: ResourcePolicy argo/workflow-pools (the one selecting this pod) has no subset "
              "'gpu'; its subsets: own-nodes, vci, overflow"),
], ids=["no count", "no name", "not a number", "negative", "empty", "twice", "unknown subset"])
def test_mutate_bad_pool_usage(value, message, tmp_path, capsys):
    code, out, err = run(["mutate", "-p", str(POLICIES), str(write_pod(tmp_path, pool_pod())), "--pool-usage", value],
                         capsys)
    assert code == 2 and out == ""
    assert err == f"burstflow mutate: {message}\n"


def test_mutate_pool_usage_unknown_everywhere_for_an_unselected_pod(tmp_path, capsys):
    code, _, err = run(["mutate", "-p", str(POLICIES), str(write_pod(tmp_path, pool_pod(labels={}))),
                        "--pool-usage", "gpu=1"], capsys)
    assert code == 2
    assert err == "burstflow mutate: --pool-usage gpu=1: no ResourcePolicy in --policies has a subset 'gpu'\n"


def test_validate_warns_that_enforce_takes_pods_away_from_a_resource_policy(capsys):
    code, _, err = run(["policies", "validate", str(POLICIES)], capsys)
    assert code == 0
    assert ("warning: ResourcePolicy argo/vke-resourcepolicy: pods it selects (resource=vci) are enforced onto VCI "
            "(vke.volcengine.com/burst-to-vci: enforce) by vci-argo-jobs (if namespace argo is labelled "
            "vci=true)") in err


def test_mutate_explains_enforce_over_pools_and_the_seccomp_default(tmp_path, capsys):
    pod = pool_pod(labels={"workflows.argoproj.io/workflow": "wf", "resource": "vci"})
    pod["metadata"]["annotations"] = {"vke.volcengine.com/burst-to-vci": "enforce"}
    code, out, err = run(["mutate", "-p", str(POLICIES), str(write_pod(tmp_path, pod))], capsys)
    assert code == 0, err
    assert "burstflow.io/pool" not in yaml.safe_load(out)["metadata"]["labels"]
    assert ("# pool: none (vke.volcengine.com/burst-to-vci: enforce wins over ResourcePolicy argo/vke-resourcepolicy: "
            "the pod goes to VCI, unplaced and uncounted)\n") in err
    assert "warning: burstflow: pod has vke.volcengine.com/burst-to-vci: enforce" in err
    assert ("# seccomp: RuntimeDefault here is Burstflow's default for every workflow pod a profile matches; "
            "Argo 3.6 itself sets it only on its agent, artifact-GC and resource-template pods.") in err
