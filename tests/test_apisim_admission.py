"""ApiSim's mutating admission: real HTTPS webhooks (trustme CA) called as kube-apiserver calls them."""
from __future__ import annotations

import asyncio
import base64
import json
import ssl
from datetime import datetime, timezone
from typing import Callable

import aiohttp
import jsonpatch
import pytest
import trustme
from aiohttp import web

from burstflow.apisim import ApiSim
from burstflow.clock import FakeClock
from tests.conftest import load_admission, load_api

pytestmark = pytest.mark.kube

POD = {"metadata": {"generateName": "wf-gen-", "labels": {"workflows.argoproj.io/workflow": "wf"}},
       "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "alpine:3.20"}]}}


def add_annotation(key: str) -> Callable[[dict], dict]:
    """A webhook body: allow, adding annotation `key: "1"` as a diff."""
    def respond(request: dict) -> dict:
        obj = request["object"]
        mutated = json.loads(json.dumps(obj))
        mutated["metadata"].setdefault("annotations", {})[key] = "1"
        patch = jsonpatch.make_patch(obj, mutated).patch
        out = {"uid": request["uid"], "allowed": True}
        if patch:
            out.update(patchType="JSONPatch", patch=base64.b64encode(json.dumps(patch).encode()).decode())
        return out
    return respond


class Hooks:
    """A TLS webhook server with one route per hook name; records every AdmissionReview it receives."""

    def __init__(self) -> None:
        self.ca = trustme.CA()
        self.calls: dict[str, list[dict]] = {}
        self.behaviour: dict[str, Callable[[dict], dict]] = {}
        self.delay: dict[str, asyncio.Event] = {}
        self.url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        review = await request.json()
        self.calls.setdefault(name, []).append({"path": request.path_qs, "body": review})
        if name in self.delay:
            await self.delay[name].wait()
        response = self.behaviour[name](review["request"])
        return web.json_response({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                                  "response": response})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{name}", self._handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1").configure_cert(ctx)
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=ctx)
        await site.start()
        self.url = f"https://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"

    def config(self, config_name: str, *webhooks: dict) -> dict:
        ca = base64.b64encode(self.ca.cert_pem.bytes()).decode()
        hooks = []
        for wh in webhooks:
            hook = {"admissionReviewVersions": ["v1"], "sideEffects": "None", "failurePolicy": "Fail",
                    "timeoutSeconds": 5,
                    "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                               "resources": ["pods"], "scope": "*"}],
                    "clientConfig": {"url": f"{self.url}/{wh['path']}", "caBundle": ca}}
            hook.update({k: v for k, v in wh.items() if k != "path"})
            hooks.append(hook)
        return {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
                "metadata": {"name": config_name}, "webhooks": hooks}


@pytest.fixture
async def hooks():
    h = Hooks()
    await h.start()
    yield h
    for ev in h.delay.values():
        ev.set()
    await h.runner.cleanup()


@pytest.fixture
async def sim():
    async with ApiSim(namespaces=("hooked", "plain")) as s:
        s.put_object("namespaces", {"metadata": {"name": "hooked", "labels": {"vci": "true"}}})
        yield s


@pytest.fixture
async def http(sim):
    async with aiohttp.ClientSession(base_url=sim.url) as session:
        yield session


async def post_pod(http, namespace: str = "hooked", pod: dict = POD, query: str = ""):
    async with http.post(f"/api/v1/namespaces/{namespace}/pods{query}", json=pod) as resp:
        return resp.status, await resp.json(), resp.headers


async def test_generate_name_pod_through_two_webhooks_reinvokes_the_if_needed_one(hooks, sim, http):
    hooks.behaviour.update({"add-a": add_annotation("a"), "add-b": add_annotation("b")})
    sim.put_object("mutatingwebhookconfigurations", hooks.config(
        "a-config", {"name": "a.capture.burstflow.io", "path": "add-a", "reinvocationPolicy": "IfNeeded",
                     "namespaceSelector": {"matchLabels": {"vci": "true"}}}))
    sim.put_object("mutatingwebhookconfigurations", hooks.config(
        "b-config", {"name": "b.capture.burstflow.io", "path": "add-b"}))
    status, pod, _ = await post_pod(http)
    assert status == 201 and pod["metadata"]["annotations"] == {"a": "1", "b": "1"}
    first, again = hooks.calls["add-a"]
    assert len(hooks.calls["add-b"]) == 1
    want_first = load_admission("pod-create-generatename.json")
    want_again = load_admission("pod-create-generatename-reinvocation.json")
    for got, want in ((first, want_first), (again, want_again)):
        assert got["path"] == "/add-a?timeout=5s" == want["path"]
        req, want_req = got["body"]["request"], want["body"]["request"]
        assert list(got["body"]) == list(want["body"]) and list(req) == list(want_req)
        assert "name" not in req and "name" not in req["object"]["metadata"]
        for field in ("kind", "resource", "requestKind", "requestResource", "operation", "userInfo", "oldObject",
                      "dryRun"):
            assert req[field] == want_req[field], field
        assert set(req["object"]["spec"]) == set(want_req["object"]["spec"])
        assert req["object"]["status"] == {} and req["object"]["metadata"]["creationTimestamp"] is None
        assert list(req["object"]["metadata"]) == [k for k in want_req["object"]["metadata"] if k != "managedFields"]
    assert first["body"]["request"]["uid"] != again["body"]["request"]["uid"]
    assert "annotations" not in first["body"]["request"]["object"]["metadata"]
    assert again["body"]["request"]["object"]["metadata"]["annotations"] == {"a": "1", "b": "1"}


async def test_webhook_denial_with_429_reaches_the_client_as_the_capture_shows(hooks, sim, http):
    hooks.behaviour["deny"] = lambda r: {"uid": r["uid"], "allowed": False,
                                         "status": {"code": 429, "message": "pool vci-pool is full; retry later"}}
    sim.put_object("mutatingwebhookconfigurations",
                   hooks.config("deny", {"name": "deny.capture.burstflow.io", "path": "deny"}))
    status, body, _ = await post_pod(http)
    want = load_api("pod-create-429-webhook-denied.json")
    assert (status, body) == (want["status"], want["body"])
    assert sim.objects("pods", "hooked") == []


async def test_selectors_decide_which_pods_are_sent(hooks, sim, http):
    hooks.behaviour["a"] = add_annotation("a")
    sim.put_object("mutatingwebhookconfigurations", hooks.config(
        "sel", {"name": "a.burstflow.io", "path": "a", "namespaceSelector": {"matchLabels": {"vci": "true"}},
                "objectSelector": {"matchExpressions": [{"key": "skip", "operator": "DoesNotExist"}]}}))
    assert "annotations" not in (await post_pod(http, "plain"))[1]["metadata"]
    skipped = {**POD, "metadata": {**POD["metadata"], "labels": {"skip": "1"}}}
    assert "annotations" not in (await post_pod(http, "hooked", skipped))[1]["metadata"]
    assert (await post_pod(http, "hooked"))[1]["metadata"]["annotations"] == {"a": "1"}
    assert len(hooks.calls["a"]) == 1


@pytest.mark.parametrize("policy, expected_status", [("Ignore", 201), ("Fail", 500)])
async def test_webhook_timeout_obeys_failure_policy(hooks, policy, expected_status):
    clock = FakeClock(datetime(2026, 11, 23, tzinfo=timezone.utc), autojump=True)
    hooks.behaviour["slow"] = add_annotation("slow")
    hooks.delay["slow"] = asyncio.Event()
    async with ApiSim(clock=clock, namespaces=("hooked",)) as sim, \
            aiohttp.ClientSession(base_url=sim.url) as http:
        sim.put_object("mutatingwebhookconfigurations", hooks.config(
            "slow", {"name": "slow.burstflow.io", "path": "slow", "timeoutSeconds": 1, "failurePolicy": policy}))
        status, body, _ = await post_pod(http)
    assert status == expected_status
    if policy == "Ignore":
        assert "annotations" not in body["metadata"]
    else:
        assert body["reason"] == "InternalError" and "context deadline exceeded" in body["message"]
        assert 'failed calling webhook "slow.burstflow.io"' in body["message"]


async def test_unreachable_webhook_with_fail_policy_rejects_and_with_ignore_admits(hooks, sim, http):
    unreachable = {"path": "x", "clientConfig": {"url": "https://127.0.0.1:1/x",
                                                 "caBundle": base64.b64encode(hooks.ca.cert_pem.bytes()).decode()}}
    sim.put_object("mutatingwebhookconfigurations",
                   hooks.config("down", {"name": "down.burstflow.io", **unreachable}))
    status, body, _ = await post_pod(http)
    assert status == 500 and body["reason"] == "InternalError"
    sim.put_object("mutatingwebhookconfigurations",
                   hooks.config("down", {"name": "down.burstflow.io", "failurePolicy": "Ignore", **unreachable}))
    assert (await post_pod(http))[0] == 201


async def test_untrusted_certificate_is_a_call_failure(hooks, sim, http):
    other = base64.b64encode(trustme.CA().cert_pem.bytes()).decode()
    config = hooks.config("tls", {"name": "tls.burstflow.io", "path": "a"})
    config["webhooks"][0]["clientConfig"]["caBundle"] = other
    hooks.behaviour["a"] = add_annotation("a")
    sim.put_object("mutatingwebhookconfigurations", config)
    status, body, _ = await post_pod(http)
    assert status == 500 and "a" not in hooks.calls


async def test_dry_run_reaches_side_effect_free_webhooks_and_is_refused_by_others(hooks, sim, http):
    hooks.behaviour["a"] = add_annotation("a")
    sim.put_object("mutatingwebhookconfigurations", hooks.config(
        "dry", {"name": "a.burstflow.io", "path": "a", "sideEffects": "NoneOnDryRun"}))
    status, body, _ = await post_pod(http, query="?dryRun=All")
    assert status == 201 and body["metadata"]["annotations"] == {"a": "1"}
    request = hooks.calls["a"][0]["body"]["request"]
    want = load_admission("pod-create-dry-run.json")["body"]["request"]
    assert request["dryRun"] is True and request["options"]["dryRun"] == want["options"]["dryRun"]
    assert sim.objects("pods", "hooked") == []
    sim.put_object("mutatingwebhookconfigurations", hooks.config(
        "dry", {"name": "a.burstflow.io", "path": "a", "sideEffects": "Some"}))
    status, body, _ = await post_pod(http, query="?dryRun=All")
    assert status == 400 and body["message"] == 'admission webhook "a.burstflow.io" does not support dry run'


async def test_wrong_response_uid_and_warnings(hooks, sim, http):
    hooks.behaviour["w"] = lambda r: {"uid": r["uid"], "allowed": True, "warnings": ["pool nearly full"]}
    hooks.behaviour["bad"] = lambda r: {"uid": "not-the-uid", "allowed": True}
    sim.put_object("mutatingwebhookconfigurations", hooks.config("w", {"name": "w.burstflow.io", "path": "w"}))
    status, _, headers = await post_pod(http)
    assert status == 201 and headers["Warning"] == '299 - "pool nearly full"'
    sim.put_object("mutatingwebhookconfigurations", hooks.config("x", {"name": "bad.burstflow.io", "path": "bad"}))
    status, body, _ = await post_pod(http)
    assert status == 500 and 'expected response.uid=' in body["message"]


async def test_update_rules_send_the_old_object_and_update_options(hooks, sim, http):
    hooks.behaviour["u"] = add_annotation("seen-update")
    config = hooks.config("upd", {"name": "u.burstflow.io", "path": "u"})
    config["webhooks"][0]["rules"][0]["operations"] = ["UPDATE"]
    sim.put_object("mutatingwebhookconfigurations", config)
    status, pod, _ = await post_pod(http)
    assert status == 201 and "u" not in hooks.calls
    pod["metadata"]["labels"]["changed"] = "yes"
    async with http.put(f"/api/v1/namespaces/hooked/pods/{pod['metadata']['name']}", json=pod) as resp:
        assert resp.status == 200
        assert (await resp.json())["metadata"]["annotations"] == {"seen-update": "1"}
    request = hooks.calls["u"][0]["body"]["request"]
    assert request["operation"] == "UPDATE" and request["name"] == pod["metadata"]["name"]
    assert request["oldObject"]["metadata"]["labels"] == {"workflows.argoproj.io/workflow": "wf"}
    assert request["options"] == {"kind": "UpdateOptions", "apiVersion": "meta.k8s.io/v1"}
