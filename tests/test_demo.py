"""`make demo` keeps working: its embedded fixture copy is the real capture, and the whole demo runs."""
from __future__ import annotations

import json

from burstflow import data, demo
from tests.conftest import FIXTURES


def test_embedded_argo_pod_is_the_shared_capture(fixtures_dir):
    shared = json.loads((FIXTURES / "admission" / "pod-create-argo-workflow-pod.json").read_text())
    assert json.loads(data.read_text(*demo.ARGO_POD_REVIEW)) == shared


async def test_demo_runs_every_part(capsys):
    assert await demo.main() == 0
    out = capsys.readouterr().out
    assert "allowed=True" in out and "/spec/securityContext/seccompProfile" in out
    assert "own-nodes       5" in out
    assert "*/3 * * * *, */5 * * * *" in out
