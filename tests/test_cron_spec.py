"""CronWorkflow parsing: field-path errors, defaults, warnings, and agreement with our CRD (schema + CEL rules)."""
from __future__ import annotations

import copy
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

import jsonschema
import pytest
import yaml

from burstflow.cel import Environment
from burstflow.cron.spec import ConcurrencyPolicy, parse_cron_workflow

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "policies" / "cronworkflow-seed.yaml"
CRD = ROOT / "manifests" / "base" / "crds" / "cronworkflows.burstflow.io.yaml"


def seed() -> dict:
    return yaml.safe_load(SEED.read_text())


def cron(**spec_changes) -> dict:
    obj = {
        "apiVersion": "burstflow.io/v1alpha1",
        "kind": "CronWorkflow",
        "metadata": {"name": "nightly", "namespace": "etl", "uid": "u-1"},
        "spec": {"schedules": ["0 2 * * *"], "workflowSpec": {"entrypoint": "main", "templates": [
            {"name": "main", "container": {"image": "alpine:3.20", "command": ["true"]}}]}},
    }
    for key, value in spec_changes.items():
        if value is None:
            obj["spec"].pop(key, None)
        else:
            obj["spec"][key] = value
    return obj


@lru_cache(maxsize=1)
def crd_schema() -> dict:
    crd = yaml.load(CRD.read_text(), Loader=yaml.CSafeLoader)
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def crd_errors(obj: dict) -> list[str]:
    """What the API server would reject: the OpenAPI v3 schema, then every x-kubernetes-validations rule (in CEL)."""
    schema = crd_schema()
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
              for e in jsonschema.Draft7Validator(schema).iter_errors(obj)]
    if errors:
        return errors
    return _rule_errors(schema, obj)


def _rule_errors(schema: dict, value) -> list[str]:
    errors = []
    env = Environment({"self": "dyn"})
    for rule in schema.get("x-kubernetes-validations", ()):
        if env.compile(rule["rule"]).evaluate({"self": value}) is not True:
            errors.append(rule["message"])
    if isinstance(value, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key in value and key != "workflowSpec":
                errors += _rule_errors(sub, value[key])
    return errors


def test_seed_example_parses_verbatim():
    result = parse_cron_workflow(seed())
    assert result.ok, result.errors
    spec = result.spec
    assert spec.schedules == ("*/3 * * * *", "*/5 * * * *")
    assert spec.concurrency_policy is ConcurrencyPolicy.ALLOW
    assert spec.starting_deadline_seconds == 0
    assert spec.stop.field == "condition" and spec.stop.cel == "cronworkflow.failed >= 10"
    assert spec.when is not None
    assert (spec.successful_history_limit, spec.failed_history_limit) == (3, 1)
    assert spec.schedule_key == "*/3 * * * *,*/5 * * * *"


def test_seed_example_is_valid_for_the_crd():
    assert crd_errors(seed()) == []


def test_timezone_goes_into_the_schedule_key():
    spec = parse_cron_workflow(cron(timezone="America/New_York")).spec
    assert spec.schedule_key == "CRON_TZ=America/New_York 0 2 * * *"
    assert spec.schedule_set.schedules[0].zone.key == "America/New_York"


def test_cronworkflows_with_the_same_schedules_share_them_and_another_zone_gets_its_own():
    """100,000 CronWorkflows repeat a few schedules: one compiled set each, never shared across zones."""
    utc, again = (parse_cron_workflow(cron()).spec for _ in range(2))
    tokyo = parse_cron_workflow(cron(timezone="Asia/Tokyo")).spec
    assert utc.schedule_set is again.schedule_set
    assert tokyo.schedule_set is not utc.schedule_set
    after = datetime(2026, 6, 1, tzinfo=timezone.utc)
    assert utc.schedule_set.next_after(after).time == datetime(2026, 6, 1, 2, tzinfo=timezone.utc)
    assert tokyo.schedule_set.next_after(after).time == datetime(2026, 6, 1, 17, tzinfo=timezone.utc)


def test_labels_and_annotations_are_kept_for_expressions_only():
    labelled = cron(when="cronworkflow.labels.team == 'etl'")
    labelled["metadata"]["labels"] = {"team": "etl"}
    assert parse_cron_workflow(labelled).spec.labels == {"team": "etl"}
    labelled["spec"].pop("when")
    assert parse_cron_workflow(labelled).spec.labels == {}


def test_singular_schedule_is_accepted():
    result = parse_cron_workflow(cron(schedules=None, schedule="@hourly"))
    assert result.ok and result.spec.schedules == ("@hourly",)


def test_negative_history_limit_means_default():
    spec = parse_cron_workflow(cron(successfulJobsHistoryLimit=-1, failedJobsHistoryLimit=0)).spec
    assert (spec.successful_history_limit, spec.failed_history_limit) == (3, 0)


def test_never_firing_schedule_is_a_warning_not_an_error():
    result = parse_cron_workflow(cron(schedules=["0 0 30 2 *", "0 2 * * *"]))
    assert result.ok
    assert result.warnings == ("spec.schedules[0]: cron schedule '0 0 30 2 *' can never fire (no date matches it)",)


INVALID = [
    ("6 fields", dict(schedules=["0 2 * * *", "0 0 2 * * *"]),
     "spec.schedules[1]: cron schedule '0 0 2 * * *' is malformed: expected exactly 5 fields, found 6: [0 0 2 * * *]"),
    ("unknown timezone", dict(timezone="Mars/Olympus"),
     "spec.timezone: invalid timezone 'Mars/Olympus': unknown time zone Mars/Olympus"),
    ("CRON_TZ with timezone", dict(timezone="UTC", schedules=["CRON_TZ=Asia/Tokyo 0 9 * * *"]),
     "spec.schedules[0]: cannot use both spec.timezone and a TZ= or CRON_TZ= prefix in the schedule"),
    ("no schedule", dict(schedules=None), "spec.schedules: cron workflow must have at least one schedule"),
    ("both schedule forms", dict(schedule="@daily"),
     "spec.schedule: cron workflow cant be configured with both Spec.Schedule and Spec.Schedules"),
    ("bad policy", dict(concurrencyPolicy="Sometimes"),
     "spec.concurrencyPolicy: 'Sometimes' is not a valid concurrencyPolicy (Allow, Forbid or Replace)"),
    ("negative deadline", dict(startingDeadlineSeconds=-5),
     "spec.startingDeadlineSeconds: startingDeadlineSeconds must be positive"),
    ("deadline not an integer", dict(startingDeadlineSeconds="60"),
     "spec.startingDeadlineSeconds: must be an integer, not '60'"),
    ("suspend not a bool", dict(suspend="yes"), "spec.suspend: must be true or false, not 'yes'"),
    ("stop with both forms", dict(stopStrategy={"expression": "cronworkflow.failed > 1", "condition": "failed > 1"}),
     "spec.stopStrategy: set exactly one of `expression` or `condition`"),
    ("empty stop strategy", dict(stopStrategy={}), "spec.stopStrategy: set exactly one of `expression` or `condition`"),
    ("too many schedules", dict(schedules=["@hourly"] * 21), "spec.schedules: at most 20 schedules, not 21"),
    ("no workflowSpec", dict(workflowSpec=None), "spec.workflowSpec: required (an Argo Workflow spec)"),
]


@pytest.mark.parametrize("case, changes, message", INVALID, ids=[row[0] for row in INVALID])
def test_invalid_specs_name_the_field(case, changes, message):
    result = parse_cron_workflow(cron(**changes))
    assert result.spec is None
    assert message in result.errors


@pytest.mark.parametrize(
    "when, fragment",
    [("{{= cronworkflow.failed >= }}", "spec.when: "), ("{{= nope > 1 }}", "undeclared reference to 'nope'")],
)
def test_unparseable_when_is_a_spec_error(when, fragment):
    result = parse_cron_workflow(cron(when=when))
    assert result.spec is None and fragment in result.errors[0] and result.errors[0].startswith("spec.when: ")


def test_unparseable_stop_expression_is_a_spec_error():
    result = parse_cron_workflow(cron(stopStrategy={"expression": "cronworkflow.failed >="}))
    assert result.spec is None and result.errors[0].startswith("spec.stopStrategy.expression: ")


def test_long_name_is_rejected():
    obj = cron()
    obj["metadata"]["name"] = "n" * 53
    assert parse_cron_workflow(obj).errors == (
        f"metadata.name: cron workflow name {'n' * 53!r} must not be more than 52 characters long (currently 53)",)
    assert "metadata.name must not be more than 52 characters long" in crd_errors(obj)


def test_errors_are_all_reported_at_once():
    result = parse_cron_workflow(cron(timezone="Nowhere", concurrencyPolicy="X", startingDeadlineSeconds=-1))
    assert [e.split(":")[0] for e in result.errors] == [
        "spec.timezone", "spec.concurrencyPolicy", "spec.startingDeadlineSeconds"]


def test_garbage_never_raises():
    for garbage in (None, [], "text", {"spec": "x"}, {"metadata": {"name": 5}, "spec": {"schedules": [1]}}):
        assert parse_cron_workflow(garbage).errors


# The same objects through both checkers: what the API server rejects on the fields both check, cron.spec rejects,
# and every valid object passes the CRD.
AGREEMENT = [
    ("plain", {}, True),
    ("timezone", dict(timezone="Europe/Paris"), True),
    ("CRON_TZ alone", dict(schedules=["CRON_TZ=Asia/Tokyo 0 9 * * *"]), True),
    ("every", dict(schedules=["@every 1h30m", "@hourly"]), True),
    ("singular schedule", dict(schedules=None, schedule="*/5 * * * *"), True),
    ("stop expression", dict(stopStrategy={"expression": "cronworkflow.failed >= 3"}), True),
    ("stop condition", dict(stopStrategy={"condition": "failed >= 10"}), True),
    ("all policies fields", dict(concurrencyPolicy="Replace", startingDeadlineSeconds=30, suspend=True,
                                 successfulJobsHistoryLimit=5, failedJobsHistoryLimit=2,
                                 workflowMetadata={"labels": {"a": "b"}, "annotations": {"c": "d"}}), True),
    ("template ref", dict(workflowSpec={"workflowTemplateRef": {"name": "etl"}}), True),
    ("6 fields", dict(schedules=["0 0 2 * * *"]), False),
    ("empty schedules", dict(schedules=[]), False),
    ("CRON_TZ with timezone", dict(timezone="UTC", schedules=["CRON_TZ=Asia/Tokyo 0 9 * * *"]), False),
    ("both schedule forms", dict(schedule="@daily"), False),
    ("no schedule", dict(schedules=None), False),
    ("bad policy", dict(concurrencyPolicy="Sometimes"), False),
    ("negative deadline", dict(startingDeadlineSeconds=-1), False),
    ("deadline string", dict(startingDeadlineSeconds="1"), False),
    ("suspend string", dict(suspend="true"), False),
    ("stop both", dict(stopStrategy={"expression": "cronworkflow.failed > 1", "condition": "failed > 1"}), False),
    ("stop empty", dict(stopStrategy={"expression": ""}), False),
    ("too many schedules", dict(schedules=["@hourly"] * 21), False),
    ("labels not strings", dict(workflowMetadata={"labels": {"a": 1}}), False),
    ("no workflowSpec", dict(workflowSpec=None), False),
]


@pytest.mark.parametrize("case, changes, valid", AGREEMENT, ids=[row[0] for row in AGREEMENT])
def test_spec_and_crd_agree(case, changes, valid):
    obj = cron(**changes)
    assert (crd_errors(obj) == []) is valid, crd_errors(obj)
    assert parse_cron_workflow(obj).ok is valid, parse_cron_workflow(obj).errors


def test_crd_shape():
    crd = yaml.load(CRD.read_text(), Loader=yaml.CSafeLoader)
    version = crd["spec"]["versions"][0]
    assert (crd["spec"]["group"], crd["spec"]["scope"], version["name"]) == ("burstflow.io", "Namespaced", "v1alpha1")
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Schedules"] == ".spec.schedules" and columns["Last Run"] == ".status.lastScheduledTime"
    assert {"Suspend", "Active", "Phase"} <= set(columns)
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert {"active", "lastScheduledTime", "succeeded", "failed", "phase", "conditions"} <= set(status)


def test_deepcopy_input_untouched():
    obj = seed()
    before = copy.deepcopy(obj)
    parse_cron_workflow(obj)
    assert obj == before
