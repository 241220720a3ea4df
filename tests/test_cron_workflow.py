"""The Workflow built for a scheduled time: whole-object shape, and validity against Argo's full Workflow CRD schema."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path

import jsonschema
import pytest
import yaml

from burstflow.cron.workflow import build_workflow, workflow_name

UTC = timezone.utc
ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
SCHEDULED = datetime(2026, 3, 8, 7, 30, tzinfo=UTC)


@lru_cache(maxsize=1)
def argo_workflow_validator() -> jsonschema.Draft7Validator:
    """Argo's full Workflow CRD (v4.1) openAPIV3Schema, as the API server with Argo's full CRDs installed checks it."""
    from tests.conftest import FIXTURES

    crd = yaml.load((FIXTURES / "argo-crds" / "full" / "workflows.yaml").read_text(), Loader=yaml.CSafeLoader)
    return jsonschema.Draft7Validator(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def assert_valid_workflow(workflow: dict) -> None:
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
              for e in argo_workflow_validator().iter_errors(workflow)]
    assert errors == []


def cron(**spec) -> dict:
    return {
        "apiVersion": "burstflow.io/v1alpha1",
        "kind": "CronWorkflow",
        "metadata": {"name": "nightly", "namespace": "etl", "uid": "8c1e-uid",
                     "labels": {"workflows.argoproj.io/creator": "alice", "team": "data",
                                "workflows.argoproj.io/controller-instanceid": "i1"}},
        "spec": {"schedules": ["30 2 * * *"], **spec},
    }


STEPS = {"entrypoint": "main", "templates": [{"name": "main", "container": {
    "image": "alpine:3.20", "command": ["sh", "-c"], "args": ["date"]}}]}


def test_whole_workflow():
    built = build_workflow(cron(workflowSpec=STEPS, workflowMetadata={
        "labels": {"pipeline": "etl"}, "annotations": {"note": "x"}, "finalizers": ["example.com/keep"]}), SCHEDULED)
    assert built == {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {
            "name": "nightly-1772955000",
            "namespace": "etl",
            "labels": {"workflows.argoproj.io/creator": "alice", "workflows.argoproj.io/controller-instanceid": "i1",
                       "workflows.argoproj.io/cron-workflow": "nightly", "pipeline": "etl"},
            "annotations": {"workflows.argoproj.io/scheduled-time": "2026-03-08T07:30:00Z", "note": "x"},
            "ownerReferences": [{"apiVersion": "burstflow.io/v1alpha1", "kind": "CronWorkflow", "name": "nightly",
                                 "uid": "8c1e-uid", "controller": True, "blockOwnerDeletion": True}],
            "finalizers": ["example.com/keep"],
        },
        "spec": STEPS,
    }
    assert_valid_workflow(built)


def test_name_is_unix_seconds_of_the_scheduled_time_in_any_zone():
    from zoneinfo import ZoneInfo

    local = SCHEDULED.astimezone(ZoneInfo("America/New_York"))
    assert workflow_name("nightly", local) == workflow_name("nightly", SCHEDULED) == "nightly-1772955000"


def test_workflow_template_ref_is_copied():
    built = build_workflow(cron(workflowSpec={"workflowTemplateRef": {"name": "etl-template"},
                                              "arguments": {"parameters": [{"name": "day", "value": "mon"}]}}),
                           SCHEDULED)
    assert built["spec"] == {"workflowTemplateRef": {"name": "etl-template"},
                             "arguments": {"parameters": [{"name": "day", "value": "mon"}]}}
    assert_valid_workflow(built)


def test_seed_workflows_are_valid_for_every_run_in_a_day():
    obj = yaml.safe_load((ROOT / "policies" / "cronworkflow-seed.yaml").read_text())
    obj["metadata"].update(namespace="argo", uid="seed-uid")
    for hour in range(24):
        assert_valid_workflow(build_workflow(obj, SCHEDULED + timedelta(hours=hour)))


def test_builder_does_not_alias_the_cron():
    obj = cron(workflowSpec=json.loads(json.dumps(STEPS)))
    built = build_workflow(obj, SCHEDULED)
    built["spec"]["templates"][0]["name"] = "changed"
    assert obj["spec"]["workflowSpec"]["templates"][0]["name"] == "main"


def test_schema_helper_rejects_an_invalid_workflow():
    built = build_workflow(cron(workflowSpec={"entrypoint": 5}), SCHEDULED)
    with pytest.raises(AssertionError):
        assert_valid_workflow(built)


def test_naive_time_is_refused():
    with pytest.raises(ValueError):
        build_workflow(cron(workflowSpec=STEPS), SCHEDULED.replace(tzinfo=None))
