"""Placement with a real kube-scheduler: pods the webhook shaped land where the user asked (issue 14).

Runs only when BURSTFLOW_E2E_KUBECONFIG names a cluster whose kube-scheduler binds pods (a probe pod must be bound
within PROBE_TIMEOUT), and is skipped with that reason otherwise. Each test creates its own Ready nodes through the
API (no kubelet behind them: bound pods stay Pending with spec.nodeName set, which is all placement needs), with
labels and a taint unique to the test: only this test's pods tolerate that taint and require that label, so other
tests' pods never land on these nodes and these pods never land on theirs. Nodes and pods are deleted afterwards.

What is asserted is placement (spec.nodeName, or Unschedulable) and the pod spec the webhook wrote; how the pools
count pods is tested elsewhere.

Node sizes are chosen so that the scheduler's scores cannot tie: the ECS node has room for exactly two 1-CPU pods
with some CPU left, so while it has room its node-affinity preference (weight 100 against the VCI term's 50, times
the plugin's weight 2) outweighs the resource-balancing scores that favour the big virtual node.
"""
from __future__ import annotations

import copy
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pytest
import yaml

from burstflow.kube import BURSTPROFILES, NAMESPACES, PODS, RESOURCEPOLICIES, Kube, NotFound, Resource
from tests.conftest import POLICIES
from tests.waiting import until

pytestmark = pytest.mark.kube

NODES = Resource("", "v1", "nodes", "Node", namespaced=False)
TEST_LABEL = "burstflow.io/e2e-nodes"
WORKFLOW_LABEL = "workflows.argoproj.io/workflow"
VCI_TAINT = {"key": "vci.vke.volcengine.com/node-type", "value": "vci", "effect": "NoSchedule"}
VCI_TOLERATION = {"key": "vci.vke.volcengine.com/node-type", "operator": "Equal", "value": "vci",
                  "effect": "NoSchedule"}
ECI_TAINT = {"key": "virtual-kubelet.io/provider", "value": "alibabacloud", "effect": "NoSchedule"}
MACHINE_POOL = ("cluster.vke.volcengine.com/machinepool-name", "pcodl592d75mk89oame6g")
# A real scheduler binds a schedulable pod within milliseconds; this bounds the wait when there is none.
PROBE_TIMEOUT = 20.0
BIND_TIMEOUT = 30.0


def example(name: str) -> dict:
    [obj] = [doc for doc in yaml.safe_load_all((POLICIES / name).read_text()) if doc]
    return obj


@dataclass
class Nodes:
    """This test's nodes (role -> node name) and the unique label value and taint its pods need."""

    uid: str
    names: dict[str, str] = field(default_factory=dict)
    pods: list[str] = field(default_factory=list)

    @property
    def toleration(self) -> dict:
        return {"key": TEST_LABEL, "operator": "Equal", "value": self.uid, "effect": "NoSchedule"}

    def pod(self, namespace: str, *, labels: dict | None = None, annotations: dict | None = None) -> dict:
        """A workflow pod asking for 1 CPU / 1 GiB that may run only on this test's nodes (its own affinity and
        toleration, which every placement must keep)."""
        metadata = {"generateName": "bf-place-", "namespace": namespace,
                    "labels": {WORKFLOW_LABEL: "wf-place", **(labels or {})}}
        if annotations:
            metadata["annotations"] = annotations
        return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": "busybox:1.36", "command": ["true"],
                            "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}],
            "tolerations": [self.toleration],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": TEST_LABEL, "operator": "In", "values": [self.uid]}]}]}}}}}


async def _create_node(kube: Kube, name: str, *, cpu: str, memory: str, labels: dict, taints: list[dict]) -> None:
    """A Ready node, the way ../shared/harness/fake-nodes.sh makes one: the object, then its status, then the taints
    (the API server adds node.kubernetes.io/not-ready on create; the node lifecycle controller would lift it)."""
    await kube.create(NODES, {"apiVersion": "v1", "kind": "Node",
                              "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **labels}},
                              "spec": {"taints": taints}})
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    resources = {"cpu": cpu, "memory": memory, "pods": "110"}
    await kube.patch(NODES, name, {"status": {"capacity": resources, "allocatable": resources, "conditions": [
        {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "fake node (no kubelet)",
         "lastHeartbeatTime": now, "lastTransitionTime": now}]}}, subresource="status")
    await kube.patch(NODES, name, {"spec": {"taints": taints}})


async def _delete_pod(kube: Kube, name: str, namespace: str) -> None:
    # No kubelet confirms a graceful deletion of a bound pod: delete it at once.
    try:
        await kube.delete(PODS, name, namespace=namespace, grace_period_seconds=0)
    except NotFound:
        pass


async def node_of(kube: Kube, name: str, namespace: str, *, timeout: float = BIND_TIMEOUT) -> str:
    """The node the scheduler bound the pod to."""
    async def bound():
        return (await kube.get(PODS, name, namespace=namespace))["spec"].get("nodeName")
    return await until(bound, timeout=timeout, what=f"pod {namespace}/{name} to be bound")


async def unschedulable(kube: Kube, name: str, namespace: str) -> dict:
    """The pod's PodScheduled condition once the scheduler has given up on it for now."""
    async def condition():
        pod = await kube.get(PODS, name, namespace=namespace)
        for item in (pod.get("status") or {}).get("conditions") or []:
            if item.get("type") == "PodScheduled" and item.get("reason") == "Unschedulable":
                return {**item, "nodeName": pod["spec"].get("nodeName")}
        return None
    return await until(condition, timeout=BIND_TIMEOUT, what=f"pod {namespace}/{name} to be Unschedulable")


async def create_pod(kube: Kube, nodes: Nodes, body: dict) -> dict:
    pod = await kube.create(PODS, body)
    nodes.pods.append(pod["metadata"]["name"])
    return pod


async def until_the_webhook_sees(kube: Kube, body: dict, seen) -> None:
    """Wait until the webhook's watch has the policy just created: dry-run creates (no side effects, no pool count)
    until `seen(admitted pod)` holds."""
    async def probe():
        return seen(await kube.create(PODS, copy.deepcopy(body), dry_run=True))
    await until(probe, timeout=30, what="the webhook to load the new policy")


@pytest.fixture
async def make_nodes(kube: Kube, kube_target, opted_in_namespace: str) -> AsyncIterator:
    """`nodes = await make_nodes({role: (cpu, memory, labels, taints)})`: Ready nodes for this test only, after
    checking that a scheduler binds pods; they and the test's pods are deleted afterwards. Tests request it first,
    so that without a real cluster they are skipped before the webhook process starts."""
    if not kube_target.real:
        pytest.skip("needs a real cluster with a kube-scheduler: set BURSTFLOW_E2E_KUBECONFIG (the local endpoint "
                    "binds no pods)")
    made: list[Nodes] = []

    async def make(roles: dict[str, tuple[str, str, dict, list[dict]]]) -> Nodes:
        nodes = Nodes(uid=uuid.uuid4().hex[:10])
        made.append(nodes)
        unique_taint = {"key": TEST_LABEL, "value": nodes.uid, "effect": "NoSchedule"}
        for role, (cpu, memory, labels, taints) in roles.items():
            name = f"bf-e2e-{nodes.uid}-{role}"
            nodes.names[role] = name
            await _create_node(kube, name, cpu=cpu, memory=memory, labels={TEST_LABEL: nodes.uid, **labels},
                               taints=[*taints, unique_taint])
        probe = nodes.pod(opted_in_namespace)
        probe["metadata"]["labels"] = {}  # not a workflow pod: no profile or pool touches it
        probe["spec"]["containers"][0]["resources"] = {}
        probe["spec"]["tolerations"] = [{"operator": "Exists"}]
        probe = await kube.create(PODS, probe)
        try:
            await node_of(kube, probe["metadata"]["name"], opted_in_namespace, timeout=PROBE_TIMEOUT)
        except AssertionError:
            pytest.skip(f"no kube-scheduler binds pods in this cluster (a probe pod stayed unbound for "
                        f"{PROBE_TIMEOUT:.0f} s)")
        finally:
            await _delete_pod(kube, probe["metadata"]["name"], opted_in_namespace)
        return nodes

    try:
        yield make
    finally:
        for nodes in made:
            for pod in nodes.pods:
                await _delete_pod(kube, pod, opted_in_namespace)
            for name in nodes.names.values():
                try:
                    await kube.delete(NODES, name)
                except NotFound:
                    pass


async def volcengine_nodes(make_nodes) -> Nodes:
    """A small ECS machine-pool node (two 1-CPU pods fit, a third does not) and a big tainted VCI virtual node."""
    return await make_nodes({
        "ecs": ("2500m", "2560Mi", {MACHINE_POOL[0]: MACHINE_POOL[1]}, []),
        "vci": ("8", "8Gi", {"type": "virtual-kubelet"}, [VCI_TAINT]),
    })


async def create_volcengine_policy(kube: Kube, namespace: str, when: str) -> dict:
    """policies/resourcepolicy-volcengine.yaml in `namespace`, the ECS pool's whenNotReachMax set to `when`.

    maxReplicasRatio is dropped: with "0.1" only one pod in ten may go to a pool, and these tests are about where
    the scheduler puts the pods of one pool, not about the counts.
    """
    policy = example("resourcepolicy-volcengine.yaml")
    policy["metadata"]["namespace"] = namespace
    for subset in policy["spec"]["subsets"]:
        subset.pop("maxReplicasRatio", None)
    policy["spec"]["subsets"][0]["whenNotReachMax"] = when
    return await kube.create(RESOURCEPOLICIES, policy)


async def label_namespace(kube: Kube, namespace: str, nodes: Nodes) -> dict:
    """A label only this test's namespace has, for the cluster-scoped BurstProfiles this test creates."""
    await kube.patch(NAMESPACES, namespace, {"metadata": {"labels": {"burstflow.io/e2e-placement": nodes.uid}}})
    return {"matchLabels": {"burstflow.io/e2e-placement": nodes.uid}}


async def create_profile(kube: Kube, name: str, namespace_selector: dict, nodes: Nodes) -> dict:
    profile = example(name)
    profile["metadata"]["name"] = f"{profile['metadata']['name']}-{nodes.uid}"
    profile["spec"]["match"] = {"namespaceSelector": namespace_selector}
    return await kube.create(BURSTPROFILES, profile)


def has_pool(pod: dict) -> bool:
    return "burstflow.io/pool" in (pod["metadata"].get("labels") or {})


async def test_volcengine_example_fills_the_ecs_pool_then_spills_to_vci_under_schedule_anyway(
        make_nodes, kube, opted_in_namespace, webhook_process):
    ns = opted_in_namespace
    nodes = await volcengine_nodes(make_nodes)
    await create_volcengine_policy(kube, ns, "ScheduleAnyWay")
    body = nodes.pod(ns, labels={"resource": "vci"})
    await until_the_webhook_sees(kube, body, has_pool)
    placed = []
    for _ in range(3):
        pod = await create_pod(kube, nodes, copy.deepcopy(body))
        assert pod["metadata"]["labels"]["burstflow.io/pool"] == "ecs-pool"
        assert VCI_TOLERATION in pod["spec"]["tolerations"]  # what lets the third pod spill
        assert nodes.toleration in pod["spec"]["tolerations"]
        placed.append(await node_of(kube, pod["metadata"]["name"], ns))
    assert placed == [nodes.names["ecs"], nodes.names["ecs"], nodes.names["vci"]]


async def test_volcengine_example_stays_pending_under_do_not_schedule(make_nodes, kube, opted_in_namespace,
                                                                      webhook_process):
    ns = opted_in_namespace
    nodes = await volcengine_nodes(make_nodes)
    await create_volcengine_policy(kube, ns, "DoNotSchedule")
    body = nodes.pod(ns, labels={"resource": "vci"})
    await until_the_webhook_sees(kube, body, has_pool)
    pods = [await create_pod(kube, nodes, copy.deepcopy(body)) for _ in range(3)]
    for pod in pods:
        assert pod["metadata"]["labels"]["burstflow.io/pool"] == "ecs-pool"
        assert VCI_TOLERATION not in pod["spec"]["tolerations"]  # only its own pool's
    first, second, third = (pod["metadata"]["name"] for pod in pods)
    assert [await node_of(kube, first, ns), await node_of(kube, second, ns)] == [nodes.names["ecs"]] * 2
    condition = await unschedulable(kube, third, ns)
    assert condition["status"] == "False" and condition["nodeName"] is None
    assert "Insufficient cpu" in condition["message"]


async def test_an_enforce_pod_is_not_placed_by_the_resource_policy_and_lands_on_vci(
        make_nodes, kube, opted_in_namespace, webhook_process):
    ns = opted_in_namespace
    nodes = await volcengine_nodes(make_nodes)
    await create_volcengine_policy(kube, ns, "ScheduleAnyWay")
    selector = await label_namespace(kube, ns, nodes)
    profile = await create_profile(kube, "profile-volcengine-vci.yaml", selector, nodes)
    try:
        body = nodes.pod(ns, labels={"resource": "vci"})
        await until_the_webhook_sees(kube, body, lambda pod: profile["metadata"]["name"] in (
            pod["metadata"].get("annotations") or {}).get("burstflow.io/applied", ""))
        pod = await create_pod(kube, nodes, copy.deepcopy(body))
        annotations = pod["metadata"]["annotations"]
        assert annotations["vke.volcengine.com/burst-to-vci"] == "enforce"
        assert not has_pool(pod) and "burstflow.io/reservation" not in annotations  # enforce wins: no pool
        assert pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] == {
            "nodeSelectorTerms": [{"matchExpressions": [
                {"key": TEST_LABEL, "operator": "In", "values": [nodes.uid]},
                {"key": "type", "operator": "In", "values": ["virtual-kubelet"]}]}]}
        assert await node_of(kube, pod["metadata"]["name"], ns) == nodes.names["vci"]
    finally:
        await kube.delete(BURSTPROFILES, profile["metadata"]["name"])


async def test_an_alibaba_eci_pod_prefers_ecs_and_lands_on_the_virtual_node_when_ecs_is_full(
        make_nodes, kube, opted_in_namespace, webhook_process):
    ns = opted_in_namespace
    nodes = await make_nodes({
        "ecs": ("1500m", "1536Mi", {}, []),  # room for one 1-CPU pod
        "vk": ("8", "8Gi", {"type": "virtual-kubelet"}, [ECI_TAINT]),
    })
    selector = await label_namespace(kube, ns, nodes)
    profile = await create_profile(kube, "profile-alibaba-eci.yaml", selector, nodes)
    try:
        body = nodes.pod(ns)
        await until_the_webhook_sees(kube, body, lambda pod: profile["metadata"]["name"] in (
            pod["metadata"].get("annotations") or {}).get("burstflow.io/applied", ""))
        placed = []
        for _ in range(2):
            pod = await create_pod(kube, nodes, copy.deepcopy(body))
            assert "alibabacloud.com/burst-resource" not in pod["metadata"]["annotations"]
            assert pod["metadata"]["annotations"]["k8s.aliyun.com/eci-spot-fallback"] == "true"
            assert {"key": "virtual-kubelet.io/provider", "operator": "Equal", "value": "alibabacloud",
                    "effect": "NoSchedule"} in pod["spec"]["tolerations"]
            assert pod["spec"]["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"] == [
                {"weight": 100, "preference": {"matchExpressions": [
                    {"key": "type", "operator": "NotIn", "values": ["virtual-kubelet"]}]}}]
            placed.append(await node_of(kube, pod["metadata"]["name"], ns))
        assert placed == [nodes.names["ecs"], nodes.names["vk"]]
    finally:
        await kube.delete(BURSTPROFILES, profile["metadata"]["name"])
