"""Production wiring of `burstflow webhook serve`: mode selection and precise start-up errors, files-only with
ResourcePolicies, readiness over HTTPS, and the whole stack (HTTPS server + cluster policy source + resource pools)
placing pods from a ResourcePolicy created through the API."""
from __future__ import annotations

import asyncio
import base64
import collections
import json
import logging
import os
import signal
import socket
import sys
import uuid
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from burstflow import kube as k
from burstflow.clock import FakeClock
from tests.conftest import ROOT
from tests.kubefixtures import apply_crds
from tests.tls import TlsFiles
from burstflow.settings import SERVICE_ACCOUNT_NAMESPACE_FILE
from burstflow.webhook.admitter import PodAdmitter
from burstflow.webhook.app import ClusterServices, from_settings, resolve_cluster_mode
from burstflow.webhook.metrics import WebhookMetrics
from burstflow.demo.pools import webhook_configuration, workflow_pod
from burstflow.webhook.pools.model import POOL_LABEL
from burstflow.webhook.server import Server, serve
from burstflow.webhook.settings import WebhookSettings
from tests.waiting import until

CRDS = ROOT / "manifests" / "base" / "crds"
LEASE = "burstflow-pool-reconciler"


def settings_for(tls: TlsFiles, **overrides) -> WebhookSettings:
    return WebhookSettings(cert_file=str(tls.cert_path), key_file=str(tls.key_path), bind_address="127.0.0.1",
                           port=0, metrics_address="127.0.0.1", metrics_port=0, **overrides)


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    return TlsFiles(tmp_path / "tls")


@pytest.fixture
async def client(tls: TlsFiles):
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls.client_context())) as session:
        yield session


async def status_of(client: aiohttp.ClientSession, url: str) -> int:
    async with client.get(url) as response:
        return response.status


def review(pod: dict, namespace: str) -> dict:
    """An AdmissionReview for creating `pod`, shaped like the API server's (generateName pods carry no name)."""
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": str(uuid.uuid4()), "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
        "requestResource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": namespace, "operation": "CREATE", "userInfo": {"username": "system:serviceaccount:argo:argo"},
        "object": pod, "oldObject": None, "dryRun": False,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}}}


async def admit_over_https(client: aiohttp.ClientSession, server: Server, pod: dict, namespace: str) -> dict:
    """The pod as the webhook's patch leaves it."""
    import jsonpatch

    async with client.post(server.url(), json=review(pod, namespace)) as response:
        answer = (await response.json())["response"]
    assert answer["allowed"], answer
    return jsonpatch.apply_patch(pod, json.loads(base64.b64decode(answer["patch"]))) if answer.get("patch") else pod


# ------------------------------------------------------------------------------------------- mode and errors


@pytest.mark.parametrize("settings, environ, cluster", [
    (dict(), {}, False),
    (dict(), {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, True),
    (dict(kubeconfig="/k"), {}, True),
    (dict(policies_from_cluster=False), {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, False),
    (dict(policies_from_cluster=True), {}, True),
], ids=["laptop, no flags: files", "in a pod: cluster", "kubeconfig given: cluster", "explicitly off in a pod",
        "explicitly on"])
def test_cluster_mode_is_automatic_unless_set(settings, environ, cluster):
    assert resolve_cluster_mode(WebhookSettings(**settings), environ) is cluster


@pytest.mark.parametrize("settings, environ, message", [
    (dict(), {}, "no policies to serve: give --policies PATH (policy files), or let the webhook watch the cluster "
                 "with --kubeconfig FILE (in a pod the service account is used automatically)"),
    (dict(policies_from_cluster=False), {}, "--no-cluster-policies needs policy files: give --policies PATH "
                                            "(repeatable; or BURSTFLOW_WEBHOOK_POLICY_PATHS)"),
    (dict(policies_from_cluster=True), {}, "--cluster-policies needs the Kubernetes API: not running in a pod "
                                           "(KUBERNETES_SERVICE_HOST is unset) and no --kubeconfig FILE given; pass "
                                           "--kubeconfig, or run from files only with --no-cluster-policies "
                                           "--policies DIR"),
    (dict(kubeconfig="/nowhere/kubeconfig"), {},
     "--kubeconfig /nowhere/kubeconfig: no such file (BURSTFLOW_WEBHOOK_KUBECONFIG)"),
], ids=["nothing at all", "files only without files", "cluster without API access", "missing kubeconfig"])
def test_misconfiguration_is_refused_with_the_flag_to_fix(settings, environ, message):
    with pytest.raises(ValueError) as info:
        from_settings(WebhookSettings(**settings), environ=environ)
    assert str(info.value) == message


def test_pod_name_and_namespace_become_identity_and_lease_namespace():
    settings = WebhookSettings.from_env({"POD_NAME": "burstflow-webhook-7d9c-x2", "POD_NAMESPACE": "burstflow-system"})
    assert (settings.identity, settings.lease_namespace) == ("burstflow-webhook-7d9c-x2", "burstflow-system")
    explicit = WebhookSettings.from_env({"POD_NAME": "pod", "BURSTFLOW_WEBHOOK_IDENTITY": "replica-a"})
    assert explicit.identity == "replica-a"
    services = ClusterServices(settings=WebhookSettings(), admitter=PodAdmitter(store=None), environ={})
    account_namespace = Path(SERVICE_ACCOUNT_NAMESPACE_FILE)
    in_a_pod = account_namespace.is_file() and account_namespace.read_text().strip()
    assert (services.identity, services.lease_namespace) == (socket.gethostname(), in_a_pod or "default")
    services = ClusterServices(settings=settings, admitter=PodAdmitter(store=None), environ={})
    assert (services.identity, services.lease_namespace) == ("burstflow-webhook-7d9c-x2", "burstflow-system")
    # Settings built without the environment still take the pod's identity from it (the downward API).
    services = ClusterServices(settings=WebhookSettings(), admitter=PodAdmitter(store=None),
                               environ={"POD_NAME": "burstflow-webhook-7d9c-x3", "POD_NAMESPACE": "burstflow-system"})
    assert (services.identity, services.lease_namespace) == ("burstflow-webhook-7d9c-x3", "burstflow-system")


def test_files_only_with_resource_policies_says_pools_need_the_api(caplog):
    settings = WebhookSettings(policy_paths=(str(ROOT / "policies"),), policies_from_cluster=False)
    registry = CollectorRegistry()
    with caplog.at_level(logging.WARNING, logger="burstflow.webhook"):
        admitter = from_settings(settings, metrics=WebhookMetrics(registry), environ={})
    assert admitter.placer is None and admitter.services is None and admitter.ready
    [line] = [r.getMessage() for r in caplog.records if "pool placement needs the Kubernetes API" in r.getMessage()]
    assert line.startswith("2 ResourcePolicies loaded from files") and "NOT placed in a pool" in line
    assert registry.get_sample_value("burstflow_webhook_policies_loaded", {"kind": "ResourcePolicy"}) == 2


async def test_a_broken_kubeconfig_stops_start_up_with_the_reason(tls, tmp_path, caplog):
    broken = tmp_path / "kubeconfig"
    broken.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\n")
    settings = settings_for(tls, kubeconfig=str(broken))
    with caplog.at_level(logging.ERROR):
        code = await serve(settings, admitter_factory=lambda metrics, clock: from_settings(
            settings, metrics=metrics, clock=clock, environ={}))
    assert code == 1
    assert f"webhook cannot start: ValueError: cannot load kubeconfig '{broken}'" in caplog.text


# ------------------------------------------------------------------------------------------------- readiness


async def test_readyz_waits_for_the_first_full_sync(make_sim, tls, client, tmp_path):
    clock = FakeClock(datetime(2026, 11, 23, tzinfo=timezone.utc))
    sim, kube = await make_sim()
    await apply_crds(kube, CRDS / "burstprofiles.burstflow.io.yaml", CRDS / "resourcepolicies.burstflow.io.yaml")
    kubeconfig = sim.write_kubeconfig(tmp_path / "sim.yaml")
    sim.faults.add(method="GET", path=r"^/api/v1/namespaces$", status=503, times=1)
    settings = settings_for(tls, kubeconfig=str(kubeconfig), identity="replica-a", lease_namespace="default")
    registry = CollectorRegistry()
    metrics = WebhookMetrics(registry)
    admitter = from_settings(settings, metrics=metrics, clock=clock, environ={})
    async with Server(admitter=admitter, settings=settings, registry=registry, metrics=metrics, clock=clock) as server:
        source = admitter.services.source
        await until(lambda: _true(source.namespaces.errors == 1), what="the failed Namespace list")
        assert await status_of(client, server.url("/readyz")) == 503
        clock.advance(source.namespaces.backoff_initial)
        await until(lambda: _is_ready(client, server), what="ready")
        assert registry.get_sample_value("burstflow_webhook_policies_loaded", {"kind": "BurstProfile"}) == 0


async def _true(value: bool) -> bool:
    return value


async def _is_ready(client: aiohttp.ClientSession, server: Server) -> bool:
    return await status_of(client, server.url("/readyz")) == 200


# ------------------------------------------------------------------------------------------------ full stack


async def test_serve_stack_places_pods_from_a_resource_policy_created_through_the_api(
        kube, kubeconfig, kube_target, namespace, tls, client, request):
    await apply_crds(kube, CRDS / "burstprofiles.burstflow.io.yaml", CRDS / "resourcepolicies.burstflow.io.yaml")
    marker = f"bf-test-{uuid.uuid4().hex[:8]}"
    await kube.patch(k.NAMESPACES, namespace, {"metadata": {"labels": {marker: "yes"}}})
    settings = settings_for(tls, kubeconfig=kubeconfig, identity="replica-a", lease_namespace=namespace,
                            pool_decision_timeout_seconds=5.0)
    registry = CollectorRegistry()
    metrics = WebhookMetrics(registry)
    admitter = from_settings(settings, metrics=metrics, environ={})
    server = Server(admitter=admitter, settings=settings, registry=registry, metrics=metrics)
    await server.start()
    profile_name = f"{marker}-profile"
    try:
        await until(lambda: _is_ready(client, server), what="ready")
        policy = {"apiVersion": "burstflow.io/v1alpha1", "kind": "ResourcePolicy",
                  "metadata": {"name": "pools", "namespace": namespace},
                  "spec": {"selector": {"matchLabels": {"pool": "burst"}}, "subsets": [
                      {"name": "own", "maxReplicas": 2}, {"name": "vci", "maxReplicas": 3}, {"name": "overflow"}]}}
        await kube.create(k.RESOURCEPOLICIES, policy)
        await kube.create(k.BURSTPROFILES, {
            "apiVersion": "burstflow.io/v1alpha1", "kind": "BurstProfile", "metadata": {"name": profile_name},
            "spec": {"match": {"namespaceSelector": {"matchLabels": {marker: "yes"}}},
                     "labels": {"burstflow.io/test-profile": "applied"}}})
        store = admitter.store
        await until(lambda: _true(any(p.namespace == namespace for p in store.policies.compiled.get(
            "ResourcePolicy", ())) and any(p.name == profile_name for p in store.policies.profiles)),
            what="both policies in effect")

        pods = [workflow_pod(namespace, {"pool": "burst"}, i) for i in range(7)]
        if kube_target.real:  # a real API server cannot call back to 127.0.0.1: send the reviews ourselves
            placed = [await admit_over_https(client, server, pod, namespace) for pod in pods]
        else:
            await kube.create(k.MUTATING_WEBHOOKS, dict(webhook_configuration([server], tls.ca.cert_pem.bytes()),
                                                        metadata={"name": f"burstflow-{marker}"}))
            try:
                placed = await asyncio.gather(*(kube.create(k.PODS, pod) for pod in pods))
            finally:
                await kube.delete(k.MUTATING_WEBHOOKS, f"burstflow-{marker}")
        counts = collections.Counter(pod["metadata"]["labels"].get(POOL_LABEL) for pod in placed)
        assert counts == {"own": 2, "vci": 3, "overflow": 2}
        assert all(pod["metadata"]["labels"]["burstflow.io/test-profile"] == "applied" for pod in placed)
        status = (await kube.get(k.RESOURCEPOLICIES, "pools", namespace=namespace)).get("status") or {}
        assert status.get("placed") == 7, status
        lease = await until(lambda: _held(kube, namespace), what="the reconciler's Lease")
        assert lease["spec"]["holderIdentity"] == "replica-a"
        assert registry.get_sample_value("burstflow_leader_is_leader", {"component": "pool-reconciler"}) == 1
    finally:
        await server.stop()
        try:
            await kube.delete(k.BURSTPROFILES, profile_name)
        except k.NotFound:
            pass
    lease = await kube.get(k.LEASES, LEASE, namespace=namespace)
    assert lease["spec"].get("holderIdentity", "") == "", "stopping the server must release the Lease"
    assert admitter.services.kube is None and admitter.services.source is None


async def _held(kube: k.Kube, namespace: str):
    try:
        lease = await kube.get(k.LEASES, LEASE, namespace=namespace)
    except k.NotFound:
        return None
    return lease if lease["spec"].get("holderIdentity") else None


# ---------------------------------------------------------------------------------------------- the command


def _child_env() -> dict[str, str]:
    drop = ("BURSTFLOW_WEBHOOK_", "KUBERNETES_SERVICE_", "POD_NAME", "POD_NAMESPACE")
    return {key: value for key, value in os.environ.items() if not key.startswith(drop)}


async def test_burstflow_webhook_serve_with_a_kubeconfig_watches_the_cluster(kube, kubeconfig, namespace, tls,
                                                                               client):
    await apply_crds(kube, CRDS / "burstprofiles.burstflow.io.yaml", CRDS / "resourcepolicies.burstflow.io.yaml")
    marker = f"bf-test-{uuid.uuid4().hex[:8]}"
    await kube.patch(k.NAMESPACES, namespace, {"metadata": {"labels": {marker: "yes"}}})
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "burstflow.cli", "webhook", "serve", "--cert-file", str(tls.cert_path),
        "--key-file", str(tls.key_path), "--bind-address", "127.0.0.1", "--port", "0", "--metrics-address",
        "127.0.0.1", "--metrics-port", "0", "--kubeconfig", kubeconfig, "--lease-namespace", namespace,
        "--log-format", "json", "--drain-timeout", "1", "--drain-period", "0", cwd=ROOT, env={**_child_env(), "POD_NAME": "webhook-0"},
        stderr=asyncio.subprocess.PIPE)
    name = f"{marker}-profile"
    try:
        logged = []
        while not logged or not logged[-1]["message"].startswith("webhook listening on "):
            line = await asyncio.wait_for(child.stderr.readline(), 20)
            assert line, f"webhook exited early: {logged}"
            logged.append(json.loads(line))
        assert any(e["message"].startswith("watching policies in the cluster at ") and "'webhook-0'" in e["message"]
                   for e in logged), logged
        server = SimpleNamespace(url=lambda path="/mutate": f"https://127.0.0.1:{logged[-1]['message'].split()[3].rsplit(':', 1)[1]}{path}")
        await until(lambda: _is_ready(client, server), what="ready")
        await kube.create(k.BURSTPROFILES, {
            "apiVersion": "burstflow.io/v1alpha1", "kind": "BurstProfile", "metadata": {"name": name},
            "spec": {"match": {"namespaceSelector": {"matchLabels": {marker: "yes"}}},
                     "labels": {"burstflow.io/test-profile": "applied"}}})
        pod = workflow_pod(namespace, {}, 0)

        async def applied():
            mutated = await admit_over_https(client, server, pod, namespace)
            return mutated["metadata"]["labels"].get("burstflow.io/test-profile") == "applied"

        await until(applied, what="the BurstProfile created after start-up")
        child.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(child.wait(), 15) == 0
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
        try:
            await kube.delete(k.BURSTPROFILES, name)
        except k.NotFound:
            pass


async def test_burstflow_webhook_serve_without_any_source_exits_with_the_fix():
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "burstflow.cli", "webhook", "serve", "--log-format", "json", cwd=ROOT,
        env=_child_env(), stderr=asyncio.subprocess.PIPE)
    _, stderr = await asyncio.wait_for(child.communicate(), 20)
    assert child.returncode == 1
    messages = [json.loads(line)["message"] for line in stderr.decode().splitlines()]
    assert messages[-1] == ("webhook cannot start: cannot build the admitter: no policies to serve: give --policies "
                            "PATH (policy files), or let the webhook watch the cluster with --kubeconfig FILE (in a "
                            "pod the service account is used automatically)")
