"""Property: cron decisions depend on stored state and `now` only. A runner restarted at every step creates exactly
the Workflows (names and count) of a runner that never restarted, over random schedules, concurrency policies,
deadlines, `when`/stop expressions, suspend/resume and child outcomes (issue 9).

Two namespaces get the same CronWorkflows; one runner per namespace, both on one FakeClock, so every step happens at
the same simulated instant for both. The `steady` runner runs throughout; the `restarted` one is replaced by a fresh
process (new caches, nothing in memory) after every step. Each step moves time forward by a random amount, then
applies the same random actions to both namespaces (finish a run with a random phase, suspend, resume). Seeded, so a
failure replays exactly; the seed and step are in the assertion message.
"""
from __future__ import annotations

import random
from datetime import timedelta

import pytest
from prometheus_client import CollectorRegistry

from burstflow.kube import CRON_WORKFLOWS, NAMESPACES, WORKFLOWS, NotFound
from burstflow.cron.metrics import CronMetrics
from burstflow.cron.runner import CronRunner
from burstflow.cron.settings import CronSettings
from burstflow.cron.workflow import CRON_LABEL
from tests.test_cron_runner import WORKFLOW_SPEC, Service, env  # noqa: F401  (the `env` fixture)

pytestmark = pytest.mark.kube

SEEDS = (7, 2026)
CASES = 8  # CronWorkflows per namespace
STEPS = 16  # steps per seed; the restarted runner is replaced after each
SCHEDULES = (["*/5 * * * *"], ["*/7 * * * *"], ["0,20,40 * * * *"], ["*/3 * * * *", "*/5 * * * *"], ["*/11 * * * *"])
POLICIES = ("Allow", "Forbid", "Forbid", "Replace")
DEADLINES = (None, 0, 120, 600, 1800)
WHENS = (None, None, "{{= cronworkflow.failed < 3 }}",
         "{{= cronworkflow.lastScheduledTime == nil || (now() - cronworkflow.lastScheduledTime).Seconds() > 600 }}")
STOPS = (None, None, "cronworkflow.failed >= 3")
PHASES = ("Succeeded", "Failed", "Error")


def random_spec(rng: random.Random) -> dict:
    spec = {"schedules": rng.choice(SCHEDULES), "concurrencyPolicy": rng.choice(POLICIES),
            "workflowSpec": WORKFLOW_SPEC}
    deadline = rng.choice(DEADLINES)
    if deadline is not None:
        spec["startingDeadlineSeconds"] = deadline
    when = rng.choice(WHENS)
    if when is not None:
        spec["when"] = when
    stop = rng.choice(STOPS)
    if stop is not None:
        spec["stopStrategy"] = {"expression": stop}
    return spec


class Side:
    """One namespace and its runner."""

    def __init__(self, env, namespace: str) -> None:
        self.env = env
        self.namespace = namespace
        self.service: Service | None = None

    async def start(self) -> None:
        config = CronSettings(namespace=self.namespace, identity=self.namespace, workers=4, leader_election=False)
        runner = CronRunner(kube=self.env.kube, clock=self.env.clock, settings=config,
                            metrics=CronMetrics(CollectorRegistry()))
        self.service = Service(self.env, self.env.kube, runner)
        self.env.services.append(self.service)
        self.service.start()
        await self.env.settle()

    async def restart(self) -> None:
        await self.service.stop()
        self.env.services.remove(self.service)
        await self.start()

    async def workflows(self) -> list[dict]:
        listing = await self.env.kube.list(WORKFLOWS, namespace=self.namespace, label_selector=CRON_LABEL)
        return sorted(listing["items"], key=lambda w: w["metadata"]["name"])

    async def names(self) -> list[str]:
        return [w["metadata"]["name"] for w in await self.workflows()]


async def apply_action(side: Side, action: tuple) -> None:
    """Play Argo's workflow controller (finish a run) or a user (suspend / resume) in one namespace."""
    if action[0] == "finish":
        _, case, pick, phase = action
        mine = [w for w in await side.workflows() if w["metadata"]["labels"][CRON_LABEL] == f"case-{case}"
                and not (w.get("status") or {}).get("phase")]
        if mine:
            target = mine[pick % len(mine)]
            stamp = side.env.clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")
            await side.env.kube.patch(WORKFLOWS, target["metadata"]["name"], {"status": {
                "phase": phase, "startedAt": stamp, "finishedAt": stamp}}, namespace=side.namespace)
    else:
        _, case, suspend = action
        await side.env.kube.patch(CRON_WORKFLOWS, f"case-{case}", {"spec": {"suspend": suspend}},
                                  namespace=side.namespace)


@pytest.mark.parametrize("seed", SEEDS)
async def test_a_runner_restarted_at_every_step_creates_the_same_workflows(env, seed):
    rng = random.Random(seed)
    other = f"{env.namespace}-r"
    await env.kube.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace",
                                       "metadata": {"name": other, "labels": {"burstflow.io/test": "true"}}})
    steady, restarted = Side(env, env.namespace), Side(env, other)
    try:
        specs = [random_spec(rng) for _ in range(CASES)]
        for side in (steady, restarted):
            for case, spec in enumerate(specs):
                await env.kube.create(CRON_WORKFLOWS, {
                    "apiVersion": "burstflow.io/v1alpha1", "kind": "CronWorkflow",
                    "metadata": {"name": f"case-{case}", "namespace": side.namespace}, "spec": spec})
            await side.start()
        for step in range(STEPS):
            await env.run_until(env.clock.now() + timedelta(minutes=rng.choice((1, 2, 4, 6, 9, 13)),
                                                            seconds=rng.randrange(60)))
            actions: list[tuple] = []
            for case in range(CASES):
                if rng.random() < 0.5:
                    actions.append(("finish", case, rng.randrange(4), rng.choice(PHASES)))
                if rng.random() < 0.12:
                    actions.append(("suspend", case, rng.random() < 0.6))
            for action in actions:  # one at a time, each decided on both sides before the next
                for side in (steady, restarted):
                    await apply_action(side, action)
                await env.settle()
            await restarted.restart()
            assert await restarted.names() == await steady.names(), f"seed {seed}, step {step}, specs {specs}"
        created = await steady.names()
        assert len(created) > CASES  # the property is not vacuous: runs were created along the way
    finally:
        try:
            await env.kube.delete(NAMESPACES, other, propagation="Background")
        except NotFound:
            pass
