"""The pure scheduling engine, CronJob-style tables with named instants, and days of simulated time in milliseconds."""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from burstflow.cron.engine import (
    COMPLETED_LABEL,
    CONDITION_COMPLETED,
    CONDITION_SUBMISSION_ERROR,
    LAST_USED_SCHEDULE_ANNOTATION,
    ActiveRef,
    Child,
    CronStatus,
    SkipReason,
    apply_adopted,
    apply_plan,
    apply_created,
    apply_resumed,
    apply_spec_error,
    apply_stopped,
    apply_submission_error,
    apply_to_object,
    clear_spec_error,
    history_to_delete,
    plan,
    reconcile_children,
)
from burstflow.cron.spec import parse_cron_workflow
from burstflow.cron.workflow import build_workflow, workflow_name
from tests.test_cron_workflow import assert_valid_workflow

UTC = timezone.utc
SEED = Path(__file__).resolve().parent.parent / "policies" / "cronworkflow-seed.yaml"

CREATED = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
SERVICE_UP = datetime(2026, 1, 5, 7, 0, tzinfo=UTC)
TOP_OF_HOUR = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
JUST_BEFORE_THE_HOUR = TOP_OF_HOUR - timedelta(seconds=1)
JUST_AFTER_THE_HOUR = TOP_OF_HOUR + timedelta(milliseconds=200)
PREVIOUS_HOUR = TOP_OF_HOUR - timedelta(hours=1)
TEN_PAST = TOP_OF_HOUR + timedelta(minutes=10)


def make(schedules=("0 * * * *",), **spec_fields) -> tuple[dict, object]:
    obj = {
        "apiVersion": "burstflow.io/v1alpha1",
        "kind": "CronWorkflow",
        "metadata": {"name": "hourly", "namespace": "etl", "uid": "u-1"},
        "spec": {"schedules": list(schedules), "workflowSpec": {"entrypoint": "main", "templates": [
            {"name": "main", "container": {"image": "alpine:3.20"}}]}, **spec_fields},
    }
    result = parse_cron_workflow(obj)
    assert result.ok, result.errors
    return obj, result.spec


def running(at: datetime, name: str = "hourly") -> Child:
    return Child(name=workflow_name(name, at), namespace="etl", uid=f"uid-{int(at.timestamp())}", phase="Running",
                 scheduled_time=at)


def finished(at: datetime) -> Child:
    """The run for `at`, already Succeeded (the reflector saw it before the status dropped it from `active`)."""
    return replace(running(at), phase="Succeeded", finished_at=at + timedelta(minutes=5))


def active_status(*times: datetime, last: datetime | None = None) -> CronStatus:
    refs = tuple(running(t).ref() for t in times)
    return CronStatus(last_scheduled_time=last or max(times), active=refs, phase="Active")


# Each row: id, spec fields, status, now, observed_since, children, expected (run, skip reason, terminate names)
TABLE = [
    ("prev ran, not time", {}, CronStatus(last_scheduled_time=PREVIOUS_HOUR), JUST_BEFORE_THE_HOUR, SERVICE_UP, (),
     None, None, ()),
    ("never ran, is time", {}, CronStatus(), JUST_AFTER_THE_HOUR, SERVICE_UP, (), TOP_OF_HOUR, None, ()),
    ("prev ran, is time, allow, still active", {"concurrencyPolicy": "Allow"}, active_status(PREVIOUS_HOUR),
     JUST_AFTER_THE_HOUR, SERVICE_UP, (running(PREVIOUS_HOUR),), TOP_OF_HOUR, None, ()),
    ("prev ran, is time, forbid, still active", {"concurrencyPolicy": "Forbid"}, active_status(PREVIOUS_HOUR),
     JUST_AFTER_THE_HOUR, SERVICE_UP, (running(PREVIOUS_HOUR),), None, SkipReason.FORBID, ()),
    ("prev ran, is time, forbid, prev finished", {"concurrencyPolicy": "Forbid"},
     CronStatus(last_scheduled_time=PREVIOUS_HOUR), JUST_AFTER_THE_HOUR, SERVICE_UP, (), TOP_OF_HOUR, None, ()),
    ("prev ran, is time, replace, still active", {"concurrencyPolicy": "Replace"}, active_status(PREVIOUS_HOUR),
     JUST_AFTER_THE_HOUR, SERVICE_UP, (running(PREVIOUS_HOUR),), TOP_OF_HOUR, None,
     (workflow_name("hourly", PREVIOUS_HOUR),)),
    ("prev ran, is time, forbid, prev finished, status not yet updated", {"concurrencyPolicy": "Forbid"},
     active_status(PREVIOUS_HOUR), JUST_AFTER_THE_HOUR, SERVICE_UP, (finished(PREVIOUS_HOUR),), TOP_OF_HOUR, None,
     ()),
    ("prev ran, is time, replace, prev finished, status not yet updated", {"concurrencyPolicy": "Replace"},
     active_status(PREVIOUS_HOUR), JUST_AFTER_THE_HOUR, SERVICE_UP, (finished(PREVIOUS_HOUR),), TOP_OF_HOUR, None,
     ()),
    ("is time, suspended", {"suspend": True}, CronStatus(), JUST_AFTER_THE_HOUR, SERVICE_UP, (), None,
     SkipReason.SUSPENDED, ()),
    ("on-time tick, deadline 0 still runs", {"startingDeadlineSeconds": 0}, CronStatus(), JUST_AFTER_THE_HOUR,
     SERVICE_UP, (), TOP_OF_HOUR, None, ()),
    ("just started, missed by 10 min, no deadline", {}, CronStatus(last_scheduled_time=PREVIOUS_HOUR), TEN_PAST,
     None, (), None, SkipReason.DEADLINE, ()),
    ("just started, missed by 10 min, deadline 0", {"startingDeadlineSeconds": 0},
     CronStatus(last_scheduled_time=PREVIOUS_HOUR), TEN_PAST, None, (), None, SkipReason.DEADLINE, ()),
    ("just started, missed by 10 min, deadline 15 min", {"startingDeadlineSeconds": 900},
     CronStatus(last_scheduled_time=PREVIOUS_HOUR), TEN_PAST, None, (), TOP_OF_HOUR, None, ()),
    ("just started, missed by exactly the deadline (now - tick <= deadline)", {"startingDeadlineSeconds": 600},
     CronStatus(last_scheduled_time=PREVIOUS_HOUR), TEN_PAST, None, (), TOP_OF_HOUR, None, ()),
    ("just started, missed by the deadline + 1 s", {"startingDeadlineSeconds": 599},
     CronStatus(last_scheduled_time=PREVIOUS_HOUR), TEN_PAST, None, (), None, SkipReason.DEADLINE, ()),
    ("just started, schedule changed since last run: not owed", {"startingDeadlineSeconds": 900},
     CronStatus(last_scheduled_time=PREVIOUS_HOUR, last_used_schedule="*/30 * * * *"), TEN_PAST, None, (), None,
     None, ()),
    ("is time, already decided by an earlier process", {}, CronStatus(last_scheduled_time=PREVIOUS_HOUR,
     last_decided_time=TOP_OF_HOUR), JUST_AFTER_THE_HOUR, JUST_AFTER_THE_HOUR, (), None, None, ()),
    ("forbid blocked at 10:00, prev finished at 10:10, deadline 15 min: late run", {
        "concurrencyPolicy": "Forbid", "startingDeadlineSeconds": 900},
     CronStatus(last_scheduled_time=PREVIOUS_HOUR, last_decided_time=TOP_OF_HOUR, blocked_scheduled_time=TOP_OF_HOUR),
     TEN_PAST, SERVICE_UP, (finished(PREVIOUS_HOUR),), TOP_OF_HOUR, None, ()),
    ("forbid blocked at 10:00, prev finished at 10:10, deadline 5 min: dropped", {
        "concurrencyPolicy": "Forbid", "startingDeadlineSeconds": 300},
     CronStatus(last_scheduled_time=PREVIOUS_HOUR, last_decided_time=TOP_OF_HOUR, blocked_scheduled_time=TOP_OF_HOUR),
     TEN_PAST, SERVICE_UP, (finished(PREVIOUS_HOUR),), None, SkipReason.DEADLINE, ()),
    ("forbid blocked at 10:00, still active at 10:10: nothing new", {
        "concurrencyPolicy": "Forbid", "startingDeadlineSeconds": 900},
     CronStatus(last_scheduled_time=PREVIOUS_HOUR, last_decided_time=TOP_OF_HOUR, blocked_scheduled_time=TOP_OF_HOUR,
                active=(running(PREVIOUS_HOUR).ref(),)), TEN_PAST, SERVICE_UP, (running(PREVIOUS_HOUR),), None, None,
     ()),
    ("forbid, active run shut down but not finished: still blocks", {"concurrencyPolicy": "Forbid"},
     active_status(PREVIOUS_HOUR), JUST_AFTER_THE_HOUR, SERVICE_UP,
     (replace(running(PREVIOUS_HOUR), shutdown="Terminate"),), None, SkipReason.FORBID, ()),
    ("replace, active run already shut down: not terminated again", {"concurrencyPolicy": "Replace"},
     active_status(PREVIOUS_HOUR), JUST_AFTER_THE_HOUR, SERVICE_UP,
     (replace(running(PREVIOUS_HOUR), shutdown="Terminate"),), TOP_OF_HOUR, None, ()),
    ("suspended through 10:00, resumed at 10:10, no deadline: nothing late", {},
     CronStatus(last_scheduled_time=PREVIOUS_HOUR, last_decided_time=TOP_OF_HOUR), TEN_PAST, SERVICE_UP, (), None,
     None, ()),
    ("suspended through 10:00, resumed at 10:10, deadline 15 min: late run", {"startingDeadlineSeconds": 900},
     CronStatus(last_scheduled_time=PREVIOUS_HOUR, last_decided_time=TOP_OF_HOUR, blocked_scheduled_time=TOP_OF_HOUR),
     TEN_PAST, SERVICE_UP, (), TOP_OF_HOUR, None, ()),
    ("never ran, created after the tick, just started", {"startingDeadlineSeconds": 3600}, CronStatus(),
     TEN_PAST, None, (), TOP_OF_HOUR, None, ()),
]


@pytest.mark.parametrize("case, fields, status, now, observed, children, run, skip, terminate", TABLE,
                         ids=[row[0] for row in TABLE])
def test_plan_table(case, fields, status, now, observed, children, run, skip, terminate):
    _, spec = make(**fields)
    result = plan(spec, status, now=now, created=CREATED, observed_since=observed, children=children)
    assert result.run == run
    assert (result.skip.reason if result.skip else None) == skip
    assert tuple(ref.name for ref in result.terminate) == terminate
    assert result.next_wakeup == (TOP_OF_HOUR if now < TOP_OF_HOUR else TOP_OF_HOUR + timedelta(hours=1))


def test_created_after_the_tick_does_not_run_it():
    """The creation time is the lower bound when lastScheduledTime is nil."""
    _, spec = make(startingDeadlineSeconds=3600)
    result = plan(spec, CronStatus(), now=TEN_PAST, created=TOP_OF_HOUR + timedelta(minutes=5),
                  observed_since=None)
    assert result.run is None and result.skip is None


def test_replace_never_terminates_the_run_for_this_scheduled_time():
    """Argo bug 12625: a re-processing pass terminated the Workflow it had just created."""
    _, spec = make(concurrencyPolicy="Replace", startingDeadlineSeconds=600)
    stale = active_status(PREVIOUS_HOUR, TOP_OF_HOUR, last=PREVIOUS_HOUR)  # status write of TOP_OF_HOUR was lost
    result = plan(spec, stale, now=JUST_AFTER_THE_HOUR, created=CREATED, observed_since=SERVICE_UP,
                  children=(running(PREVIOUS_HOUR), running(TOP_OF_HOUR)))
    assert result.adopt is not None and result.adopt.name == workflow_name("hourly", TOP_OF_HOUR)
    assert result.run is None and result.terminate == ()


def test_replace_excludes_own_name_even_without_children_known():
    _, spec = make(concurrencyPolicy="Replace")
    status = active_status(PREVIOUS_HOUR, TOP_OF_HOUR, last=PREVIOUS_HOUR)
    result = plan(spec, status, now=JUST_AFTER_THE_HOUR, created=CREATED, observed_since=SERVICE_UP)
    assert result.run == TOP_OF_HOUR
    assert [ref.name for ref in result.terminate] == [workflow_name("hourly", PREVIOUS_HOUR)]


def test_existing_workflow_is_adopted_and_status_repaired():
    """Argo bug 14719: after a lost status write, AlreadyExists must still record lastScheduledTime/active."""
    obj, spec = make()
    existing = running(TOP_OF_HOUR)
    result = plan(spec, CronStatus(last_scheduled_time=PREVIOUS_HOUR), now=JUST_AFTER_THE_HOUR, created=CREATED,
                  observed_since=SERVICE_UP, children=(existing,))
    assert result.adopt == existing and result.run is None
    repaired = apply_adopted(CronStatus(last_scheduled_time=PREVIOUS_HOUR), spec=spec, child=existing)
    assert repaired.last_scheduled_time == TOP_OF_HOUR
    assert [ref.name for ref in repaired.active] == [existing.name]
    again = plan(spec, repaired, now=JUST_AFTER_THE_HOUR + timedelta(minutes=1), created=CREATED,
                 observed_since=SERVICE_UP, children=(existing,))
    assert again.run is None and again.adopt is None


def test_restart_after_three_hour_outage_runs_exactly_one_catch_up_within_deadline():
    _, spec = make(startingDeadlineSeconds=900)
    last_run = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
    restart = datetime(2026, 1, 5, 9, 5, tzinfo=UTC)  # down 06:00:30 .. 09:05: missed 07:00, 08:00, 09:00
    status = CronStatus(last_scheduled_time=last_run)
    first = plan(spec, status, now=restart, created=CREATED, observed_since=None)
    assert first.run == datetime(2026, 1, 5, 9, 0, tzinfo=UTC) and first.catch_up and first.missed == 3
    status = apply_created(status, spec=spec, scheduled_time=first.run, workflow=build_workflow(
        make()[0], first.run))
    second = plan(spec, status, now=restart + timedelta(seconds=1), created=CREATED, observed_since=restart)
    assert second.run is None and second.skip is None and second.next_wakeup == TOP_OF_HOUR


def test_restart_after_three_hour_outage_runs_nothing_beyond_deadline():
    _, spec = make(startingDeadlineSeconds=240)
    status = CronStatus(last_scheduled_time=datetime(2026, 1, 5, 6, 0, tzinfo=UTC))
    result = plan(spec, status, now=datetime(2026, 1, 5, 9, 5, tzinfo=UTC), created=CREATED, observed_since=None)
    assert result.run is None and result.skip.reason is SkipReason.DEADLINE
    assert result.decided_through == datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def test_more_than_100_missed_warns_and_still_considers_only_the_latest():
    _, spec = make(schedules=("* * * * *",), startingDeadlineSeconds=120)
    status = CronStatus(last_scheduled_time=TOP_OF_HOUR - timedelta(days=30))
    result = plan(spec, status, now=TOP_OF_HOUR + timedelta(seconds=30), created=CREATED, observed_since=None)
    assert result.run == TOP_OF_HOUR and result.missed > 100
    assert result.warnings and "more than 100" in result.warnings[0]


def test_missed_runs_take_the_latest_over_all_schedules():
    _, spec = make(schedules=("0 * * * *", "45 * * * *", "50 9 * * *"), startingDeadlineSeconds=3600)
    result = plan(spec, CronStatus(last_scheduled_time=datetime(2026, 1, 5, 8, 0, tzinfo=UTC)), now=TEN_PAST,
                  created=CREATED, observed_since=None)
    assert result.run == TOP_OF_HOUR and result.missed == 5  # 08:45, 09:00, 09:45, 09:50, 10:00: the latest runs


def test_when_false_skips_and_leaves_last_scheduled_time():
    _, spec = make(when="{{= cronworkflow.failed < 1 }}")
    status = CronStatus(last_scheduled_time=PREVIOUS_HOUR, failed=1)
    result = plan(spec, status, now=JUST_AFTER_THE_HOUR, created=CREATED, observed_since=SERVICE_UP)
    assert result.run is None and result.skip.reason is SkipReason.WHEN
    assert result.decided_through == TOP_OF_HOUR  # status.lastDecidedTime, not lastScheduledTime
    assert apply_plan(status, result, spec=spec).last_decided_time == TOP_OF_HOUR


def test_when_evaluation_error_is_a_submission_error_counted_as_failed():
    _, spec = make(when="{{= cronworkflow.labels.missing == 'x' }}")
    result = plan(spec, CronStatus(), now=JUST_AFTER_THE_HOUR, created=CREATED, observed_since=SERVICE_UP)
    assert result.skip.reason is SkipReason.WHEN and result.submission_error.startswith("run policy error: ")
    status = apply_submission_error(CronStatus(), result.submission_error)
    assert status.failed == 1 and status.condition(CONDITION_SUBMISSION_ERROR).message == result.submission_error


def test_stop_strategy_true_stops_and_marks_completed():
    obj, spec = make(stopStrategy={"expression": "cronworkflow.failed >= 3"})
    status = CronStatus(last_scheduled_time=PREVIOUS_HOUR, failed=3)
    result = plan(spec, status, now=JUST_AFTER_THE_HOUR, created=CREATED, observed_since=SERVICE_UP)
    assert result.run is None and result.stop is not None and result.skip.reason is SkipReason.STOPPED
    stopped = apply_stopped(status, result.stop)
    written = apply_to_object(obj, stopped)
    assert written["status"]["phase"] == "Stopped"
    assert written["metadata"]["labels"][COMPLETED_LABEL] == "true"
    assert written["status"]["conditions"] == [{"type": "Completed", "status": "True", "message": (
        "stopped by stopStrategy.expression 'cronworkflow.failed >= 3' (succeeded=0, failed=3)")}]
    later = plan(spec, stopped, now=JUST_AFTER_THE_HOUR + timedelta(hours=1), created=CREATED,
                 observed_since=SERVICE_UP)
    assert later.run is None and later.skip.reason is SkipReason.STOPPED


def test_resume_after_stop():
    _, spec = make(stopStrategy={"expression": "cronworkflow.failed >= 3"})
    stopped = apply_stopped(CronStatus(failed=3), plan(spec, CronStatus(failed=3), now=JUST_AFTER_THE_HOUR,
                                                       created=CREATED, observed_since=SERVICE_UP).stop)
    resumed = apply_resumed(stopped)
    assert resumed.phase == "Active" and not resumed.completed and resumed.condition(CONDITION_COMPLETED) is None
    _, relaxed = make(stopStrategy={"expression": "cronworkflow.failed >= 5"})
    assert plan(relaxed, resumed, now=JUST_AFTER_THE_HOUR, created=CREATED,
                observed_since=SERVICE_UP).run == TOP_OF_HOUR


@pytest.mark.parametrize("deadline, late", [(None, None), (900, TOP_OF_HOUR), (300, None)],
                         ids=["no deadline: next on-time tick only", "deadline covers 10:00: it runs at 10:10",
                              "deadline passed: dropped"])
def test_suspend_then_resume(deadline, late):
    extra = {} if deadline is None else {"startingDeadlineSeconds": deadline}
    _, suspended = make(suspend=True, **extra)
    _, resumed = make(suspend=False, **extra)
    status = CronStatus(last_scheduled_time=PREVIOUS_HOUR)
    skipped = plan(suspended, status, now=JUST_AFTER_THE_HOUR, created=CREATED, observed_since=SERVICE_UP)
    assert skipped.skip.reason is SkipReason.SUSPENDED
    status = apply_plan(status, skipped, spec=suspended)
    assert status.blocked_scheduled_time == (TOP_OF_HOUR if deadline else None)
    after = plan(resumed, status, now=TEN_PAST, created=CREATED, observed_since=SERVICE_UP)
    assert after.run == late and after.catch_up is (late is not None)
    if late is None:
        status = apply_plan(status, after, spec=resumed)
        at_next = plan(resumed, status, now=TOP_OF_HOUR + timedelta(hours=1), created=CREATED,
                       observed_since=SERVICE_UP)
        assert at_next.run == TOP_OF_HOUR + timedelta(hours=1)


def test_stop_strategy_is_checked_when_no_time_is_due():
    """Issue 9: a child counted as failed stops the CronWorkflow at once, not at the next scheduled time."""
    _, spec = make(stopStrategy={"expression": "cronworkflow.failed >= 1"})
    status, _ = reconcile_children(active_status(PREVIOUS_HOUR),
                                   (replace(running(PREVIOUS_HOUR), phase="Failed"),))
    result = plan(spec, status, now=PREVIOUS_HOUR + timedelta(minutes=5), created=CREATED, observed_since=SERVICE_UP)
    assert result.stop is not None and result.run is None and result.skip is None


def test_every_anchored_to_last_scheduled_time():
    _, spec = make(schedules=("@every 45m",))
    status = CronStatus(last_scheduled_time=datetime(2026, 1, 5, 9, 7, 30, tzinfo=UTC))
    result = plan(spec, status, now=datetime(2026, 1, 5, 9, 30, tzinfo=UTC), created=CREATED,
                  observed_since=SERVICE_UP)
    assert result.run is None and result.next_wakeup == datetime(2026, 1, 5, 9, 52, 30, tzinfo=UTC)
    never_ran = plan(spec, CronStatus(), now=datetime(2026, 1, 5, 8, 50, tzinfo=UTC), created=CREATED,
                     observed_since=SERVICE_UP)
    assert never_ran.run == CREATED + timedelta(minutes=45)


def test_never_firing_schedule_never_wakes():
    _, spec = make(schedules=("0 0 30 2 *",))
    assert plan(spec, CronStatus(), now=TEN_PAST, created=CREATED, observed_since=SERVICE_UP).next_wakeup is None


def test_reconcile_counts_finished_children_once():
    a, b = running(PREVIOUS_HOUR), running(TOP_OF_HOUR)
    status = active_status(PREVIOUS_HOUR, TOP_OF_HOUR)
    done = replace(a, phase="Failed", finished_at=TEN_PAST)
    updated, counted = reconcile_children(status, (done, b))
    assert (updated.failed, updated.succeeded, [r.name for r in updated.active]) == (1, 0, [b.name])
    assert counted == (done,)
    again, counted = reconcile_children(updated, (done, b))
    assert again.failed == 1 and counted == ()
    orphan = running(TOP_OF_HOUR + timedelta(hours=1))
    adopted, _ = reconcile_children(again, (done, b, orphan))
    assert [r.name for r in adopted.active] == [b.name, orphan.name]


def test_history_limits_keep_newest_finished():
    _, spec = make(successfulJobsHistoryLimit=2, failedJobsHistoryLimit=1)
    base = datetime(2026, 1, 5, tzinfo=UTC)
    children = [replace(running(base + timedelta(hours=h)), phase=phase, finished_at=base + timedelta(hours=h, minutes=5))
                for h, phase in [(1, "Succeeded"), (2, "Succeeded"), (3, "Failed"), (4, "Succeeded"), (5, "Error"),
                                 (6, "Running")]]
    doomed = {child.scheduled_time.hour for child in history_to_delete(spec, children)}
    assert doomed == {1, 3}
    _, default = make()
    assert history_to_delete(default, children[:3]) == ()


def test_status_round_trip_and_metadata():
    obj, spec = make()
    status = apply_created(CronStatus(), spec=spec, scheduled_time=TOP_OF_HOUR, workflow=build_workflow(
        obj, TOP_OF_HOUR) | {"metadata": {"name": "hourly-1767607200", "namespace": "etl", "uid": "w-1"}})
    status = clear_spec_error(apply_spec_error(status, "bad"))
    written = apply_to_object(obj, status)
    assert written["status"] == {"active": [{"kind": "Workflow", "apiVersion": "argoproj.io/v1alpha1",
                                             "name": "hourly-1767607200", "namespace": "etl", "uid": "w-1"}],
                                 "succeeded": 0, "failed": 0, "conditions": [],
                                 "lastScheduledTime": "2026-01-05T10:00:00Z", "phase": "Active",
                                 "lastDecidedTime": "2026-01-05T10:00:00Z"}
    assert written["metadata"]["annotations"][LAST_USED_SCHEDULE_ANNOTATION] == "0 * * * *"
    assert CronStatus.from_object(written) == status
    assert "status" not in obj


def drive(spec, obj, *, start, end, observed_since, finish_after=None, outcome="Succeeded"):
    """Run the engine like the runner would, with a fake `now`: returns the created scheduled times and skips."""
    status, now = CronStatus(), start
    children: dict[str, Child] = {}
    created, skips = [], []
    while now < end:
        if finish_after is not None:
            for name, child in list(children.items()):
                if child.phase == "Running" and now - child.scheduled_time >= finish_after:
                    children[name] = replace(child, phase=outcome, finished_at=now)
            status, _ = reconcile_children(status, children.values())
        result = plan(spec, status, now=now, created=start, observed_since=observed_since,
                      children=tuple(children.values()))
        status = apply_plan(status, result, spec=spec)
        if result.stop is not None:
            status = apply_stopped(status, result.stop)
        if result.run is not None:
            workflow = build_workflow(obj, result.run)
            assert_valid_workflow(workflow)
            status = apply_created(status, spec=spec, scheduled_time=result.run, workflow=workflow)
            children[workflow["metadata"]["name"]] = running(result.run, obj["metadata"]["name"])
            created.append(result.run)
        if result.skip is not None:
            skips.append((result.skip.scheduled_time, result.skip.reason))
        if result.next_wakeup is None:
            break
        now = max(now, result.next_wakeup) + timedelta(milliseconds=30)
    return created, skips, status


def seed_spec():
    obj = yaml.safe_load(SEED.read_text())
    obj["metadata"].update(namespace="argo", uid="seed-uid")
    return obj, parse_cron_workflow(obj).spec


def test_seed_minute_15_fires_once_and_when_gate_allows_one_run_an_hour():
    obj, spec = seed_spec()
    start = datetime(2026, 1, 5, 9, 58, tzinfo=UTC)
    created, skips, _ = drive(spec, obj, start=start, end=start + timedelta(days=2), observed_since=start)
    assert created[:3] == [datetime(2026, 1, 5, h, 0, tzinfo=UTC) for h in (10, 11, 12)]
    assert len(created) == 48 and len(set(created)) == 48
    assert all(reason is SkipReason.WHEN for _, reason in skips)
    decisions = [t for t, _ in skips] + created
    assert len(decisions) == len(set(decisions))  # minute 15 (*/3 and */5) is one decision
    first_hour = [t for t in decisions if t.date() == start.date() and t.hour == 10]
    assert len(first_hour) == 20 + 12 - 4  # 20 + 12 fires, 4 shared (0, 15, 30, 45)


def test_seed_stops_after_ten_failures():
    obj, spec = seed_spec()
    start = datetime(2026, 1, 5, 9, 58, tzinfo=UTC)
    created, skips, status = drive(spec, obj, start=start, end=start + timedelta(days=1), observed_since=start,
                                   finish_after=timedelta(minutes=10), outcome="Failed")
    assert len(created) == 10 and status.failed == 10 and status.phase == "Stopped" and status.completed
    assert skips[-1][1] is SkipReason.STOPPED


@pytest.mark.parametrize(
    "schedule, expected_local",
    [
        ("30 2 * * *", ["03-07 02:30", "03-09 02:30", "03-10 02:30"]),  # spring-forward day skipped
        ("30 1 * * *", ["03-07 01:30", "03-08 01:30", "03-09 01:30", "03-10 01:30"]),
    ],
)
def test_new_york_spring_forward_through_the_engine(schedule, expected_local):
    obj, spec = make(schedules=(schedule,), timezone="America/New_York")
    start = datetime(2026, 3, 7, 0, 0, tzinfo=UTC)
    created, _, _ = drive(spec, obj, start=start, end=start + timedelta(days=3, hours=12), observed_since=start)
    zone = spec.schedule_set.schedules[0].zone
    assert [t.astimezone(zone).strftime("%m-%d %H:%M") for t in created] == expected_local


def test_new_york_fall_back_through_the_engine():
    obj, fixed = make(schedules=("30 1 * * *",), timezone="America/New_York")
    start = datetime(2026, 10, 31, 12, 0, tzinfo=UTC)
    created, _, _ = drive(fixed, obj, start=start, end=start + timedelta(days=2), observed_since=start)
    assert [t.strftime("%m-%d %H:%MZ") for t in created] == ["11-01 05:30Z", "11-02 06:30Z"]
    obj, hourly = make(schedules=("@hourly",), timezone="America/New_York")
    created, _, _ = drive(hourly, obj, start=datetime(2026, 11, 1, 3, 30, tzinfo=UTC),
                          end=datetime(2026, 11, 1, 8, 30, tzinfo=UTC), observed_since=start)
    assert [t.strftime("%H:%MZ") for t in created] == ["04:00Z", "05:00Z", "06:00Z", "07:00Z", "08:00Z"]


def test_forbid_over_a_day_with_long_runs():
    obj, spec = make(schedules=("*/10 * * * *",), concurrencyPolicy="Forbid")
    start = datetime(2026, 1, 5, 0, 0, 30, tzinfo=UTC)
    created, skips, _ = drive(spec, obj, start=start, end=start + timedelta(days=1), observed_since=start,
                              finish_after=timedelta(minutes=25))
    # A run takes 25 min: each run blocks the next two ticks; 144 ticks -> 48 runs, 96 forbid skips.
    assert len(created) == 48 and [r for _, r in skips].count(SkipReason.FORBID) == 96
