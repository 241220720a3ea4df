"""Tests of the Kubernetes gateway (burstflow.kube): paths and error mapping from captured wire data, the HTTP
plumbing against scripted servers, and every call against the local ApiSim (or a real cluster)."""
from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml
from aiohttp import web

from burstflow.clock import FakeClock
from burstflow.kube import (
    CONFIGMAPS, CRDS, CRON_WORKFLOWS, EVENTS, LEASES, MUTATING_WEBHOOKS, NAMESPACES, PODS, WORKFLOWS,
    AlreadyExists, ConfigError, Conflict, Gone, Invalid, Kube, KubeError, NotFound, Reflector, TooManyRequests,
    Unavailable, WatchEvent, error_from_status, resource_for_crd,
)
from tests.conftest import FIXTURES, load_api

pytestmark = pytest.mark.kube


# ------------------------------------------------------------------------------------------ paths (pure table)


@pytest.mark.parametrize(("resource", "args", "path"), [
    (PODS, ("ns1",), "/api/v1/namespaces/ns1/pods"),
    (PODS, (None,), "/api/v1/pods"),
    (PODS, ("ns1", "p", "status"), "/api/v1/namespaces/ns1/pods/p/status"),
    (NAMESPACES, (None, "team-a"), "/api/v1/namespaces/team-a"),
    (LEASES, ("sys", "burstflow-cron"), "/apis/coordination.k8s.io/v1/namespaces/sys/leases/burstflow-cron"),
    (WORKFLOWS, ("argo",), "/apis/argoproj.io/v1alpha1/namespaces/argo/workflows"),
    (CRON_WORKFLOWS, ("argo", "nightly"), "/apis/burstflow.io/v1alpha1/namespaces/argo/cronworkflows/nightly"),
    (CRDS, (None, "workflows.argoproj.io"),
     "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/workflows.argoproj.io"),
    (MUTATING_WEBHOOKS, (None,), "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"),
    (CONFIGMAPS, ("kube-system", "a/b"), "/api/v1/namespaces/kube-system/configmaps/a%2Fb"),
], ids=["pods in ns", "pods all namespaces", "pod status", "namespace", "lease", "workflows", "our cronworkflow",
        "crd", "mutating webhooks", "name is escaped"])
def test_resource_paths(resource, args, path):
    assert resource.path(*args) == path


@pytest.mark.parametrize(("resource", "args", "message"), [
    (PODS, (None, "p"), "needs a namespace"),
    (NAMESPACES, ("ns", "x"), "takes no namespace"),
    (PODS, ("ns", None, "status"), "needs an object name"),
], ids=["named pod without namespace", "namespace on cluster-scoped", "subresource of a collection"])
def test_resource_path_rejects_impossible_addresses(resource, args, message):
    with pytest.raises(ValueError, match=message):
        resource.path(*args)


def test_api_versions_and_crd_resources():
    assert PODS.api_version == "v1"
    assert LEASES.api_version == "coordination.k8s.io/v1"
    crd = yaml.safe_load((FIXTURES / "argo-crds" / "full" / "workflows.yaml").read_text())
    assert resource_for_crd(crd) == WORKFLOWS


# ------------------------------------------------------------------------------------- error mapping (captures)


def _captured(name: str) -> tuple[int, dict]:
    data = load_api(name)
    return (data["status"], data["body"]) if "status" in data and "body" in data else (data["code"], data)


@pytest.mark.parametrize(("fixture", "cls", "reason"), [
    ("status-404.json", NotFound, "NotFound"),
    ("status-409-conflict.json", Conflict, "Conflict"),
    ("lease-update-stale-409.json", Conflict, "Conflict"),
    ("pod-status-409-conflict.json", Conflict, "Conflict"),
    ("status-409-already-exists.json", AlreadyExists, "AlreadyExists"),
    ("workflow-create-409-already-exists.json", AlreadyExists, "AlreadyExists"),
    ("status-422-invalid.json", Invalid, "Invalid"),
    ("workflow-create-422-schema.json", Invalid, "Invalid"),
    ("pod-patch-json-test-failed.json", Invalid, "Invalid"),
    ("pod-list-continue-410.json", Gone, "Expired"),
    ("pod-create-429-webhook-denied.json", TooManyRequests, "TooManyRequests"),
])
def test_captured_status_bodies_map_to_our_errors(fixture, cls, reason):
    code, body = _captured(fixture)
    error = error_from_status(code, json.dumps(body).encode())
    assert type(error) is cls
    assert (error.code, error.reason, error.message) == (code, reason, body["message"])
    assert error.status == body


@pytest.mark.parametrize(("code", "body", "cls", "reason"), [
    (503, b"<html>upstream connect error</html>", Unavailable, "ServiceUnavailable"),
    (500, b"", Unavailable, "InternalError"),
    (504, b'{"kind":"Status","code":504,"reason":"Timeout","message":"slow"}', Unavailable, "Timeout"),
    (403, b'{"kind":"Status","code":403,"reason":"Forbidden","message":"no"}', KubeError, "Forbidden"),
    (409, b'{"kind":"Status","code":409,"message":"odd"}', Conflict, "Conflict"),
], ids=["html 503", "empty 500", "504 status", "403 stays base class", "409 without reason is a conflict"])
def test_other_failures_map_by_code(code, body, cls, reason):
    error = error_from_status(code, body)
    assert type(error) is cls and error.reason == reason
    if code == 503:
        assert error.message == "<html>upstream connect error</html>" and error.status is None


# ------------------------------------------------------------------------------ scripted servers (wire plumbing)


async def _serve(app: web.Application, tmp_path: Path) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, _write_kubeconfig(tmp_path, f"http://127.0.0.1:{port}")


def _write_kubeconfig(tmp_path: Path, server: str) -> str:
    path = tmp_path / "scripted-kubeconfig.yaml"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "scripted",
        "clusters": [{"name": "scripted", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "t0ken"}}],
        "contexts": [{"name": "scripted", "context": {"cluster": "scripted", "user": "u"}}],
    }))
    return str(path)


async def test_watch_reads_lines_split_across_chunks_and_sends_the_token(tmp_path):
    lines = (FIXTURES / "api" / "pod-watch-phases.jsonl").read_bytes()
    seen: dict = {}

    async def watch(request: web.Request) -> web.StreamResponse:
        seen.update(query=dict(request.query), auth=request.headers.get("Authorization"))
        response = web.StreamResponse()
        await response.prepare(request)
        for start in range(0, len(lines), 777):  # chunk boundaries fall inside JSON lines
            await response.write(lines[start:start + 777])
        return response

    app = web.Application()
    app.router.add_get("/api/v1/namespaces/capture/pods", watch)
    runner, config = await _serve(app, tmp_path)
    try:
        async with await Kube.connect(config) as kube:
            events = [e async for e in kube.watch(PODS, namespace="capture", resource_version="238",
                                                  label_selector="burstflow.io/pool=vci-pool", timeout_seconds=5)]
    finally:
        await runner.cleanup()
    expected = [json.loads(line) for line in lines.splitlines()]
    assert events == [WatchEvent(e["type"], e["object"]) for e in expected]
    assert [e.type for e in events] == ["MODIFIED", "MODIFIED", "MODIFIED", "DELETED", "BOOKMARK"]
    assert seen["query"] == {"labelSelector": "burstflow.io/pool=vci-pool", "watch": "1", "resourceVersion": "238",
                             "allowWatchBookmarks": "true", "timeoutSeconds": "5"}
    assert seen["auth"] == "Bearer t0ken"


@pytest.mark.parametrize(("status", "body", "cls", "match"), [
    (200, (FIXTURES / "api" / "pod-watch-410-gone.jsonl").read_bytes(), Gone, "too old resource version"),
    (410, json.dumps(load_api("pod-list-continue-410.json")["body"]).encode(), Gone, "continue parameter"),
    (200, b'{"type":"ADDED","object":{}}\nnot json\n', KubeError, "line 2 is not JSON"),
    (200, b'{"type":"ADDED"}\n', KubeError, "needs type and object"),
    (200, b'{"type":"ERROR","object":{"kind":"Status","code":500,"reason":"InternalError","message":"x"}}\n',
     Unavailable, "x"),
], ids=["in-stream 410 Expired", "HTTP 410", "garbage line", "event without object", "in-stream 500"])
async def test_watch_failures_raise_precise_errors(tmp_path, status, body, cls, match):
    async def watch(request: web.Request) -> web.Response:
        return web.Response(status=status, body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/api/v1/pods", watch)
    runner, config = await _serve(app, tmp_path)
    try:
        async with await Kube.connect(config) as kube:
            with pytest.raises(cls, match=match):
                async for _ in kube.watch(PODS, resource_version="2"):
                    pass
    finally:
        await runner.cleanup()


def _continue_server(expire_times: int) -> tuple[web.Application, list[str]]:
    """A server paging pods with the captured page 1 / page 2, whose continue token expires `expire_times` times."""
    page1, page2 = load_api("pod-list-page1-limit2.json"), load_api("pod-list-page2-limit2.json")
    expired = load_api("pod-list-continue-410.json")
    calls: list[str] = []
    state = {"expire": expire_times}

    async def pods(request: web.Request) -> web.Response:
        token = request.query.get("continue")
        calls.append(token or "first")
        if token is None:
            return web.json_response(page1.get("body", page1))
        if state["expire"] > 0:
            state["expire"] -= 1
            return web.json_response(expired["body"], status=410)
        return web.json_response(page2.get("body", page2))

    app = web.Application()
    app.router.add_get("/api/v1/namespaces/capture/pods", pods)
    return app, calls


async def test_list_follows_continue_and_restarts_once_when_the_token_expires(tmp_path):
    app, calls = _continue_server(expire_times=1)
    runner, config = await _serve(app, tmp_path)
    try:
        async with await Kube.connect(config) as kube:
            listing = await kube.list(PODS, namespace="capture", page_size=2)
    finally:
        await runner.cleanup()
    page1, page2 = load_api("pod-list-page1-limit2.json"), load_api("pod-list-page2-limit2.json")
    page1, page2 = page1.get("body", page1), page2.get("body", page2)
    token = page1["metadata"]["continue"]
    assert calls == ["first", token, "first", token]
    assert listing["items"] == page1["items"] + page2["items"]
    assert listing["metadata"] == {"resourceVersion": page1["metadata"]["resourceVersion"]}
    assert listing["kind"] == "PodList"


async def test_list_gives_up_with_gone_when_the_token_expires_twice(tmp_path):
    app, calls = _continue_server(expire_times=2)
    runner, config = await _serve(app, tmp_path)
    try:
        async with await Kube.connect(config) as kube:
            with pytest.raises(Gone, match="continue parameter is too old"):
                await kube.list(PODS, namespace="capture", page_size=2)
    finally:
        await runner.cleanup()
    assert len(calls) == 4


async def test_unreachable_server_is_unavailable(tmp_path):
    probe = web.AppRunner(web.Application())
    await probe.setup()
    site = web.TCPSite(probe, "127.0.0.1", 0)
    await site.start()
    port = probe.addresses[0][1]
    await probe.cleanup()  # the port is now closed
    async with await Kube.connect(_write_kubeconfig(tmp_path, f"http://127.0.0.1:{port}")) as kube:
        with pytest.raises(Unavailable, match=r"GET /api/v1/namespaces/x/pods/y: .*Connect"):
            await kube.get(PODS, "y", namespace="x")
        assert await kube.emit_event({"kind": "Pod", "metadata": {"name": "y", "namespace": "x"}},
                                     reason="R", message="m", component="test") is None


async def test_slow_server_times_out_as_unavailable(tmp_path):
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/api/v1/namespaces/x/pods/y", slow)
    runner, config = await _serve(app, tmp_path)
    try:
        async with await Kube.connect(config, request_timeout=0.2) as kube:
            with pytest.raises(Unavailable, match="TimeoutError"):
                await kube.get(PODS, "y", namespace="x")
    finally:
        await runner.cleanup()


async def test_connect_explains_missing_configuration(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="cannot load kubeconfig"):
        await Kube.connect(str(tmp_path / "absent.yaml"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ConfigError, match="in-cluster config"):
        await Kube.connect(None)
