"""The reconciler under leader election: one replica reconciles (gauge 1), its watch frees the slot of a deleted
pod, and another replica takes over when it leaves; counts are rebuilt from the pod list on start; a bound pod is
counted in the pool whose nodes it runs on (nodes created through the API; pods bound by spec.nodeName)."""
from __future__ import annotations

import asyncio
import copy
from datetime import datetime, timezone

import pytest
from prometheus_client import CollectorRegistry

from burstflow import kube as k
from burstflow.clock import FakeClock, SystemClock
from tests.test_pools_counting import CRD, SMALL, create_pod, policy_object
from burstflow.webhook.pools.model import compile_resource_policy
from burstflow.webhook.pools.placement import shape_pod
from burstflow.webhook.pools.reconciler import NODES, PoolReconciler
from burstflow.webhook.pools.stack import PoolStack

pytestmark = pytest.mark.kube
# client-go's election periods (whole seconds, as a Lease stores them), run on an injected clock that the test
# steps one second at a time, so a hand-over costs no wall time.
ELECTION = {"lease_duration": 15, "renew_deadline": 10, "retry_period": 2}


async def stepping(clock: FakeClock, predicate, *, idle, limit: int = 120):
    """Check `predicate`, then advance `clock` one second and let every Lease request finish (`idle`); repeat up to
    `limit` simulated seconds. The pods, status writes and watches still run on real IO in between."""
    for _ in range(limit):
        value = await predicate()
        if value:
            return value
        clock.advance(1)
        await clock.settle(idle=idle)
    raise AssertionError(f"condition not met within {limit} simulated seconds")


async def eventually(predicate, timeout: float = 5.0):
    """Poll `predicate` on real IO until it holds (for what the real scheduler and API server do, not for time)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.02)


def fake_node(name: str, labels: dict[str, str], *, cpu: str = "4", taints: tuple[dict, ...] = ()) -> tuple[dict, dict]:
    """A Node and its Ready status, as ../shared/harness/fake-nodes.sh makes them: no kubelet behind it, so a real
    scheduler binds pods to it and they stay Pending with spec.nodeName set."""
    node = {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **labels}},
            "spec": {"taints": list(taints)}}
    now = "2026-01-01T00:00:00Z"
    resources = {"cpu": cpu, "memory": "1000Gi", "pods": "500"}
    status = {"capacity": resources, "allocatable": resources,
              "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "fake node",
                              "lastHeartbeatTime": now, "lastTransitionTime": now}]}
    return node, status


@pytest.fixture
async def fake_nodes(kube):
    """Creates Ready nodes through the API (deleted afterwards); returns each node's name."""
    made: list[str] = []

    async def make(name: str, labels: dict[str, str], **options) -> str:
        node, status = fake_node(name, labels, **options)
        await kube.create(NODES, node)
        made.append(name)
        await kube.patch(NODES, name, {"status": status}, subresource="status")
        # A real API server taints a new node not-ready (the node lifecycle controller would lift it): put back
        # exactly the taints asked for.
        await kube.patch(NODES, name, [{"op": "replace", "path": "/spec/taints", "value": node["spec"]["taints"]}],
                         patch_type="json")
        return name

    yield make
    for name in made:
        try:
            await kube.delete(NODES, name)
        except k.NotFound:
            pass


def gauge(registry: CollectorRegistry) -> float:
    return registry.get_sample_value("burstflow_leader_is_leader", {"component": "pool-reconciler"})


def pod_for(policy, subset: int, token: str, namespace: str) -> dict:
    base = {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"namespace": namespace, "labels": {"burstflow.io/test-pool": "yes"}},
            "spec": {"containers": [{"name": "main", "image": "alpine:3.20"}]}}
    return shape_pod(base, policy=policy, subset=subset, token=token)


async def test_one_leader_reconciles_and_another_takes_over(kube, namespace, install_crds, kube_factory):
    await install_crds(CRD)
    policy = compile_resource_policy(await kube.create(k.RESOURCEPOLICIES, policy_object(namespace, SMALL)))
    stacks, registries = [], []
    clock = FakeClock(datetime.now(timezone.utc))

    def idle() -> bool:
        return all(stack.leadership.elector.in_flight == 0 for stack in stacks)

    for name in ("replica-a", "replica-b"):
        registry = CollectorRegistry()
        stack = PoolStack(kube=await kube_factory(), clock=clock, registry=registry, identity=name,
                          lease_namespace=namespace, namespace=namespace, reconcile_interval=1, **ELECTION)
        stacks.append(stack)
        registries.append(registry)
    a, b = stacks
    try:
        a.start()
        await asyncio.wait_for(a.leadership.elector.wait_until_leader(), 5)
        b.start()

        async def b_saw_a_holding():
            elector = b.leadership.elector
            return elector.attempts >= 2 and elector.observed_holder == "replica-a"

        await stepping(clock, b_saw_a_holding, idle=idle)  # b has tried, and lost, several times: not just not started
        assert (a.is_leader, b.is_leader) == (True, False)
        assert (gauge(registries[0]), gauge(registries[1])) == (1.0, 0.0)

        decision = await b.ledger.reserve(policy, "tok-1", timeout=5)
        assert decision.subset == 0
        await create_pod(kube, pod_for(policy, 0, "tok-1", namespace), "wf-1")

        async def bound():
            status = (await kube.get(k.RESOURCEPOLICIES, "pools", namespace=namespace)).get("status") or {}
            return status.get("subsets") and (status["subsets"][0]["running"], status["subsets"][0]["pending"]) == (1, 0)

        await stepping(clock, bound, idle=idle)
        await kube.delete(k.PODS, "wf-1", namespace=namespace, grace_period_seconds=0)

        async def freed():
            status = (await kube.get(k.RESOURCEPOLICIES, "pools", namespace=namespace)).get("status") or {}
            return status["subsets"][0]["placed"] == 0

        await stepping(clock, freed, idle=idle)
        await a.stop()  # releases the Lease: b takes it at its next attempt, within 2 * 2.2 simulated seconds

        async def b_leads():
            return b.is_leader

        assert await stepping(clock, b_leads, idle=idle, limit=5)
        assert gauge(registries[0]) == 0.0 and gauge(registries[1]) == 1.0
    finally:
        for stack in stacks:
            await stack.stop()


async def test_counts_are_rebuilt_from_the_pod_list(kube, namespace, install_crds):
    await install_crds(CRD)
    created = await kube.create(k.RESOURCEPOLICIES, policy_object(namespace, SMALL))
    policy = compile_resource_policy(created)
    # A status that lies (a crashed writer, a hand edit): a pod that is gone, and none of the pods that exist.
    created["status"] = {"subsets": [{"name": "a", "placed": 3, "running": 3, "reservations": {}}]}
    await kube.replace(k.RESOURCEPOLICIES, created, subresource="status")
    for index, (subset, token) in enumerate([(0, "t1"), (1, "t2")]):
        await create_pod(kube, pod_for(policy, subset, token, namespace), f"wf-{index}")
    reconciler = PoolReconciler(kube=kube, clock=SystemClock(), namespace=namespace)
    assert await reconciler.reconcile_once(await reconciler.list_pods()) == 1
    status = (await kube.get(k.RESOURCEPOLICIES, "pools", namespace=namespace))["status"]
    assert [(s["name"], s["placed"], s["running"]) for s in status["subsets"]] == [("a", 1, 1), ("b", 1, 1)]
    assert await reconciler.reconcile_once(await reconciler.list_pods()) == 0


async def test_a_pod_bound_to_a_later_pools_node_is_counted_there(kube, namespace, install_crds, fake_nodes):
    await install_crds(CRD)
    suffix = namespace.rsplit("-", 1)[-1]
    # Pool terms only this test's nodes match, so other tests' nodes (or a real cluster's) change nothing.
    subsets = [{"name": "a", "maxReplicas": 2, "whenNotReachMax": "ScheduleAnyWay",
                "nodeSelectorTerm": [{"key": "burstflow.io/test-pool", "operator": "In", "values": [f"a-{suffix}"]}]},
               {"name": "b", "maxReplicas": 1,
                "nodeSelectorTerm": [{"key": "burstflow.io/test-pool", "operator": "In", "values": [f"b-{suffix}"]}]}]
    created = await kube.create(k.RESOURCEPOLICIES, policy_object(namespace, subsets))
    policy = compile_resource_policy(created)
    node_b = await fake_nodes(f"bf-b-{suffix}", {"burstflow.io/test-pool": f"b-{suffix}"})
    reconciler = PoolReconciler(kube=kube, clock=SystemClock(), namespace=namespace)
    await create_pod(kube, pod_for(policy, 0, "unbound", namespace), "wf-0")  # no scheduler serves it: unbound
    bound = pod_for(policy, 0, "spilled", namespace)
    bound["spec"]["nodeName"] = node_b  # what the scheduler's binding leaves in the pod
    await create_pod(kube, bound, "wf-1")
    assert await reconciler.reconcile_once(await reconciler.list_pods(), await reconciler.list_nodes()) == 1
    status = (await kube.get(k.RESOURCEPOLICIES, "pools", namespace=namespace))["status"]
    assert [(s["name"], s["running"]) for s in status["subsets"]] == [("a", 1), ("b", 1)]
    assert status["summary"] == "a 1/2, b 1/1, unplaced 0"
