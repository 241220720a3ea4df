"""`make demo`: every Burstflow feature on this machine, no cluster: the webhook over real HTTPS with the example
policies, resource pools on a local API endpoint, `cron preview` and the cron service in accelerated time."""
from __future__ import annotations

import asyncio
import json
import os
import ssl
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import aiohttp
from prometheus_client import CollectorRegistry

from burstflow import data
from burstflow.certs import TlsDir
from burstflow.cli import main as burstflow
from burstflow.demo.cron import run_cron_demo
from burstflow.demo.pools import run_pool_demo
from burstflow.webhook.admission import decode_patch
from burstflow.webhook.admitter import PodAdmitter, store_from_paths
from burstflow.webhook.mutate import decide
from burstflow.webhook.server import Server
from burstflow.webhook.settings import WebhookSettings

# A copy of ../shared/fixtures/admission/pod-create-argo-workflow-pod.json (what a real kube-apiserver sent for an
# Argo workflow pod), embedded so the demo runs from a bare clone; tests/test_demo.py checks the copy is identical.
# Like the example policies, it is package data (burstflow.data), so the installed package runs the demo too.
ARGO_POD_REVIEW = ("demo_data", "argo-workflow-pod-review.json")
SEED_CRON = "cronworkflow-seed.yaml"


def heading(text: str) -> None:
    print(f"\n=== {text} " + "=" * max(0, 72 - len(text)))


async def webhook_demo() -> None:
    """Start the webhook on 127.0.0.1 with a fresh certificate and `policies/`, send the Argo pod through HTTPS."""
    heading("1. Admission webhook: the captured Argo workflow pod, over real HTTPS")
    store = store_from_paths([str(data.path(data.EXAMPLES))])
    capture = json.loads(data.read_text(*ARGO_POD_REVIEW))
    with tempfile.TemporaryDirectory(prefix="burstflow-demo-") as tmp:
        tls = TlsDir(Path(tmp))
        settings = WebhookSettings(cert_file=str(tls.cert_path), key_file=str(tls.key_path), bind_address="127.0.0.1",
                                   port=0, metrics_address="127.0.0.1", metrics_port=0, policies_from_cluster=False)
        async with Server(admitter=PodAdmitter(store=store), settings=settings,
                          registry=CollectorRegistry()) as server:
            context = ssl.create_default_context(cadata=tls.ca_pem.decode())
            async with aiohttp.ClientSession() as session:
                url = server.url(capture["path"].split("?")[0]) + "?timeout=5s"
                async with session.post(url, json=capture["body"], ssl=context) as reply:
                    review = await reply.json()
                async with session.get(server.metrics_url()) as reply:
                    metrics = await reply.text()
    response = review["response"]
    request = capture["body"]["request"]
    print(f"POST {url} -> HTTP 200, uid {response['uid']} (echoed), allowed={response['allowed']}")
    print(f"pod {request['namespace']}/{request['name']}: the JSON patch the API server would apply:")
    for op in decode_patch(response):
        print(f"  {op['op']:<7} {op['path']:<70} {json.dumps(op.get('value'))[:60]}")
    decision = decide(request, policies=store.policies, namespaces=store.policies.namespaces)
    print("why (profiles in the order they applied, and what each did):")
    for change in decision.changes:
        print(f"  {change}")
    for warning in response.get("warnings", []):
        print(f"  warning: {warning}")
    admitted = [line for line in metrics.splitlines() if line.startswith("burstflow_webhook_admissions_total{")]
    print("metrics: " + "; ".join(admitted))


async def pools_demo() -> None:
    heading("2. Resource pools: 30 workflow pods through the webhook on a local API endpoint")
    await run_pool_demo(pods=30)


def cron_preview_demo() -> None:
    argv = ["cron", "preview", os.path.relpath(data.example(SEED_CRON)), "--from", "2026-01-05T09:58:00Z",
            "--count", "8"]
    heading("3. burstflow " + " ".join(argv) + "   (the Argo 3.6 seed example)")
    burstflow(argv)


async def cron_service_demo() -> None:
    heading("4. Cron service: the seed CronWorkflow on a local API endpoint, in accelerated time")
    await run_cron_demo()


async def main() -> int:
    await webhook_demo()
    await pools_demo()
    cron_preview_demo()
    await cron_service_demo()
    print("\nDone. Next: `make test`, then docs/install.md to install on a cluster.")
    return 0

