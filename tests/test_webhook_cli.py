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
    assert mutated["metadata"]["annotations"]["alibabacloud.com/burst-resource"] == "eci"
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
