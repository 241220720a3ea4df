"""The cron runner against a real API endpoint (the local ApiSim, or a cluster via BURSTFLOW_E2E_KUBECONFIG), with
Argo's full Workflow CRD and our CronWorkflow CRD installed, driven through simulated hours with a FakeClock."""
from __future__ import annotations

import asyncio
import copy
import gc
import json
import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path

import jsonschema
import pytest
import yaml
from prometheus_client import CollectorRegistry

from burstflow.clock import FakeClock
from burstflow.kube import (
    CRON_WORKFLOWS, EVENTS, LEASES, WORKFLOWS, Invalid, Kube, NotFound, Unavailable,
    error_from_status,
)
from burstflow.cron.app import serve
from burstflow.cron.leader import CronLeaderElector
from burstflow.cron.metrics import CronMetrics
from burstflow.cron.runner import GC_YOUNG_THRESHOLD, CronRunner
from burstflow.cron.settings import CronSettings
from burstflow.cron.workflow import CRON_LABEL
from burstflow.logs import context
from tests.kubefixtures import ARGO_CRDS, apply_crds, load_crds

pytestmark = pytest.mark.kube

ROOT = Path(__file__).resolve().parent.parent
SHARED_CRDS = ARGO_CRDS / "full"
CRON_CRD = ROOT / "manifests" / "base" / "crds" / "cronworkflows.burstflow.io.yaml"
SEED_FILE = ROOT / "policies" / "cronworkflow-seed.yaml"

# The seed example from ../shared/seeds-digest.md, verbatim except for apiVersion.
SEED = """
apiVersion: burstflow.io/v1alpha1
kind: CronWorkflow
metadata: {name: cron-workflow-example}
spec:
  schedules:                 # several schedules: every 3 and every 5 minutes; minute 15 fires once
  - "*/3 * * * *"
  - "*/5 * * * *"
  concurrencyPolicy: "Allow"
  stopStrategy:              # stop scheduling once 10 workflows have failed
    condition: "failed >= 10"
  # checked before every run: at least 3600 s since the last one
  when: "{{= cronworkflow.lastScheduledTime == nil || (now() - cronworkflow.lastScheduledTime).Seconds() > 3600 }}"
  startingDeadlineSeconds: 0
  workflowSpec:
    entrypoint: whalesay
    templates:
    - name: whalesay
      container: {image: "alpine:3.6", command: [sh, -c], args: ["date; sleep 1"]}
"""

WORKFLOW_SPEC = {
    "entrypoint": "main",
    "templates": [{"name": "main", "container": {"image": "alpine:3.20", "command": ["true"]}}],
}

_SCHEMA_CACHE: dict[str, jsonschema.protocols.Validator] = {}


def workflow_validator():
    """jsonschema validator for Argo's full Workflow schema (the test's own check, besides the sim's)."""
    if "wf" not in _SCHEMA_CACHE:
        crd = load_crds(SHARED_CRDS / "workflows.yaml")[0]
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        _SCHEMA_CACHE["wf"] = jsonschema.Draft7Validator(_structural(schema))
    return _SCHEMA_CACHE["wf"]


def _structural(schema):
    """OpenAPI v3 structural schema -> JSON Schema: drop the `x-kubernetes-*` extensions jsonschema does not know,
    and let `int-or-string` fields be either."""
    if isinstance(schema, list):
        return [_structural(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _structural(v) for k, v in schema.items() if not k.startswith("x-kubernetes-")}
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    return out


def start_time() -> datetime:
    """Simulated time starts at the next full hour after the real now plus one hour: after every creation
    timestamp a real API server writes, and at a readable minute (:00)."""
    real = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    return real + timedelta(hours=2)


class Service:
    """One replica of the cron service: a CronRunner on its own connection, optionally with a Lease elector."""

    def __init__(self, env: Env, kube: Kube, runner: CronRunner) -> None:
        self.env = env
        self.kube = kube
        self.runner = runner
        self.metrics = runner.metrics
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.runner.run())

    async def stop(self, *, release: bool = True) -> None:
        """Stop; `release=False` behaves like a crashed process (the Lease stays until it expires)."""
        if self.runner.elector is not None:
            await self.runner.elector.stop(release=release)
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None

    def count(self, name: str, **labels: str) -> float:
        return self.metrics.value(name, labels)


class Env:
    """The API endpoint, a FakeClock, the test namespace and helpers to look at what the runner did."""

    def __init__(self, kube: Kube, kubeconfig: str, clock: FakeClock, namespace: str, sim) -> None:
        self.kube = kube
        self.kubeconfig = kubeconfig
        self.kubes: list[Kube] = []
        self.clock = clock
        self.namespace = namespace
        self.sim = sim
        self.services: list[Service] = []

    async def service(self, *, identity: str = "replica-a", elector: bool = False, kube_class=Kube,
                      **settings) -> Service:
        kube = await kube_class.connect(self.kubeconfig, clock=self.clock)
        self.kubes.append(kube)
        config = CronSettings(namespace=self.namespace, identity=identity, workers=4, leader_election=elector,
                              lease_namespace=self.namespace, **settings)
        lease = None
        if elector:
            import random

            lease = CronLeaderElector(
                kube, name=config.lease_name, namespace=self.namespace, identity=identity, clock=self.clock,
                lease_duration=config.lease_duration_seconds, renew_deadline=config.renew_deadline_seconds,
                retry_period=config.retry_period_seconds, rng=random.Random(identity))
        runner = CronRunner(kube=kube, clock=self.clock, settings=config, metrics=CronMetrics(CollectorRegistry()),
                            elector=lease)
        svc = Service(self, kube, runner)
        self.services.append(svc)
        svc.start()
        await self.settle()
        return svc

    def idle(self) -> bool:
        return all(s.runner.idle() for s in self.services if s.task is not None)

    async def settle(self) -> None:
        await self.clock.settle(idle=self.idle)

    async def settle_after(self, written: dict, reflector: str) -> None:
        """Settle once every leading runner's `reflector` ("crons" or "workflows") has seen `written` (its watch
        has reached the object's resourceVersion). A real API server delivers the watch event some milliseconds
        after the write returns; without this wait a settle can end before the runner heard of the change."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + 10.0
        target = int(written["metadata"]["resourceVersion"])
        while True:
            await self.settle()
            behind = [s for s in self.services if s.task is not None and s.runner.leading
                      and int(getattr(s.runner, reflector).resource_version or 0) < target]
            if not behind:
                return
            if loop.time() > give_up:
                raise TimeoutError(f"{len(behind)} runner(s) did not see resourceVersion {target} within 10 s")
            await asyncio.sleep(0.01)

    async def run_until(self, when: datetime) -> None:
        await self.clock.run_until(when, idle=self.idle)

    async def create_cron(self, name: str, spec: dict, **metadata) -> dict:
        body = {"apiVersion": "burstflow.io/v1alpha1", "kind": "CronWorkflow",
                "metadata": {"name": name, "namespace": self.namespace, **metadata}, "spec": spec}
        created = await self.kube.create(CRON_WORKFLOWS, body)
        await self.settle_after(created, "crons")
        return created

    async def cron(self, name: str) -> dict:
        return await self.kube.get(CRON_WORKFLOWS, name, namespace=self.namespace)

    async def update_cron(self, name: str, change) -> dict:
        cron = await self.cron(name)
        change(cron)
        updated = await self.kube.replace(CRON_WORKFLOWS, cron)
        await self.settle_after(updated, "crons")
        return updated

    async def write_status(self, name: str, change) -> dict:
        cron = await self.cron(name)
        cron.setdefault("status", {})
        change(cron["status"])
        return await self.kube.replace(CRON_WORKFLOWS, cron, subresource="status")

    async def workflows(self, cron: str | None = None) -> list[dict]:
        selector = f"{CRON_LABEL}={cron}" if cron else CRON_LABEL
        listing = await self.kube.list(WORKFLOWS, namespace=self.namespace, label_selector=selector)
        return sorted(listing["items"], key=lambda w: w["metadata"]["name"])

    async def names(self, cron: str | None = None) -> list[str]:
        return [w["metadata"]["name"] for w in await self.workflows(cron)]

    async def finish(self, name: str, phase: str) -> None:
        """Play Argo's workflow controller: the run ends with `phase` now."""
        stamp = self.clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")
        patched = await self.kube.patch(WORKFLOWS, name, {"status": {"phase": phase, "startedAt": stamp,
                                                                    "finishedAt": stamp}}, namespace=self.namespace)
        await self.settle_after(patched, "workflows")

    async def events(self, name: str) -> list[dict]:
        listing = await self.kube.list(EVENTS, namespace=self.namespace)
        return [e for e in listing["items"] if e["involvedObject"].get("name") == name]


def wf_name(cron: str, when: datetime) -> str:
    return f"{cron}-{int(when.timestamp())}"


def rfc3339(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
async def env(kube, kubeconfig, namespace, _local_sim):
    if not CRON_CRD.is_file():
        pytest.fail(f"{CRON_CRD} is missing (the CronWorkflow CRD)")
    await apply_crds(kube, SHARED_CRDS / "workflows.yaml", CRON_CRD)  # and waits until they are served
    clock = FakeClock(start_time())
    environment = Env(kube, kubeconfig, clock, namespace, _local_sim)
    try:
        yield environment
    finally:
        for svc in environment.services:
            await svc.stop()
        for client in environment.kubes:
            await client.close()


async def assert_valid_workflows(env: Env) -> None:
    validator = workflow_validator()
    for workflow in await env.workflows():
        errors = sorted(validator.iter_errors(workflow), key=str)
        assert not errors, f"{workflow['metadata']['name']}: {errors[0].message} at {list(errors[0].path)}"


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)


def every(minutes_: int, **extra) -> dict:
    return {"schedules": [f"*/{minutes_} * * * *"], "workflowSpec": WORKFLOW_SPEC, **extra}


def condition(cron: dict, type_: str) -> dict | None:
    return next((c for c in (cron.get("status") or {}).get("conditions") or [] if c.get("type") == type_), None)


# ------------------------------------------------------------------------------------------------ the seed example


def seed_object() -> dict:
    seed = yaml.safe_load(SEED)
    if SEED_FILE.is_file():
        shipped = yaml.safe_load(SEED_FILE.read_text())
        assert shipped["spec"] == seed["spec"], f"{SEED_FILE} is not the seed example verbatim"
    return seed


async def create_seed(env: Env) -> None:
    seed = seed_object()
    await env.create_cron(seed["metadata"]["name"], seed["spec"])


SEED_NAME = "cron-workflow-example"


async def test_seed_minute_15_fires_once(env):
    t0 = env.clock.now()
    env.clock.set(t0 + minutes(14.5))
    await create_seed(env)
    svc = await env.service()
    await env.run_until(t0 + minutes(15) + timedelta(seconds=1))
    assert await env.names() == [wf_name(SEED_NAME, t0 + minutes(15))]
    assert svc.count("burstflow_cron_runs_created_total", namespace=env.namespace) == 1
    cron = await env.cron(SEED_NAME)
    assert cron["status"]["lastScheduledTime"] == rfc3339(t0 + minutes(15))
    [workflow] = await env.workflows()
    assert workflow["metadata"]["labels"][CRON_LABEL] == SEED_NAME
    assert workflow["metadata"]["annotations"]["workflows.argoproj.io/scheduled-time"] == rfc3339(t0 + minutes(15))
    [owner] = workflow["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "CronWorkflow", SEED_NAME, cron["metadata"]["uid"], True)
    await assert_valid_workflows(env)


async def test_seed_when_gate_skips_until_3600_seconds_passed(env):
    t0 = env.clock.now()
    env.clock.set(t0 + minutes(14.5))
    await create_seed(env)
    svc = await env.service()
    await env.run_until(t0 + minutes(75) + timedelta(seconds=30))
    # 3600 s after :15 is 1:15 itself, and the expression wants "> 3600": still skipped; lastScheduledTime unchanged.
    assert (await env.cron(SEED_NAME))["status"]["lastScheduledTime"] == rfc3339(t0 + minutes(15))
    await env.run_until(t0 + minutes(78) + timedelta(seconds=1))
    assert await env.names() == [wf_name(SEED_NAME, t0 + minutes(15)), wf_name(SEED_NAME, t0 + minutes(78))]
    gated = [m for m in range(16, 76) if m % 3 == 0 or m % 5 == 0]
    assert svc.count("burstflow_cron_runs_skipped_total", reason="when") == len(gated)
    skipped = [e for e in await env.events(SEED_NAME) if e["reason"] == "RunSkipped" and "when" in e["message"]]
    assert len(skipped) == len(gated)
    await assert_valid_workflows(env)


async def test_seed_stops_after_10_failures(env):
    t0 = env.clock.now()
    await create_seed(env)
    svc = await env.service()
    finished: set[str] = set()
    for hour in range(1, 13):
        await env.run_until(t0 + timedelta(hours=hour))
        for name in await env.names():
            if name not in finished:
                finished.add(name)
                await env.finish(name, "Failed")
    await env.run_until(t0 + timedelta(hours=13))
    cron = await env.cron(SEED_NAME)
    assert len(finished) == 10, sorted(finished)
    assert svc.count("burstflow_cron_runs_created_total", namespace=env.namespace) == 10
    assert cron["status"]["phase"] == "Stopped"
    assert cron["status"]["failed"] == 10
    assert cron["metadata"]["labels"]["cronworkflows.argoproj.io/completed"] == "true"
    completed = condition(cron, "Completed")
    assert completed is not None and "failed >= 10" in completed["message"]
    events = await env.events(SEED_NAME)
    stopped = [e for e in events if e["reason"] == "Stopped"]
    assert len(stopped) == 1 and "failed >= 10" in stopped[0]["message"]
    # Ticks of a Stopped CronWorkflow are counted, not reported one Event each.
    assert not [e for e in events if e["reason"] == "RunSkipped" and "stop" in e["message"]]
    # failedJobsHistoryLimit defaults to 1 (Argo): only the newest failed run is kept.
    assert await env.names() == [max(finished)]
    assert svc.count("burstflow_cron_runs_skipped_total", reason="stopped") > 0
    await assert_valid_workflows(env)


# ------------------------------------------------------------------------------------------------ concurrency


@pytest.mark.parametrize("policy", ["Allow", "Forbid", "Replace"])
async def test_concurrency_policy_with_an_active_run(env, policy):
    t0 = env.clock.now()
    await env.create_cron("nightly", every(10, concurrencyPolicy=policy))
    svc = await env.service()
    await env.run_until(t0 + minutes(10) + timedelta(seconds=1))
    first, second = wf_name("nightly", t0), wf_name("nightly", t0 + minutes(10))
    workflows = {w["metadata"]["name"]: w for w in await env.workflows()}
    status = (await env.cron("nightly"))["status"]
    active = sorted(ref["name"] for ref in status.get("active") or [])
    if policy == "Allow":
        assert sorted(workflows) == [first, second]
        assert active == [first, second]
    elif policy == "Forbid":
        assert sorted(workflows) == [first]
        assert status["lastScheduledTime"] == rfc3339(t0)
        assert svc.count("burstflow_cron_runs_skipped_total", reason="forbid") == 1
    else:
        assert sorted(workflows) == [first, second]
        assert workflows[first]["spec"].get("shutdown") == "Terminate"
        assert "shutdown" not in workflows[second]["spec"]
    await assert_valid_workflows(env)


async def test_replace_never_terminates_the_run_for_the_current_time(env):
    """Argo bug 12625: a Workflow for the due time already exists (a previous leader created it and its status
    write was lost); Replace must adopt it, not terminate it."""
    t0 = env.clock.now()
    cron = await env.create_cron("etl", every(10, concurrencyPolicy="Replace"))
    await env.service()
    await env.settle()
    current = wf_name("etl", t0 + minutes(10))
    await env.kube.create(WORKFLOWS, {
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
        "metadata": {"name": current, "namespace": env.namespace, "labels": {CRON_LABEL: "etl"},
                     "annotations": {"workflows.argoproj.io/scheduled-time": rfc3339(t0 + minutes(10))},
                     "ownerReferences": [{"apiVersion": "burstflow.io/v1alpha1", "kind": "CronWorkflow", "name": "etl",
                                          "uid": cron["metadata"]["uid"], "controller": True,
                                          "blockOwnerDeletion": True}]},
        "spec": WORKFLOW_SPEC})
    await env.run_until(t0 + minutes(10) + timedelta(seconds=1))
    workflow = await env.kube.get(WORKFLOWS, current, namespace=env.namespace)
    assert "shutdown" not in workflow["spec"]
    status = (await env.cron("etl"))["status"]
    assert status["lastScheduledTime"] == rfc3339(t0 + minutes(10))
    assert current in [ref["name"] for ref in status["active"]]
    assert await env.names() == [wf_name("etl", t0), current]


# ------------------------------------------------------------------------------------------------ restarts


@pytest.mark.parametrize(
    "deadline, expect_catch_up",
    [(600, True), (None, False), (60, False)],
    ids=["outage, deadline covers the latest missed: one catch-up", "outage, no deadline: none",
         "outage, deadline expired: none"],
)
async def test_restart_after_a_three_hour_outage(env, deadline, expect_catch_up):
    t0 = env.clock.now()
    spec = {"schedules": ["0 * * * *"], "workflowSpec": WORKFLOW_SPEC}
    if deadline is not None:
        spec["startingDeadlineSeconds"] = deadline
    await env.create_cron("hourly", spec)
    first = await env.service()
    await env.run_until(t0 + minutes(5))
    await first.stop()
    env.services.remove(first)
    env.clock.set(t0 + timedelta(hours=3, minutes=2))
    second = await env.service(identity="replica-b")
    await env.settle()
    expected = [wf_name("hourly", t0)] + ([wf_name("hourly", t0 + timedelta(hours=3))] if expect_catch_up else [])
    assert await env.names() == expected
    assert second.count("burstflow_cron_runs_created_total", namespace=env.namespace) == int(expect_catch_up)
    # The next on-time tick runs whatever the deadline.
    await env.run_until(t0 + timedelta(hours=4, seconds=1))
    assert (await env.names())[-1] == wf_name("hourly", t0 + timedelta(hours=4))
    await assert_valid_workflows(env)


LEASE = {"lease_duration_seconds": 15.0, "renew_deadline_seconds": 10.0, "retry_period_seconds": 2.0}


async def test_leader_crash_before_a_tick_neither_misses_nor_duplicates(env):
    t0 = env.clock.now()
    await env.create_cron("minutely", {"schedules": ["* * * * *"], "workflowSpec": WORKFLOW_SPEC})
    a = await env.service(identity="replica-a", elector=True, **LEASE)
    b = await env.service(identity="replica-b", elector=True, **LEASE)
    await env.run_until(t0 + minutes(1) + timedelta(seconds=30))
    assert a.runner.leading and not b.runner.leading
    await a.stop(release=False)  # crashed: the Lease stays until it expires, across the 2-minute tick
    await env.run_until(t0 + minutes(3) + timedelta(seconds=30))
    assert b.runner.leading
    assert await env.names() == [wf_name("minutely", t0 + minutes(m)) for m in range(4)]
    assert (await env.cron("minutely"))["status"]["lastScheduledTime"] == rfc3339(t0 + minutes(3))
    await assert_valid_workflows(env)


class PartitionedKube(Kube):
    """A replica whose CronWorkflow status writes stop reaching the API server (everything else still works),
    so it creates a run and dies before recording it."""

    partitioned = False

    async def replace(self, resource, body, *, namespace=None, subresource=None):
        if subresource == "status" and self.partitioned:
            raise Unavailable(0, "Unavailable", "injected: status write lost")
        return await super().replace(resource, body, namespace=namespace, subresource=subresource)


async def test_leader_crash_between_create_and_status_write_is_adopted_not_duplicated(env):
    t0 = env.clock.now()
    await env.create_cron("minutely", {"schedules": ["* * * * *"], "workflowSpec": WORKFLOW_SPEC})
    a = await env.service(identity="replica-a", elector=True, kube_class=PartitionedKube, **LEASE)
    b = await env.service(identity="replica-b", elector=True, **LEASE)
    await env.run_until(t0 + minutes(1) + timedelta(seconds=30))
    a.kube.partitioned = True
    await env.run_until(t0 + minutes(2) + timedelta(seconds=1))
    assert wf_name("minutely", t0 + minutes(2)) in await env.names()
    assert (await env.cron("minutely"))["status"]["lastScheduledTime"] == rfc3339(t0 + minutes(1))
    await a.stop(release=False)
    await env.run_until(t0 + minutes(3) + timedelta(seconds=30))
    assert await env.names() == [wf_name("minutely", t0 + minutes(m)) for m in range(4)]
    assert b.count("burstflow_cron_runs_created_total", namespace=env.namespace) == 1
    status = (await env.cron("minutely"))["status"]
    assert status["lastScheduledTime"] == rfc3339(t0 + minutes(3))


# ------------------------------------------------------------------------------------------------ optimistic writes


async def test_already_exists_on_create_is_adopted_and_never_run_again(env):
    """Argo bug 14719: after a 409 AlreadyExists the status must record the run, or it runs again once the
    Workflow is gone. The Workflow is created unlabelled, so only the create's 409 can reveal it."""
    t0 = env.clock.now()
    await env.create_cron("report", every(10))
    svc = await env.service()
    taken = wf_name("report", t0 + minutes(10))
    await env.kube.create(WORKFLOWS, {
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
        "metadata": {"name": taken, "namespace": env.namespace,
                     "annotations": {"workflows.argoproj.io/scheduled-time": rfc3339(t0 + minutes(10))}},
        "spec": WORKFLOW_SPEC})
    await env.run_until(t0 + minutes(10) + timedelta(seconds=1))
    status = (await env.cron("report"))["status"]
    assert status["lastScheduledTime"] == rfc3339(t0 + minutes(10))
    assert svc.count("burstflow_cron_runs_created_total", namespace=env.namespace) == 1
    await env.kube.delete(WORKFLOWS, taken, namespace=env.namespace)
    await env.update_cron("report", lambda c: c["metadata"].setdefault("labels", {}).update(touched="yes"))
    await env.run_until(t0 + minutes(15))
    with pytest.raises(NotFound):
        await env.kube.get(WORKFLOWS, taken, namespace=env.namespace)
    assert svc.count("burstflow_cron_runs_created_total", namespace=env.namespace) == 1


class RacingKube(Kube):
    """The runner's gateway, with another writer updating the CronWorkflow's status just before the runner's first
    status write lands (a real interleaving over HTTP, forced to happen every time)."""

    race: Kube | None = None
    raced = False

    async def replace(self, resource, body, *, namespace=None, subresource=None):
        if subresource == "status" and not RacingKube.raced and RacingKube.race is not None:
            RacingKube.raced = True
            name = body["metadata"]["name"]
            fresh = await RacingKube.race.get(resource, name, namespace=namespace)
            fresh.setdefault("status", {})["succeeded"] = 7
            await RacingKube.race.replace(resource, fresh, namespace=namespace, subresource="status")
        return await super().replace(resource, body, namespace=namespace, subresource=subresource)


async def test_status_conflict_is_retried_without_overwriting_the_newer_status(env):
    t0 = env.clock.now()
    await env.create_cron("billing", every(10))
    RacingKube.race, RacingKube.raced = env.kube, False
    await env.service(kube_class=RacingKube)
    await env.run_until(t0 + timedelta(seconds=1))
    assert RacingKube.raced
    status = (await env.cron("billing"))["status"]
    assert status["succeeded"] == 7
    assert status["lastScheduledTime"] == rfc3339(t0)
    assert [ref["name"] for ref in status["active"]] == [wf_name("billing", t0)]
    assert await env.names() == [wf_name("billing", t0)]


class RecordingKube(Kube):
    """The runner's gateway, recording the order in which Workflow creates and CronWorkflow status writes start."""

    calls: list[str] = []

    async def create(self, resource, body, *, namespace=None, dry_run=False):
        if resource == WORKFLOWS:
            RecordingKube.calls.append("create")
        return await super().create(resource, body, namespace=namespace, dry_run=dry_run)

    async def replace(self, resource, body, *, namespace=None, subresource=None):
        if resource == CRON_WORKFLOWS and subresource == "status":
            RecordingKube.calls.append("status")
        return await super().replace(resource, body, namespace=namespace, subresource=subresource)


async def test_a_burst_of_due_runs_is_created_once_each_and_every_status_records_its_run(env):
    """24 runs due at once with 4 workers (creates go out before most status writes, see CronRunner._worker; how
    much that lowers the lag is measured in benchmarks/, not here): each run is created exactly once and every
    CronWorkflow's status records it, whatever the order in which the server answers and the watch delivers."""
    t0 = env.clock.now()
    names = [f"burst-{i:02d}" for i in range(24)]
    for name in names:
        await env.create_cron(name, every(10))
    svc = await env.service(kube_class=RecordingKube)  # workers=4; every CronWorkflow runs at t0
    RecordingKube.calls = []
    await env.run_until(t0 + minutes(10) + timedelta(seconds=1))
    assert RecordingKube.calls.count("create") == 24
    # Exactly once, and every status records its run.
    assert svc.count("burstflow_cron_runs_created_total", namespace=env.namespace) == 48
    for name in names:
        status = (await env.cron(name))["status"]
        assert status["lastScheduledTime"] == rfc3339(t0 + minutes(10))
        assert [ref["name"] for ref in status["active"]] == [wf_name(name, t0), wf_name(name, t0 + minutes(10))]
    assert len(await env.names()) == 48


class EchoFirstKube(Kube):
    """The runner's gateway, with each Workflow create answered only after the watch has delivered the new
    Workflow (a real ordering over HTTP, forced every time). With `steal`, another client creates the same name
    first and the runner's create then fails with 422, as a create rejected by validation would."""

    runner: CronRunner | None = None
    steal: Kube | None = None

    async def _delivered(self, namespace: str, name: str) -> None:
        for _ in range(2000):
            if (namespace, name) in EchoFirstKube.runner.workflows.cache:
                return
            await asyncio.sleep(0.001)
        raise AssertionError(f"the watch never delivered {name}")

    async def create(self, resource, body, *, namespace=None, dry_run=False):
        if resource != WORKFLOWS:
            return await super().create(resource, body, namespace=namespace, dry_run=dry_run)
        obj = json.loads(body) if isinstance(body, bytes) else body  # a prepared run's body comes encoded
        name = obj["metadata"]["name"]
        if EchoFirstKube.steal is not None:
            await EchoFirstKube.steal.create(WORKFLOWS, copy.deepcopy(obj), namespace=namespace)
            await self._delivered(namespace, name)
            raise Invalid(422, "Invalid", f"injected: Workflow {name!r} rejected")
        created = await super().create(resource, body, namespace=namespace, dry_run=dry_run)
        await self._delivered(namespace, name)
        return created


async def test_a_created_workflow_seen_on_the_watch_before_its_response_is_recorded_once(env):
    """The watch delivers each new Workflow before its create returns: each run is still created once, recorded in
    its CronWorkflow's status, and nothing is reported as an error."""
    t0 = env.clock.now()
    env.clock.set(t0 + minutes(5))  # nothing is due while the service starts, before the gateway knows its runner
    names = [f"echo-{i}" for i in range(6)]
    for name in names:
        await env.create_cron(name, every(10))
    EchoFirstKube.steal = None
    svc = await env.service(kube_class=EchoFirstKube)
    EchoFirstKube.runner = svc.runner
    await env.run_until(t0 + minutes(10) + timedelta(seconds=1))
    assert await env.names() == sorted(wf_name(name, t0 + minutes(10)) for name in names)
    assert svc.count("burstflow_cron_runs_created_total", namespace=env.namespace) == len(names)
    for name in names:
        cron = await env.cron(name)
        assert cron["status"]["lastScheduledTime"] == rfc3339(t0 + minutes(10))
        assert [ref["name"] for ref in cron["status"]["active"]] == [wf_name(name, t0 + minutes(10))]
        assert cron["status"]["conditions"] == []
        assert [e for e in await env.events(name) if e["type"] == "Warning"] == []
        # Held once: the child the runner records is the watch's cached object, not a second copy from the response.
        workflow = wf_name(name, t0 + minutes(10))
        assert svc.runner._children[(env.namespace, name)][workflow] is svc.runner.workflows.cache[(env.namespace, workflow)]


async def test_a_workflow_seen_during_a_create_that_failed_is_still_decided_again(env):
    """An ADDED event held back while the create was in flight is only accounted for by a create that succeeded
    or was adopted; when the create fails, the CronWorkflow is decided again as for any change to its Workflows,
    so the Workflow another client created shows up in `status.active` at once."""
    t0 = env.clock.now()
    env.clock.set(t0 + minutes(5))
    await env.create_cron("taken", every(10))
    svc = await env.service(kube_class=EchoFirstKube)
    EchoFirstKube.runner, EchoFirstKube.steal = svc.runner, env.kube
    try:
        await env.run_until(t0 + minutes(10) + timedelta(seconds=1))
    finally:
        EchoFirstKube.steal = None
    assert svc.count("burstflow_cron_submission_failures_total", namespace=env.namespace) == 1
    assert [e["reason"] for e in await env.events("taken")].count("SubmissionError") == 1
    status = (await env.cron("taken"))["status"]
    assert [ref["name"] for ref in status["active"]] == [wf_name("taken", t0 + minutes(10))]
    assert status["failed"] == 1 and condition({"status": status}, "SubmissionError") is not None


class FaultingCreateKube(Kube):
    """The runner's gateway, whose first Workflow create is answered as kube-apiserver 1.24 sometimes answers
    concurrent creates: 422 with an "internal error" from evaluating a CRD validation rule, the object not stored
    (seen in benchmarks/cron_scale.py against the harness; the same create then succeeds)."""

    faults = 0

    async def create(self, resource, body, *, namespace=None, dry_run=False):
        if resource == WORKFLOWS and FaultingCreateKube.faults:
            FaultingCreateKube.faults -= 1
            name = body["metadata"]["name"]
            raise error_from_status(422, {  # the shape of the real server's answer, through the gateway's mapping
                "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Invalid", "code": 422,
                "message": f'Workflow.argoproj.io "{name}" is invalid: spec.templates[0]: Internal error: internal '
                           "error: runtime error: index out of range [1] with length 1 evaluating rule: at most one "
                           "template type may be defined",
                "details": {"name": name, "group": "argoproj.io", "kind": "Workflow", "causes": [
                    {"reason": "InternalError", "field": "spec.templates[0]"}]}})
        return await super().create(resource, body, namespace=namespace, dry_run=dry_run)


async def test_a_create_the_api_server_fails_with_an_internal_error_is_retried_not_lost(env):
    """A 422 "internal error" is the API server's fault, not a verdict on the Workflow: the run is decided again
    after the error back-off and created once under its own name; no SubmissionError, no failed run."""
    t0 = env.clock.now()
    env.clock.set(t0 + minutes(5))  # the first run due is t0 + 10 min, the one the fault hits
    await env.create_cron("flaky", every(10))
    FaultingCreateKube.faults = 1
    try:
        svc = await env.service(kube_class=FaultingCreateKube)
        await env.run_until(t0 + minutes(10) + timedelta(seconds=30))
    finally:
        FaultingCreateKube.faults = 0
    assert await env.names() == [wf_name("flaky", t0 + minutes(10))]
    assert svc.count("burstflow_cron_submission_failures_total", namespace=env.namespace) == 0
    status = (await env.cron("flaky"))["status"]
    assert [ref["name"] for ref in status["active"]] == [wf_name("flaky", t0 + minutes(10))]
    assert status.get("failed", 0) == 0 and condition({"status": status}, "SubmissionError") is None
    assert [e["reason"] for e in await env.events("flaky")].count("SubmissionError") == 0


# ------------------------------------------------------------------------------------------------ spec errors


@pytest.mark.parametrize(
    "change, field",
    [
        ({"schedules": ["61 * * * *"]}, "spec.schedules[0]"),
        ({"timezone": "Mars/Olympus_Mons"}, "spec.timezone"),
        ({"when": "{{= cronworkflow.failed <<< 3 }}"}, "spec.when"),
        ({"stopStrategy": {"expression": "cronworkflow.failed >="}}, "spec.stopStrategy"),
    ],
    ids=["minute out of range", "unknown timezone", "unparseable when", "unparseable stop expression"],
)
async def test_invalid_spec_sets_a_condition_and_event_while_others_keep_running(env, change, field):
    t0 = env.clock.now()
    await env.create_cron("broken", every(10, **change))
    await env.create_cron("healthy", every(10))
    svc = await env.service()
    await env.run_until(t0 + minutes(10) + timedelta(seconds=1))
    broken = await env.cron("broken")
    spec_error = condition(broken, "SpecError")
    assert spec_error is not None and field in spec_error["message"], spec_error
    warnings = [e for e in await env.events("broken") if e["reason"] == "SpecError"]
    assert len(warnings) == 1 and warnings[0]["type"] == "Warning" and field in warnings[0]["message"]
    assert await env.names("broken") == []
    assert await env.names("healthy") == [wf_name("healthy", t0), wf_name("healthy", t0 + minutes(10))]
    assert svc.count("burstflow_cron_spec_errors") == 1
    # Fixing the spec clears the condition and the CronWorkflow runs from its next tick on.
    await env.update_cron("broken", lambda c: c.__setitem__("spec", every(10)))
    await env.run_until(t0 + minutes(20) + timedelta(seconds=1))
    assert condition(await env.cron("broken"), "SpecError") is None
    assert await env.names("broken") == [wf_name("broken", t0 + minutes(20))]
    assert svc.count("burstflow_cron_spec_errors") == 0


# ------------------------------------------------------------------------------------------------ suspend, history


@pytest.mark.parametrize("deadline, late", [(None, False), (600, True), (240, False)],
                         ids=["no deadline: nothing late", "deadline 600 s covers 10:00 at 10:05: it runs late",
                              "deadline 240 s passed at 10:05: dropped"])
async def test_resume_runs_the_most_recent_suspended_time_within_the_deadline(env, deadline, late):
    """Timeline (t0 = 00): run at 00; suspended at 01; 10 is skipped; resumed at 05 past 10. Kubernetes' and Argo's
    rule: the most recent suspended time runs at once if `now - time <= startingDeadlineSeconds`."""
    t0 = env.clock.now()
    await env.create_cron("backup", every(10, **({} if deadline is None else {"startingDeadlineSeconds": deadline})))
    svc = await env.service()
    await env.run_until(t0 + minutes(1))
    await env.update_cron("backup", lambda c: c["spec"].__setitem__("suspend", True))
    await env.run_until(t0 + minutes(15))
    assert await env.names() == [wf_name("backup", t0)]
    assert svc.count("burstflow_cron_runs_skipped_total", reason="suspended") == 1
    await env.update_cron("backup", lambda c: c["spec"].__setitem__("suspend", False))
    expected = [wf_name("backup", t0)] + ([wf_name("backup", t0 + minutes(10))] if late else [])
    assert await env.names() == expected
    await env.run_until(t0 + minutes(20) + timedelta(seconds=1))
    assert await env.names() == expected + [wf_name("backup", t0 + minutes(20))]


@pytest.mark.parametrize("deadline, late", [(600, True), (None, False), (120, False)],
                         ids=["deadline 600 s: blocked 10 runs when the 00 run ends at 13",
                              "no deadline: never late", "deadline 120 s passed at 13: dropped"])
async def test_forbid_blocked_time_runs_late_when_the_active_run_ends(env, deadline, late):
    t0 = env.clock.now()
    extra = {} if deadline is None else {"startingDeadlineSeconds": deadline}
    await env.create_cron("etl", every(10, concurrencyPolicy="Forbid", **extra))
    svc = await env.service()
    await env.run_until(t0 + minutes(13))
    assert await env.names() == [wf_name("etl", t0)]
    assert svc.count("burstflow_cron_runs_skipped_total", reason="forbid") == 1
    await env.finish(wf_name("etl", t0), "Succeeded")
    expected = [wf_name("etl", t0)] + ([wf_name("etl", t0 + minutes(10))] if late else [])
    assert await env.names() == expected
    status = (await env.cron("etl"))["status"]
    assert status["lastScheduledTime"] == rfc3339(t0 + minutes(10) if late else t0)
    if late:
        [late_run] = [w for w in await env.workflows() if w["metadata"]["name"] == expected[-1]]
        assert late_run["metadata"]["annotations"]["workflows.argoproj.io/scheduled-time"] == rfc3339(
            t0 + minutes(10))


async def test_forbid_counts_a_shut_down_run_as_active_until_it_finishes(env):
    t0 = env.clock.now()
    await env.create_cron("etl", every(10, concurrencyPolicy="Forbid"))
    await env.service()
    await env.run_until(t0 + minutes(5))
    await env.kube.patch(WORKFLOWS, wf_name("etl", t0), {"spec": {"shutdown": "Stop"}}, namespace=env.namespace)
    await env.run_until(t0 + minutes(10) + timedelta(seconds=1))
    assert await env.names() == [wf_name("etl", t0)]
    await env.finish(wf_name("etl", t0), "Failed")
    await env.run_until(t0 + minutes(20) + timedelta(seconds=1))
    assert await env.names() == [wf_name("etl", t0), wf_name("etl", t0 + minutes(20))]


async def test_stop_strategy_stops_as_soon_as_a_child_fails(env):
    """Issue 9: counted failure -> Stopped, label, condition and Event at once, not at the next scheduled time."""
    t0 = env.clock.now()
    await env.create_cron("flaky", {"schedules": ["0 * * * *"], "workflowSpec": WORKFLOW_SPEC,
                                    "stopStrategy": {"expression": "cronworkflow.failed >= 1"}})
    await env.service()
    await env.run_until(t0 + minutes(5))
    await env.finish(wf_name("flaky", t0), "Failed")
    assert env.clock.now() == t0 + minutes(5)
    cron = await env.cron("flaky")
    assert (cron["status"]["phase"], cron["status"]["failed"]) == ("Stopped", 1)
    assert cron["metadata"]["labels"]["cronworkflows.argoproj.io/completed"] == "true"
    assert "cronworkflow.failed >= 1" in condition(cron, "Completed")["message"]
    assert [e["reason"] for e in await env.events("flaky")].count("Stopped") == 1


async def test_runaway_when_is_a_when_error_and_others_keep_running(env):
    """Issue 12 item 9: a `when` over the CEL iteration budget is reported like any `when` error (SubmissionError
    condition, Event, metric) with a short message, and the other CronWorkflows keep their schedule."""
    t0 = env.clock.now()
    items = ", ".join(str(i) for i in range(200))
    runaway = f"{{{{= [{items}].all(a, [{items}].all(b, [{items}].all(c, a + b + c >= 0))) }}}}"
    await env.create_cron("runaway", every(10, when=runaway))
    await env.create_cron("healthy", every(10))
    svc = await env.service()
    await env.run_until(t0 + minutes(10) + timedelta(seconds=1))
    message = ("run policy error: spec.when: iteration budget exceeded (at most 9999 comprehension iterations)")
    cron = await env.cron("runaway")
    assert condition(cron, "SubmissionError")["message"] == message
    assert cron["status"]["failed"] == 2
    assert [e["message"] for e in await env.events("runaway") if e["reason"] == "SubmissionError"] == [message] * 2
    assert svc.count("burstflow_cron_submission_failures_total", namespace=env.namespace) == 2
    assert await env.names("runaway") == []
    assert await env.names("healthy") == [wf_name("healthy", t0), wf_name("healthy", t0 + minutes(10))]


async def test_history_limits_delete_the_oldest_finished_workflows(env):
    t0 = env.clock.now()
    await env.create_cron("ci", every(10, successfulJobsHistoryLimit=2, failedJobsHistoryLimit=1))
    await env.service()
    phases = ["Succeeded", "Failed", "Succeeded", "Failed", "Succeeded", "Succeeded"]
    for i, phase in enumerate(phases):
        await env.run_until(t0 + minutes(10 * i) + timedelta(seconds=1))
        await env.finish(wf_name("ci", t0 + minutes(10 * i)), phase)
    await env.run_until(t0 + minutes(55))
    kept = await env.names()
    assert kept == [wf_name("ci", t0 + minutes(m)) for m in (30, 40, 50)]
    status = (await env.cron("ci"))["status"]
    assert (status["succeeded"], status["failed"]) == (4, 2)


# ------------------------------------------------------------------------------------------------ the service


async def test_service_serves_metrics_and_healthz_and_takes_the_lease(env, caplog):
    import aiohttp

    caplog.set_level(logging.INFO, logger="burstflow.cron")
    await env.create_cron("nightly", every(10))
    settings = CronSettings(namespace=env.namespace, lease_namespace=env.namespace, identity="solo",
                            metrics_host="127.0.0.1", metrics_port=0, workers=2)
    kube = await Kube.connect(env.kubeconfig, clock=env.clock)
    env.kubes.append(kube)
    registry = CollectorRegistry()
    stop = asyncio.Event()
    ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(settings, clock=env.clock, kube=kube, registry=registry, stop=stop,
                                     on_ready=ready.set_result))
    port = await asyncio.wait_for(ready, 10)
    for _ in range(200):
        await env.clock.settle()
        if registry.get_sample_value("burstflow_cron_runs_created_total", {"namespace": env.namespace}):
            break
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
            assert response.status == 200
        async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
            text = await response.text()
    assert 'burstflow_leader_is_leader{component="cron"} 1.0' in text
    assert "burstflow_cron_workflows 1.0" in text
    assert f'burstflow_cron_runs_created_total{{namespace="{env.namespace}"}} 1.0' in text
    # Log lines about one CronWorkflow carry the field names both services use (burstflow.logs).
    [created] = [r for r in caplog.records if r.getMessage() == "run created"]
    assert {key: context(created)[key] for key in ("namespace", "name", "kind")} == {
        "namespace": env.namespace, "name": "nightly", "kind": "CronWorkflow"}
    assert context(created)["scheduled"].endswith("Z")
    assert "burstflow_cron_scheduling_lag_seconds_bucket" in text
    lease = await env.kube.get(LEASES, "burstflow-cron", namespace=env.namespace)
    assert lease["spec"]["holderIdentity"] == "solo"
    stop.set()
    assert await asyncio.wait_for(task, 10) == 0
    released = await env.kube.get(LEASES, "burstflow-cron", namespace=env.namespace)
    assert released["spec"]["holderIdentity"] == ""


async def test_the_young_gc_threshold_is_raised_while_runners_run_and_restored_after_the_last(env):
    """The collector's setting is the process's: raised while any runner runs, put back when the last one stops."""
    before = gc.get_threshold()
    a = await env.service(identity="replica-a")
    b = await env.service(identity="replica-b")
    assert gc.get_threshold() == (max(GC_YOUNG_THRESHOLD, before[0]), *before[1:])
    await a.stop()
    assert gc.get_threshold()[0] == max(GC_YOUNG_THRESHOLD, before[0])
    await b.stop()
    assert gc.get_threshold() == before
