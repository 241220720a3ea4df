"""Pool burst benchmark: 3 webhook replicas (real HTTPS, one gateway connection each) share a local ApiSim and
receive 500 concurrent pod admissions for a policy whose first pool holds at most 100 pods.

Prints the overshoot (pods over the pool's max; must be 0), ResourcePolicy status writes per admitted pod (from the
sim's request counters; target <= 0.2) and the p99 admission latency with the pool policy as a ratio to the same
burst through the same replicas without it, both measured in this run.

    .venv/bin/python benchmarks/pool_burst.py [--pods 500] [--replicas 3] [--max 100]
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import copy
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
import jsonpatch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from burstflow import kube as k  # noqa: E402
from burstflow.apisim import ApiSim  # noqa: E402
from burstflow.certs import TlsDir  # noqa: E402
from webhook.pools.demo import CRD, start_webhook, workflow_pod  # noqa: E402
from webhook.pools.model import POOL_LABEL, compile_resource_policy  # noqa: E402

NAMESPACE = "bench"
LABELS = {"burstflow.io/bench": "pool"}


def policy_object(pool_max: int) -> dict:
    return {"apiVersion": "burstflow.io/v1alpha1", "kind": "ResourcePolicy",
            "metadata": {"name": "burst", "namespace": NAMESPACE},
            "spec": {"selector": dict(LABELS), "subsets": [
                {"name": "pool", "maxReplicas": pool_max,
                 "nodeSelectorTerm": [{"key": "type", "operator": "In", "values": ["virtual-kubelet"]}]},
                {"name": "overflow"}]}}


def review(index: int) -> dict:
    pod = workflow_pod(NAMESPACE, LABELS, index)
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": str(uuid.uuid4()), "kind": {"group": "", "version": "v1", "kind": "Pod"},
                        "resource": {"group": "", "version": "v1", "resource": "pods"}, "namespace": NAMESPACE,
                        "operation": "CREATE", "userInfo": {"username": "argo"}, "object": pod}}


async def burst(urls: list[str], session: aiohttp.ClientSession, pods: int) -> tuple[list[float], list[dict]]:
    async def one(index: int) -> tuple[float, dict]:
        body = review(index)
        started = time.perf_counter()
        async with session.post(urls[index % len(urls)], json=body) as response:
            answer = (await response.json())["response"]
        elapsed = time.perf_counter() - started
        obj = body["request"]["object"]
        if "patch" in answer:
            import base64
            obj = jsonpatch.apply_patch(obj, json.loads(base64.b64decode(answer["patch"])))
        return elapsed, {"allowed": answer["allowed"], "pod": obj}

    results = await asyncio.gather(*(one(i) for i in range(pods)))
    return [r[0] for r in results], [r[1] for r in results]


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


async def run(pods: int, replicas: int, pool_max: int) -> dict:
    async with ApiSim() as sim:
        with tempfile.TemporaryDirectory(prefix="pool-bench-") as tmp:
            kubeconfig = str(sim.write_kubeconfig(Path(tmp) / "kubeconfig"))
            tls = TlsDir(Path(tmp) / "tls")
            import ssl
            ctx = ssl.create_default_context(cadata=tls.ca_pem.decode())
            admin = await k.Kube.connect(kubeconfig)
            import yaml
            await admin.create(k.CRDS, yaml.safe_load(CRD.read_text()))
            await admin.create(k.NAMESPACES, {"apiVersion": "v1", "kind": "Namespace",
                                              "metadata": {"name": NAMESPACE}})
            policy = compile_resource_policy(await admin.create(k.RESOURCEPOLICIES, policy_object(pool_max)))
            figures = {}
            for label, policies in (("without pools", None), ("with pools", [policy])):
                servers, stacks, kubes = [], [], []
                for index in range(replicas):
                    kube = await k.Kube.connect(kubeconfig)
                    server, stack = await start_webhook(kube=kube, tls=tls, policies=policies,
                                                        identity=f"bench-{index}", lease_namespace=NAMESPACE,
                                                        decision_timeout=10.0)
                    servers.append(server)
                    stacks.append(stack)
                    kubes.append(kube)
                writes_before = sim.requests[("update", "resourcepolicies/status")]
                connector = aiohttp.TCPConnector(ssl=ctx, limit=100)
                async with aiohttp.ClientSession(connector=connector) as session:
                    urls = [server.url() for server in servers]
                    await burst(urls, session, 30)  # warm up connections and code paths
                    if policies:
                        await admin.replace(k.RESOURCEPOLICIES, {
                            **(await admin.get(k.RESOURCEPOLICIES, "burst", namespace=NAMESPACE)), "status": {}},
                            subresource="status")
                    writes_before = sim.requests[("update", "resourcepolicies/status")]
                    started = time.perf_counter()
                    latencies, answers = await burst(urls, session, pods)
                    wall = time.perf_counter() - started
                writes = sim.requests[("update", "resourcepolicies/status")] - writes_before
                for server, stack, kube in zip(servers, stacks, kubes):
                    await server.stop()
                    if stack:
                        await stack.stop()
                    await kube.close()
                counts = collections.Counter(a["pod"]["metadata"].get("labels", {}).get(POOL_LABEL)
                                             for a in answers if a["allowed"])
                figures[label] = {"p50": statistics.median(latencies), "p99": p99(latencies), "wall": wall,
                                  "writes": writes, "counts": counts,
                                  "admitted": sum(1 for a in answers if a["allowed"])}
            status = (await admin.get(k.RESOURCEPOLICIES, "burst", namespace=NAMESPACE))["status"]
            await admin.close()
            figures["status"] = {item["name"]: item["placed"] for item in status["subsets"]}
            return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=500)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--max", type=int, default=100, dest="pool_max")
    args = parser.parse_args()
    figures = asyncio.run(run(args.pods, args.replicas, args.pool_max))
    base, pools = figures["without pools"], figures["with pools"]
    placed = pools["counts"].get("pool", 0)
    overshoot = max(0, placed - args.pool_max, figures["status"].get("pool", 0) - args.pool_max)
    print(f"{args.replicas} replicas, {args.pods} concurrent admissions, pool max {args.pool_max}")
    print(f"  placed in pool:            {placed} (status says {figures['status'].get('pool')}), "
          f"overflow {pools['counts'].get('overflow', 0)}, admitted {pools['admitted']}/{args.pods}")
    print(f"  overshoot:                 {overshoot}  (must be 0)")
    print(f"  status writes / admitted:  {pools['writes']}/{pools['admitted']} = "
          f"{pools['writes'] / max(1, pools['admitted']):.3f}  (target <= 0.2)")
    print(f"  p50 latency:               {base['p50'] * 1000:.1f} ms without pools, {pools['p50'] * 1000:.1f} ms with")
    print(f"  p99 latency:               {base['p99'] * 1000:.1f} ms without pools, {pools['p99'] * 1000:.1f} ms with"
          f"  -> ratio {pools['p99'] / base['p99']:.2f}x")
    print(f"  burst wall time:           {base['wall']:.2f} s without pools, {pools['wall']:.2f} s with")
    return 0 if overshoot == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
