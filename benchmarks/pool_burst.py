"""Pool burst benchmark at the size users run: a ResourcePolicy already holding many live pods (100 and 100,000 by
default), then a burst of 2,000 concurrent admissions over 3 webhook replicas.

Every replica is its own process (real HTTPS server, its own API connection, pool ledger, and a candidate for the
reconciler's Lease), as in a Deployment; the API is the local endpoint in its own process, pre-seeded with the live
pods (pods, not counts), or a real cluster with `--kubeconfig` (its own namespace, created and deleted). This script
only generates load and reads figures. For each live-pod count it prints:

- overshoot: pods counted in the pool beyond its max (goal 0);
- status writes per admitted pod (goal <= 0.1) and bytes written per admitted pod, from the replicas' counters of
  the API server's answers (every write that came back 200, and the size of the object it returned);
- the largest ResourcePolicy object the ledger or reconciler wrote (goal < 100 KiB);
- p50/p99 admission latency with pools, and without (the same replicas, pods the policy does not select);
- the leader's time to rebuild counts from the full pod list on start (goal < 10 s) and each replica's resident
  memory once it watches every pod (goal < 300 MiB).
It ends with the ratios across runs: bytes per admitted pod at the largest vs the smallest live count (goal
<= 1.5) and p99 with / without pools at the largest (goal <= 1.5).

    .venv/bin/python benchmarks/pool_burst.py                              # 100 and 100,000 live pods, 2,000 burst
    .venv/bin/python benchmarks/pool_burst.py --live 100,10000 --pods 500  # quicker
    .venv/bin/python benchmarks/pool_burst.py --kubeconfig /work/harness-run/kubeconfig --live 100,2000
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing
import os
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import jsonpatch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from burstflow import kube as k  # noqa: E402
from burstflow.certs import TlsDir  # noqa: E402
from burstflow.demo.pools import workflow_pod  # noqa: E402
from burstflow.webhook.pools.model import POLICY_ANNOTATION, POOL_LABEL, RESERVATION_ANNOTATION  # noqa: E402
from burstflow.webhook.pools.reconciler import POD_PAGE_SIZE  # noqa: E402
from tests.kubefixtures import create_missing_crds  # noqa: E402

CRD = Path(__file__).resolve().parents[1] / "manifests" / "base" / "crds" / "resourcepolicies.burstflow.io.yaml"
POLICY = "burst"
SELECTED = {"burstflow.io/bench": "pool"}
NOT_SELECTED = {"burstflow.io/bench": "baseline"}
# The burst's pods fill the pool's remaining room and spill into the overflow pool: the overshoot check has teeth.
ROOM = 500
# No scheduler serves this name: on a real cluster the seeded pods stay Pending and unbound (nothing runs).
NO_SCHEDULER = "burstflow-bench-none"


def policy_object(namespace: str, pool_max: int) -> dict:
    return {"apiVersion": "burstflow.io/v1alpha1", "kind": "ResourcePolicy",
            "metadata": {"name": POLICY, "namespace": namespace},
            "spec": {"selector": dict(SELECTED), "subsets": [
                {"name": "pool", "maxReplicas": pool_max,
                 "nodeSelectorTerm": [{"key": "type", "operator": "In", "values": ["virtual-kubelet"]}]},
                {"name": "overflow"}]}}


def live_pod(namespace: str, index: int, pool: str) -> dict:
    """A pod as the webhook left it: pool label, token and policy annotations (what the reconciler counts)."""
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"live-{index:06d}", "namespace": namespace,
                         "labels": {"workflows.argoproj.io/workflow": "render-frames", **SELECTED, POOL_LABEL: pool},
                         "annotations": {RESERVATION_ANNOTATION: secrets.token_hex(8), POLICY_ANNOTATION: POLICY}},
            "spec": {"restartPolicy": "Never", "schedulerName": NO_SCHEDULER,
                     "containers": [{"name": "main", "image": "alpine:3.20", "command": ["sh", "-c", "render"]}]},
            "status": {"phase": "Pending"}}


def live_pods(namespace: str, start: int, stop: int) -> list[dict]:
    """Live pods `start`..`stop`: the even ones in the first pool, the odd ones in the overflow pool."""
    return [live_pod(namespace, i, "pool" if i % 2 == 0 else "overflow") for i in range(start, stop)]


def in_pool(live: int) -> int:
    return (live + 1) // 2


# --------------------------------------------------------------------------------------------- the API process


def serve_api(conn, namespace: str) -> None:
    """Child process: the local API endpoint with the CRD and namespace; seeds pods on request (straight into its
    store, as a restore from a backup would: no admission), answers its port, serves until told to stop."""
    import logging

    from burstflow.apisim import ApiSim

    async def serve() -> None:
        # A long history: 3 replicas' writes during a rebuild must not expire the reconciler's continue tokens.
        sim = ApiSim(history=50_000)
        sim.put_object("customresourcedefinitions", yaml.safe_load(CRD.read_text()))
        sim.put_object("namespaces", {"metadata": {"name": namespace}})
        await sim.start()
        conn.send(sim.port)
        loop = asyncio.get_running_loop()
        while True:
            command, *args = await loop.run_in_executor(None, conn.recv)
            if command == "seed":
                started = time.perf_counter()  # put_object: stored directly, about 0.3 ms a pod
                for pod in live_pods(namespace, *args):
                    sim.put_object("pods", pod)
                conn.send(time.perf_counter() - started)
            elif command == "stop":
                break
        await sim.stop()
        conn.send("stopped")

    logging.basicConfig(level=logging.WARNING)
    asyncio.run(serve())


async def seed_cluster(kube: k.Kube, namespace: str, start: int, stop: int) -> float:
    """Create the live pods on a real cluster, 50 at a time (the API server's own admission and etcd included)."""
    started = time.perf_counter()
    pods = live_pods(namespace, start, stop)
    limit = asyncio.Semaphore(50)

    async def one(pod: dict) -> None:
        async with limit:
            pod = {key: value for key, value in pod.items() if key != "status"}
            await kube.create(k.PODS, pod)

    await asyncio.gather(*(one(pod) for pod in pods))
    return time.perf_counter() - started


# ------------------------------------------------------------------------------------------- a replica process


def serve_replica(conn, kubeconfig: str, namespace: str, identity: str, cert: str, key: str, policy: dict,
                  lease: str) -> None:
    """Child process: one webhook replica (HTTPS server + pool stack, a candidate for the reconciler's Lease)."""
    import logging

    from prometheus_client import CollectorRegistry

    from burstflow.clock import SystemClock
    from burstflow.webhook.admitter import PodAdmitter, PolicyStore
    from burstflow.webhook.policy import PolicySet
    from burstflow.webhook.pools.model import compile_resource_policy
    from burstflow.webhook.pools.stack import PoolStack
    from burstflow.webhook.server import Server
    from burstflow.webhook.settings import WebhookSettings

    async def serve() -> None:
        kube = await k.Kube.connect(kubeconfig)
        registry = CollectorRegistry()
        compiled = compile_resource_policy(policy)
        stack = PoolStack(kube=kube, clock=SystemClock(), registry=registry, identity=identity,
                          lease_namespace=namespace, namespace=namespace, decision_timeout=10.0,
                          name=lease)
        stack.start()
        admitter = PodAdmitter(store=PolicyStore(PolicySet(compiled={"ResourcePolicy": (compiled,)})),
                               namespaces={}, placer=stack.placer)
        settings = WebhookSettings(cert_file=cert, key_file=key, bind_address="127.0.0.1", port=0,
                                   metrics_address="127.0.0.1", metrics_port=0, policies_from_cluster=False)
        server = Server(admitter=admitter, settings=settings, registry=registry)
        await server.start()
        conn.send(server.url())
        loop = asyncio.get_running_loop()
        while True:
            command = await loop.run_in_executor(None, conn.recv)
            if command == "stats":
                def value(name: str, labels: dict | None = None) -> float:
                    return registry.get_sample_value(name, labels or {}) or 0.0
                conn.send({"leader": stack.is_leader, "rss": rss_mib(os.getpid()),
                           "writes": value("burstflow_pool_status_writes_total", {"result": "ok"}),
                           "conflicts": value("burstflow_pool_status_writes_total", {"result": "conflict"}),
                           "bytes": value("burstflow_pool_status_write_bytes_total"),
                           "largest": value("burstflow_pool_status_object_bytes"),
                           "rebuild": stack.reconciler.rebuild_seconds, "cpu": time.process_time()})
            elif command == "stop":
                break
        await server.stop()
        await stack.stop()
        await kube.close()
        conn.send("stopped")

    logging.basicConfig(level=logging.WARNING)
    asyncio.run(serve())


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Replicas:
    """N replica processes; `ask(command)` sends it to each and returns their answers."""

    def __init__(self, count: int, *, kubeconfig: str, namespace: str, tls: TlsDir, policy: dict) -> None:
        context = multiprocessing.get_context("spawn")
        lease = f"bench-{uuid.uuid4().hex[:6]}"  # a fresh Lease: a new leader at once, no wait for an old one
        self.pipes, self.processes = [], []
        for index in range(count):
            parent, child = context.Pipe()
            process = context.Process(target=serve_replica, daemon=True, args=(
                child, kubeconfig, namespace, f"replica-{index}", str(tls.cert_path), str(tls.key_path), policy,
                lease))
            process.start()
            self.pipes.append(parent)
            self.processes.append(process)
        self.urls = [pipe.recv() for pipe in self.pipes]

    def ask(self, command: str) -> list[Any]:
        for pipe in self.pipes:
            pipe.send(command)
        return [pipe.recv() for pipe in self.pipes]

    def stop(self) -> None:
        self.ask("stop")
        for process in self.processes:
            process.join(10)


# -------------------------------------------------------------------------------------------------- the load


def review(namespace: str, labels: dict, index: int) -> dict:
    pod = workflow_pod(namespace, labels, index)
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": str(uuid.uuid4()), "kind": {"group": "", "version": "v1", "kind": "Pod"},
                        "resource": {"group": "", "version": "v1", "resource": "pods"}, "namespace": namespace,
                        "operation": "CREATE", "userInfo": {"username": "argo"}, "object": pod}}


async def burst(session: aiohttp.ClientSession, urls: list[str], namespace: str, labels: dict,
                pods: int) -> tuple[list[float], list[dict]]:
    """`pods` admissions at once, spread round-robin over the replicas; latencies and the patched pods."""
    bodies = [review(namespace, labels, index) for index in range(pods)]

    async def one(index: int) -> tuple[float, dict]:
        started = time.perf_counter()
        async with session.post(urls[index % len(urls)], json=bodies[index]) as response:
            answer = (await response.json())["response"]
        return time.perf_counter() - started, answer

    results = await asyncio.gather(*(one(i) for i in range(pods)))
    # Patches are applied after the clock stopped: this process's CPU is shared with the replicas, and only the
    # pool answers carry patches, so applying them on the way would tax only the pool burst.
    pods_out = []
    for body, (_, answer) in zip(bodies, results):
        pod = body["request"]["object"]
        if "patch" in answer:
            pod = jsonpatch.apply_patch(pod, json.loads(base64.b64decode(answer["patch"])))
        pods_out.append({"allowed": answer["allowed"], "pod": pod})
    return [r[0] for r in results], pods_out


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


async def wait_for(predicate, timeout: float, what: str) -> float:
    started = time.perf_counter()
    while not await predicate():
        if time.perf_counter() - started > timeout:
            raise SystemExit(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.1)
    return time.perf_counter() - started


async def run_live(*, live: int, args: argparse.Namespace, admin: k.Kube, kubeconfig: str, namespace: str,
                   tls: TlsDir, seed, seeded: int) -> dict:
    """One run at `live` live pods (seeding the ones missing): rebuild, baseline burst, pool burst."""
    if live > seeded:
        seconds = await seed(seeded, live)
        print(f"  seeded {live - seeded:,} live pods in {seconds:.1f}s", flush=True)
    pool_max = in_pool(live) + ROOM
    obj = policy_object(namespace, pool_max)
    current = await admin.get(k.RESOURCEPOLICIES, POLICY, namespace=namespace)
    current["spec"] = obj["spec"]
    current = await admin.replace(k.RESOURCEPOLICIES, current)
    # Forget the previous run's reservations (their pods were never created): counts are rebuilt from the pods.
    await admin.replace(k.RESOURCEPOLICIES, {**current, "status": {}}, subresource="status")

    replicas = Replicas(args.replicas, kubeconfig=kubeconfig, namespace=namespace, tls=tls,
                        policy=await admin.get(k.RESOURCEPOLICIES, POLICY, namespace=namespace))
    try:
        async def rebuilt() -> bool:
            return any(answer["rebuild"] is not None for answer in replicas.ask("stats"))

        await wait_for(rebuilt, 120, "the reconciler's first pass")
        status = (await admin.get(k.RESOURCEPOLICIES, POLICY, namespace=namespace)).get("status") or {}
        running = sum(item.get("running", 0) for item in status.get("subsets") or [])
        after_rebuild = replicas.ask("stats")
        connector = aiohttp.TCPConnector(ssl=tls_context(tls), limit=0, limit_per_host=100)
        async with aiohttp.ClientSession(connector=connector) as session:
            # Warm up with a whole burst, so every connection's TLS handshake is done before either measurement.
            await burst(session, replicas.urls, namespace, NOT_SELECTED, args.pods)
            # Alternating rounds, so a neighbour's load on this shared machine hits both sides alike. Only the first
            # pool round is counted for writes and bytes: later rounds find the pool full and spill.
            base_latency, latency, answers, wall = [], [], [], 0.0
            for round_ in range(args.rounds):
                if round_ == 0:
                    base_before = replicas.ask("stats")
                base_latency += (await burst(session, replicas.urls, namespace, NOT_SELECTED, args.pods))[0]
                if round_ == 0:
                    before = replicas.ask("stats")
                started = time.perf_counter()
                took, answered = await burst(session, replicas.urls, namespace, SELECTED, args.pods)
                latency += took
                if round_ == 0:
                    wall = time.perf_counter() - started
                    after = replicas.ask("stats")
                    answers = answered
        status = (await admin.get(k.RESOURCEPOLICIES, POLICY, namespace=namespace)).get("status") or {}
    finally:
        replicas.stop()
    # The API's own share of a rebuild: the same paged list of every pool pod, read and dropped by this process.
    started = time.perf_counter()
    await admin.list(k.PODS, namespace=namespace, label_selector=POOL_LABEL, page_size=POD_PAGE_SIZE,
                     transform=lambda pod: None)
    bare_list = time.perf_counter() - started
    admitted = sum(1 for a in answers if a["allowed"])
    in_pool_now = {item["name"]: item["placed"] for item in status.get("subsets") or []}.get("pool", 0)
    answered_pool = sum(1 for a in answers if a["pod"]["metadata"]["labels"].get(POOL_LABEL) == "pool")
    leader = next((a for a in after_rebuild if a["rebuild"] is not None), after_rebuild[0])
    return {
        "live": live, "burst": args.pods, "running": running, "pool_max": pool_max, "admitted": admitted, "answered_pool": answered_pool,
        "overshoot": max(0, in_pool_now - pool_max, in_pool(live) + answered_pool - pool_max),
        "writes": sum(a["writes"] for a in after) - sum(b["writes"] for b in before),
        "conflicts": sum(a["conflicts"] for a in after) - sum(b["conflicts"] for b in before),
        "bytes": sum(a["bytes"] for a in after) - sum(b["bytes"] for b in before),
        "largest": max(a["largest"] for a in after),
        # The replicas' CPU seconds (all threads) over the first pool burst and over the baseline burst before it.
        "cpu": sum(a["cpu"] for a in after) - sum(b["cpu"] for b in before),
        "base_cpu": sum(b["cpu"] for b in before) - sum(b["cpu"] for b in base_before),
        "p50": statistics.median(latency), "p99": p99(latency),
        "base_p50": statistics.median(base_latency), "base_p99": p99(base_latency), "wall": wall,
        "rebuild": leader["rebuild"], "bare_list": bare_list, "leader_rss": max(a["rss"] for a in after if a["leader"]) if any(
            a["leader"] for a in after) else leader["rss"],
        "replica_rss": max((a["rss"] for a in after if not a["leader"]), default=float("nan")),
    }


def tls_context(tls: TlsDir):
    import ssl
    return ssl.create_default_context(cadata=tls.ca_pem.decode())


def args_pods(figures: dict) -> int:
    """Admissions per burst (every pod of the burst was answered, admitted or not)."""
    return max(1, figures["burst"])


def report(figures: dict) -> None:
    f = figures
    print(f"  live pods {f['live']:,} (rebuilt count {f['running']:,}); pool max {f['pool_max']:,}; "
          f"admitted {f['admitted']:,}, {f['answered_pool']} into the pool")
    print(f"    overshoot                  {f['overshoot']}  (goal 0)")
    print(f"    status writes / admitted   {f['writes']:.0f}/{f['admitted']} = {f['writes'] / max(1, f['admitted']):.3f}"
          f"  ({f['conflicts']:.0f} conflicts; goal <= 0.1)")
    print(f"    bytes written / admitted   {f['bytes'] / max(1, f['admitted']):,.0f}")
    print(f"    largest object written     {f['largest'] / 1024:.1f} KiB  (goal < 100 KiB)")
    print(f"    latency p50 / p99          {f['p50'] * 1000:.0f} / {f['p99'] * 1000:.0f} ms with pools, "
          f"{f['base_p50'] * 1000:.0f} / {f['base_p99'] * 1000:.0f} ms without -> p99 ratio "
          f"{f['p99'] / f['base_p99']:.2f}  (goal <= 1.5); first pool burst took {f['wall']:.1f} s")
    print(f"    replica CPU / admission    {f['cpu'] * 1000 / args_pods(f):.2f} ms with pools, "
          f"{f['base_cpu'] * 1000 / args_pods(f):.2f} ms without -> ratio {f['cpu'] / max(1e-9, f['base_cpu']):.2f}"
          f"  (on 2,000 concurrent admissions the latency follows the CPU)")
    print(f"    reconciler rebuild         {f['rebuild']:.2f} s  (goal < 10 s; the API alone lists those pods in "
          f"{f['bare_list']:.2f} s)")
    print(f"    resident memory            leader (webhook + reconciler) {f['leader_rss']:.0f} MiB, other replica "
          f"{f['replica_rss']:.0f} MiB  (goal < 300 MiB)", flush=True)


async def main(args: argparse.Namespace) -> int:
    lives = sorted(int(x) for x in args.live.split(","))
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    api_process = None
    with tempfile.TemporaryDirectory(prefix="pool-bench-") as tmp:
        tls = TlsDir(Path(tmp) / "tls")
        if args.kubeconfig:
            kubeconfig = args.kubeconfig
            admin = await k.Kube.connect(kubeconfig)
            await admin.create(k.NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
            await create_missing_crds(admin, CRD)  # and waits until it is served

            async def seed(start: int, stop: int) -> float:
                return await seed_cluster(admin, namespace, start, stop)
            where = f"the cluster in {kubeconfig}, namespace {namespace}"
        else:
            parent, child = multiprocessing.get_context("spawn").Pipe()
            api_process = multiprocessing.get_context("spawn").Process(target=serve_api, args=(child, namespace),
                                                                     daemon=True)
            api_process.start()
            port = parent.recv()
            kubeconfig = str(Path(tmp) / "kubeconfig")
            Path(kubeconfig).write_text(yaml.safe_dump({
                "apiVersion": "v1", "kind": "Config", "current-context": "bench",
                "clusters": [{"name": "bench", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
                "users": [{"name": "bench", "user": {"token": "bench"}}],
                "contexts": [{"name": "bench", "context": {"cluster": "bench", "user": "bench"}}]}))
            admin = await k.Kube.connect(kubeconfig)

            async def seed(start: int, stop: int) -> float:
                parent.send(("seed", start, stop))
                return await asyncio.get_running_loop().run_in_executor(None, parent.recv)
            where = "the local API endpoint (its own process)"
        await admin.create(k.RESOURCEPOLICIES, policy_object(namespace, ROOM))
        print(f"{args.replicas} webhook replicas (one process each) x {args.pods:,} concurrent admissions against "
              f"{where}; {os.cpu_count()} cores", flush=True)
        results = []
        seeded = 0
        try:
            for live in lives:
                results.append(await run_live(live=live, args=args, admin=admin, kubeconfig=kubeconfig,
                                              namespace=namespace, tls=tls, seed=seed, seeded=seeded))
                seeded = live
                report(results[-1])
        finally:
            if args.kubeconfig:
                await admin.delete(k.NAMESPACES, namespace, propagation="Background")
            else:
                parent.send(("stop",))
                parent.recv()
                api_process.join(10)
            await admin.close()
    small, big = results[0], results[-1]
    per_pod = [r["bytes"] / max(1, r["admitted"]) for r in (small, big)]
    bytes_ratio = per_pod[1] / per_pod[0] if per_pod[0] else float("nan")
    latency_ratio = big["p99"] / big["base_p99"]
    checks = {
        "overshoot 0": all(r["overshoot"] == 0 for r in results),
        "writes/admitted <= 0.1": all(r["writes"] / max(1, r["admitted"]) <= 0.1 for r in results),
        f"bytes/admitted at {big['live']:,} vs {small['live']:,} live = {bytes_ratio:.2f} <= 1.5": bytes_ratio <= 1.5,
        f"p99 with/without pools at {big['live']:,} live = {latency_ratio:.2f} <= 1.5": latency_ratio <= 1.5,
        "largest object < 100 KiB": all(r["largest"] < 100 * 1024 for r in results),
        "rebuild < 10 s": all(r["rebuild"] < 10 for r in results),
        "memory < 300 MiB": all(r["leader_rss"] < 300 and not r["replica_rss"] >= 300 for r in results),
    }
    print("goals: " + "; ".join(f"{name}: {'met' if ok else 'MISSED'}" for name, ok in checks.items()))
    return 0 if checks["overshoot 0"] else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--live", default="100,100000", help="live pods before the burst, comma-separated runs")
    parser.add_argument("--pods", type=int, default=2000, help="concurrent admissions per burst")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2, help="alternating baseline / pool bursts for the latency")
    parser.add_argument("--kubeconfig", help="run against this cluster instead of the local API endpoint")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
