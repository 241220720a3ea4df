"""Cron service at scale: 100,000 CronWorkflows (by default), a tenth of them due in the same minute.

Prints the service's start-up time (list, watch, first decision for every CronWorkflow) beside the time a bare
paged list of the same objects takes, its resident memory beside the same process before the service started, the
scheduling lag (Workflow created - scheduled time) p50/p99 of the burst, where the time goes from the due instant to
the last create, the CPU used between ticks (the scheduler must not poll), and the scheduler's cost per run as a
ratio to a bare `croniter.get_next` measured in the same run.

The API is the local endpoint (ApiSim) in a child process, preloaded straight into its store, or with
`--kubeconfig` a real cluster (a namespace of its own, created and deleted; the CronWorkflow and minimal Argo
Workflow CRDs installed if missing; CronWorkflows created and their status written through the API, 50 at a time;
Workflows counted from the API server's list). Every CronWorkflow is in steady state: it has run before
(`lastScheduledTime` at 11:30, the last-used-schedule annotation set), so the burst measures on-time scheduling.
Argo's minimal Workflow CRD (no schema) is used: validating 10,000 Workflows against the 1.3 MB schema would
measure the API server. The service runs in this process on a shifted clock (real time, origin moved): it starts at
a virtual 11:50; once it has decided every CronWorkflow the clock jumps to `--lead-seconds` before 12:00 (nothing
fires in between) and the timer is woken, so start-up may take as long as it takes without pushing the due minute.
The service prepares the due runs `--prepare-ahead` before 12:00 (its setting; 0 turns it off): the time and CPU
that takes are printed, and the CPU between ticks is measured once it is done.

    .venv/bin/python benchmarks/cron_scale.py                      # 100,000 CronWorkflows, 10,000 due
    .venv/bin/python benchmarks/cron_scale.py --size 10000         # 10,000, 1,000 due
    .venv/bin/python benchmarks/cron_scale.py --kubeconfig /work/harness-run/kubeconfig --size 5000
        [--due N] [--workers 64] [--page-size 500] [--profile startup|burst] [--py-spy PREFIX] [--trust-env]
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402
from croniter import croniter  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

from burstflow import kube as k  # noqa: E402
from burstflow.kube import Kube  # noqa: E402
from burstflow.logs import configure_logging, context as log_context  # noqa: E402
from burstflow.cron import engine  # noqa: E402
from burstflow.cron.engine import CronStatus  # noqa: E402
from burstflow.cron.metrics import CronMetrics  # noqa: E402
from burstflow.cron.runner import LIST_PAGE_SIZE, CronRunner  # noqa: E402
from burstflow.cron.settings import CronSettings  # noqa: E402
from tests.kubefixtures import create_missing_crds, load_crds  # noqa: E402

SHARED = ROOT.parent / "shared"
CRON_CRD = ROOT / "manifests" / "base" / "crds" / "cronworkflows.burstflow.io.yaml"
ARGO_MINIMAL = SHARED / "fixtures" / "argo-crds" / "minimal" / "workflows.yaml"
# The due instant, a fixed virtual noon; every CronWorkflow last ran at 11:30 (nothing fires 11:30-12:00).
DUE = datetime(2030, 6, 3, 12, 0, tzinfo=timezone.utc)
LAST_RUN = DUE - timedelta(minutes=30)
START = DUE - timedelta(minutes=10)
WORKFLOW_SPEC = {"entrypoint": "main", "templates": [{"name": "main", "container": {"image": "alpine:3.20"}}]}


class ShiftedClock:
    """Real time with a shifted origin: `now()` = wall clock + offset; sleeps are real. `jump` moves the origin."""

    def __init__(self, start: datetime | None = None, *, offset: timedelta | None = None) -> None:
        self.offset = offset if offset is not None else start - datetime.now(timezone.utc)

    def now(self) -> datetime:
        return datetime.now(timezone.utc) + self.offset

    def jump_to(self, when: datetime) -> None:
        self.offset = when - datetime.now(timezone.utc)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def monotonic(self) -> float:
        return time.monotonic()


class GcClock:
    """CPU seconds this process spent in the cyclic garbage collector (by generation) while `running`, from
    `gc.callbacks`: with 100,000 objects' worth of dicts held, a full collection walks all of them."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self.collections = [0, 0, 0]
        self.running = False
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.process_time()
        elif self.running:
            self.seconds[info["generation"]] += time.process_time() - self._started
            self.collections[info["generation"]] += 1

    def summary(self) -> str:
        return ", ".join(f"gen{g} {n:,} x = {s:.2f} s" for g, (n, s) in enumerate(zip(self.collections, self.seconds)))


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_cpu(pid: int | None) -> float:
    """CPU seconds (user + system) used so far by another process, from /proc (0.0 where there is none)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_mib(field: str = "VmRSS") -> float:
    """This process's resident memory (`VmRSS`) or its peak (`VmHWM`) in MiB, from /proc/self/status."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def schedules_for(i: int, due: int) -> list[str]:
    """The first `due` CronWorkflows fire at 12:00 (some through a second schedule, some in another zone);
    the rest are spread over other hours, so none of them fires within the measured window."""
    if i < due:
        if i % 3 == 0:
            return ["0 12 * * *", "30 6 * * *"]
        if i % 3 == 1:
            return ["0 */4 * * *"]
        return ["0 12 * * 1-5"]
    hour = [h for h in range(24) if h not in (11, 12, 13)][i % 21]
    minute = (i * 7) % 60
    if i % 2:
        return [f"{minute} {hour} * * *"]
    return [f"{minute} {hour} * * *", f"{(minute + 30) % 60} {hour} * * 0"]


@lru_cache(maxsize=None)
def schedule_key(schedules: tuple[str, ...]) -> str:
    from burstflow.cron.spec import parse_cron_workflow

    return parse_cron_workflow({
        "apiVersion": "burstflow.io/v1alpha1", "kind": "CronWorkflow", "metadata": {"name": "key"},
        "spec": {"schedules": list(schedules), "timezone": "UTC", "workflowSpec": WORKFLOW_SPEC}}).spec.schedule_key


def cron_object(i: int, due: int, namespace: str) -> dict:
    schedules = schedules_for(i, due)
    return {
        "apiVersion": "burstflow.io/v1alpha1", "kind": "CronWorkflow",
        "metadata": {"name": f"cron-{i:06d}", "namespace": namespace,
                     "annotations": {engine.LAST_USED_SCHEDULE_ANNOTATION: schedule_key(tuple(schedules))}},
        "spec": {"schedules": schedules, "timezone": "UTC", "workflowSpec": WORKFLOW_SPEC},
        "status": {"lastScheduledTime": LAST_RUN.strftime("%Y-%m-%dT%H:%M:%SZ"), "phase": "Active",
                   "succeeded": 0, "failed": 0, "active": []},
    }


def serve_sim(conn, namespace: str, crons: int, due: int) -> None:
    """Child process: the local API endpoint, preloaded straight into its store (as a restore from a backup would:
    no admission); sends its port, serves until told, sends the Workflow count."""
    from burstflow.apisim import ApiSim

    async def serve() -> None:
        # The history must outlast the burst's writes (10% creates + status writes) for the watches' sake.
        sim = ApiSim(history=max(1000, crons // 2))
        for crd in load_crds(CRON_CRD, ARGO_MINIMAL):
            sim.put_object("customresourcedefinitions", crd)
        sim.put_object("namespaces", {"metadata": {"name": namespace}})
        for i in range(crons):
            obj = cron_object(i, due, namespace)
            # Stored twice: a create drops the status (as the status subresource makes the API server do);
            # the second write replaces the object with its status.
            sim.put_object("cronworkflows.burstflow.io", obj)
            sim.put_object("cronworkflows.burstflow.io", obj)
        # The preloaded store lives as long as the endpoint: keep the cyclic GC from walking it on every full
        # collection (an artefact of the Python stand-in; kube-apiserver keeps objects in etcd and its watch cache).
        gc.collect()
        gc.freeze()
        await sim.start()
        collector = GcClock()
        collector.running = True
        conn.send(sim.port)
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        collector.running = False
        conn.send(len(sim.objects("workflows.argoproj.io", namespace)))
        conn.send(collector.summary())  # read by `measure` (a caller that only wants the count may leave it)
        await sim.stop()

    logging.basicConfig(level=logging.WARNING)
    asyncio.run(serve())


async def seed_cluster(kube: Kube, namespace: str | Callable[[int], str], crons: int, due: int) -> int:
    """Create the CronWorkflows on a real cluster (all in `namespace`, or CronWorkflow i in `namespace(i)`) and write
    their steady-state status, 50 at a time. Returns how many writes were retried: kube-apiserver 1.24 now and then
    answers 422 "internal error: runtime error: index out of range" while evaluating a CRD validation rule under
    concurrent writes (the gateway raises it as Unavailable, like a 5xx) or 429; the same write then succeeds."""
    limit = asyncio.Semaphore(50)
    retried = 0
    namespace_of = namespace if callable(namespace) else (lambda i: namespace)

    async def write(call, *args, **kwargs):
        nonlocal retried
        for attempt in range(5):
            try:
                return await call(*args, **kwargs)
            except (k.Unavailable, k.TooManyRequests):
                if attempt == 4:
                    raise
                retried += 1
                await asyncio.sleep(0.2 * (attempt + 1))

    async def one(i: int) -> None:
        obj = cron_object(i, due, namespace_of(i))
        status = obj.pop("status")
        where = obj["metadata"]["namespace"]
        async with limit:
            try:
                created = await write(kube.create, k.CRON_WORKFLOWS, obj, namespace=where)
            except k.AlreadyExists:  # a retried create whose first attempt was stored after all
                created = await kube.get(k.CRON_WORKFLOWS, obj["metadata"]["name"], namespace=where)
            await write(kube.replace, k.CRON_WORKFLOWS, {**created, "status": status}, namespace=where,
                        subresource="status")

    await asyncio.gather(*(one(i) for i in range(crons)))
    return retried


async def install_crds(kube: Kube) -> list[str]:
    """Create the CronWorkflow and minimal Argo Workflow CRDs if missing and wait until served; the names created."""
    return await create_missing_crds(kube, CRON_CRD, ARGO_MINIMAL)


def local_kubeconfig(directory: str, port: int) -> str:
    path = Path(directory) / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "bench",
        "clusters": [{"name": "bench", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "bench", "user": {"token": "bench"}}],
        "contexts": [{"name": "bench", "context": {"cluster": "bench", "user": "bench"}}],
    }))
    return str(path)


def start_py_spy(prefix: str, pids: dict[str, int | None]) -> list[tuple[str, "subprocess.Popen"]]:
    """Sample each process with py-spy (when installed) until `stop_py_spy`: `<prefix>.<name>.txt`, collapsed
    stacks (one line per stack and its sample count), for flame graphs or grep."""
    import shutil
    import subprocess

    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(exe).exists():
        print("--py-spy: py-spy is not installed (pip install py-spy)", file=sys.stderr)
        return []
    spies = []
    for name, pid in pids.items():
        if pid is None:
            continue
        out = f"{prefix}.{name}.txt"
        spies.append((out, subprocess.Popen(
            [exe, "record", "--pid", str(pid), "--rate", "250", "--nonblocking", "--format", "raw", "--output", out],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
    return spies


def stop_py_spy(spies: list[tuple[str, "subprocess.Popen"]]) -> None:
    import signal

    for _, spy in spies:
        spy.send_signal(signal.SIGINT)
    for out, spy in spies:
        spy.wait(timeout=60)
        print(f"py-spy samples of the burst: {out}", file=sys.stderr)


def percentile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


async def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING)
    size, due = args.size, args.due if args.due is not None else args.size // 10
    namespace = f"bench-cron-{uuid.uuid4().hex[:6]}"
    child = parent_end = None
    with tempfile.TemporaryDirectory(prefix="cron-bench-") as tmp:
        t = time.perf_counter()
        if args.kubeconfig:
            kubeconfig = args.kubeconfig
            admin = await Kube.connect(kubeconfig)
            installed = await install_crds(admin)
            await admin.create(k.NAMESPACES, {"apiVersion": "v1", "kind": "Namespace",
                                              "metadata": {"name": namespace}})
            where = (f"the cluster in {kubeconfig}, namespace {namespace}"
                     + (f" (installed {', '.join(installed)})" if installed else ""))
            try:
                retried = await seed_cluster(admin, namespace, size, due)
                if retried:
                    where += f"; {retried} seeding writes retried (422 internal error or 429)"
            except BaseException:
                await admin.delete(k.NAMESPACES, namespace, propagation="Background")
                await admin.close()
                raise
        else:
            parent_end, child_end = multiprocessing.Pipe()
            child = multiprocessing.get_context("spawn").Process(
                target=serve_sim, args=(child_end, namespace, size, due), daemon=True)
            child.start()
            if not await asyncio.get_running_loop().run_in_executor(None, parent_end.poll, 900):
                print("the API endpoint process did not start within 900 s", file=sys.stderr)
                child.terminate()
                return 1
            kubeconfig = local_kubeconfig(tmp, parent_end.recv())
            admin = await Kube.connect(kubeconfig)
            where = "the local API endpoint (its own process, preloaded)"
        stored = time.perf_counter() - t
        print(f"{size:,} CronWorkflows ({due:,} due at {DUE:%H:%M}) on {where}, stored in {stored:.1f}s; "
              f"{os.cpu_count()} cores; workers {args.workers}{'; trust_env=True' if args.trust_env else ''}",
              flush=True)
        try:
            return await measure(args, size=size, due=due, namespace=namespace, kubeconfig=kubeconfig, admin=admin,
                                 server_pid=child.pid if child else None, parent_end=parent_end)
        finally:
            if args.kubeconfig:
                await admin.delete(k.NAMESPACES, namespace, propagation="Background")
            await admin.close()
            if child is not None:
                child.join(timeout=10)
                if child.is_alive():
                    child.terminate()


def service_logging(recorder: logging.Handler) -> None:
    """Log as `burstflow cron run` does (burstflow.logs.configure_logging: JSON lines, level info), to /dev/null, so
    the burst pays what production pays for each `run created` line; `recorder` sees the service's records too
    (they do not reach stderr), and other loggers' warnings still go to stderr."""
    configure_logging("json", "info", stream=open(os.devnull, "w"))  # noqa: SIM115 - lives as long as the process
    root = logging.getLogger()
    to_stderr = logging.StreamHandler()
    to_stderr.setLevel(logging.WARNING)
    cron_log = logging.getLogger("burstflow.cron")
    cron_log.propagate = False
    cron_log.handlers[:] = [*root.handlers, recorder]
    root.addHandler(to_stderr)


async def measure(args, *, size: int, due: int, namespace: str, kubeconfig: str, admin: Kube, server_pid: int | None,
                  parent_end) -> int:
    clock = ShiftedClock(START)
    kube = await Kube.connect(kubeconfig, clock=clock, trust_env=args.trust_env)
    lags: list[float] = []
    created_names: set[str] = set()
    warnings: list[str] = []  # the service's warnings and errors (its logger does not propagate here)

    class LagRecorder(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage() == "run created":
                lags.append(float(log_context(record)["lag_seconds"]))
                created_names.add(log_context(record).get("name"))
            elif record.levelno >= logging.WARNING:
                warnings.append(f"{record.levelname} {record.getMessage()} {log_context(record)}"
                                + (f" {record.exc_info[1]!r}" if record.exc_info else ""))

    service_logging(LagRecorder())
    collector = GcClock()
    server_gc = "not measured"
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
    task = None
    try:
        settings = CronSettings(namespace=namespace, leader_election=False, workers=args.workers,
                                prepare_ahead_seconds=args.prepare_ahead_seconds)
        metrics = CronMetrics(CollectorRegistry())
        rss0 = memory_mib()
        runner = CronRunner(kube=kube, clock=clock, settings=settings, metrics=metrics)
        for reflector in (runner.crons, runner.workflows):
            reflector.page_size = args.page_size
        if args.profile == "startup":
            profiler.enable()
        cpu0, wall0 = cpu(), time.perf_counter()
        task = asyncio.get_running_loop().create_task(runner.run())
        while not (runner.leading and runner.idle()):
            await asyncio.sleep(0.05)
            if task.done():
                task.result()
        startup_wall, startup_cpu, startup_decisions = time.perf_counter() - wall0, cpu() - cpu0, runner.decisions
        if args.profile == "startup":
            profiler.disable()
        rss_started = memory_mib()
        if clock.now() >= DUE:
            print(f"start-up took {startup_wall:.1f}s, past the due minute", file=sys.stderr)
            return 1
        # Nothing fires between now and 12:00: move the clock to just before it and wake the timer.
        clock.jump_to(DUE - timedelta(seconds=args.lead_seconds))
        runner._wake.set()  # noqa: SLF001 - the timer recomputes its sleep from the new time
        # Preparation starts `--prepare-ahead` seconds before 12:00 (at once when the lead is shorter) and ends when the
        # runner is idle again; the CPU between ticks is measured after it, up to a second before 12:00.
        prepare_at = DUE - timedelta(seconds=args.prepare_ahead_seconds)
        await asyncio.sleep(max(0.0, (prepare_at - clock.now()).total_seconds()) + 0.05)
        cpu_p, wall_p = cpu(), time.perf_counter()
        while not runner.idle() and clock.now() < DUE:
            await asyncio.sleep(0.01)
        prepare_wall, prepare_cpu = time.perf_counter() - wall_p, cpu() - cpu_p
        prepared = len(runner._prepared)  # noqa: SLF001 - what the preparer left for the due instant
        idle_window = max(0.2, (DUE - clock.now()).total_seconds() - 1.0)
        cpu1 = cpu()
        await asyncio.sleep(idle_window)
        idle_cpu = cpu() - cpu1
        await asyncio.sleep(max(0.0, (DUE - clock.now()).total_seconds()))
        if args.profile == "burst":
            profiler.enable()
        collector.running = True
        spies = start_py_spy(args.py_spy, {"service": os.getpid(), "endpoint": server_pid}) if args.py_spy else []
        cpu2, wall2, decisions0 = cpu(), time.perf_counter(), runner.decisions
        server_cpu2 = process_cpu(server_pid)
        while len(lags) < due and time.perf_counter() - wall2 < args.burst_timeout:
            await asyncio.sleep(0.01)
        if args.profile == "burst":
            profiler.disable()
        collector.running = False
        stop_py_spy(spies)
        if len(lags) < due:  # say which runs are missing and what their CronWorkflows' status says
            missing = [f"cron-{i:06d}" for i in range(due) if f"cron-{i:06d}" not in created_names]
            print(f"{len(missing):,} due runs not created after {args.burst_timeout:.0f}s; first ones:",
                  file=sys.stderr)
            for name in missing[:5]:
                cron = runner._current((namespace, name))  # noqa: SLF001
                print(f"  {name}: status {(cron or {}).get('status')}", file=sys.stderr)
        creates_cpu, creates_decisions = cpu() - cpu2, runner.decisions - decisions0
        creates_wall, creates_server_cpu = time.perf_counter() - wall2, process_cpu(server_pid) - server_cpu2
        settle_deadline = time.perf_counter() + 60
        while not runner.idle() and time.perf_counter() < settle_deadline:
            await asyncio.sleep(0.01)
        if not runner.idle():
            print("runner not idle 60 s after the burst:", runner.debug_state(), file=sys.stderr)
        burst_wall, burst_cpu = time.perf_counter() - wall2, cpu() - cpu2
        burst_decisions = runner.decisions - decisions0
        burst_server_cpu = process_cpu(server_pid) - server_cpu2
        rss_after, rss_peak = memory_mib(), memory_mib("VmHWM")
        if profiler is not None:
            import pstats

            pstats.Stats(profiler, stream=sys.stderr).sort_stats(args.profile_sort).print_stats(40)
        # Baseline: the same paged list the service's reflector made, by a bare client, in this run (after the
        # service's figures, so its memory is not counted in theirs).
        t = time.perf_counter()
        listed = await admin.list(k.CRON_WORKFLOWS, namespace=namespace, page_size=args.page_size)
        list_wall = time.perf_counter() - t
        listed_count = len(listed["items"])
        del listed
        # The service stops before the endpoint does (its watches would otherwise warn about the closed port).
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        if parent_end is not None:
            parent_end.send("stop")
            created = await asyncio.get_running_loop().run_in_executor(None, parent_end.recv)
            server_gc = await asyncio.get_running_loop().run_in_executor(None, parent_end.recv)
        else:
            created = len((await admin.list(k.WORKFLOWS, namespace=namespace, page_size=500))["items"])

        # The scheduler's own cost per run (the pure decision for a due CronWorkflow, spec compiled once), against
        # a bare croniter.get_next over the same schedules.
        due_specs = []
        for i in range(min(due, 1000)):
            cron = runner._current((namespace, f"cron-{i:06d}"))  # noqa: SLF001
            result = runner._parse((namespace, f"cron-{i:06d}"), cron) if cron is not None else None  # noqa: SLF001
            if result is not None and result.spec is not None:
                due_specs.append(result.spec)
        status = CronStatus(last_scheduled_time=DUE - timedelta(hours=4))
        rounds = 5
        t = time.perf_counter()
        for _ in range(rounds):
            for spec in due_specs:
                engine.plan(spec, status, now=DUE, created=DUE - timedelta(days=1),
                            observed_since=DUE - timedelta(days=1))
        plan_cost = (time.perf_counter() - t) / (rounds * max(1, len(due_specs)))
        expressions = [expr for i in range(min(due, 1000)) for expr in schedules_for(i, due)]
        t = time.perf_counter()
        for _ in range(rounds):
            for expr in expressions:
                croniter(expr, DUE - timedelta(hours=4)).get_next(datetime)
        croniter_cost = (time.perf_counter() - t) / (rounds * max(1, len(expressions)))
    finally:
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await kube.close()

    lags.sort()
    p50, p99 = (statistics.median(lags) if lags else float("nan")), percentile(lags, 0.99)
    per_run_cpu = burst_cpu / max(1, len(lags))
    server = "API endpoint" if server_pid else "API server (not measured: shared with other clients)"
    print(f"start-up (list, watch, first decision for every CronWorkflow): {startup_wall:.1f}s wall, "
          f"{startup_cpu:.1f}s CPU, {startup_decisions:,} decisions; the bare paged list alone: {list_wall:.1f}s "
          f"= {startup_wall / list_wall:.1f}x (goal start-up < 30 s: {'met' if startup_wall < 30 else 'NOT met'})")
    print(f"resident memory: {rss_started:.0f} MiB after start-up, {rss_after:.0f} MiB after the burst, peak "
          f"{rss_peak:.0f} MiB; the same process before the service started: {rss0:.0f} MiB "
          f"(goal < 500 MiB: {'met' if rss_peak < 500 else 'NOT met'})")
    print(f"runs created in the burst: {len(lags):,} (Workflows stored: {created:,}) in {burst_wall:.2f}s")
    print(f"scheduling lag: p50 {p50:.2f} s, p99 {p99:.2f} s, max {lags[-1] if lags else float('nan'):.2f} s "
          f"(goal p99 < 5 s: {'met' if p99 < 5 else 'NOT met'})")
    print(f"due instant to last create: {creates_wall:.2f}s wall; service CPU {creates_cpu:.1f} s "
          f"({100 * creates_cpu / creates_wall:.0f}% of one core), {server} CPU {creates_server_cpu:.1f} s "
          f"({100 * creates_server_cpu / creates_wall:.0f}%); decisions {creates_decisions:,}")
    print(f"whole burst (status writes done, idle): service CPU {burst_cpu:.1f} s, {server} CPU "
          f"{burst_server_cpu:.1f} s; decisions {burst_decisions:,}")
    print(f"cyclic GC, due instant to last create: service {collector.summary()}; {server} (while serving) "
          f"{server_gc}")
    used, stale = (metrics.value("burstflow_cron_prepared_decisions_total", {"result": r}) for r in ("used", "stale"))
    print(f"prepared before 12:00 (--prepare-ahead {args.prepare_ahead_seconds:g}): {prepared:,} runs in "
          f"{prepare_wall:.2f}s wall, {prepare_cpu:.2f}s CPU; at 12:00 {used:,.0f} used, {stale:,.0f} stale")
    print(f"CPU between ticks: {idle_cpu * 1000:.0f} ms over {idle_window:.1f}s "
          f"({100 * idle_cpu / idle_window:.2f}% of one core)")
    print(f"bare croniter.get_next: {croniter_cost * 1e6:.1f} us per call (baseline, this run)")
    print(f"scheduler decision per run (engine.plan, compiled spec): {plan_cost * 1e6:.1f} us "
          f"= {plan_cost / croniter_cost:.2f}x croniter.get_next")
    print(f"service process CPU per created run (decision, HTTP create + status write, watch events): "
          f"{per_run_cpu * 1000:.2f} ms = {per_run_cpu / croniter_cost:.0f}x croniter.get_next", flush=True)
    if warnings:
        print(f"the service logged {len(warnings):,} warnings/errors; first ones:", file=sys.stderr)
        for line in warnings[:10]:
            print(f"  {line}", file=sys.stderr)
    if listed_count != size:
        print(f"the bare list found {listed_count:,} CronWorkflows, not {size:,}", file=sys.stderr)
    return 0 if len(lags) == due and created == due and listed_count == size else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", "--crons", dest="size", type=int, default=100_000, help="CronWorkflows")
    parser.add_argument("--due", type=int, help="CronWorkflows due at 12:00 (default: a tenth of --size)")
    parser.add_argument("--kubeconfig", help="run against this cluster instead of the local API endpoint")
    parser.add_argument("--workers", type=int, default=CronSettings.workers, help="the service's --workers")
    parser.add_argument("--page-size", type=int, default=LIST_PAGE_SIZE,
                        help="list page size of the service's reflectors and of the baseline list (default: the "
                             "service's)")
    parser.add_argument("--lead-seconds", type=float, default=15.0,
                        help="real seconds from the clock jump (after start-up) to the due minute")
    parser.add_argument("--prepare-ahead", dest="prepare_ahead_seconds", type=float, metavar="SECONDS",
                        default=CronSettings.prepare_ahead_seconds,
                        help="the service's --prepare-ahead (0: decide every run at the due instant)")
    parser.add_argument("--burst-timeout", type=float, default=300.0, help="seconds to wait for every run")
    parser.add_argument("--profile", choices=["startup", "burst"],
                        help="print where the service's CPU goes during start-up or the burst")
    parser.add_argument("--py-spy", metavar="PREFIX",
                        help="sample the service and the local endpoint with py-spy from the due instant to the last "
                             "create: PREFIX.service.txt, PREFIX.endpoint.txt (collapsed stacks)")
    parser.add_argument("--profile-sort", default="tottime", help="pstats sort key for --profile (e.g. cumulative)")
    parser.add_argument("--trust-env", action="store_true",
                        help="open the gateway with trust_env=True (kubernetes-asyncio's own default), to compare")
    sys.exit(asyncio.run(main(parser.parse_args())))
