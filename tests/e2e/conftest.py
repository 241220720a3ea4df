"""End-to-end fixtures: the manifests' CRDs applied to a cluster, and both services running locally against it.

The cluster is a real one when BURSTFLOW_E2E_KUBECONFIG names a kubeconfig, else the local ApiSim (so `make test`
exercises the same path). Both services run as processes of the `burstflow` executable installed from the wheel
(tests/installed.py), started outside the checkout. The webhook (`burstflow webhook serve`) is registered with the
manifests' own MutatingWebhookConfiguration, its `clientConfig` switched to a URL: the API server must be able to
reach that URL. On a real cluster set BURSTFLOW_E2E_WEBHOOK_HOST to this machine's address as the cluster sees it
(e.g. the Docker bridge gateway for kind: `docker network inspect kind -f '{{(index .IPAM.Config 0).Gateway}}'`).
"""
from __future__ import annotations

import asyncio
import base64
import copy
import os
import socket
import ssl
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import aiohttp
import pytest
import yaml

from burstflow import certs
from burstflow.kube import MUTATING_WEBHOOKS, NAMESPACES, Kube, NotFound
from tests.conftest import ROOT
from tests.installed import clean_env

MANIFESTS = ROOT / "manifests"
HOST_ENV = "BURSTFLOW_E2E_WEBHOOK_HOST"
# A process that has not answered /readyz by then is reported with its log.
START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def manifest_objects(*names: str) -> list[dict]:
    """The objects of files under manifests/base, in order."""
    out = []
    for name in names:
        out += [doc for doc in yaml.safe_load_all((MANIFESTS / "base" / name).read_text()) if doc]
    return out


@pytest.fixture
async def burstflow_crds(install_crds):
    """The three Burstflow CRDs exactly as the manifests ship them, served by the cluster."""
    return await install_crds(*sorted((MANIFESTS / "base" / "crds").glob("*.yaml")))


@pytest.fixture
async def opted_in_namespace(kube: Kube, namespace: str) -> str:
    """A fresh namespace carrying the webhook's opt-in label."""
    await kube.patch(NAMESPACES, namespace, {"metadata": {"labels": {"burstflow.io/webhook": "enabled"}}})
    return namespace


@dataclass
class WebhookProcess:
    url: str
    config_name: str
    process: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


async def _wait_ready(url: str, context: ssl.SSLContext | None, process: subprocess.Popen, log: Path) -> None:
    deadline = asyncio.get_running_loop().time() + START_TIMEOUT
    async with aiohttp.ClientSession() as session:
        while True:
            if process.poll() is not None:
                pytest.fail(f"{process.args[1:3]} exited with {process.returncode}:\n{log.read_text()[-4000:]}")
            try:
                async with session.get(url, ssl=context, timeout=aiohttp.ClientTimeout(total=2)) as response:
                    if response.status == 200:
                        return
            except (aiohttp.ClientError, asyncio.TimeoutError):
                pass
            if asyncio.get_running_loop().time() > deadline:
                pytest.fail(f"{url} not ready after {START_TIMEOUT:.0f} s:\n{log.read_text()[-4000:]}")
            await asyncio.sleep(0.2)


async def _stop(process: subprocess.Popen) -> None:
    """SIGTERM, then wait without blocking the event loop: the local ApiSim runs on this loop, and a child that
    releases its Lease or closes its watches on the way out needs it to answer (a blocking wait stalled each
    teardown for the child's whole request timeout)."""
    if process.poll() is None:
        process.terminate()
        try:
            await asyncio.to_thread(process.wait, 25)
        except subprocess.TimeoutExpired:
            process.kill()
            await asyncio.to_thread(process.wait)


@pytest.fixture
async def webhook_process(kube: Kube, kubeconfig: str, kube_target, burstflow_crds, installed_burstflow,
                          tmp_path: Path) -> AsyncIterator[WebhookProcess]:
    """`burstflow webhook serve` from the installed wheel (tests/installed.py), run outside the checkout, against
    the cluster, registered by URL with the manifests' webhook settings."""
    host = os.environ.get(HOST_ENV, "127.0.0.1") if kube_target.real else "127.0.0.1"
    cert_dir = tmp_path / "certs"
    generated = certs.generate(cert_dir, now=datetime.now(timezone.utc), extra_names=[host])
    port, metrics_port = free_port(), free_port()
    env = {
        **clean_env(),
        "BURSTFLOW_WEBHOOK_CERT_FILE": str(cert_dir / "tls.crt"),
        "BURSTFLOW_WEBHOOK_KEY_FILE": str(cert_dir / "tls.key"),
        "BURSTFLOW_WEBHOOK_BIND_ADDRESS": "0.0.0.0" if host != "127.0.0.1" else "127.0.0.1",
        "BURSTFLOW_WEBHOOK_PORT": str(port),
        "BURSTFLOW_WEBHOOK_METRICS_ADDRESS": "127.0.0.1",
        "BURSTFLOW_WEBHOOK_METRICS_PORT": str(metrics_port),
        "BURSTFLOW_WEBHOOK_KUBECONFIG": kubeconfig,
        # Policies come only from the cluster (the tests create them through the API), so the watch is what is
        # tested.
        "BURSTFLOW_WEBHOOK_POLICIES_FROM_CLUSTER": "true",
        # Nothing is in flight when the fixture stops the process, and no API server needs time to forget it.
        "BURSTFLOW_WEBHOOK_DRAIN_TIMEOUT_SECONDS": "1",
        "BURSTFLOW_WEBHOOK_DRAIN_PERIOD_SECONDS": "0",
    }
    log = tmp_path / "webhook.log"
    with log.open("wb") as sink:
        process = subprocess.Popen([str(installed_burstflow.exe), "webhook", "serve"], env=env, cwd=tmp_path,
                                   stdout=sink, stderr=subprocess.STDOUT)
    try:
        context = ssl.create_default_context(cafile=str(cert_dir / "ca.crt"))
        await _wait_ready(f"https://127.0.0.1:{port}/readyz", context, process, log)
        [config] = manifest_objects("mutatingwebhook.yaml")
        config = copy.deepcopy(config)
        config["metadata"]["name"] = f"bf-e2e-{uuid.uuid4().hex[:8]}"
        for hook in config["webhooks"]:
            hook["clientConfig"] = {"url": f"https://{host}:{port}/mutate",
                                    "caBundle": base64.b64encode(generated.ca_bundle).decode()}
        await kube.create(MUTATING_WEBHOOKS, config)
        try:
            yield WebhookProcess(url=f"https://{host}:{port}/mutate", config_name=config["metadata"]["name"],
                                 process=process, log=log)
        finally:
            try:
                await kube.delete(MUTATING_WEBHOOKS, config["metadata"]["name"])
            except NotFound:
                pass
    finally:
        await _stop(process)


@pytest.fixture
async def cron_process(kubeconfig: str, burstflow_crds, argo_crds_minimal, namespace: str, installed_burstflow,
                       tmp_path: Path) -> AsyncIterator[subprocess.Popen]:
    """`burstflow cron run` from the installed wheel, run outside the checkout, against the cluster, its Lease in
    the test namespace."""
    metrics_port = free_port()
    env = {
        **clean_env(),
        "BURSTFLOW_CRON_KUBECONFIG": kubeconfig,
        "BURSTFLOW_CRON_METRICS_HOST": "127.0.0.1",
        "BURSTFLOW_CRON_METRICS_PORT": str(metrics_port),
        "BURSTFLOW_CRON_LEASE_NAMESPACE": namespace,
        "BURSTFLOW_CRON_LOG_FORMAT": "text",
    }
    log = tmp_path / "cron.log"
    with log.open("wb") as sink:
        process = subprocess.Popen([str(installed_burstflow.exe), "cron", "run"], env=env, cwd=tmp_path,
                                   stdout=sink, stderr=subprocess.STDOUT)
    try:
        await _wait_ready(f"http://127.0.0.1:{metrics_port}/healthz", None, process, log)
        yield process
    finally:
        await _stop(process)
