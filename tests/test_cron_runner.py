"""The cron runner against a real API endpoint (the local ApiSim, or a cluster via BURSTFLOW_E2E_KUBECONFIG), with
Argo's full Workflow CRD and our CronWorkflow CRD installed, driven through simulated hours with a FakeClock."""
from __future__ import annotations

import asyncio
import copy
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import jsonschema
import pytest
import yaml
from prometheus_client import CollectorRegistry

from burstflow.clock import FakeClock
from burstflow.kube import CRDS, CRON_WORKFLOWS, EVENTS, WORKFLOWS, AlreadyExists, Kube, NotFound
from cron.metrics import CronMetrics
from cron.runner import CronLeaderElector, CronRunner
from cron.settings import CronSettings

pytestmark = pytest.mark.kube

ROOT = Path(__file__).resolve().parent.parent
SHARED_CRDS = Path(__file__).resolve().parent.parent.parent / "shared" / "fixtures" / "argo-crds" / "full"
CRON_CRD = ROOT / "manifests" / "base" / "crds" / "cronworkflows.burstflow.io.yaml"
SEED_FILE = ROOT / "policies" / "cronworkflow-seed.yaml"
CRON_LABEL = "workflows.argoproj.io/cron-workflow"

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

_CRD_CACHE: dict[Path, list[dict]] = {}


def _crds(path: Path) -> list[dict]:
    """CRD documents of a file, parsed once per session (the full Argo CRDs are ~3 MB of YAML each)."""
    if path not in _CRD_CACHE:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        _CRD_CACHE[path] = [doc for doc in yaml.load_all(path.read_text(), Loader=loader) if doc]
    return copy.deepcopy(_CRD_CACHE[path])


_SCHEMA_CACHE: dict[str, jsonschema.protocols.Validator] = {}


def workflow_validator():
    """jsonschema validator for Argo's full Workflow schema (the test's own check, besides the sim's)."""
    if "wf" not in _SCHEMA_CACHE:
        crd = _crds(SHARED_CRDS / "workflows.yaml")[0]
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
    if schema.get("x-kubernetes-preserve-unknown-fields") and "type" not in schema:
        pass
    return out


async def _apply_crd(kube: Kube, crd: dict) -> None:
    try:
        await kube.create(CRDS, crd)
    except AlreadyExists:
        current = await kube.get(CRDS, crd["metadata"]["name"])
        crd["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        await kube.replace(CRDS, crd)


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

    def __init__(self, kube: Kube, kube_factory, clock: FakeClock, namespace: str, sim) -> None:
        self.kube = kube
        self.kube_factory = kube_factory
        self.clock = clock
        self.namespace = namespace
        self.sim = sim
        self.services: list[Service] = []

    async def service(self, *, identity: str = "replica-a", elector: bool = False, kube_class=Kube,
                      **settings) -> Service:
        kube = await kube_class.connect(self.kube.kubeconfig_path, clock=self.clock)
        self.env_kubes.append(kube)
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

    async def run_until(self, when: datetime) -> None:
        await self.clock.run_until(when, idle=self.idle)

    async def create_cron(self, name: str, spec: dict, **metadata) -> dict:
        body = {"apiVersion": "burstflow.io/v1alpha1", "kind": "CronWorkflow",
                "metadata": {"name": name, "namespace": self.namespace, **metadata}, "spec": spec}
        created = await self.kube.create(CRON_WORKFLOWS, body)
        await self.settle()
        return created

    async def cron(self, name: str) -> dict:
        return await self.kube.get(CRON_WORKFLOWS, name, namespace=self.namespace)

    async def update_cron(self, name: str, change) -> dict:
        cron = await self.cron(name)
        change(cron)
        updated = await self.kube.replace(CRON_WORKFLOWS, cron)
        await self.settle()
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
        await self.kube.patch(WORKFLOWS, name, {"status": {"phase": phase, "startedAt": stamp, "finishedAt": stamp}},
                              namespace=self.namespace)
        await self.settle()

    async def events(self, name: str) -> list[dict]:
        listing = await self.kube.list(EVENTS, namespace=self.namespace)
        return [e for e in listing["items"] if e["involvedObject"].get("name") == name]


def wf_name(cron: str, when: datetime) -> str:
    return f"{cron}-{int(when.timestamp())}"


def rfc3339(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
async def env(kube, kube_factory, kubeconfig, namespace, _local_sim):
    if not CRON_CRD.is_file():
        pytest.fail(f"{CRON_CRD} is missing (the CronWorkflow CRD)")
    for path in (SHARED_CRDS / "workflows.yaml", CRON_CRD):
        for crd in _crds(path):
            await _apply_crd(kube, crd)
    clock = FakeClock(start_time())
    kube.kubeconfig_path = kubeconfig
    environment = Env(kube, kube_factory, clock, namespace, _local_sim)
    environment.env_kubes = []
    try:
        yield environment
    finally:
        for svc in environment.services:
            await svc.stop()
        for client in environment.env_kubes:
            await client.close()


async def assert_valid_workflows(env: Env) -> None:
    validator = workflow_validator()
    for workflow in await env.workflows():
        errors = sorted(validator.iter_errors(workflow), key=str)
        assert not errors, f"{workflow['metadata']['name']}: {errors[0].message} at {list(errors[0].path)}"
