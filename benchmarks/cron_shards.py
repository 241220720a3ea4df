"""Cron service sharded by namespace: 100,000 CronWorkflows (by default) over 100 namespaces, a tenth due in the same
minute, scheduled by N shard processes (`--shards N --shard I`), beside one process doing it all in the same run.

Each phase gets a fresh API endpoint (the local ApiSim in its own process, preloaded straight into its store, as
`cron_scale.py` does) and then runs its service processes, each a separate OS process running one shard's
CronRunner on a shifted clock (real time, origin moved): first the baseline, one process owning every namespace
(`--shards 1`), then N processes, shard I owning the namespaces with crc32(name) % N == I (cron/shards.py). Every
process starts at a virtual 11:50; once all have decided every CronWorkflow they own, the parent picks one wall-clock
instant `--lead-seconds` ahead and every process moves its clock so that instant is 12:00 (nothing fires in
between), so start-up may take as long as it takes and the burst begins at the same instant in every shard.

Printed per shard and overall: the shard's share (namespaces, CronWorkflows, due runs), start-up time, peak resident
memory, creation lag p50/p99, service CPU per created run, and the endpoint's CPU over the burst; then the N-shard
figures as ratios to the 1-process figures of the same run. The machine's cores are printed too: the endpoint and
every shard share them, so (service CPU + endpoint CPU) / cores is a floor on the burst's wall time whatever N is.

With `--kubeconfig` the phases run against that cluster instead: namespaces of its own (created, deleted), the CRDs
installed if missing, CronWorkflows created and their status written through the API, 50 at a time. The service
processes watch cluster-wide (as a sharded installation does) and keep only the benchmark's namespaces, so other
tenants of a shared cluster are neither scheduled nor counted.

    .venv/bin/python benchmarks/cron_shards.py                    # 100,000 over 100 namespaces, 10,000 due, 2 shards
    .venv/bin/python benchmarks/cron_shards.py --shards 3 --size 20000
    .venv/bin/python benchmarks/cron_shards.py --kubeconfig /work/harness-run/kubeconfig --size 5000 --namespaces 20
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from prometheus_client import CollectorRegistry  # noqa: E402

from burstflow import kube as k  # noqa: E402
from burstflow.kube import Kube  # noqa: E402
from burstflow.logs import context as log_context  # noqa: E402
from burstflow.cron import shards as sharding  # noqa: E402
from burstflow.cron.metrics import CronMetrics  # noqa: E402
from burstflow.cron.runner import CronRunner  # noqa: E402
from burstflow.cron.settings import CronSettings  # noqa: E402
from tests.kubefixtures import ScopedKube  # noqa: E402  (also the cron shard tests' gateway)
from cron_scale import (  # noqa: E402
    ARGO_MINIMAL, CRON_CRD, DUE, START, ShiftedClock, cpu, cron_object, install_crds, load_crds, local_kubeconfig,
    memory_mib, percentile, process_cpu, seed_cluster, service_logging,
)


def namespace_of(i: int, namespaces: list[str]) -> str:
    """CronWorkflow i lives in namespace i % len(namespaces): every namespace holds the same number of due runs."""
    return namespaces[i % len(namespaces)]


def serve_sim(conn, namespaces: list[str], crons: int, due: int) -> None:
    """Child process: the local API endpoint with `crons` CronWorkflows spread over `namespaces`, preloaded straight
    into its store (no admission); sends its port, serves until told, sends the Workflow count."""
    from burstflow.apisim import ApiSim

    async def serve() -> None:
        # The history must outlast the burst's writes (10% creates + status writes) for the watches' sake.
        sim = ApiSim(history=max(1000, crons // 2))
        for crd in load_crds(CRON_CRD, ARGO_MINIMAL):
            sim.put_object("customresourcedefinitions", crd)
        for name in namespaces:
            sim.put_object("namespaces", {"metadata": {"name": name}})
        for i in range(crons):
            obj = cron_object(i, due, namespace_of(i, namespaces))
            # Stored twice: a create drops the status (as the status subresource makes the API server do).
            sim.put_object("cronworkflows.burstflow.io", obj)
            sim.put_object("cronworkflows.burstflow.io", obj)
        await sim.start()
        conn.send(sim.port)
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        conn.send(len(sim.objects("workflows.argoproj.io")))
        await sim.stop()

    logging.basicConfig(level=logging.WARNING)
    asyncio.run(serve())


def run_shard(conn, kubeconfig: str, scope: list[str], shards: int, shard: int, expected: int, workers: int,
              burst_timeout: float) -> None:
    """Child process: one shard's CronRunner. Sends ("started", figures) once it has decided everything it owns,
    waits for the wall-clock instant that is 12:00, sends ("done", figures) after its last run and idle."""
    logging.basicConfig(level=logging.WARNING)
    lags: list[float] = []
    warnings: list[str] = []

    class LagRecorder(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage() == "run created":
                lags.append(float(log_context(record)["lag_seconds"]))
            elif record.levelno >= logging.WARNING:
                warnings.append(f"{record.levelname} {record.getMessage()} {log_context(record)}")

    service_logging(LagRecorder())

    async def main() -> None:
        clock = ShiftedClock(START)
        kube = await ScopedKube.connect(kubeconfig, clock=clock)
        kube.scope = frozenset(scope)
        settings = CronSettings(leader_election=False, workers=workers, shards=shards, shard=shard)
        rss0 = memory_mib()
        runner = CronRunner(kube=kube, clock=clock, settings=settings, metrics=CronMetrics(CollectorRegistry()))
        cpu0, wall0 = cpu(), time.perf_counter()
        task = asyncio.get_running_loop().create_task(runner.run())
        try:
            while not (runner.leading and runner.idle()):
                await asyncio.sleep(0.05)
                if task.done():
                    task.result()
            conn.send(("started", {"startup_wall": time.perf_counter() - wall0, "startup_cpu": cpu() - cpu0,
                                   "rss_before": rss0, "rss_started": memory_mib(),
                                   "crons": len(runner.crons.cache)}))
            due_wall = await asyncio.get_running_loop().run_in_executor(None, conn.recv)
            # 12:00 is the wall-clock instant `due_wall` (time.time()) in every shard.
            clock.offset = DUE - datetime.fromtimestamp(due_wall, timezone.utc)
            runner._wake.set()  # noqa: SLF001 - the timer recomputes its sleep from the new time
            await asyncio.sleep(max(0.0, due_wall - time.time()))
            cpu1, wall1 = cpu(), time.perf_counter()
            while len(lags) < expected and time.perf_counter() - wall1 < burst_timeout:
                await asyncio.sleep(0.01)
            creates_wall, creates_cpu = time.perf_counter() - wall1, cpu() - cpu1
            settle = time.perf_counter() + 60
            while not runner.idle() and time.perf_counter() < settle:
                await asyncio.sleep(0.01)
            conn.send(("done", {"lags": lags, "creates_wall": creates_wall, "creates_cpu": creates_cpu,
                                "burst_cpu": cpu() - cpu1, "burst_wall": time.perf_counter() - wall1,
                                "idle": runner.idle(), "rss_peak": memory_mib("VmHWM"), "warnings": warnings[:5],
                                "warning_count": len(warnings)}))
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await kube.close()

    asyncio.run(main())


@dataclass
class Shard:
    index: int
    namespaces: int
    crons: int
    due: int
    started: dict = field(default_factory=dict)
    done: dict = field(default_factory=dict)


@dataclass
class Phase:
    shards: list[Shard]
    endpoint_cpu: float | None
    burst_wall: float
    workflows: int

    @property
    def lags(self) -> list[float]:
        return sorted(lag for s in self.shards for lag in s.done.get("lags", []))

    @property
    def service_cpu(self) -> float:
        return sum(s.done.get("burst_cpu", 0.0) for s in self.shards)

    @property
    def created(self) -> int:
        return sum(len(s.done.get("lags", [])) for s in self.shards)


async def run_phase(args, *, shards: int, namespaces: list[str], size: int, due: int, tmp: str,
                    seed: Callable | None) -> Phase:
    """One phase: a fresh endpoint (or freshly seeded namespaces), `shards` service processes, their figures."""
    spawn = multiprocessing.get_context("spawn")
    server = server_end = None
    if args.kubeconfig:
        kubeconfig = args.kubeconfig
        await seed()
    else:
        server_end, child_end = multiprocessing.Pipe()
        server = spawn.Process(target=serve_sim, args=(child_end, namespaces, size, due), daemon=True)
        server.start()
        if not await asyncio.get_running_loop().run_in_executor(None, server_end.poll, 900):
            raise RuntimeError("the API endpoint process did not start within 900 s")
        kubeconfig = local_kubeconfig(tmp, server_end.recv())
    owner = {name: sharding.shard_of(name, shards) for name in namespaces}
    table = [Shard(index=i, namespaces=sum(1 for o in owner.values() if o == i),
                   crons=sum(1 for n in range(size) if owner[namespace_of(n, namespaces)] == i),
                   due=sum(1 for n in range(due) if owner[namespace_of(n, namespaces)] == i))
             for i in range(shards)]
    loop = asyncio.get_running_loop()
    processes, ends = [], []
    try:
        for s in table:
            parent_end, child_end = multiprocessing.Pipe()
            process = spawn.Process(target=run_shard, daemon=True, args=(
                child_end, kubeconfig, namespaces, shards, s.index, s.due, args.workers, args.burst_timeout))
            process.start()
            processes.append(process)
            ends.append(parent_end)
        for s, end in zip(table, ends):
            if not await loop.run_in_executor(None, end.poll, 900):
                raise RuntimeError(f"shard {s.index} did not start within 900 s")
            _, s.started = end.recv()
        due_wall = time.time() + args.lead_seconds
        for end in ends:
            end.send(due_wall)
        await asyncio.sleep(max(0.0, due_wall - time.time()))
        endpoint0 = process_cpu(server.pid) if server else None
        wall0 = time.perf_counter()
        for s, end in zip(table, ends):
            if not await loop.run_in_executor(None, end.poll, args.burst_timeout + 120):
                raise RuntimeError(f"shard {s.index} did not finish its burst")
            _, s.done = end.recv()
        burst_wall = time.perf_counter() - wall0
        endpoint_cpu = process_cpu(server.pid) - endpoint0 if server else None
        if server is not None:
            server_end.send("stop")
            workflows = await loop.run_in_executor(None, server_end.recv)
        else:
            admin = await Kube.connect(kubeconfig)
            try:
                workflows = 0
                for name in namespaces:
                    workflows += len((await admin.list(k.WORKFLOWS, namespace=name, page_size=500))["items"])
            finally:
                await admin.close()
        return Phase(shards=table, endpoint_cpu=endpoint_cpu, burst_wall=burst_wall, workflows=workflows)
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
        if server is not None:
            server.join(timeout=10)
            if server.is_alive():
                server.terminate()


async def seed_namespaces(admin: Kube, namespaces: list[str], size: int, due: int) -> None:
    """Fresh namespaces on a real cluster, then cron_scale's seeding with CronWorkflow i in namespace_of(i)."""
    for name in namespaces:
        await admin.create(k.NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    await seed_cluster(admin, lambda i: namespace_of(i, namespaces), size, due)


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def describe(label: str, phase: Phase, cores_: int) -> dict:
    """Print a phase's per-shard and overall figures; returns the overall ones."""
    print(f"\n{label}:")
    print("  shard  namespaces  CronWorkflows  due   start-up  peak RSS  lag p50  lag p99  CPU/create  created  "
          "CPU to last create")
    for s in phase.shards:
        lags = sorted(s.done.get("lags", []))
        per = s.done.get("burst_cpu", float("nan")) / max(1, len(lags))
        print(f"  {s.index:>5}  {s.namespaces:>10}  {s.crons:>13,}  {s.due:>5,} {s.started['startup_wall']:>8.1f}s "
              f"{s.done.get('rss_peak', float('nan')):>7.0f}Mi {statistics.median(lags) if lags else float('nan'):>7.2f}s "
              f"{percentile(lags, 0.99):>7.2f}s {per * 1000:>8.2f}ms  {len(lags):>7,}  "
              f"{s.done.get('creates_cpu', float('nan')):>17.1f}s")
        if s.crons != s.started.get("crons"):
            print(f"  shard {s.index} holds {s.started.get('crons'):,} CronWorkflows, not its share {s.crons:,}",
                  file=sys.stderr)
        if s.done.get("warning_count"):
            print(f"  shard {s.index} logged {s.done['warning_count']} warnings; first: {s.done['warnings']}",
                  file=sys.stderr)
    lags = phase.lags
    startup = max(s.started["startup_wall"] for s in phase.shards)
    rss = max(s.done.get("rss_peak", float("nan")) for s in phase.shards)
    per = phase.service_cpu / max(1, phase.created)
    endpoint = phase.endpoint_cpu
    overall = {"startup": startup, "rss": rss, "p50": statistics.median(lags) if lags else float("nan"),
               "p99": percentile(lags, 0.99), "per": per, "service_cpu": phase.service_cpu, "endpoint": endpoint,
               "burst_wall": phase.burst_wall}
    floor = (phase.service_cpu + (endpoint or 0.0)) / cores_
    busiest = max(s.done.get("creates_cpu", 0.0) for s in phase.shards)
    print(f"  the busiest shard used {busiest:.1f}s of CPU from 12:00 to its last create: with a core of its own and an "
          "API that keeps up, its last run would be created about that long after 12:00")
    print(f"  overall: start-up (slowest shard) {startup:.1f}s, peak RSS (largest shard) {rss:.0f} MiB, lag p50 "
          f"{overall['p50']:.2f}s p99 {overall['p99']:.2f}s, runs created {phase.created:,} (Workflows stored "
          f"{phase.workflows:,}); burst until every shard was idle {phase.burst_wall:.1f}s")
    print(f"  CPU over the burst: service {phase.service_cpu:.1f}s in all ({per * 1000:.2f} ms per created run)"
          + (f", API endpoint {endpoint:.1f}s" if endpoint is not None else ", API server not measured (shared)")
          + f"; / {cores_} cores = {floor:.1f}s, a floor on the burst's wall time on this machine"
          + (" (from the service alone)" if endpoint is None else ""))
    return overall


async def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING)
    size, due = args.size, args.due if args.due is not None else args.size // 10
    run = uuid.uuid4().hex[:6]
    cores_ = cores()
    print(f"{size:,} CronWorkflows over {args.namespaces} namespaces ({due:,} due at {DUE:%H:%M}); baseline 1 process, "
          f"then {args.shards} shard processes; {cores_} cores shared by the API endpoint and every shard process "
          f"(os.cpu_count() {os.cpu_count()}); workers {args.workers} per process", flush=True)
    results = {}
    with tempfile.TemporaryDirectory(prefix="cron-shards-") as tmp:
        admin = await Kube.connect(args.kubeconfig) if args.kubeconfig else None
        try:
            if admin is not None:
                installed = await install_crds(admin)
                if installed:
                    print(f"installed {', '.join(installed)}")
            for count in (1, args.shards):
                namespaces = [f"bench-shards-{run}-{count}-{i:03d}" for i in range(args.namespaces)]

                async def seed(namespaces=namespaces) -> None:
                    await seed_namespaces(admin, namespaces, size, due)

                t = time.perf_counter()
                try:
                    phase = await run_phase(args, shards=count, namespaces=namespaces, size=size, due=due, tmp=tmp,
                                            seed=seed if admin is not None else None)
                finally:
                    if admin is not None:
                        for name in namespaces:
                            try:
                                await admin.delete(k.NAMESPACES, name, propagation="Background")
                            except k.NotFound:
                                pass
                label = "1 process (baseline, --shards 1)" if count == 1 else f"{count} shards (--shards {count})"
                results[count] = (describe(f"{label}; phase took {time.perf_counter() - t:.0f}s", phase, cores_),
                                  phase)
        finally:
            if admin is not None:
                await admin.close()
    one, _ = results[1]
    many, phase = results[args.shards]
    print(f"\n{args.shards} shards / 1 process, same run: start-up {many['startup'] / one['startup']:.2f}x, "
          f"peak RSS per process {many['rss'] / one['rss']:.2f}x, lag p50 {many['p50'] / one['p50']:.2f}x, "
          f"lag p99 {many['p99'] / one['p99']:.2f}x, service CPU per run {many['per'] / one['per']:.2f}x")
    print(f"goals with {args.shards} shards: start-up < 30 s {'met' if many['startup'] < 30 else 'NOT met'}, "
          f"memory < 500 MiB per process {'met' if many['rss'] < 500 else 'NOT met'}, p99 lag < 5 s "
          f"{'met' if many['p99'] < 5 else 'NOT met'}")
    server = "the API server, if it runs here," if args.kubeconfig else "the API endpoint"
    print(f"note: {cores_} cores for {server} and {args.shards} shard processes: shards speed the burst up only "
          "while a core is free for each; beyond that (service CPU + endpoint CPU) / cores bounds the wall time.")
    ok = all(p.created == due and p.workflows == due for _, p in results.values())
    if not ok:
        print("some due runs were not created exactly once (see above)", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", "--crons", dest="size", type=int, default=100_000, help="CronWorkflows")
    parser.add_argument("--due", type=int, help="CronWorkflows due at 12:00 (default: a tenth of --size)")
    parser.add_argument("--namespaces", type=int, default=100, help="namespaces the CronWorkflows are spread over")
    parser.add_argument("--shards", type=int, default=2, help="shard processes of the sharded phase")
    parser.add_argument("--kubeconfig", help="run against this cluster instead of the local API endpoint")
    parser.add_argument("--workers", type=int, default=CronSettings.workers, help="--workers of each service process")
    parser.add_argument("--lead-seconds", type=float, default=5.0,
                        help="real seconds from the last shard's start-up to the due minute")
    parser.add_argument("--burst-timeout", type=float, default=300.0, help="seconds each shard waits for its runs")
    sys.exit(asyncio.run(main(parser.parse_args())))
