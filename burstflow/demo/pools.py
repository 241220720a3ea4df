"""`make demo`'s pool part: a local ApiSim, the example ResourcePolicy, a real HTTPS webhook registered as a
MutatingWebhookConfiguration, and a burst of workflow pods created through the API, counted per pool."""
from __future__ import annotations

import asyncio
import base64
import collections
import tempfile
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry

from burstflow.certs import TlsDir
from burstflow import data
from burstflow.apisim import ApiSim
from burstflow import kube as k
from burstflow.clock import SystemClock
from burstflow.webhook.admitter import PodAdmitter, PolicyStore
from burstflow.webhook.policy import PolicySet
from burstflow.webhook.pools.model import POOL_LABEL, ResourcePolicy, compile_resource_policy
from burstflow.webhook.pools.stack import PoolStack
from burstflow.webhook.server import Server
from burstflow.webhook.settings import WebhookSettings

# Package data (burstflow.data): the installed package reads its own CRD and example policy.
CRD_FILE = "resourcepolicies.burstflow.io.yaml"
EXAMPLE = "resourcepolicy-pools.yaml"


def workflow_pod(namespace: str, labels: dict[str, str], index: int) -> dict[str, Any]:
    """A pod shaped like the ones Argo's controller creates for a step (generateName, workflow labels)."""
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": "render-frames-", "namespace": namespace,
                         "labels": {"workflows.argoproj.io/workflow": "render-frames", **labels},
                         "annotations": {"workflows.argoproj.io/node-name": f"render-frames[{index}]"}},
            "spec": {"restartPolicy": "Never",
                     "containers": [{"name": "main", "image": "alpine:3.20", "command": ["sh", "-c", "render"]}]}}


async def start_webhook(*, kube: k.Kube, tls: TlsDir, policies: list[ResourcePolicy] | None, identity: str,
                        lease_namespace: str, registry: CollectorRegistry | None = None,
                        decision_timeout: float = 5.0) -> tuple[Server, PoolStack | None]:
    """One webhook replica on 127.0.0.1 (free port); with `policies`, its pool stack joined to the election."""
    registry = registry or CollectorRegistry()
    stack = None
    if policies is not None:
        stack = PoolStack(kube=kube, clock=SystemClock(), registry=registry, identity=identity,
                          lease_namespace=lease_namespace, decision_timeout=decision_timeout)
        stack.start()
    admitter = PodAdmitter(store=PolicyStore(PolicySet(compiled={"ResourcePolicy": tuple(policies or ())})),
                           namespaces={}, placer=stack.placer if stack else None)
    settings = WebhookSettings(cert_file=str(tls.cert_path), key_file=str(tls.key_path), bind_address="127.0.0.1",
                               port=0, metrics_address="127.0.0.1", metrics_port=0, policies_from_cluster=False)
    server = Server(admitter=admitter, settings=settings, registry=registry)
    await server.start()
    return server, stack


def webhook_configuration(servers: list[Server], ca_pem: bytes, *, timeout_seconds: int = 10) -> dict[str, Any]:
    """A MutatingWebhookConfiguration with one entry per replica (the sim calls each, like several Services)."""
    hooks = []
    for index, server in enumerate(servers):
        hooks.append({
            "name": f"pods-{index}.burstflow.io", "admissionReviewVersions": ["v1"], "sideEffects": "NoneOnDryRun",
            "failurePolicy": "Fail", "reinvocationPolicy": "IfNeeded", "timeoutSeconds": timeout_seconds,
            "clientConfig": {"url": server.url(), "caBundle": base64.b64encode(ca_pem).decode()},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}],
        })
    return {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": "burstflow-demo"}, "webhooks": hooks}


async def run_pool_demo(*, pods: int = 30, policy_path: Path | None = None, print_fn=print) -> dict[str, int]:
    """Create `pods` workflow pods through a webhook on a local ApiSim; prints and returns the count per pool.
    `policy_path` defaults to the packaged example resourcepolicy-pools.yaml."""

    policy_path = policy_path or data.example(EXAMPLE)
    policy_obj = yaml.safe_load(policy_path.read_text())
    namespace = policy_obj["metadata"]["namespace"]
    selector = policy_obj["spec"]["selector"]
    labels = selector.get("matchLabels", selector) if isinstance(selector, dict) else {}
    async with ApiSim() as sim:
        with tempfile.TemporaryDirectory(prefix="burstflow-pools-") as tmp:
            kubeconfig = sim.write_kubeconfig(Path(tmp) / "kubeconfig")
            tls = TlsDir(Path(tmp) / "tls")
            async with await k.Kube.connect(str(kubeconfig)) as kube:
                await kube.create(k.CRDS, yaml.safe_load(data.crd_text(CRD_FILE)))
                await kube.create(k.NAMESPACES, {"apiVersion": "v1", "kind": "Namespace",
                                                 "metadata": {"name": namespace}})
                policy = compile_resource_policy(await kube.create(k.RESOURCEPOLICIES, policy_obj))
                server, stack = await start_webhook(kube=kube, tls=tls, policies=[policy], identity="demo-0",
                                                    lease_namespace=namespace)
                try:
                    await kube.create(k.MUTATING_WEBHOOKS, webhook_configuration([server], tls.ca_pem))
                    print_fn(f"ResourcePolicy {namespace}/{policy.name} from {policy_path.name}: "
                             + ", ".join(f"{s.name} (max {s.max_replicas if s.max_replicas is not None else '-'})"
                                         for s in policy.subsets))
                    created = await asyncio.gather(*(kube.create(k.PODS, workflow_pod(namespace, labels, i))
                                                     for i in range(pods)))
                    counts = collections.Counter(p["metadata"]["labels"].get(POOL_LABEL) for p in created)
                    print_fn(f"{pods} workflow pods created through the webhook:")
                    for subset in policy.subsets:
                        print_fn(f"  {subset.name:<12} {counts.get(subset.name, 0):>4}")
                    status = (await kube.get(k.RESOURCEPOLICIES, policy.name, namespace=namespace))["status"]
                    print_fn(f"status.summary: {status['summary']}")
                    return {subset.name: counts.get(subset.name, 0) for subset in policy.subsets}
                finally:
                    await server.stop()
                    if stack:
                        await stack.stop()


if __name__ == "__main__":
    asyncio.run(run_pool_demo())
