"""The webhook's HTTPS server over real TLS: admission round trips, malformed input, concurrency, certificate
rotation during traffic, readiness, metrics, admitter failures and graceful drain (in-process and on SIGTERM)."""
from __future__ import annotations

import asyncio
import copy
import json
import logging
import signal
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from burstflow.clock import FakeClock
from tests.conftest import ROOT, load_admission
from tests.tls import TlsFiles, served_serial
from burstflow.webhook.admission import Outcome, allowed, decode_patch, patched
from burstflow.logs import JsonFormatter
from burstflow.webhook.server import Server
from burstflow.webhook.settings import DEFAULT_MAX_BODY_BYTES, WebhookSettings
from burstflow.webhook.tlsreload import CertReloader

ARGO_POD = "pod-create-argo-workflow-pod.json"
MARK = {"op": "add", "path": "/metadata/annotations/test.burstflow.io~1seen", "value": "yes"}


class LabelAdmitter:
    """Patches pods that carry the Argo workflow label, leaves everything else unchanged; readiness is settable."""

    def __init__(self, ready: bool = True) -> None:
        self.ready = ready
        self.seen: list[dict[str, Any]] = []

    async def admit(self, request: dict[str, Any]) -> Outcome:
        self.seen.append(request)
        labels = ((request.get("object") or {}).get("metadata") or {}).get("labels") or {}
        if "workflows.argoproj.io/workflow" in labels:
            return Outcome(patched(request["uid"], [MARK]), "mutated", ("argo", "seccomp"))
        return Outcome(allowed(request["uid"]), "unchanged")


class FailingAdmitter(LabelAdmitter):
    """Raises on pods named `boom`, behaves like LabelAdmitter otherwise."""

    async def admit(self, request: dict[str, Any]) -> Outcome:
        if request.get("name") == "boom":
            raise KeyError("spec")
        return await super().admit(request)


class GateAdmitter(LabelAdmitter):
    """Holds every admission until `release` is set; `entered` tells that one is in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def admit(self, request: dict[str, Any]) -> Outcome:
        self.entered.set()
        await self.release.wait()
        return await super().admit(request)


def review_body(name: str = ARGO_POD, *, uid: str | None = None, name_override: str | None = None) -> dict:
    body = copy.deepcopy(load_admission(name)["body"])
    if uid is not None:
        body["request"]["uid"] = uid
    if name_override is not None:
        body["request"]["name"] = name_override
    return body


def settings_for(tls: TlsFiles, **overrides: Any) -> WebhookSettings:
    return WebhookSettings(cert_file=str(tls.cert_path), key_file=str(tls.key_path), bind_address="127.0.0.1",
                           port=0, metrics_address="127.0.0.1", metrics_port=0, **overrides)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    return TlsFiles(tmp_path / "tls")


@pytest.fixture
async def client(tls: TlsFiles):
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls.client_context(), limit=0)) as session:
        yield session


@pytest.fixture
async def server(tls: TlsFiles):
    async with Server(admitter=LabelAdmitter(), settings=settings_for(tls)) as running:
        yield running


async def post(client: aiohttp.ClientSession, server: Server, body: Any, *, path: str = "/mutate",
               headers: dict[str, str] | None = None) -> tuple[int, str, Any]:
    """POST and return (status, content type, parsed JSON or text)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if headers is None else headers
    async with client.post(server.url(path), data=data, headers=headers) as response:
        text = await response.text()
        if response.content_type == "application/json":
            return response.status, response.content_type, json.loads(text)
        return response.status, response.content_type, text


# --- admission round trips -----------------------------------------------------------------------------------------

async def test_captured_review_on_the_api_server_path_gets_patch_and_echoed_uid(server, client):
    fixture = load_admission(ARGO_POD)
    headers = {k: v for k, v in fixture["headers"].items() if k in ("Content-Type", "Accept", "User-Agent")}
    status, ctype, answer = await post(client, server, fixture["body"], path=fixture["path"], headers=headers)
    assert fixture["path"] == "/mutate/pods?timeout=5s"
    assert (status, ctype) == (200, "application/json")
    response = answer["response"]
    assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
    assert response["uid"] == fixture["body"]["request"]["uid"]
    assert response["allowed"] is True and response["patchType"] == "JSONPatch"
    assert decode_patch(response) == [MARK]
    assert server.admitter.seen == [fixture["body"]["request"]]


async def test_unchanged_pod_answer_has_no_patch_keys(server, client):
    body = review_body()
    del body["request"]["object"]["metadata"]["labels"]["workflows.argoproj.io/workflow"]
    status, _, answer = await post(client, server, body)
    assert status == 200
    assert answer == {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                      "response": {"uid": body["request"]["uid"], "allowed": True}}


@pytest.mark.parametrize("fixture", ["workflow-create.json", "pod-create-dry-run.json",
                                     "pod-create-generatename.json"])
async def test_other_wellformed_reviews_reach_the_admitter(server, client, fixture):
    body = review_body(fixture)
    status, _, answer = await post(client, server, body, path="/mutate")
    assert status == 200 and answer["response"]["uid"] == body["request"]["uid"]
    assert server.admitter.seen == [body["request"]]
    assert sample(server.registry, "burstflow_webhook_malformed_requests_total", reason="not_a_pod") == 0


async def test_pod_subresource_request_carrying_another_kind_is_not_malformed(server, client):
    """pods/eviction, pods/binding and the like carry their own kind in `object`: only the pods resource itself
    must carry a Pod."""
    body = review_body(uid="evict")
    request = body["request"]
    request["subResource"] = "eviction"
    request["object"] = {"apiVersion": "policy/v1", "kind": "Eviction",
                         "metadata": {"name": request["object"]["metadata"]["name"], "namespace": "argo-jobs"}}
    status, _, answer = await post(client, server, body)
    assert (status, answer["response"]) == (200, {"uid": "evict", "allowed": True})
    assert server.admitter.seen == [request]
    assert sample(server.registry, "burstflow_webhook_malformed_requests_total", reason="not_a_pod") == 0


async def test_pod_delete_without_object_is_not_malformed(server, client):
    body = review_body()
    request = body["request"]
    request["operation"], request["oldObject"], request["object"] = "DELETE", request["object"], None
    status, _, answer = await post(client, server, body)
    assert status == 200 and answer["response"] == {"uid": request["uid"], "allowed": True}


async def test_get_on_mutate_is_405(server, client):
    async with client.get(server.url("/mutate")) as response:
        assert response.status == 405


# --- malformed input ----------------------------------------------------------------------------------------------

UID = "a348af2a-b00e-47e5-b6b1-8c27728e5fc0"


def _without(path: str):
    def change(body):
        parent, key = body, path.split(".")
        for part in key[:-1]:
            parent = parent[part]
        del parent[key[-1]]
        return json.dumps(body).encode()
    return change


def _set(path: str, value: Any):
    def change(body):
        parent, key = body, path.split(".")
        for part in key[:-1]:
            parent = parent[part]
        parent[key[-1]] = value
        return json.dumps(body).encode()
    return change


PLAIN = "text/plain"
MALFORMED = [
    # id, body builder, content type, reason, HTTP status, plain text or (code, message) in an AdmissionReview
    ("not JSON", lambda b: b'{"apiVersion": "admission.k8s.io/v1", "kind": ', "application/json", "not_json", 400,
     "request body is not valid JSON: unexpected end of data: line 1 column 47 (char 46)"),
    ("empty body", lambda b: b"", "application/json", "not_json", 400,
     "request body is not valid JSON: Input is a zero-length, empty document: line 1 column 1 (char 0)"),
    ("nested too deep", lambda b: b"[" * 1100 + b"]" * 1100, "application/json", "not_json", 400,
     "request body is not valid JSON: depth limit exceeded: line 1 column 1026 (char 1025)"),
    ("NaN is not JSON", lambda b: b'{"apiVersion": NaN}', "application/json", "not_json", 400,
     "request body is not valid JSON: unexpected character, expected a JSON value: line 1 column 16 (char 15)"),
    ("wrong content type", lambda b: json.dumps(b).encode(), "text/plain", "content_type", 415,
     "Content-Type must be application/json, got 'text/plain'"),
    ("JSON but a list", lambda b: b"[1, 2]", "application/json", "not_review", 400,
     "request body must be a JSON object (an AdmissionReview), got list"),
    ("no request", _without("request"), "application/json", "no_request", 400,
     "AdmissionReview has no `request` object"),
    ("request is a string", _set("request", "pod"), "application/json", "no_request", 400,
     "AdmissionReview has no `request` object"),
    ("no uid", _without("request.uid"), "application/json", "no_uid", 400,
     "AdmissionReview `request.uid` is missing or not a non-empty string"),
    ("uid is a number", _set("request.uid", 7), "application/json", "no_uid", 400,
     "AdmissionReview `request.uid` is missing or not a non-empty string"),
    ("v1beta1 review", _set("apiVersion", "admission.k8s.io/v1beta1"), "application/json", "wrong_kind", 200,
     (400, "expected apiVersion 'admission.k8s.io/v1' kind 'AdmissionReview', got apiVersion "
           "'admission.k8s.io/v1beta1' kind 'AdmissionReview'")),
    ("wrong kind", _set("kind", "Pod"), "application/json", "wrong_kind", 200,
     (400, "expected apiVersion 'admission.k8s.io/v1' kind 'AdmissionReview', got apiVersion "
           "'admission.k8s.io/v1' kind 'Pod'")),
    ("wrong kind and no uid", lambda b: json.dumps({"kind": "Pod"}).encode(), "application/json", "wrong_kind", 400,
     "expected apiVersion 'admission.k8s.io/v1' kind 'AdmissionReview', got apiVersion None kind 'Pod'"),
    ("pods request carrying a ConfigMap", _set("request.object", {"apiVersion": "v1", "kind": "ConfigMap"}),
     "application/json", "not_a_pod", 200,
     (400, "request is for resource pods but request.object is 'ConfigMap', not a Pod")),
    ("pods request without object", _set("request.object", None), "application/json", "not_a_pod", 200,
     (400, "request is for resource pods but request.object is 'NoneType', not a Pod")),
]


@pytest.mark.parametrize("build, content_type, reason, status, expected",
                         [row[1:] for row in MALFORMED], ids=[row[0] for row in MALFORMED])
async def test_malformed_request_gets_precise_answer_and_is_counted(server, client, build, content_type, reason,
                                                                    status, expected):
    data = build(review_body(uid=UID))
    got_status, ctype, answer = await post(client, server, data, headers={"Content-Type": content_type})
    assert got_status == status
    if isinstance(expected, str):
        assert (ctype, answer) == (PLAIN, expected + "\n")
    else:
        code, message = expected
        assert ctype == "application/json"
        assert answer == {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": {
            "uid": UID, "allowed": False, "status": {"code": code, "message": message}}}
    assert sample(server.registry, "burstflow_webhook_malformed_requests_total", reason=reason) == 1
    assert sample(server.registry, "burstflow_webhook_admissions_total", outcome="malformed", profile="") == 1
    assert server.admitter.seen == []


async def test_malformed_request_is_logged_with_its_reason(server, client, caplog):
    with caplog.at_level(logging.WARNING, logger="burstflow.webhook.server"):
        await post(client, server, b"nope")
    assert any("reason=not_json" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


async def test_body_over_the_limit_is_refused_with_413_announced_or_streamed(tls, client):
    limit = 4096
    async with Server(admitter=LabelAdmitter(), settings=settings_for(tls, max_body_bytes=limit)) as server:
        body = json.dumps(review_body()).encode()
        assert len(body) > limit
        status, ctype, text = await post(client, server, body)
        assert (status, ctype, text) == (
            413, PLAIN, f"request body of {len(body)} bytes exceeds the limit of {limit} bytes\n")

        async def chunked():  # no Content-Length: the limit is enforced while reading
            for start in range(0, len(body), 1000):
                yield body[start:start + 1000]

        async with client.post(server.url(), data=chunked(), headers={"Content-Type": "application/json"}) as resp:
            assert "Content-Length" not in resp.request_info.headers
            assert (resp.status, await resp.text()) == (413, f"request body exceeds the limit of {limit} bytes\n")
        assert sample(server.registry, "burstflow_webhook_malformed_requests_total", reason="body_too_large") == 2

        small = json.dumps(review_body("pod-create-generatename.json")).encode()
        assert len(small) <= limit
        status, _, answer = await post(client, server, small)
        assert status == 200 and answer["response"]["allowed"] is True


def test_default_body_limit_holds_two_maximal_objects_plus_envelope():
    api_server_object_cap = 3 * 1024 * 1024
    assert DEFAULT_MAX_BODY_BYTES == 2 * api_server_object_cap + 1024 * 1024


# --- failures of ours -----------------------------------------------------------------------------------------------

class BrokenPlacer:
    """A placement step with a bug: raises on the pod named `boom` (as a real `Placer` would on a code path we got
    wrong), places nothing otherwise."""

    def place(self, pod, *, namespace, policies, dry_run=False):
        if pod["metadata"].get("name") == "boom":
            raise KeyError("spec")
        return None


def broken_admitter():
    """The real PodAdmitter with the example policies and a placement hook that raises: a genuine internal error."""
    from burstflow.webhook.admitter import PodAdmitter, store_from_paths

    return PodAdmitter(store=store_from_paths([str(ROOT / "policies")]), placer=BrokenPlacer())


def boom_review(uid: str) -> dict:
    body = review_body(uid=uid)
    body["request"]["object"]["metadata"]["name"] = "boom"
    return body


async def test_an_internal_error_admits_the_pod_unmutated_with_a_warning_a_log_line_and_a_metric(tls, client, caplog):
    async with Server(admitter=broken_admitter(), settings=settings_for(tls)) as server:
        with caplog.at_level(logging.ERROR, logger="burstflow.webhook.server"):
            status, _, answer = await post(client, server, boom_review("u-boom"))
        assert status == 200
        assert answer["response"] == {"uid": "u-boom", "allowed": True, "warnings": [
            "Burstflow webhook internal error: the pod was admitted unmutated (no profiles, no pool); webhook log "
            "has uid u-boom"]}
        [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert record.exc_info and record.exc_info[0] is KeyError
        assert record.getMessage() == ("admission failed with an internal error: uid=u-boom: KeyError: 'spec'; the "
                                       "pod is admitted unmutated (fail-open)")
        entry = json.loads(JsonFormatter().format(record))
        assert (entry["uid"], entry["namespace"]) == ("u-boom", boom_review("u-boom")["request"]["namespace"])
        assert sample(server.registry, "burstflow_webhook_internal_errors_total", action="admitted") == 1
        assert sample(server.registry, "burstflow_webhook_internal_errors_total", action="denied") == 0
        assert sample(server.registry, "burstflow_webhook_admissions_total", outcome="error", profile="") == 1
        async with client.get(server.metrics_url()) as response:
            assert 'burstflow_webhook_internal_errors_total{action="admitted"} 1.0' in await response.text()

        status, _, answer = await post(client, server, review_body(uid="u-after"))  # the server keeps serving
        assert status == 200 and answer["response"]["uid"] == "u-after" and answer["response"]["patchType"]


async def test_fail_closed_turns_an_internal_error_into_a_denial(tls, client, caplog):
    async with Server(admitter=broken_admitter(), settings=settings_for(tls, fail_closed=True)) as server:
        with caplog.at_level(logging.ERROR, logger="burstflow.webhook.server"):
            status, _, answer = await post(client, server, boom_review("u-closed"))
        assert status == 200
        assert answer["response"] == {"uid": "u-closed", "allowed": False, "status": {
            "code": 500, "message": "burstflow webhook internal error: KeyError: 'spec'"}}
        assert "uid=u-closed" in caplog.text and "the pod is denied (fail-closed)" in caplog.text
        assert sample(server.registry, "burstflow_webhook_internal_errors_total", action="denied") == 1
        assert sample(server.registry, "burstflow_webhook_internal_errors_total", action="admitted") == 0


async def test_admitter_answering_another_uid_is_an_error_of_ours(tls, client):
    class WrongUid(LabelAdmitter):
        async def admit(self, request):
            return Outcome(allowed("someone-else"), "unchanged")

    async with Server(admitter=WrongUid(), settings=settings_for(tls)) as server:
        status, _, answer = await post(client, server, review_body(uid="mine"))
        assert status == 200 and answer["response"]["uid"] == "mine" and answer["response"]["allowed"]
        assert "unmutated" in answer["response"]["warnings"][0] and "patch" not in answer["response"]
        assert sample(server.registry, "burstflow_webhook_internal_errors_total", action="admitted") == 1
    async with Server(admitter=WrongUid(), settings=settings_for(tls, fail_closed=True)) as server:
        status, _, answer = await post(client, server, review_body(uid="mine"))
        assert answer["response"]["status"]["code"] == 500
        assert "admitter answered uid 'someone-else' for request uid 'mine'" in answer["response"]["status"]["message"]


# --- concurrency, readiness, metrics ------------------------------------------------------------------------------

async def test_200_concurrent_requests_each_get_their_own_uid(server, client):
    async def one(i: int) -> str:
        status, _, answer = await post(client, server, review_body(uid=f"uid-{i}"))
        assert status == 200
        return answer["response"]["uid"]

    uids = await asyncio.gather(*(one(i) for i in range(200)))
    assert uids == [f"uid-{i}" for i in range(200)]
    assert sample(server.registry, "burstflow_webhook_admissions_total", outcome="mutated",
                  profile="argo,seccomp") == 200


async def test_readyz_follows_the_admitter_and_healthz_always_answers(tls, client):
    admitter = LabelAdmitter(ready=False)
    async with Server(admitter=admitter, settings=settings_for(tls)) as server:
        async with client.get(server.url("/readyz")) as response:
            assert (response.status, await response.text()) == (503, "not ready: policies not loaded yet\n")
        async with client.get(server.url("/healthz")) as response:
            assert (response.status, await response.text()) == (200, "ok\n")
        admitter.ready = True
        async with client.get(server.url("/readyz")) as response:
            assert (response.status, await response.text()) == (200, "ready\n")


async def test_metrics_endpoint_is_plain_http_and_shows_traffic(server, client):
    await post(client, server, review_body())
    await post(client, server, b"{", headers={"Content-Type": "application/json"})
    async with client.get(server.metrics_url()) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    assert 'burstflow_webhook_admissions_total{outcome="mutated",profile="argo,seccomp"} 1.0' in text
    assert 'burstflow_webhook_admissions_total{outcome="malformed",profile=""} 1.0' in text
    assert 'burstflow_webhook_malformed_requests_total{reason="not_json"} 1.0' in text
    assert "burstflow_webhook_admission_duration_seconds_count 2.0" in text
    assert "burstflow_webhook_tls_reloads_total 0.0" in text
    async with client.get(server.url("/metrics")) as response:  # not on the HTTPS port
        assert response.status == 404


# --- TLS ------------------------------------------------------------------------------------------------------------

async def test_certificate_rotation_during_traffic_drops_nothing_and_new_connections_see_new_cert(tls):
    ctx = tls.client_context()
    async with Server(admitter=LabelAdmitter(), settings=settings_for(tls)) as server:
        old_serial = tls.serial
        assert await served_serial("127.0.0.1", server.port, ctx) == old_serial
        stop = asyncio.Event()
        results: list[tuple[int, str]] = []
        errors: list[BaseException] = []

        async def worker(i: int, force_close: bool) -> None:
            # Half the workers reconnect on every request (a TLS handshake each time), half keep one connection.
            connector = aiohttp.TCPConnector(ssl=ctx, force_close=force_close)
            async with aiohttp.ClientSession(connector=connector) as session:
                n = 0
                while not stop.is_set():
                    uid = f"w{i}-{n}"
                    try:
                        status, _, answer = await post(session, server, review_body(uid=uid))
                        results.append((status, answer["response"]["uid"] == uid))
                    except Exception as exc:  # noqa: BLE001 - every failure is what we count
                        errors.append(exc)
                    n += 1

        workers = [asyncio.create_task(worker(i, force_close=i % 2 == 0)) for i in range(8)]
        while len(results) < 40:
            await asyncio.sleep(0.01)
        new_serial = tls.rotate()
        assert server.reloader.check() is True
        before = len(results)
        while len(results) < before + 40:
            await asyncio.sleep(0.01)
        assert await served_serial("127.0.0.1", server.port, ctx) == new_serial
        assert await served_serial("localhost", server.port, ctx) == new_serial
        stop.set()
        await asyncio.gather(*workers)

    assert errors == []
    assert results and all(r == (200, True) for r in results)
    assert new_serial != old_serial
    assert sample(server.registry, "burstflow_webhook_tls_reloads_total") == 1


async def test_half_written_or_mismatched_files_keep_the_old_certificate(tls, caplog):
    ctx = tls.client_context()
    async with Server(admitter=LabelAdmitter(), settings=settings_for(tls)) as server:
        reloader = server.reloader
        old_serial = tls.serial
        chain, key, new_serial = tls.issue()

        tls.cert_path.write_bytes(chain[: len(chain) // 2])  # cert half written
        with caplog.at_level(logging.ERROR, logger="burstflow.webhook.tlsreload"):
            assert reloader.check() is False
        assert "still serving the previous certificate" in caplog.records[-1].getMessage()
        assert reloader.last_error.startswith("SSLError")
        assert await served_serial("127.0.0.1", server.port, ctx) == old_serial

        tls.cert_path.write_bytes(chain)  # new cert, old key: the pair does not match
        assert reloader.check() is False
        assert "KEY_VALUES_MISMATCH" in reloader.last_error or "key values mismatch" in reloader.last_error
        assert await served_serial("127.0.0.1", server.port, ctx) == old_serial
        logged = len(caplog.records)
        assert reloader.check() is False  # unchanged files are not retried, so the failure is not logged again
        assert len(caplog.records) == logged

        tls.key_path.write_bytes(key)  # the writer finishes
        assert reloader.check() is True and reloader.last_error is None
        assert await served_serial("127.0.0.1", server.port, ctx) == new_serial
        assert reloader.check() is False  # nothing changed since: no second reload
        assert sample(server.registry, "burstflow_webhook_tls_reloads_total") == 1


async def test_reloader_polls_on_the_injected_clock(tls):
    clock = FakeClock(datetime(2026, 1, 1, tzinfo=timezone.utc))
    reloaded = []
    reloader = CertReloader(tls.cert_path, tls.key_path, on_reload=lambda: reloaded.append(clock.now()))
    task = asyncio.create_task(reloader.run(clock, 10.0))
    try:
        await asyncio.sleep(0)
        tls.rotate()
        clock.advance(9.9)
        for _ in range(5):
            await asyncio.sleep(0)
        assert reloaded == []
        clock.advance(0.1)
        for _ in range(5):
            await asyncio.sleep(0)
        assert reloaded == [datetime(2026, 1, 1, 0, 0, 10, tzinfo=timezone.utc)]
    finally:
        task.cancel()


async def test_server_refuses_to_start_without_a_usable_certificate(tmp_path):
    settings = WebhookSettings(cert_file=str(tmp_path / "missing.crt"), key_file=str(tmp_path / "missing.key"),
                               bind_address="127.0.0.1", port=0, metrics_port=0)
    with pytest.raises(FileNotFoundError):
        await Server(admitter=LabelAdmitter(), settings=settings).start()


# --- drain ----------------------------------------------------------------------------------------------------------

async def test_stop_refuses_new_connections_and_finishes_the_request_in_flight(tls, client):
    admitter = GateAdmitter()
    server = Server(admitter=admitter, settings=settings_for(tls))
    await server.start()
    in_flight = asyncio.create_task(post(client, server, review_body(uid="slow")))
    await admitter.entered.wait()
    stopping = asyncio.create_task(server.stop())
    for _ in range(5):
        await asyncio.sleep(0)
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", server.port)
    # aiohttp's drain is measured in wall time: hold the request long enough that a server which did not wait
    # for it (or waited only briefly) would already have cut it off.
    await asyncio.sleep(0.3)
    assert not stopping.done()
    admitter.release.set()
    status, _, answer = await in_flight
    assert status == 200 and answer["response"]["uid"] == "slow"
    await stopping


async def test_drain_gives_up_after_the_timeout(tls, client):
    admitter = GateAdmitter()
    server = Server(admitter=admitter, settings=settings_for(tls, drain_timeout_seconds=0.2))
    await server.start()
    in_flight = asyncio.create_task(post(client, server, review_body(uid="stuck")))
    await admitter.entered.wait()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await server.stop()
    assert loop.time() - started < 2.0
    with pytest.raises(aiohttp.ClientError):
        await in_flight


async def test_draining_fails_readiness_but_keeps_answering_and_closes_each_connection(tls, client):
    async with Server(admitter=LabelAdmitter(), settings=settings_for(tls)) as server:
        status, _, answer = await post(client, server, review_body(uid="before"))
        assert status == 200 and answer["response"]["uid"] == "before"
        server.begin_drain()
        async with client.get(server.url("/readyz")) as response:
            assert (response.status, await response.text()) == (503, "not ready: shutting down\n")
        async with client.get(server.url("/healthz")) as response:
            assert response.status == 200
        async with client.post(server.url(), json=review_body(uid="during")) as response:
            assert response.status == 200 and (await response.json())["response"]["uid"] == "during"
            assert response.headers["Connection"] == "close"  # the caller reconnects, through updated endpoints


SIGTERM_CHILD = r"""
import asyncio, sys
from pathlib import Path
from burstflow.webhook.admission import Outcome, allowed
from burstflow.logs import configure_logging
from burstflow.webhook.server import serve
from burstflow.webhook.settings import WebhookSettings

cert, key, release = sys.argv[1:4]
configure_logging("json", "info")

class Gate:
    ready = True
    async def admit(self, request):
        print("admitting", flush=True)
        while not Path(release).exists():
            await asyncio.sleep(0.01)
        return Outcome(allowed(request["uid"]), "unchanged")

def ready(server):
    print("ports", server.port, server.metrics_port, flush=True)

settings = WebhookSettings(cert_file=cert, key_file=key, bind_address="127.0.0.1", port=0,
                           metrics_address="127.0.0.1", metrics_port=0, drain_period_seconds=0.2,
                           drain_timeout_seconds=10)
sys.exit(asyncio.run(serve(settings, admitter=Gate(), ready=ready)))
"""


async def test_sigterm_drains_the_request_in_flight_and_exits_0(tls, client, tmp_path):
    release = tmp_path / "release"
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SIGTERM_CHILD, str(tls.cert_path), str(tls.key_path), str(release),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        line = (await asyncio.wait_for(child.stdout.readline(), 20)).decode().split()
        assert line[0] == "ports", line
        port = int(line[1])
        in_flight = asyncio.create_task(client.post(
            f"https://127.0.0.1:{port}/mutate", data=json.dumps(review_body(uid="term")).encode(),
            headers={"Content-Type": "application/json"}))
        assert (await asyncio.wait_for(child.stdout.readline(), 10)).strip() == b"admitting"
        child.send_signal(signal.SIGTERM)
        for _ in range(200):  # after its 0.2 s drain period the child closes its listener; wait for that, bounded
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                await asyncio.sleep(0.01)
            except (ConnectionRefusedError, ConnectionResetError):  # reset: accepted just as the listener closed
                break
        else:
            pytest.fail("the listener was still open 2 s after SIGTERM")
        await asyncio.sleep(0.3)  # longer than a drain that does not wait would take (see the in-process test)
        assert child.returncode is None
        release.touch()
        response = await asyncio.wait_for(in_flight, 10)
        assert response.status == 200
        assert (await response.json())["response"] == {"uid": "term", "allowed": True}
        assert await asyncio.wait_for(child.wait(), 10) == 0
        logged = [json.loads(line) for line in (await child.stderr.read()).decode().splitlines()]
        assert any(entry["message"].startswith("signal received: /readyz now fails; still accepting and answering "
                                               "requests for 0.2 s") for entry in logged)
        assert any(entry["message"].startswith("drain period over: no longer accepting connections")
                   for entry in logged)
        assert logged[-1]["message"] == "webhook stopped"
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()


# --- settings -------------------------------------------------------------------------------------------------------

# Settings parsing (every kind, errors, flags over variables, reasons, redaction, the Deployment's grace period)
# is tested with the cron service's in tests/test_settings.py.


async def test_startup_logs_settings_once_with_secrets_redacted_and_a_bad_cert_exits_1(tmp_path, caplog):
    from burstflow.webhook.server import serve

    settings = WebhookSettings(cert_file=str(tmp_path / "missing.crt"), key_file=str(tmp_path / "missing.key"),
                               key_password="hunter2", bind_address="127.0.0.1", port=0, metrics_port=0)
    with caplog.at_level(logging.INFO, logger="burstflow.webhook.server"):
        code = await serve(settings, admitter=LabelAdmitter())
    assert code == 1
    settings_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("webhook settings:")]
    assert len(settings_lines) == 1 and '"key_password": "<redacted>"' in settings_lines[0]
    assert "hunter2" not in caplog.text
    assert "webhook cannot start: FileNotFoundError" in caplog.text


def test_json_log_lines():
    record = logging.LogRecord("burstflow.webhook.server", logging.WARNING, __file__, 1, "bad %s", ("input",), None)
    entry = json.loads(JsonFormatter().format(record))
    assert (entry["level"], entry["logger"], entry["message"]) == ("warning", "burstflow.webhook.server", "bad input")


class WarningPlacer:
    """A placement step that only warns (as the pools do when a pod matches two ResourcePolicies)."""

    def place(self, pod, *, namespace, policies, dry_run=False):
        return Placement(pod=None, denied=None, warnings=["pod matches ResourcePolicies a, b; using a"])


@dataclass
class Placement:
    pod: Any
    denied: Any
    warnings: list[str]


async def test_a_warning_about_one_admission_carries_its_uid_namespace_and_name(caplog):
    from burstflow.webhook.admitter import PodAdmitter, store_from_paths

    request = review_body(uid="u-warned", name_override="warned-pod")["request"]
    admitter = PodAdmitter(store=store_from_paths([str(ROOT / "policies")]), placer=WarningPlacer())
    with caplog.at_level(logging.WARNING, logger="burstflow.webhook"):
        await admitter.admit(request)
    [record] = [r for r in caplog.records if "using a" in r.getMessage()]
    entry = json.loads(JsonFormatter().format(record))
    assert (entry["uid"], entry["namespace"], entry["name"]) == ("u-warned", request["namespace"], "warned-pod")


# --- with the real admitter (webhook.admitter.PodAdmitter and the example policies) ---------------------------------

async def test_real_pod_admitter_over_https_is_transparent_and_idempotent(tls, client):
    import jsonpatch

    from burstflow.webhook.admitter import PodAdmitter, PolicyStore, store_from_paths

    loaded = store_from_paths([str(ROOT / "policies")])
    store = PolicyStore()
    admitter = PodAdmitter(store=store)
    async with Server(admitter=admitter, settings=settings_for(tls)) as server:
        async with client.get(server.url("/readyz")) as response:
            assert response.status == 503
        store.update(loaded.policies)
        async with client.get(server.url("/readyz")) as response:
            assert response.status == 200

        fixture = load_admission(ARGO_POD)
        status, _, answer = await post(client, server, fixture["body"], path=fixture["path"])
        direct = await PodAdmitter(store=loaded).admit(copy.deepcopy(fixture["body"]["request"]))
        assert status == 200 and answer["response"] == direct.response and direct.outcome == "mutated"
        assert sample(server.registry, "burstflow_webhook_admissions_total", outcome="mutated",
                      profile=",".join(direct.profiles)) == 1

        pod = jsonpatch.apply_patch(fixture["body"]["request"]["object"], decode_patch(answer["response"]))
        again = review_body(uid="reinvoked")
        again["request"]["object"] = pod
        status, _, answer = await post(client, server, again)
        assert status == 200 and answer["response"] == {"uid": "reinvoked", "allowed": True}


def _child_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("BURSTFLOW_WEBHOOK_")}


async def test_burstflow_webhook_serve_end_to_end(tls, client):
    """The real command: flags, JSON logs, example policies, HTTPS admission, metrics, SIGTERM -> exit 0."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "burstflow.cli", "webhook", "serve", "--cert-file", str(tls.cert_path),
        "--key-file", str(tls.key_path), "--bind-address", "127.0.0.1", "--port", "0", "--metrics-address",
        "127.0.0.1", "--metrics-port", "0", "--policies", str(ROOT / "policies"), "--no-cluster-policies",
        "--log-format", "json", "--drain-period", "600", cwd=ROOT, env=_child_env(), stderr=asyncio.subprocess.PIPE)
    try:
        logged = []
        while True:
            line = await asyncio.wait_for(child.stderr.readline(), 20)
            assert line, f"webhook exited early: {logged}"
            logged.append(json.loads(line))
            if logged[-1]["message"].startswith("webhook listening on "):
                break
        settings_line = [e for e in logged if e["message"].startswith("webhook settings: ")]
        assert len(settings_line) == 1 and logged[0] is settings_line[0]  # before the policy loader's messages
        assert json.loads(settings_line[0]["message"].split(": ", 1)[1])["policy_paths"] == [str(ROOT / "policies")]
        words = logged[-1]["message"].split()
        port = int(words[3].rsplit(":", 1)[1])
        metrics_url = words[6].rstrip(")")

        async with client.get(f"https://127.0.0.1:{port}/readyz") as response:
            assert response.status == 200
        fixture = load_admission(ARGO_POD)
        async with client.post(f"https://127.0.0.1:{port}{fixture['path']}", json=fixture["body"]) as response:
            answer = (await response.json())["response"]
        assert answer["uid"] == fixture["body"]["request"]["uid"] and answer["patchType"] == "JSONPatch"
        async with client.get(metrics_url) as response:
            text = await response.text()
        assert 'burstflow_webhook_policies_loaded{kind="BurstProfile"}' in text
        assert 'burstflow_webhook_admissions_total{outcome="mutated"' in text

        child.send_signal(signal.SIGTERM)
        while not logged[-1]["message"].startswith("signal received: /readyz now fails"):
            logged.append(json.loads(await asyncio.wait_for(child.stderr.readline(), 10)))
        child.send_signal(signal.SIGINT)  # a second signal ends the (600 s) drain period early
        assert await asyncio.wait_for(child.wait(), 10) == 0
        remaining = [json.loads(line)["message"] for line in (await child.stderr.read()).decode().splitlines()]
        assert remaining[0].startswith("drain period over") and remaining[-1] == "webhook stopped", remaining
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()


async def _spawn_serve(tls: TlsFiles, env: dict[str, str]) -> tuple[asyncio.subprocess.Process, int, list[dict]]:
    """`burstflow webhook serve` with the example policies on a free port; returns it once it listens."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "burstflow.cli", "webhook", "serve", "--cert-file", str(tls.cert_path),
        "--key-file", str(tls.key_path), "--bind-address", "127.0.0.1", "--port", "0", "--metrics-address",
        "127.0.0.1", "--metrics-port", "0", "--policies", str(ROOT / "policies"), "--no-cluster-policies",
        "--log-format", "json", cwd=ROOT, env={**_child_env(), **env}, stderr=asyncio.subprocess.PIPE)
    logged: list[dict] = []
    while not logged or not logged[-1]["message"].startswith("webhook listening on "):
        line = await asyncio.wait_for(child.stderr.readline(), 20)
        assert line, f"webhook exited early: {logged}"
        logged.append(json.loads(line))
    return child, int(logged[-1]["message"].split()[3].rsplit(":", 1)[1]), logged


async def test_admissions_streamed_across_sigterm_all_succeed_during_the_drain_period(tls):
    """A rollout: SIGTERM arrives while admissions keep coming (each on a new connection, as after an endpoint
    change). During the drain period none is refused or fails and /readyz turns 503; then the process exits 0."""
    drain_period, streamed_for = 2.0, 1.0  # the stream stays well inside the drain period
    child, port, _ = await _spawn_serve(tls, {"BURSTFLOW_WEBHOOK_DRAIN_PERIOD_SECONDS": str(drain_period),
                                              "BURSTFLOW_WEBHOOK_DRAIN_TIMEOUT_SECONDS": "5"})
    body = json.dumps(load_admission(ARGO_POD)["body"]).encode()
    outcomes: list[str] = []
    readiness: list[int] = []
    try:
        connector = aiohttp.TCPConnector(ssl=tls.client_context(), force_close=True, limit=0)
        async with aiohttp.ClientSession(connector=connector) as fresh:
            async def admit() -> str:
                try:
                    async with fresh.post(f"https://127.0.0.1:{port}/mutate", data=body,
                                          headers={"Content-Type": "application/json"}) as response:
                        answer = (await response.json())["response"] if response.status == 200 else {}
                        return "ok" if answer.get("allowed") and answer.get("patchType") else f"HTTP {response.status}"
                except aiohttp.ClientConnectorError as exc:
                    return "refused" if isinstance(exc.os_error, ConnectionRefusedError) else f"connect: {exc}"
                except aiohttp.ClientError as exc:
                    return f"failed: {type(exc).__name__}"

            assert await admit() == "ok"
            loop = asyncio.get_running_loop()
            child.send_signal(signal.SIGTERM)
            signalled = loop.time()

            async def stream() -> None:
                while loop.time() - signalled < streamed_for:
                    outcomes.append(await admit())

            async def probe() -> None:
                while loop.time() - signalled < streamed_for:
                    try:
                        async with fresh.get(f"https://127.0.0.1:{port}/readyz") as response:
                            readiness.append(response.status)
                    except aiohttp.ClientError as exc:
                        readiness.append(-1)
                        outcomes.append(f"readyz: {type(exc).__name__}")

            await asyncio.gather(probe(), *(stream() for _ in range(4)))
        failures = [o for o in outcomes if o != "ok"]
        assert not failures and len(outcomes) >= 8, (len(outcomes), failures[:5])
        assert 503 in readiness and 200 not in readiness[readiness.index(503):], readiness
        assert await asyncio.wait_for(child.wait(), 15) == 0
        logged = [json.loads(line) for line in (await child.stderr.read()).decode().splitlines()]
        assert [e["message"].split(":")[0] for e in logged[-3:]] == [
            "signal received", "drain period over", "webhook stopped"], logged[-3:]
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()


async def test_an_admitter_that_cannot_be_built_exits_1_after_logging_the_settings(tls, caplog):
    from burstflow.webhook.server import serve

    def factory(metrics, clock):
        raise ValueError("no policy files given")

    with caplog.at_level(logging.INFO, logger="burstflow.webhook.server"):
        code = await serve(settings_for(tls), admitter_factory=factory)
    assert code == 1
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0].startswith("webhook settings: ")
    assert messages[-1] == "webhook cannot start: cannot build the admitter: no policy files given"
