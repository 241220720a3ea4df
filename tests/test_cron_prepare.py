"""Prepared decisions: a run due at T is decided `--prepare-ahead` seconds before T and only created at T, and the
result is the one deciding at T gives; anything that changes in between makes the preparation stale, never wrong.

Against the local endpoint, or a real cluster with BURSTFLOW_E2E_KUBECONFIG (the `env` fixture of
tests/test_cron_runner.py), on a FakeClock.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from burstflow.cron import engine
from burstflow.cron.spec import parse_cron_workflow
from burstflow.kube import WORKFLOWS
from tests.test_cron_runner import WORKFLOW_SPEC, env, every, minutes, rfc3339, wf_name  # noqa: F401  (`env`)

pytestmark = pytest.mark.kube

USED = ("burstflow_cron_prepared_decisions_total", {"result": "used"})
STALE = ("burstflow_cron_prepared_decisions_total", {"result": "stale"})


def count(svc, sample) -> float:
    name, labels = sample
    return svc.count(name, **labels)


@pytest.mark.parametrize("prepare_ahead_seconds", [0.0, 10.0])
async def test_prepared_and_unprepared_services_create_and_record_the_same_runs(env, prepare_ahead_seconds):
    """Three ticks of two CronWorkflows (several schedules, a history limit, a finished run in between): the
    same Workflows and statuses with preparation on as with it off, and with it on every on-time run was
    created from its preparation."""
    t0 = env.clock.now()
    env.clock.set(t0 + minutes(5))
    await env.create_cron("twice", {"schedules": ["*/10 * * * *", "*/15 * * * *"], "workflowSpec": WORKFLOW_SPEC,
                                    "workflowMetadata": {"labels": {"team": "render"}},
                                    "successfulJobsHistoryLimit": 1})
    await env.create_cron("tenly", every(10, concurrencyPolicy="Allow"))
    svc = await env.service(prepare_ahead_seconds=prepare_ahead_seconds)
    await env.run_until(t0 + minutes(10) + timedelta(seconds=1))
    await env.finish(wf_name("twice", t0 + minutes(10)), "Succeeded")
    await env.run_until(t0 + minutes(30) + timedelta(seconds=1))

    # Nothing ran at :00 (before the service started, no deadline); `twice` fires at :10, :15, :20 and once at :30.
    assert await env.names("twice") == [wf_name("twice", t0 + minutes(t)) for t in (10, 15, 20, 30)]
    assert await env.names("tenly") == [wf_name("tenly", t0 + minutes(t)) for t in (10, 20, 30)]
    for workflow in await env.workflows("twice"):
        assert workflow["metadata"]["labels"]["team"] == "render"
    twice = (await env.cron("twice"))["status"]
    assert twice["lastScheduledTime"] == rfc3339(t0 + minutes(30))
    assert sorted(ref["name"] for ref in twice["active"]) == [wf_name("twice", t0 + minutes(t)) for t in (15, 20, 30)]
    assert twice["succeeded"] == 1
    created = svc.count("burstflow_cron_runs_created_total", namespace=env.namespace)
    assert created == 7
    if prepare_ahead_seconds:
        assert count(svc, USED) == created
        assert count(svc, STALE) == 0
    else:
        assert count(svc, USED) == count(svc, STALE) == 0


async def test_a_spec_change_after_preparation_is_what_runs(env):
    """The run at :10 is prepared at :09:50; the workflowSpec changes at :09:55: the Workflow created at :10
    carries the new spec (the preparation is stale and dropped)."""
    t0 = env.clock.now()
    env.clock.set(t0 + minutes(5))
    await env.create_cron("edited", every(10))
    svc = await env.service(prepare_ahead_seconds=10.0)
    await env.run_until(t0 + minutes(10) - timedelta(seconds=5))

    def new_image(cron: dict) -> None:
        cron["spec"]["workflowSpec"]["templates"][0]["container"]["image"] = "alpine:3.21"

    await env.update_cron("edited", new_image)
    await env.run_until(t0 + minutes(10) + timedelta(seconds=1))
    [workflow] = await env.workflows("edited")
    assert workflow["metadata"]["name"] == wf_name("edited", t0 + minutes(10))
    assert workflow["spec"]["templates"][0]["container"]["image"] == "alpine:3.21"
    assert (count(svc, USED), count(svc, STALE)) == (0, 1)
    assert (await env.cron("edited"))["status"]["lastScheduledTime"] == rfc3339(t0 + minutes(10))


async def test_a_change_to_a_run_after_preparation_makes_it_stale_and_the_run_is_still_created_once(env):
    """A finished run of the CronWorkflow changes between the preparation and the due instant (a label: nothing
    the CronWorkflow's status records, so the CronWorkflow itself is not written): the preparation was made from
    other children, so the run is decided again at the due instant, created once and recorded."""
    t0 = env.clock.now()
    env.clock.set(t0 + minutes(5))
    await env.create_cron("busy", every(10))
    svc = await env.service(prepare_ahead_seconds=10.0)
    await env.run_until(t0 + minutes(10) + timedelta(seconds=1))
    first = wf_name("busy", t0 + minutes(10))
    assert (count(svc, USED), count(svc, STALE)) == (1, 0)
    await env.finish(first, "Succeeded")
    await env.run_until(t0 + minutes(20) - timedelta(seconds=5))  # the :20 run is prepared
    before = (await env.cron("busy"))["metadata"]["resourceVersion"]
    patched = await env.kube.patch(WORKFLOWS, first, {"metadata": {"labels": {"touched": "yes"}}},
                                   namespace=env.namespace)
    await env.settle_after(patched, "workflows")
    assert (await env.cron("busy"))["metadata"]["resourceVersion"] == before
    await env.run_until(t0 + minutes(20) + timedelta(seconds=1))
    second = wf_name("busy", t0 + minutes(20))
    assert await env.names("busy") == [first, second]
    assert (count(svc, USED), count(svc, STALE)) == (1, 1)
    status = (await env.cron("busy"))["status"]
    assert [ref["name"] for ref in status["active"]] == [second]
    assert status["succeeded"] == 1


async def test_runs_with_when_expressions_are_decided_at_the_due_instant(env):
    """`when` sees `now`: such a CronWorkflow is never prepared, and its runs are still created."""
    t0 = env.clock.now()
    env.clock.set(t0 + minutes(5))
    await env.create_cron("gated", every(10, when="true"))
    svc = await env.service(prepare_ahead_seconds=10.0)
    await env.run_until(t0 + minutes(20) + timedelta(seconds=1))
    assert await env.names("gated") == [wf_name("gated", t0 + minutes(t)) for t in (10, 20)]
    assert (count(svc, USED), count(svc, STALE)) == (0, 0)


# --------------------------------------------------------------------------------------- the invariant it rests on

NOON = datetime(2030, 6, 3, 12, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("schedules, due, next_fire", [
    (["*/10 * * * *"], NOON, NOON + timedelta(minutes=10)),
    (["*/10 * * * *", "*/15 * * * *"], NOON, NOON + timedelta(minutes=10)),
    (["0 12 * * *", "1 12 * * *"], NOON, NOON + timedelta(minutes=1)),
])
def test_plan_is_the_same_at_every_instant_from_the_due_time_to_the_next_wakeup(schedules, due, next_fire):
    """Without `when`/stop expressions, `engine.plan` gives the same plan at every `now` in [due, next wake-up):
    what a decision prepared with now = due relies on."""
    cron = {"apiVersion": "burstflow.io/v1alpha1", "kind": "CronWorkflow",
            "metadata": {"name": "steady", "namespace": "ns", "uid": "u-1",
                         "creationTimestamp": rfc3339(due - timedelta(days=1))},
            "spec": {"schedules": schedules, "timezone": "UTC", "workflowSpec": WORKFLOW_SPEC},
            "status": {"lastScheduledTime": rfc3339(due - timedelta(minutes=30))}}
    parsed = parse_cron_workflow(cron)
    assert parsed.ok, parsed.errors
    status = engine.CronStatus.from_object(cron)
    inputs = dict(created=due - timedelta(days=1), observed_since=due - timedelta(hours=1))
    at_due = engine.plan(parsed.spec, status, now=due, **inputs)
    assert at_due.run == due and at_due.next_wakeup == next_fire
    span = (next_fire - due).total_seconds()
    for fraction in (0.0, 0.001, 0.25, 0.5, 0.999):
        now = due + timedelta(seconds=span * fraction)
        assert engine.plan(parsed.spec, status, now=now, **inputs) == at_due, now
    assert engine.plan(parsed.spec, status, now=next_fire, **inputs) != at_due
