"""Admission throughput of the real webhook (example policies) against a no-op aiohttp TLS handler, in one run.

Each server runs in its own process (a child of this script) so the load generator and the server do not share an
event loop; the load is an aiohttp keep-alive client on 127.0.0.1 posting the captured Argo pod AdmissionReview at
each concurrency level, as `--variants` (64) different pods taken in turn: each its own uid, pod name, workflow name
and node id (same size), so nothing can be answered from an earlier identical request. Servers are measured back to back per level, so machine noise hits both alike.

    .venv/bin/python benchmarks/webhook_throughput.py                 # ~2 min (4 rounds)
    .venv/bin/python benchmarks/webhook_throughput.py --duration 1 --rounds 1 --concurrency 1,16
    .venv/bin/python benchmarks/webhook_throughput.py --instructions    # + instructions per admission (valgrind)

Printed per level and server: admissions/s, p50/p99 latency, server CPU per admission (from /proc), and two cost
ratios against the no-op handler: wall time per request (= no-op admissions/s / webhook admissions/s) and server
CPU per request. Targets: ratio <= 1.2 at 16 and 100 connections (the levels the goal names; the 1-connection
ratio is printed too: there the event loop's per-request wake-ups dominate both servers' CPU and the ratio swings
most between rounds) and >= 1,500 admissions/s. The no-op baseline parses and encodes with the
standard library's json (as in ../shared/measured.md); our server uses the codec in webhook.admission (orjson), and
the header says so.

CPU time on a shared machine moves by tens of percent between runs of the same code, so `--instructions` also runs
each server under valgrind's callgrind and counts the user-space instructions the server process executes for a
fixed number of admissions at each level (deterministic to within a fraction of a percent; the kernel's share,
mostly the loopback delivery both servers pay alike, is not counted).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import ssl
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHARED = Path(os.environ.get("BURSTFLOW_SHARED", ROOT.parent / "shared"))
FIXTURE = SHARED / "fixtures" / "admission" / "pod-create-argo-workflow-pod.json"
POLICIES = ROOT / "policies"
TARGET_RATIO = 1.2
# The connection counts the ratio goal is judged at (when measured): concurrent admissions, as in a burst.
GOAL_LEVELS = (16, 100)
TARGET_RATE = 1500.0
SERVERS = {
    "no-op": "bare aiohttp TLS handler: parse the body, answer allowed: true",
    "shell": "our server (webhook.server) with an admitter that allows everything: the HTTP shell's own cost",
    "webhook": "our server with webhook.admitter.PodAdmitter and the example policies in policies/",
}
NOOP_CODEC = f"stdlib json {json.__version__} (json.loads / json.dumps)"


def _codec(kind: str) -> str:
    """The JSON library a server parses requests and encodes answers with."""
    if kind == "no-op":
        return NOOP_CODEC
    from burstflow.webhook.admission import CODEC

    return CODEC


# --- server side (child process) ------------------------------------------------------------------------------------

def _noop_app():
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        document = json.loads(await request.read())
        body = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "response": {"uid": document["request"]["uid"], "allowed": True}}
        return web.Response(body=json.dumps(body).encode(), content_type="application/json")

    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_post("/mutate", handle)
    app.router.add_post("/mutate/pods", handle)
    return app


def _policy_admitter():
    """PodAdmitter over the example policies, or SystemExit with the reason when that part is missing."""
    try:
        from burstflow.webhook.admitter import PodAdmitter, store_from_paths
    except ImportError as exc:
        raise SystemExit(f"webhook.admitter is not available ({exc}); cannot benchmark the real webhook") from None
    if not any(POLICIES.glob("*.yaml")):
        raise SystemExit(f"no example policies in {POLICIES}; cannot benchmark the real webhook")
    store = store_from_paths([str(POLICIES)])
    if store.errors:
        raise SystemExit(f"the example policies do not compile: {store.errors[0]}")
    return PodAdmitter(store=store)


class _AllowAll:
    ready = True

    async def admit(self, request):
        from burstflow.webhook.admission import Outcome, allowed

        return Outcome(allowed(request["uid"]), "unchanged")


async def _serve(kind: str, cert: str, key: str) -> None:
    from aiohttp import web

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    if kind == "no-op":
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        runner = web.AppRunner(_noop_app(), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context, backlog=1024).start()
        port = runner.addresses[0][1]
        stopper = runner.cleanup
    else:
        from burstflow.webhook.server import Server
        from burstflow.webhook.settings import WebhookSettings

        admitter = _AllowAll() if kind == "shell" else _policy_admitter()
        settings = WebhookSettings(cert_file=cert, key_file=key, bind_address="127.0.0.1", port=0,
                                   metrics_address="127.0.0.1", metrics_port=0, drain_timeout_seconds=1)
        server = Server(admitter=admitter, settings=settings)
        await server.start()
        port = server.port
        stopper = server.stop
    print(f"port {port}", flush=True)
    await stop.wait()
    await stopper()


def _profile(kind: str, cert: str, key: str, output: str) -> None:
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        asyncio.run(_serve(kind, cert, key))
    finally:
        profiler.disable()
        profiler.dump_stats(output)


# --- client side --------------------------------------------------------------------------------------------------

def _bodies(count: int) -> list[bytes]:
    """`count` AdmissionReview bodies of the captured pod, each with its own uid, pod and workflow name and node id
    (the same length as the captured ones, so every body has the same size); the first is the captured one."""
    text = json.dumps(json.loads(FIXTURE.read_text())["body"])
    rng = random.Random(13)
    uid = json.loads(text)["request"]["uid"]
    bodies = [text.encode()]
    while len(bodies) < count:
        workflow = "".join(rng.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=5))
        node = "".join(rng.choices("0123456789", k=10))
        variant = (text.replace(uid, str(uuid.UUID(int=rng.getrandbits(128), version=4)))
                   .replace("x7k2p", workflow).replace("1234567890", node))
        bodies.append(variant.encode())
    return bodies


class _Bodies:
    """The bodies taken in turn by every connection."""

    def __init__(self, bodies: list[bytes]) -> None:
        self.bodies = bodies
        self.next = 0

    def take(self) -> bytes:
        body = self.bodies[self.next]
        self.next = (self.next + 1) % len(self.bodies)
        return body


@dataclass
class Result:
    server: str
    concurrency: int
    requests: int
    seconds: float
    latencies: list[float]
    cpu_seconds: float | None
    errors: int

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def cpu_per_request(self) -> float | None:
        return None if self.cpu_seconds is None else self.cpu_seconds / self.requests


def _cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process from /proc (Linux); None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Child:
    """One server process; `port` once started. With `callgrind` (an output file path) the server runs under
    valgrind's callgrind, and `dump()` returns the instructions it executed since the previous dump."""

    def __init__(self, kind: str, cert: Path, key: Path, profile: Path | None, callgrind: Path | None = None) -> None:
        self.kind, self.cert, self.key, self.profile, self.callgrind = kind, cert, key, profile, callgrind
        self.port = 0
        self.process: asyncio.subprocess.Process | None = None
        self._dumps = 0

    async def start(self) -> None:
        extra = ["--profile-to", str(self.profile)] if self.profile else []
        prefix: list[str] = []
        env = None
        if self.callgrind:
            prefix = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={self.callgrind}", "--dump-instr=no",
                      "--compress-strings=no"]
            env = dict(os.environ, PYTHONHASHSEED="0")  # the same dict layouts in both runs
        self.process = await asyncio.create_subprocess_exec(
            *prefix, sys.executable, __file__, "--serve", self.kind, "--cert", str(self.cert), "--key", str(self.key),
            *extra, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
        line = await asyncio.wait_for(self.process.stdout.readline(), 600 if self.callgrind else 30)
        if not line.startswith(b"port "):
            stderr = (await self.process.stderr.read()).decode().strip()
            raise SystemExit(f"{self.kind} server did not start: {stderr.splitlines()[-1] if stderr else line!r}")
        self.port = int(line.split()[1])

    async def dump(self) -> int:
        """Instructions executed by the server since the previous dump (callgrind counts per dump)."""
        control = await asyncio.create_subprocess_exec("callgrind_control", "--dump", str(self.process.pid),
                                                       stdout=asyncio.subprocess.DEVNULL,
                                                       stderr=asyncio.subprocess.DEVNULL)
        await asyncio.wait_for(control.wait(), 120)
        self._dumps += 1
        path = Path(f"{self.callgrind}.{self._dumps}")
        for line in path.read_text().splitlines():
            if line.startswith("summary:"):
                return int(line.split()[1])
        raise RuntimeError(f"no summary line in {path}")

    async def stop(self) -> None:
        if self.process and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(self.process.wait(), 30)


async def measure(child: Child, *, bodies: list[bytes], client_ssl: ssl.SSLContext, concurrency: int, warmup: float,
                  duration: float) -> Result:
    """`concurrency` keep-alive connections posting `bodies` in turn, back to back; counts only the `duration`
    window."""
    import aiohttp

    url = f"https://127.0.0.1:{child.port}/mutate/pods?timeout=5s"
    headers = {"Content-Type": "application/json"}
    latencies: list[float] = []
    errors = 0
    loop = asyncio.get_running_loop()
    window: dict[str, float] = {}
    turn = _Bodies(bodies)

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        while True:
            now = loop.time()
            if now >= window["end"]:
                return
            body = turn.take()
            started = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    ok = response.status == 200
            except aiohttp.ClientError:
                ok = False
            elapsed = time.perf_counter() - started
            if window["start"] <= now:
                if ok:
                    latencies.append(elapsed)
                else:
                    errors += 1

    connector = aiohttp.TCPConnector(ssl=client_ssl, limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        for body in bodies:  # one correct answer to each body first
            async with session.post(url, data=body, headers=headers) as response:
                answer = json.loads(await response.read())
                assert answer["response"]["uid"] == json.loads(body)["request"]["uid"], answer
        begin = loop.time()
        window["start"], window["end"] = begin + warmup, begin + warmup + duration
        tasks = [asyncio.create_task(worker(session)) for _ in range(concurrency)]
        await asyncio.sleep(warmup)
        cpu_before = _cpu_seconds(child.process.pid)
        measured_from = loop.time()
        await asyncio.gather(*tasks)
        measured_for = loop.time() - measured_from
        cpu_after = _cpu_seconds(child.process.pid)
    cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    return Result(child.kind, concurrency, len(latencies), measured_for, latencies, cpu, errors)


async def count_instructions(child: Child, *, bodies: list[bytes], client_ssl: ssl.SSLContext, concurrency: int,
                             requests: int) -> float:
    """Instructions the server executes per admission: `concurrency` keep-alive connections (opened and warmed up
    first, outside the count) post exactly `requests` admissions between two callgrind dumps."""
    import aiohttp

    url = f"https://127.0.0.1:{child.port}/mutate/pods?timeout=5s"
    headers = {"Content-Type": "application/json"}
    left = [0]
    turn = _Bodies(bodies)

    async def worker(session: aiohttp.ClientSession) -> None:
        while left[0] > 0:
            left[0] -= 1
            async with session.post(url, data=turn.take(), headers=headers) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"{child.kind} answered {response.status}")

    connector = aiohttp.TCPConnector(ssl=client_ssl, limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=None)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        for _ in range(2):  # every connection's handshake, and a warm server, before the count starts
            left[0] = concurrency
            await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        await child.dump()
        left[0] = requests
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        executed = await child.dump()
    return executed / requests


async def run_instructions(args: argparse.Namespace, bodies: list[bytes], levels: list[int], kinds: list[str]
                           ) -> dict[int, dict[str, float]]:
    """{level: {server: instructions per admission}} with each server under callgrind (one process per server)."""
    counts: dict[int, dict[str, float]] = {level: {} for level in levels}
    with tempfile.TemporaryDirectory() as tmp:
        cert, key, client_ssl = _tls_material(Path(tmp))
        for kind in kinds:
            child = Child(kind, cert, key, None, callgrind=Path(tmp) / f"{kind}.callgrind")
            await child.start()
            try:
                for level in levels:
                    counts[level][kind] = await count_instructions(
                        child, bodies=bodies, client_ssl=client_ssl, concurrency=level,
                        requests=max(args.instruction_requests, 2 * level))
            finally:
                await child.stop()
    return counts


def _tls_material(directory: Path) -> tuple[Path, Path, ssl.SSLContext]:
    import trustme

    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    cert, key = directory / "tls.crt", directory / "tls.key"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    key.write_bytes(leaf.private_key_pem.bytes())
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return cert, key, context


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


async def run(args: argparse.Namespace) -> int:
    bodies = _bodies(args.variants)
    levels = [int(c) for c in args.concurrency.split(",")]
    kinds = [k for k in SERVERS if k in args.servers.split(",")]
    if args.skip_timing:
        if "no-op" not in kinds:
            raise SystemExit("the no-op baseline is needed for ratios")
        await _print_instructions(args, bodies, levels, kinds)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        cert, key, client_ssl = _tls_material(Path(tmp))
        children = {}
        if args.profile_dir:
            Path(args.profile_dir).mkdir(parents=True, exist_ok=True)
        for kind in kinds:
            profile = Path(args.profile_dir) / f"{kind}.prof" if args.profile_dir else None
            children[kind] = Child(kind, cert, key, profile)
            try:
                await children[kind].start()
            except SystemExit as exc:
                print(f"skipping {kind}: {exc}")
                del children[kind]
        if "no-op" not in children:
            print("the no-op baseline did not start; no ratios can be computed")
            return 1
        print(f"body: {FIXTURE.name} ({len(bodies[0])} bytes) as {len(bodies)} different pods taken in turn; "
              f"{args.duration:g} s per measurement after "
              f"{args.warmup:g} s warm-up; cpu = server process CPU per admission")
        for kind in children:
            print(f"  {kind:8} {SERVERS[kind]}; JSON: {_codec(kind)}")
        print()
        header = (f"{'conns':>5}  {'round':>5}  {'server':8} {'adm/s':>8} {'p50':>10} {'p99':>10} {'cpu/adm':>10} "
                  f"{'ratio(wall)':>11} {'ratio(cpu)':>10} {'errors':>6}")
        print(header)
        print("-" * len(header))
        # rounds[level] = one {server: Result} per round. Each round measures every server back to back, in turn
        # forwards and backwards (no-op, shell, webhook; then webhook, shell, no-op), so a drift of the shared
        # machine's speed over a pair of rounds weighs on every server alike; the ratios are per round.
        rounds: dict[int, list[dict[str, Result]]] = {level: [] for level in levels}
        try:
            for level in levels:
                for number in range(1, args.rounds + 1):
                    row: dict[str, Result] = {}
                    order = list(children.items())
                    for kind, child in order if number % 2 else reversed(order):
                        row[kind] = await measure(child, bodies=bodies, client_ssl=client_ssl, concurrency=level,
                                                  warmup=args.warmup, duration=args.duration)
                    for kind in children:
                        _print_row(level, number, args.rounds, row[kind], row.get("no-op", row[kind]))
                    rounds[level].append(row)
        finally:
            for child in children.values():
                await child.stop()

    if "webhook" not in children:
        return 1
    print()
    print(f"median over {args.rounds} round(s) per level (min-max):")
    cpu_medians: dict[int, float] = {}
    wall_medians: dict[int, float] = {}
    for level in levels:
        cpu = [r["webhook"].cpu_per_request / r["no-op"].cpu_per_request for r in rounds[level]
               if r["webhook"].cpu_per_request and r["no-op"].cpu_per_request]
        wall = [r["no-op"].rate / r["webhook"].rate for r in rounds[level]]
        wall_medians[level] = statistics.median(wall)
        line = f"  {level:>4} conns: wall {_spread(wall)}"
        if cpu:
            cpu_medians[level] = statistics.median(cpu)
            line += f"; cpu {_spread(cpu)}"
        print(line)
    best_rate = max(statistics.median(r["webhook"].rate for r in rounds[level]) for level in levels)
    errors = sum(result.errors for level in levels for row in rounds[level] for result in row.values())
    judged = [level for level in levels if level in GOAL_LEVELS] or levels
    where = "/".join(str(level) for level in judged) + " connections"
    for name, medians, note in (("server CPU per admission", cpu_medians, ""),
                                ("wall", wall_medians, "  (the client shares the 2 cores: see README)")):
        at = [medians[level] for level in judged if level in medians]
        if at:
            print(f"cost ratio ({name}, median, worst of {where}): {max(at):.2f}  target <= {TARGET_RATIO}: "
                  f"{'met' if max(at) <= TARGET_RATIO else 'NOT met'}{note}")
    print(f"webhook throughput (median, best level): {best_rate:.0f} admissions/s  target >= {TARGET_RATE:.0f}: "
          f"{'met' if best_rate >= TARGET_RATE else 'NOT met'}")
    if errors:
        print(f"{errors} requests failed")
    if args.profile_dir:
        print(f"cProfile output of each server process in {args.profile_dir}/<server>.prof")
    if args.instructions:
        await _print_instructions(args, bodies, levels, kinds)
    return 0 if errors == 0 else 1


async def _print_instructions(args: argparse.Namespace, bodies: list[bytes], levels: list[int], kinds: list[str]
                              ) -> None:
    print()
    print(f"instructions per admission (valgrind callgrind, user space, {args.instruction_requests} admissions "
          f"per level after a warm-up, PYTHONHASHSEED=0):")
    counts = await run_instructions(args, bodies, levels, kinds)
    ratios = []
    for level in levels:
        line = f"  {level:>4} conns: " + ", ".join(f"{kind} {counts[level][kind]:,.0f}" for kind in kinds)
        if "webhook" in counts[level]:
            ratios.append(counts[level]["webhook"] / counts[level]["no-op"])
            line += f"; webhook/no-op {ratios[-1]:.3f}"
        if "shell" in counts[level]:
            line += f"; shell/no-op {counts[level]['shell'] / counts[level]['no-op']:.3f}"
        print(line, flush=True)
    if ratios:
        print(f"cost ratio (instructions per admission, worst level): {max(ratios):.3f}  target <= {TARGET_RATIO}: "
              f"{'met' if max(ratios) <= TARGET_RATIO else 'NOT met'}")


def _print_row(level: int, number: int, rounds: int, result: Result, base: Result) -> None:
    wall_ratio = base.rate / result.rate
    cpu_ratio = (f"{result.cpu_per_request / base.cpu_per_request:10.2f}"
                 if result.cpu_per_request and base.cpu_per_request else f"{'n/a':>10}")
    cpu = f"{result.cpu_per_request * 1e6:7.0f} us" if result.cpu_per_request else f"{'n/a':>10}"
    print(f"{level:>5}  {f'{number}/{rounds}':>5}  {result.server:8} {result.rate:8.0f} "
          f"{_ms(result.percentile(0.5)):>10} {_ms(result.percentile(0.99)):>10} {cpu:>10} {wall_ratio:11.2f} "
          f"{cpu_ratio} {result.errors:>6}", flush=True)


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=3.0, help="measured seconds per server and level")
    parser.add_argument("--warmup", type=float, default=0.5, help="unmeasured seconds before each measurement")
    parser.add_argument("--concurrency", default="1,16,100", help="comma-separated connection counts")
    parser.add_argument("--rounds", type=int, default=4,
                        help="rounds per level, each in the opposite order to the one before; the ratios printed "
                             "last are the medians over the rounds")
    parser.add_argument("--servers", default=",".join(SERVERS), help=f"subset of {','.join(SERVERS)}")
    parser.add_argument("--variants", type=int, default=64,
                        help="different pods (uid, names, node id) posted in turn; 1 posts the captured pod only")
    parser.add_argument("--profile-dir", help="write a cProfile of each server process here (slows them down)")
    parser.add_argument("--instructions", action="store_true",
                        help="also count instructions per admission with valgrind's callgrind (deterministic; 5-10 min)")
    parser.add_argument("--instruction-requests", type=int, default=200,
                        help="admissions counted per server and level with --instructions")
    parser.add_argument("--skip-timing", action="store_true", help="with --instructions: only count instructions")
    parser.add_argument("--serve", choices=list(SERVERS), help=argparse.SUPPRESS)
    parser.add_argument("--cert", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    parser.add_argument("--profile-to", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        if args.profile_to:
            _profile(args.serve, args.cert, args.key, args.profile_to)
        else:
            asyncio.run(_serve(args.serve, args.cert, args.key))
        return 0
    if args.duration <= 0 or args.warmup < 0 or args.rounds < 1 or args.variants < 1:
        parser.error("--duration must be > 0, --warmup >= 0, --rounds >= 1 and --variants >= 1")
    if args.instructions and not (shutil.which("valgrind") and shutil.which("callgrind_control")):
        parser.error("--instructions needs valgrind and callgrind_control on PATH (Debian: apt-get install valgrind)")
    if args.skip_timing and not args.instructions:
        parser.error("--skip-timing only makes sense with --instructions")
    if args.duration * len(args.concurrency.split(",")) * 3 * args.rounds > 120:
        print("note: this run will take over two minutes", file=sys.stderr)
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
