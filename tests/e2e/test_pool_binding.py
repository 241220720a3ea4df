"""Counting where pods run, with a real kube-scheduler: a ScheduleAnyWay pod reserved in the first pool that the
scheduler binds to a later pool's node (the first pool's node is out of CPU) is counted in the later pool in the
ResourcePolicy status, while its label still names the pool it was reserved in.

Needs a cluster with a scheduler (BURSTFLOW_E2E_KUBECONFIG; ../shared/harness/ runs one) and is skipped otherwise.
The nodes are fake (Ready, no kubelet, as ../shared/harness/fake-nodes.sh makes them), carry labels and a taint only
this test's pods target, and are deleted afterwards with the pods bound to them.
"""
from __future__ import annotations

import asyncio
import uuid

import pytest

from burstflow import kube as k
from burstflow.clock import SystemClock
from tests.test_pools_counting import CRD
from tests.test_pools_reconciler import eventually, fake_nodes  # noqa: F401 - fake_nodes is a fixture
from burstflow.webhook.pools.ledger import Ledger
from burstflow.webhook.pools.model import POOL_LABEL, compile_resource_policy
from burstflow.webhook.pools.placer import PoolPlacer
from burstflow.webhook.pools.reconciler import PoolReconciler

pytestmark = [pytest.mark.e2e, pytest.mark.kube]
LABEL = "burstflow.io/e2e-pool"
TAINT = "burstflow.io/e2e-vci"
# How long an unschedulable probe pod may wait for the scheduler's verdict before we conclude there is none.
SCHEDULER_PROBE_SECONDS = 15.0


async def require_scheduler(kube: k.Kube, namespace: str) -> None:
    """Skip unless a scheduler answers: it marks a pod nothing can host PodScheduled=False within seconds."""
    probe = await kube.create(k.PODS, {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "scheduler-probe", "namespace": namespace},
        "spec": {"nodeSelector": {LABEL: f"nowhere-{uuid.uuid4().hex[:8]}"},
                 "containers": [{"name": "main", "image": "alpine:3.20"}]}})

    async def judged():
        pod = await kube.get(k.PODS, probe["metadata"]["name"], namespace=namespace)
        return any(c.get("type") == "PodScheduled" for c in (pod.get("status") or {}).get("conditions") or [])

    try:
        await eventually(judged, timeout=SCHEDULER_PROBE_SECONDS)
    except AssertionError:
        pytest.skip(f"needs a cluster with a scheduler: no scheduler judged a pod within {SCHEDULER_PROBE_SECONDS:g}s")
    finally:
        await kube.delete(k.PODS, "scheduler-probe", namespace=namespace, grace_period_seconds=0)


def pod(namespace: str, name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": {"burstflow.io/test-pool": "yes"}},
            "spec": {"restartPolicy": "Never",
                     "containers": [{"name": "main", "image": "alpine:3.20",
                                     "resources": {"requests": {"cpu": "600m"}}}]}}


async def test_a_schedule_anyway_pod_bound_to_a_later_pools_node_is_counted_there(kube, namespace, install_crds,
                                                                                 fake_nodes):  # noqa: F811
    await require_scheduler(kube, namespace)
    await install_crds(CRD)
    suffix = namespace.rsplit("-", 1)[-1]
    ecs_node = await fake_nodes(f"bf-ecs-{suffix}", {LABEL: f"ecs-{suffix}"}, cpu="1")
    vci_node = await fake_nodes(f"bf-vci-{suffix}", {LABEL: f"vci-{suffix}"}, cpu="1000",
                                taints=({"key": TAINT, "value": suffix, "effect": "NoSchedule"},))
    policy = compile_resource_policy(await kube.create(k.RESOURCEPOLICIES, {
        "apiVersion": "burstflow.io/v1alpha1", "kind": "ResourcePolicy",
        "metadata": {"name": "pools", "namespace": namespace},
        "spec": {"selector": {"burstflow.io/test-pool": "yes"}, "subsets": [
            {"name": "ecs", "maxReplicas": 2, "whenNotReachMax": "ScheduleAnyWay",
             "nodeSelectorTerm": [{"key": LABEL, "operator": "In", "values": [f"ecs-{suffix}"]}]},
            {"name": "vci", "maxReplicas": 10,
             "nodeSelectorTerm": [{"key": LABEL, "operator": "In", "values": [f"vci-{suffix}"]}],
             "tolerations": [{"key": TAINT, "operator": "Equal", "value": suffix, "effect": "NoSchedule"}]}]}}))
    placer = PoolPlacer(ledger=Ledger(kube=kube, clock=SystemClock()))
    reconciler = PoolReconciler(kube=kube, clock=SystemClock(), namespace=namespace, interval=0.2)
    task = asyncio.create_task(reconciler.run())
    names: list[str] = []
    try:
        for name, node in (("wf-0", ecs_node), ("wf-1", vci_node)):
            placement = await placer.place(pod(namespace, name), namespace=namespace, policies=[policy])
            assert placement.subset == "ecs"  # both reserved in the first pool: it holds 2
            await kube.create(k.PODS, placement.pod)
            names.append(name)

            async def bound(name=name):
                return (await kube.get(k.PODS, name, namespace=namespace)).get("spec", {}).get("nodeName")

            # One CPU fits one 600m pod: the second falls through to the VCI node it may spill to.
            assert await eventually(bound, timeout=30) == node

        async def counted():
            status = (await kube.get(k.RESOURCEPOLICIES, "pools", namespace=namespace)).get("status") or {}
            return [(s["name"], s.get("running"), s.get("pending")) for s in status.get("subsets") or []] == \
                [("ecs", 1, 0), ("vci", 1, 0)]

        await eventually(counted, timeout=15)
        spilled = await kube.get(k.PODS, "wf-1", namespace=namespace)
        assert spilled["metadata"]["labels"][POOL_LABEL] == "ecs"  # reserved there, counted where it runs
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await placer.ledger.close()
        for name in names:  # no kubelet will ever confirm a graceful deletion on a fake node
            await kube.delete(k.PODS, name, namespace=namespace, grace_period_seconds=0)
