"""Golden files: every captured AdmissionReview + the example policies in policies/ -> the whole expected pod.

Regenerate after an intended change, then review the diff by eye before committing:
    BURSTFLOW_REGEN_GOLDEN=1 .venv/bin/python -m pytest -q tests/test_webhook_golden.py
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import jsonpatch
import pytest

from tests.conftest import FIXTURES, POLICIES
from tests.podschema import assert_valid_pod
from burstflow.webhook import admission
from burstflow.webhook.loader import load
from burstflow.webhook.mutate import decide

GOLDEN = Path(__file__).resolve().parent / "golden"
CASES = sorted(p.name for p in (FIXTURES / "admission").glob("*.json"))


@pytest.fixture(scope="module")
def example_policies():
    policies, errors = load([POLICIES])
    assert errors == []
    return policies


@pytest.mark.parametrize("case", CASES)
def test_golden(case, example_policies):
    request = json.loads((FIXTURES / "admission" / case).read_text())["body"]["request"]
    decision = decide(request, policies=example_policies)
    response, outcome = decision.respond()
    assert response["uid"] == request["uid"]
    result = {
        "outcome": outcome,
        "applied": list(decision.applied),
        # The whole answer but the patch, which is checked through the object it produces.
        "response": {key: value for key, value in response.items() if key != "patch"},
        "object": jsonpatch.apply_patch(request["object"], admission.decode_patch(response)),
    }
    assert result["object"] == (decision.pod if decision.pod is not None else request["object"])
    path = GOLDEN / (case.removesuffix(".json") + ".expected.json")
    if os.environ.get("BURSTFLOW_REGEN_GOLDEN"):
        path.write_text(json.dumps(result, indent=2) + "\n")
    assert path.exists(), f"{path} missing: run with BURSTFLOW_REGEN_GOLDEN=1 and review it"
    assert result == json.loads(path.read_text())
    if request["kind"]["kind"] == "Pod":
        assert_valid_pod(result["object"])


def test_golden_results_are_fixed_points(example_policies):
    """Sending each golden pod again (a reinvocation) changes nothing."""
    for case in CASES:
        request = json.loads((FIXTURES / "admission" / case).read_text())["body"]["request"]
        expected = json.loads((GOLDEN / (case.removesuffix(".json") + ".expected.json")).read_text())
        again = decide(dict(request, object=expected["object"]), policies=example_policies)
        assert again.patch() == [], case
