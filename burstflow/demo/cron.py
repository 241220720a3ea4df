"""`make demo`, cron part: the cron service scheduling the seed CronWorkflow on a local API endpoint, hours in seconds.

A FakeClock drives both the ApiSim and the runner; the demo plays Argo's workflow controller by ending every
created Workflow as Failed, so the seed's `stopStrategy` (`failed >= 10`) stops it after ten runs, while its `when`
gate (3600 s since the last run) skips the ticks in between.
"""
from __future__ import annotations

import asyncio
import logging
import sys
import tempfile
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TextIO

import yaml
from prometheus_client import CollectorRegistry

from burstflow import data, logs
from burstflow.apisim import ApiSim
from burstflow.clock import FakeClock
from burstflow.kube import CRDS, CRON_WORKFLOWS, NAMESPACES, WORKFLOWS, Kube
from burstflow.cron.metrics import CronMetrics
from burstflow.cron.runner import CronRunner
from burstflow.cron.settings import CronSettings

# Package data (burstflow.data): the installed package reads its own CRD and example CronWorkflow.
SEED = "cronworkflow-seed.yaml"
CRON_CRD = "cronworkflows.burstflow.io.yaml"
# The demo only needs Argo's Workflow resource to be served: a minimal CRD (schema-less, as Argo's "minimal" one).
WORKFLOW_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "workflows.argoproj.io"},
    "spec": {"group": "argoproj.io", "scope": "Namespaced",
             "names": {"kind": "Workflow", "listKind": "WorkflowList", "plural": "workflows", "singular": "workflow"},
             "versions": [{"name": "v1alpha1", "served": True, "storage": True,
                           "schema": {"openAPIV3Schema": {"type": "object",
                                                          "x-kubernetes-preserve-unknown-fields": True}}}]},
}
NAMESPACE = "demo"
START = datetime(2026, 3, 2, 9, 14, 30, tzinfo=timezone.utc)


class _Recorder(logging.Handler):
    """Collects the runner's structured log records (created / skipped / stopped) for the printout."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[tuple[str, dict]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.getMessage(), dict(logs.context(record))))


async def run_cron_demo(*, hours: float = 11.0, out: TextIO | None = None, seed: Path | None = None) -> dict:
    """Run the service on the seed CronWorkflow for `hours` of simulated time; print created and skipped runs.

    Returns a summary: `created` (Workflow names), `skipped` (reason -> count), `phase` and `condition` (the
    CronWorkflow's final phase and Completed message).
    """

    out = out or sys.stdout
    seed = seed or data.example(SEED)
    clock = FakeClock(START)
    sim = ApiSim(clock=clock)
    await sim.start()
    recorder = _Recorder()
    cron_log = logging.getLogger("burstflow.cron")
    saved = (cron_log.level, cron_log.propagate)
    cron_log.setLevel(logging.INFO)
    cron_log.propagate = False
    cron_log.addHandler(recorder)
    runner = None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            kubeconfig = sim.write_kubeconfig(Path(tmp) / "kubeconfig")
            async with await Kube.connect(str(kubeconfig), clock=clock) as kube:
                for crd in _load(data.crd_text(CRON_CRD)) + [WORKFLOW_CRD]:
                    await kube.create(CRDS, crd)
                await kube.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace",
                                               "metadata": {"name": NAMESPACE}})
                cron = yaml.safe_load(seed.read_text())
                cron["metadata"]["namespace"] = NAMESPACE
                name = cron["metadata"]["name"]
                await kube.create(CRON_WORKFLOWS, cron)
                print(f"{seed.name} -> {NAMESPACE}/{name}; "
                      f"simulating {hours:g} h from {START:%Y-%m-%d %H:%M:%S}Z (every run ends Failed)", file=out)
                settings = CronSettings(namespace=NAMESPACE, leader_election=False, workers=2)
                runner = CronRunner(kube=kube, clock=clock, settings=settings,
                                    metrics=CronMetrics(CollectorRegistry()))

                task = asyncio.get_running_loop().create_task(runner.run())
                ended: set[str] = set()
                end = START + timedelta(hours=hours)
                step = START
                printed = 0
                pending: Counter[str] = Counter()
                while step < end:
                    step = min(end, step + timedelta(minutes=30))
                    await clock.run_until(step, idle=runner.idle)
                    for workflow in (await kube.list(WORKFLOWS, namespace=NAMESPACE))["items"]:
                        wf = workflow["metadata"]["name"]
                        if wf not in ended:
                            ended.add(wf)
                            stamp = clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")
                            await kube.patch(WORKFLOWS, wf, {"status": {"phase": "Failed", "startedAt": stamp,
                                                                        "finishedAt": stamp}}, namespace=NAMESPACE)
                    await clock.settle(idle=runner.idle)
                    printed = _print_new(recorder.records, printed, pending, out)
                _flush(pending, out)
                final = await kube.get(CRON_WORKFLOWS, name, namespace=NAMESPACE)
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
    finally:
        cron_log.removeHandler(recorder)
        cron_log.setLevel(saved[0])
        cron_log.propagate = saved[1]
        await sim.stop()
    created = [f["workflow"] for msg, f in recorder.records if msg == "run created"]
    skipped = Counter(f["reason"] for msg, f in recorder.records if msg == "run skipped")
    status = final.get("status") or {}
    completed = next((c["message"] for c in status.get("conditions") or [] if c.get("type") == "Completed"), None)
    print(f"created {len(created)} Workflows; skipped: "
          + ", ".join(f"{reason} {count}" for reason, count in sorted(skipped.items()))
          + f"; phase {status.get('phase') or '-'}, failed {status.get('failed', 0)}", file=out)
    return {"created": created, "skipped": dict(skipped), "phase": status.get("phase"), "condition": completed}


def _flush(pending: Counter, out: TextIO) -> None:
    if pending:
        print("        then skipped " + ", ".join(f"{n} tick(s): {r}" for r, n in sorted(pending.items())), file=out)
        pending.clear()


def _print_new(records: list[tuple[str, dict]], start: int, pending: Counter, out: TextIO) -> int:
    """Print created runs and stops one per line; collapse the skips between them into one line per gap."""

    def flush() -> None:
        _flush(pending, out)

    for message, fields in records[start:]:
        if message == "run skipped":
            pending[fields["reason"]] += 1
        elif message == "run created":
            flush()
            when = datetime.fromisoformat(fields["scheduled"])
            print(f"  {when:%H:%M} created {fields['workflow']}"
                  + ("  (*/3 and */5 coincide at :15: one run)" if when.minute == 15 else ""), file=out)
        elif message == "stopped":
            flush()
            print(f"  stopped by its stop strategy: {fields.get('expression')}", file=out)
    return len(records)


def _load(text: str) -> list[dict]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return [doc for doc in yaml.load_all(text, Loader=loader) if doc]
