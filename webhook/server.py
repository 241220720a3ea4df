"""The webhook's HTTPS shell: decodes AdmissionReviews, calls the admitter, encodes answers; TLS reload, metrics, drain.

Two error channels (docs/operations/failure-behaviour.md, "Malformed requests", has the table):
- malformed input is the caller's problem: an AdmissionReview with `allowed: false` and an HTTP-like code when the
  body carried a `request.uid` to echo, otherwise a plain 4xx; each is counted under its reason and logged;
- an unexpected exception of ours is caught in one place (`handle_mutate`), logged with the uid and its traceback,
  counted, and answered as the documented failure mode says: `allowed: true` with no patch and a warning the user
  sees (fail-open, the default), or, with `fail_closed`, a denial with code 500. Fail-open has to be answered,
  not left to `failurePolicy: Ignore`: the API server applies that only when the call itself fails, and treats
  any `allowed: false` answer as a rejection, so a bug of ours would otherwise block every workflow pod.

Shutdown (`serve`): on SIGTERM /readyz fails at once while requests are still accepted and answered for
`drain_period_seconds` (the pod's removal from the Service's endpoints takes that long to reach every API server);
then the listener closes and requests in flight get up to `drain_timeout_seconds`.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from burstflow.clock import Clock, SystemClock
from burstflow.logs import fields
from burstflow.webhook.admission import API_VERSION, KIND, Admitter, allowed, decode_json, encode_json, errored, review
from burstflow.webhook.metrics import WebhookMetrics
from burstflow.webhook.settings import WebhookSettings
from burstflow.webhook.tlsreload import CertReloader

log = logging.getLogger(__name__)

ADMITTER = web.AppKey("admitter", Admitter)
SETTINGS = web.AppKey("settings", WebhookSettings)
METRICS = web.AppKey("metrics", WebhookMetrics)
CLOCK = web.AppKey("clock", Clock)
REGISTRY = web.AppKey("registry", CollectorRegistry)
RELOADER = web.AppKey("reloader", CertReloader)


class Lifecycle:
    """What /readyz and /mutate need to know about shutdown: `draining` is set once SIGTERM arrived."""

    def __init__(self) -> None:
        self.draining = False


LIFECYCLE = web.AppKey("lifecycle", Lifecycle)

MUTATE_PATHS = ("/mutate", "/mutate/pods")
POD_RESOURCE = {"group": "", "version": "v1", "resource": "pods"}
# What `kubectl` prints (as "Warning: ...") when a failure of ours let the pod through unmutated; short, because
# the API server truncates long warnings, and pointing at the log line that has the traceback.
FAIL_OPEN_WARNING = ("Burstflow webhook internal error: the pod was admitted unmutated (no profiles, no pool); "
                     "webhook log has uid {uid}")
# Enough for a burst of API-server connections opening at once (the default 128 drops SYNs, costing 1 s retries).
LISTEN_BACKLOG = 1024


class Malformed(Exception):
    """A request we refuse to interpret; `uid` is set when the body carried one to echo."""

    def __init__(self, reason: str, code: int, message: str, uid: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.code = code
        self.message = message
        self.uid = uid

    def response(self) -> web.Response:
        if self.uid is not None:
            return _json_response(review(errored(self.uid, self.code, self.message)))
        return web.Response(status=self.code, text=self.message + "\n")


def _json_response(body: dict[str, Any]) -> web.Response:
    return web.Response(body=encode_json(body), content_type="application/json")


async def _read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, refusing (413) as soon as more than `limit` bytes are announced or received."""
    if request.content_length is not None and request.content_length > limit:
        raise Malformed("body_too_large", 413,
                        f"request body of {request.content_length} bytes exceeds the limit of {limit} bytes")
    chunks = []
    size = 0
    while chunk := await request.content.readany():
        size += len(chunk)
        if size > limit:
            raise Malformed("body_too_large", 413, f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def decode_review(request: web.Request, limit: int) -> dict[str, Any]:
    """The AdmissionReview's `request`, checked far enough for the admitter to rely on; raises Malformed.

    Checked: size, Content-Type, JSON, an object, apiVersion/kind, `request` an object, `uid` a non-empty string,
    and for a CREATE/UPDATE of pods, an `object` that is a Pod. The uid is extracted before the later checks so
    that every failure after it can be answered with an AdmissionReview.
    """
    if request.content_type != "application/json":
        raise Malformed("content_type", 415,
                        f"Content-Type must be application/json, got {request.content_type or 'nothing'!r}")
    body = await _read_body(request, limit)
    try:
        document = decode_json(body)
    except ValueError as exc:
        raise Malformed("not_json", 400, f"request body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise Malformed("not_review", 400,
                        f"request body must be a JSON object (an AdmissionReview), got {type(document).__name__}")
    admission = document.get("request")
    uid = admission.get("uid") if isinstance(admission, dict) else None
    uid = uid if isinstance(uid, str) and uid else None
    if document.get("apiVersion") != API_VERSION or document.get("kind") != KIND:
        raise Malformed("wrong_kind", 400,
                        f"expected apiVersion {API_VERSION!r} kind {KIND!r}, got apiVersion "
                        f"{document.get('apiVersion')!r} kind {document.get('kind')!r}", uid)
    if not isinstance(admission, dict):
        raise Malformed("no_request", 400, "AdmissionReview has no `request` object")
    if uid is None:
        raise Malformed("no_uid", 400, "AdmissionReview `request.uid` is missing or not a non-empty string")
    if (admission.get("resource") == POD_RESOURCE and not admission.get("subResource")
            and admission.get("operation") in ("CREATE", "UPDATE")):
        obj = admission.get("object")
        kind = obj.get("kind") if isinstance(obj, dict) else type(obj).__name__
        if kind != "Pod":
            raise Malformed("not_a_pod", 400,
                            f"request is for resource pods but request.object is {kind!r}, not a Pod", uid)
    return admission


async def handle_mutate(request: web.Request) -> web.Response:
    """POST /mutate: one AdmissionReview in, one out. While draining, each answer closes its connection, so the
    caller's next request opens a new one, which the updated endpoints send to another replica."""
    response = await _mutate(request)
    if request.app[LIFECYCLE].draining:
        response.force_close()
    return response


async def _mutate(request: web.Request) -> web.Response:
    """The only place that catches our own failures."""
    app = request.app
    metrics, clock = app[METRICS], app[CLOCK]
    started = clock.monotonic()
    uid: str | None = None
    admission: dict[str, Any] = {}
    try:
        try:
            admission = await decode_review(request, app[SETTINGS].max_body_bytes)
        except Malformed as bad:
            metrics.count_malformed(bad.reason)
            log.warning("malformed admission request from %s: reason=%s code=%d uid=%s: %s",
                        request.remote, bad.reason, bad.code, bad.uid, bad.message, extra=fields(uid=bad.uid))
            return bad.response()
        uid = admission["uid"]
        outcome = await app[ADMITTER].admit(admission)
        if outcome.response.get("uid") != uid:
            raise RuntimeError(f"admitter answered uid {outcome.response.get('uid')!r} for request uid {uid!r}")
        metrics.count_admission(outcome.outcome, outcome.profiles)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("admitted uid=%s namespace=%s name=%s outcome=%s profiles=%s", uid,
                      admission.get("namespace"), admission.get("name"), outcome.outcome, ",".join(outcome.profiles),
                      extra=fields(uid=uid, namespace=admission.get("namespace"), name=admission.get("name")))
        return _json_response(review(outcome.response))
    except Exception as exc:
        return _internal_error(app, uid, exc, admission)
    finally:
        metrics.admission_duration.observe(clock.monotonic() - started)


def _internal_error(app: web.Application, uid: str | None, exc: Exception, admission: dict[str, Any]) -> web.Response:
    """The one answer to an unexpected failure of ours: logged with the uid, counted, then fail-open (allowed, no
    patch, a warning) unless `fail_closed` (a denial with code 500). Without a uid no review can be answered, so a
    plain 500 leaves the pod to the webhook's `failurePolicy`."""
    metrics = app[METRICS]
    metrics.count_admission("error")
    closed = app[SETTINGS].fail_closed
    log.exception("admission failed with an internal error: uid=%s: %s: %s; the pod is %s", uid, type(exc).__name__,
                  exc, "denied (fail-closed)" if closed else "admitted unmutated (fail-open)",
                  extra=fields(uid=uid, namespace=admission.get("namespace"), name=admission.get("name")))
    message = f"burstflow webhook internal error: {type(exc).__name__}: {str(exc)[:200]}"
    if uid is None:
        return web.Response(status=500, text=message + "\n")
    if closed:
        metrics.internal_errors.labels(action="denied").inc()
        return _json_response(review(errored(uid, 500, message)))
    metrics.internal_errors.labels(action="admitted").inc()
    return _json_response(review(allowed(uid, warnings=[FAIL_OPEN_WARNING.format(uid=uid)])))


async def handle_healthz(request: web.Request) -> web.Response:
    """Liveness: the event loop answers."""
    return web.Response(text="ok\n")


async def handle_readyz(request: web.Request) -> web.Response:
    """Readiness: 200 only once the admitter has its policies (so no pod is admitted by an empty policy set), and
    503 again from SIGTERM on (the kubelet and endpoint controllers stop sending new callers while we drain)."""
    if request.app[LIFECYCLE].draining:
        return web.Response(status=503, text="not ready: shutting down\n")
    if request.app[ADMITTER].ready:
        return web.Response(text="ready\n")
    return web.Response(status=503, text="not ready: policies not loaded yet\n")


async def _admitter_lifecycle(app: web.Application) -> AsyncIterator[None]:
    """Enter the admitter when it is an async context manager (cluster watches), exit it on shutdown."""
    admitter = app[ADMITTER]
    if hasattr(admitter, "__aenter__") and hasattr(admitter, "__aexit__"):
        async with admitter:
            yield
    else:
        yield


async def _reloader_lifecycle(app: web.Application) -> AsyncIterator[None]:
    """Poll the certificate files while the app runs."""
    reloader = app.get(RELOADER)
    if reloader is None:
        yield
        return
    task = asyncio.get_running_loop().create_task(
        reloader.run(app[CLOCK], app[SETTINGS].tls_reload_interval_seconds), name="tls-reload")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def create_app(*, admitter: Admitter, settings: WebhookSettings, registry: CollectorRegistry,
               clock: Clock | None = None, metrics: WebhookMetrics | None = None,
               reloader: CertReloader | None = None, lifecycle: Lifecycle | None = None) -> web.Application:
    """The HTTPS application: POST /mutate and /mutate/pods, GET /healthz and /readyz.

    `metrics` defaults to a new WebhookMetrics in `registry` (pass one when other components, e.g. the policy
    loader, already registered it there). A `reloader` is polled every `settings.tls_reload_interval_seconds`.
    """
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[ADMITTER] = admitter
    app[SETTINGS] = settings
    app[REGISTRY] = registry
    app[METRICS] = metrics if metrics is not None else WebhookMetrics(registry)
    app[CLOCK] = clock if clock is not None else SystemClock()
    app[LIFECYCLE] = lifecycle if lifecycle is not None else Lifecycle()
    if reloader is not None:
        app[RELOADER] = reloader
    for path in MUTATE_PATHS:
        app.router.add_post(path, handle_mutate)
    app.router.add_get("/healthz", handle_healthz)
    app.router.add_get("/readyz", handle_readyz)
    app.cleanup_ctx.append(_admitter_lifecycle)
    app.cleanup_ctx.append(_reloader_lifecycle)
    return app


def create_metrics_app(registry: CollectorRegistry) -> web.Application:
    """The plain-HTTP application serving GET /metrics from `registry`."""
    app = web.Application()
    app[REGISTRY] = registry

    async def handle_metrics(request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(request.app[REGISTRY]))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    app.router.add_get("/metrics", handle_metrics)
    return app


class Server:
    """The webhook's two listeners (HTTPS app + plain-HTTP metrics), usable from tests, the demo and benchmarks.

    `await start()` binds (port 0 picks a free port; `port`/`metrics_port` tell which). `begin_drain()` makes
    /readyz fail while requests are still accepted and answered (each answer then closes its connection).
    `await stop()` stops accepting, lets in-flight requests finish for up to `settings.drain_timeout_seconds`, then
    closes everything. Also an async context manager.
    """

    def __init__(self, *, admitter: Admitter, settings: WebhookSettings, registry: CollectorRegistry | None = None,
                 clock: Clock | None = None, metrics: WebhookMetrics | None = None) -> None:
        self.settings = settings
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = metrics if metrics is not None else WebhookMetrics(self.registry)
        self.admitter = admitter
        self.clock = clock if clock is not None else SystemClock()
        self.reloader: CertReloader | None = None
        self.lifecycle = Lifecycle()
        self._runner: web.AppRunner | None = None
        self._metrics_runner: web.AppRunner | None = None
        self.port = 0
        self.metrics_port = 0

    async def start(self) -> None:
        """Load the certificate and bind both listeners; raises ssl.SSLError/OSError when either is impossible."""
        s = self.settings
        self.reloader = CertReloader(s.cert_file, s.key_file, password=s.key_password or None,
                                     on_reload=self.metrics.tls_reloads.inc)
        app = create_app(admitter=self.admitter, settings=s, registry=self.registry, clock=self.clock,
                         metrics=self.metrics, reloader=self.reloader, lifecycle=self.lifecycle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                     shutdown_timeout=s.drain_timeout_seconds)
        self._metrics_runner = web.AppRunner(create_metrics_app(self.registry), access_log=None,
                                             handle_signals=False, shutdown_timeout=1.0)
        try:
            await self._runner.setup()
            await web.TCPSite(self._runner, s.bind_address, s.port, ssl_context=self.reloader.context,
                              backlog=LISTEN_BACKLOG).start()
            self.port = self._runner.addresses[0][1]
            await self._metrics_runner.setup()
            await web.TCPSite(self._metrics_runner, s.metrics_address, s.metrics_port).start()
            self.metrics_port = self._metrics_runner.addresses[0][1]
        except BaseException:
            await self.stop()
            raise
        log.info("webhook listening on https://%s:%d (metrics on http://%s:%d/metrics)",
                 s.bind_address, self.port, s.metrics_address, self.metrics_port)

    def begin_drain(self) -> None:
        """From now on /readyz answers 503; requests are still accepted and answered."""
        self.lifecycle.draining = True

    @property
    def draining(self) -> bool:
        return self.lifecycle.draining

    async def stop(self) -> None:
        """Stop accepting, drain in-flight requests (up to the drain timeout), release everything. Idempotent."""
        runner, self._runner = self._runner, None
        metrics_runner, self._metrics_runner = self._metrics_runner, None
        if runner is not None:
            await runner.cleanup()
        if metrics_runner is not None:
            await metrics_runner.cleanup()

    def url(self, path: str = "/mutate", host: str = "127.0.0.1") -> str:
        return f"https://{host}:{self.port}{path}"

    def metrics_url(self, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.metrics_port}/metrics"

    async def __aenter__(self) -> Server:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


async def serve(settings: WebhookSettings, *, admitter: Admitter | None = None,
                admitter_factory: Callable[..., Admitter] | None = None,
                registry: CollectorRegistry | None = None, metrics: WebhookMetrics | None = None,
                clock: Clock | None = None, ready: Callable[[Server], Awaitable[None] | None] | None = None) -> int:
    """Run until SIGTERM or SIGINT, then drain and return the exit code (0; 1 when the server cannot start).

    Draining: /readyz fails at once; requests are accepted and answered for `drain_period_seconds` (cut short by
    a second signal); then the listener closes and requests in flight get `drain_timeout_seconds` to finish.

    Give either `admitter` or `admitter_factory(metrics=, clock=)` (built after the settings are logged, so its
    own start-up messages follow them). `metrics` defaults to a new WebhookMetrics in `registry` (a new one when
    not given). `ready(server)` is called once both listeners are bound.
    """
    if (admitter is None) == (admitter_factory is None):
        raise TypeError("serve() needs exactly one of admitter and admitter_factory")
    log.info("webhook settings: %s", json.dumps(settings.redacted(), sort_keys=True))
    if metrics is None:
        metrics = WebhookMetrics(registry if registry is not None else CollectorRegistry())
    registry = metrics.registry
    clock = clock if clock is not None else SystemClock()
    if admitter is None:
        try:
            admitter = admitter_factory(metrics=metrics, clock=clock)
        except (ValueError, OSError, ImportError) as exc:
            log.error("webhook cannot start: cannot build the admitter: %s", exc)
            return 1
    server = Server(admitter=admitter, settings=settings, registry=registry, metrics=metrics, clock=clock)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        try:
            await server.start()
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            log.error("webhook cannot start: %s: %s", type(exc).__name__, exc)
            return 1
        if ready is not None:
            result = ready(server)
            if asyncio.iscoroutine(result):
                await result
        await stop.wait()
        stop.clear()
        server.begin_drain()
        log.info("signal received: /readyz now fails; still accepting and answering requests for %g s while the "
                 "endpoint removal reaches every API server (a second signal ends this early)",
                 settings.drain_period_seconds)
        await _first_of(stop.wait(), clock.sleep(settings.drain_period_seconds))
        log.info("drain period over: no longer accepting connections; requests in flight may finish for up to %g s",
                 settings.drain_timeout_seconds)
        await server.stop()
        log.info("webhook stopped")
        return 0
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


async def _first_of(*awaitables: Awaitable[Any]) -> None:
    """Wait until the first of `awaitables` completes; cancel the others."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
