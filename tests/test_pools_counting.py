"""Exact pool counting end to end: real HTTPS webhook replicas, each with its own gateway connection, sharing one
API (the local endpoint, or a real cluster via BURSTFLOW_E2E_KUBECONFIG): bursts, faults, reinvocation, dry-run,
freed slots, a dead replica's reservations expiring, all-full choices and a bounded answer when the API is away."""
from __future__ import annotations

import asyncio
import base64
import collections
import copy
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import aiohttp
import jsonpatch
import pytest
from prometheus_client import CollectorRegistry

from burstflow import kube as k
from burstflow.clock import FakeClock, SystemClock
from tests.conftest import load_admission
from tests.podschema import assert_valid_pod
from tests.tls import TlsFiles
from burstflow.webhook.admitter import PodAdmitter, PolicyStore
from burstflow.webhook.policy import PolicySet
from burstflow.webhook.pools.ledger import BlockSettings, Ledger
from burstflow.webhook.pools.metrics import PoolMetrics
from burstflow.webhook.pools.model import POOL_LABEL, RESERVATION_ANNOTATION, compile_resource_policy
from burstflow.webhook.pools.placer import PoolPlacer
from burstflow.webhook.pools.reconciler import PoolReconciler
from burstflow.webhook.server import Server
from burstflow.webhook.settings import WebhookSettings

pytestmark = pytest.mark.kube

CRD = Path(__file__).resolve().parent.parent / "manifests" / "base" / "crds" / "resourcepolicies.burstflow.io.yaml"
START = datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)
SELECTOR = {"burstflow.io/test-pool": "yes"}
UNSCHEDULED = "burstflow-test-no-scheduler"
ECS = {"key": "pool", "operator": "In", "values": ["ecs"]}
VCI = {"key": "type", "operator": "In", "values": ["virtual-kubelet"]}
FIVE_HUNDRED_UNLIMITED = [{"name": "ecs", "maxReplicas": 5, "nodeSelectorTerm": [ECS]},
                          {"name": "vci", "maxReplicas": 100, "nodeSelectorTerm": [VCI],
                           "provider": {"volcengine-vci": {"mode": "enforce"}}},
                          {"name": "rest"}]
SMALL = [{"name": "a", "maxReplicas": 2, "nodeSelectorTerm": [ECS]},
         {"name": "b", "maxReplicas": 1, "nodeSelectorTerm": [VCI]}]


def policy_object(namespace: str, subsets, **spec) -> dict:
    return {"apiVersion": "burstflow.io/v1alpha1", "kind": "ResourcePolicy",
            "metadata": {"name": "pools", "namespace": namespace},
            "spec": {"selector": dict(SELECTOR), "subsets": copy.deepcopy(subsets), **spec}}


@pytest.fixture
async def crd(install_crds):
    return await install_crds(CRD)


async def create_policy(kube: k.Kube, namespace: str, subsets, **spec):
    created = await kube.create(k.RESOURCEPOLICIES, policy_object(namespace, subsets, **spec))
    return compile_resource_policy(created)


async def policy_status(kube: k.Kube, namespace: str) -> dict:
    return (await kube.get(k.RESOURCEPOLICIES, "pools", namespace=namespace)).get("status") or {}


def placed_by_subset(status: dict) -> dict[str, int]:
    return {item["name"]: item["placed"] for item in status.get("subsets") or []}


def review(namespace: str, *, fixture: str = "pod-create-argo-workflow-pod.json", uid: str | None = None,
           obj: dict | None = None) -> dict:
    body = copy.deepcopy(load_admission(fixture)["body"])
    request = body["request"]
    request["uid"] = uid or str(uuid.uuid4())
    request["namespace"] = namespace
    if obj is None:
        obj = request["object"]
        obj["metadata"]["namespace"] = namespace
        obj["metadata"].setdefault("labels", {}).update(SELECTOR)
        obj["metadata"].pop("name", None)
        obj["metadata"]["generateName"] = "wf-"
    request["object"] = obj
    request.pop("name", None)
    return body


def patched_pod(body: dict, response: dict) -> dict:
    obj = body["request"]["object"]
    if "patch" not in response:
        return copy.deepcopy(obj)
    return jsonpatch.apply_patch(obj, json.loads(base64.b64decode(response["patch"])))


@dataclass
class Replica:
    kube: k.Kube
    ledger: Ledger
    metrics: PoolMetrics
    server: Server


class Cluster:
    """N webhook replicas (real HTTPS servers) in front of one API, plus an HTTPS client trusting them."""

    # Slot blocks (webhook/pools/ledger.py) off: these tests count per pod; tests/test_pools_blocks.py turns them on.
    blocks: BlockSettings | None = None

    def __init__(self, tls: TlsFiles) -> None:
        self.tls = tls
        self.replicas: list[Replica] = []
        self.session: aiohttp.ClientSession | None = None

    async def start(self, kube_factory, policies, *, count: int = 3, clock=None, decision_timeout: float = 10.0):
        for _ in range(count):
            kube = await kube_factory()
            registry = CollectorRegistry()
            metrics = PoolMetrics(registry)
            ledger = Ledger(kube=kube, clock=clock or SystemClock(), metrics=metrics, blocks=self.blocks)
            placer = PoolPlacer(ledger=ledger, metrics=metrics, decision_timeout=decision_timeout)
            admitter = PodAdmitter(store=PolicyStore(PolicySet(compiled={"ResourcePolicy": tuple(policies)})),
                                   namespaces={}, placer=placer)
            settings = WebhookSettings(cert_file=str(self.tls.cert_path), key_file=str(self.tls.key_path),
                                       bind_address="127.0.0.1", port=0, metrics_address="127.0.0.1",
                                       metrics_port=0, policies_from_cluster=False)
            server = Server(admitter=admitter, settings=settings, registry=registry)
            await server.start()
            self.replicas.append(Replica(kube, ledger, metrics, server))
        connector = aiohttp.TCPConnector(ssl=self.tls.client_context(), limit=60)
        self.session = aiohttp.ClientSession(connector=connector)
        return self

    async def admit(self, body: dict, replica: int = 0) -> dict:
        async with self.session.post(self.replicas[replica].server.url(), json=body) as response:
            assert response.status == 200, await response.text()
            return (await response.json())["response"]

    async def burst(self, bodies: list[dict]) -> list[dict]:
        return await asyncio.gather(*(self.admit(body, i % len(self.replicas)) for i, body in enumerate(bodies)))

    async def stop(self):
        if self.session:
            await self.session.close()
        for replica in self.replicas:
            await replica.server.stop()
            await replica.ledger.close()


@pytest.fixture
async def cluster(tmp_path):
    instance = Cluster(TlsFiles(tmp_path / "tls"))
    try:
        yield instance
    finally:
        await instance.stop()


async def create_pod(kube: k.Kube, pod: dict, name: str) -> dict:
    pod = copy.deepcopy(pod)
    pod["metadata"].pop("generateName", None)
    pod["metadata"]["name"] = name
    for key in ("creationTimestamp", "managedFields", "uid", "resourceVersion"):
        pod["metadata"].pop(key, None)
    # No scheduler serves this name, so on a cluster with one the pod stays unbound: counted where it was reserved,
    # whatever nodes other tests have created.
    pod["spec"].setdefault("schedulerName", UNSCHEDULED)
    return await kube.create(k.PODS, pod)


def pools_of(pods: list[dict]) -> collections.Counter:
    return collections.Counter(p["metadata"]["labels"].get(POOL_LABEL) for p in pods)


# --- bursts -----------------------------------------------------------------------------------------------------


async def test_three_replicas_500_concurrent_admissions_place_exactly_5_and_100(kube, namespace, crd, kube_factory,
                                                                              cluster, _local_sim):
    policy = await create_policy(kube, namespace, FIVE_HUNDRED_UNLIMITED)
    await cluster.start(kube_factory, [policy])
    bodies = [review(namespace) for _ in range(500)]
    responses = await cluster.burst(bodies)
    assert all(r["allowed"] for r in responses), [r for r in responses if not r["allowed"]][:1]
    pods = [patched_pod(b, r) for b, r in zip(bodies, responses)]
    assert pools_of(pods) == {"ecs": 5, "vci": 100, "rest": 395}
    assert len({p["metadata"]["annotations"][RESERVATION_ANNOTATION] for p in pods}) == 500
    status = await policy_status(kube, namespace)
    assert placed_by_subset(status) == {"ecs": 5, "vci": 100, "rest": 395}
    assert status["summary"] == "ecs 5/5, vci 100/100, rest 395/-, unplaced 0"
    for pod in pods[:20]:
        assert_valid_pod(pod)
    if _local_sim is not None:
        writes = _local_sim.requests[("update", "resourcepolicies/status")]
        assert writes / 500 <= 0.2, f"{writes} status writes for 500 pods"


async def test_burst_with_injected_conflicts_and_server_errors_stays_exact(kube, namespace, crd, kube_factory,
                                                                          cluster, sim):
    policy = await create_policy(kube, namespace, FIVE_HUNDRED_UNLIMITED)
    sim.faults.add(method="PUT", path=r"resourcepolicies/pools/status", status=409, probability=0.15, seed=1)
    sim.faults.add(method="PUT", path=r"resourcepolicies/pools/status", status=500, probability=0.1, seed=2)
    sim.faults.add(method="GET", path=r"resourcepolicies/pools$", status=500, probability=0.1, seed=3)
    await cluster.start(kube_factory, [policy])
    bodies = [review(namespace) for _ in range(500)]
    responses = await cluster.burst(bodies)
    assert all(r["allowed"] for r in responses)
    pods = [patched_pod(b, r) for b, r in zip(bodies, responses)]
    assert pools_of(pods) == {"ecs": 5, "vci": 100, "rest": 395}
    assert all(rule.fired > 0 for rule in sim.faults.rules), [(rule.status, rule.fired) for rule in sim.faults.rules]
    sim.faults.clear()  # the faults are for the replicas; the test's own read of the result must not get one
    assert placed_by_subset(await policy_status(kube, namespace)) == {"ecs": 5, "vci": 100, "rest": 395}
    conflicts = sum(r.metrics.status_writes.labels(result="conflict")._value.get() for r in cluster.replicas)
    assert conflicts > 0


# --- one pod, several calls -------------------------------------------------------------------------------------


async def test_reinvocation_with_new_uid_and_no_name_reuses_the_placement(kube, namespace, crd, kube_factory,
                                                                         cluster):
    policy = await create_policy(kube, namespace, SMALL)
    await cluster.start(kube_factory, [policy], count=1)
    first = review(namespace, fixture="pod-create-generatename.json")
    assert "name" not in first["request"]["object"]["metadata"]
    response = await cluster.admit(first)
    placed = patched_pod(first, response)
    assert placed["metadata"]["labels"][POOL_LABEL] == "a"
    # The captured reinvocation: a new uid, still no name, our patch and a later webhook's change applied.
    again = copy.deepcopy(placed)
    again["metadata"].setdefault("annotations", {})["b"] = "1"
    second = review(namespace, fixture="pod-create-generatename-reinvocation.json", obj=again)
    assert second["request"]["uid"] != first["request"]["uid"]
    response = await cluster.admit(second)
    assert response["allowed"] and "patch" not in response
    status = await policy_status(kube, namespace)
    assert placed_by_subset(status) == {"a": 1, "b": 0}
    assert_valid_pod(placed)


async def test_dry_run_is_placed_but_not_counted(kube, namespace, crd, kube_factory, cluster):
    policy = await create_policy(kube, namespace, SMALL)
    await cluster.start(kube_factory, [policy], count=1)
    body = review(namespace, fixture="pod-create-dry-run.json")
    assert body["request"]["dryRun"] is True
    response = await cluster.admit(body)
    assert patched_pod(body, response)["metadata"]["labels"][POOL_LABEL] == "a"
    assert placed_by_subset(await policy_status(kube, namespace)) in ({}, {"a": 0, "b": 0})
    real = review(namespace)
    await cluster.admit(real)
    assert placed_by_subset(await policy_status(kube, namespace)) == {"a": 1, "b": 0}


# --- slots freed -------------------------------------------------------------------------------------------------


async def test_deleted_and_succeeded_pods_free_their_slots_for_reuse(kube, namespace, crd, kube_factory, cluster):
    policy = await create_policy(kube, namespace, SMALL, whenAllFull="Deny")
    await cluster.start(kube_factory, [policy], count=1)
    reconciler = PoolReconciler(kube=kube, clock=SystemClock(), namespace=namespace)
    bodies = [review(namespace) for _ in range(3)]
    pods = [patched_pod(b, await cluster.admit(b)) for b in bodies]
    assert [p["metadata"]["labels"][POOL_LABEL] for p in pods] == ["a", "a", "b"]
    full = await cluster.admit(review(namespace))
    assert (full["allowed"], full["status"]["code"]) == (False, 429)
    assert "every pool of ResourcePolicy" in full["status"]["message"]
    for i, pod in enumerate(pods):
        await create_pod(kube, pod, f"wf-{i}")
    await reconciler.reconcile_once(await reconciler.list_pods())
    status = await policy_status(kube, namespace)
    # Seen pods are counted as running (a number, not a per-pod entry) and their reservations are gone.
    assert {key: status["subsets"][0][key] for key in ("placed", "running", "pending")} == \
        {"placed": 2, "running": 2, "pending": 0}
    assert status["subsets"][0]["reservations"] == {}

    await kube.delete(k.PODS, "wf-0", namespace=namespace, grace_period_seconds=0)
    current = await kube.get(k.PODS, "wf-1", namespace=namespace)  # a real server may have updated it since
    succeeded = dict(current, status=dict(current.get("status") or {}, phase="Succeeded"))
    await kube.replace(k.PODS, succeeded, subresource="status")
    await reconciler.reconcile_once(await reconciler.list_pods())
    assert placed_by_subset(await policy_status(kube, namespace)) == {"a": 0, "b": 1}
    again = [patched_pod(b, await cluster.admit(b)) for b in (review(namespace), review(namespace))]
    assert [p["metadata"]["labels"][POOL_LABEL] for p in again] == ["a", "a"]
    assert (await cluster.admit(review(namespace)))["allowed"] is False


async def test_dead_replica_reservations_expire_and_counts_converge(kube, namespace, crd, kube_factory, cluster):
    clock = FakeClock(START)
    policy = await create_policy(kube, namespace, FIVE_HUNDRED_UNLIMITED)
    await cluster.start(kube_factory, [policy], count=3, clock=clock)
    reconciler = PoolReconciler(kube=kube, clock=clock, namespace=namespace, reservation_timeout=60)
    bodies = [review(namespace) for _ in range(60)]
    responses = await cluster.burst(bodies)
    # Replica 2 "dies": the API server never got its answers, so its pods are never created.
    survivors = [patched_pod(b, r) for i, (b, r) in enumerate(zip(bodies, responses)) if i % 3 != 2]
    for i, pod in enumerate(survivors):
        await create_pod(kube, pod, f"wf-{i}")
    clock.advance(30)
    await reconciler.reconcile_once(await reconciler.list_pods())
    assert sum(placed_by_subset(await policy_status(kube, namespace)).values()) == 60
    clock.advance(31)
    await reconciler.reconcile_once(await reconciler.list_pods())
    status = await policy_status(kube, namespace)
    survived = pools_of(survivors)
    assert placed_by_subset(status) == {name: survived[name] for name in ("ecs", "vci", "rest")}
    assert all(not item["reservations"] for item in status["subsets"])
    assert placed_by_subset(status)["ecs"] <= 5 and placed_by_subset(status)["vci"] <= 100
    # The freed slots are used again, and still never over.
    more = [review(namespace) for _ in range(30)]
    pods = [patched_pod(b, r) for b, r in zip(more, await cluster.burst(more))]
    final = placed_by_subset(await policy_status(kube, namespace))
    assert final["ecs"] == 5 and final["vci"] <= 100 and sum(final.values()) == len(survivors) + 30
    assert pools_of(pods)["ecs"] == 5 - survived["ecs"]


# --- all full, API away --------------------------------------------------------------------------------------


@pytest.mark.parametrize("choice,expected_pool,allowed", [
    ("LastPool", "b", True), ("Unplaced", "", True), ("Deny", None, False)])
async def test_all_full_choices(kube, namespace, crd, kube_factory, cluster, choice, expected_pool, allowed):
    policy = await create_policy(kube, namespace, SMALL, whenAllFull=choice)
    await cluster.start(kube_factory, [policy], count=1)
    for _ in range(3):
        await cluster.admit(review(namespace))
    body = review(namespace)
    response = await cluster.admit(body)
    assert response["allowed"] is allowed
    if allowed:
        pod = patched_pod(body, response)
        assert pod["metadata"]["labels"][POOL_LABEL] == expected_pool
        assert_valid_pod(pod)
        if expected_pool == "":
            assert "affinity" not in pod["spec"]
    else:
        assert response["status"] == {"code": 429, "message": "every pool of ResourcePolicy "
                                      f"{namespace}/pools is full (a 2/2, b 1/1); retry later"}
    status = await policy_status(kube, namespace)
    expected = {"LastPool": {"a": 2, "b": 2}, "Unplaced": {"a": 2, "b": 1}, "Deny": {"a": 2, "b": 1}}[choice]
    assert placed_by_subset(status) == expected
    assert status["unplaced"]["placed"] == (1 if choice == "Unplaced" else 0)


@pytest.mark.parametrize("choice", ["Deny", "LastPool"])
@pytest.mark.parametrize("fault", ["slow", "down"])
async def test_api_unreachable_gets_a_bounded_answer(kube, namespace, crd, kube_factory, cluster, sim, choice, fault):
    policy = await create_policy(kube, namespace, SMALL, whenUnavailable=choice)
    if fault == "slow":
        sim.faults.add_latency(5.0, path=r"resourcepolicies")
    else:
        sim.faults.add(path=r"resourcepolicies", status=503)
    await cluster.start(kube_factory, [policy], count=1, decision_timeout=0.3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    body = review(namespace)
    response = await cluster.admit(body)
    assert loop.time() - started < 2.0
    if choice == "Deny":
        assert response["allowed"] is False and response["status"]["code"] == 429
        assert "unavailable" in response["status"]["message"]
    else:
        pod = patched_pod(body, response)
        assert pod["metadata"]["labels"][POOL_LABEL] == "b"
        assert any("without a reservation" in w for w in response["warnings"])
