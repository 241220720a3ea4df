"""The cron service's Prometheus metrics (names fixed in docs/reference/metrics.md) and its /metrics + /healthz server."""
from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

SKIP_REASONS = ("when", "forbid", "suspended", "stopped", "deadline")

# Lag = Workflow creation time - scheduled time. Sub-second buckets for the on-time path (target p99 < 1 s), then
# minutes for catch-up runs after an outage (bounded by startingDeadlineSeconds).
LAG_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


class CronMetrics:
    """The cron service's metric families, registered in the registry passed in (tests read them back)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.runs_created = Counter(
            "burstflow_cron_runs_created", "Workflows created by the cron service.", ["namespace"], registry=registry
        )
        self.runs_skipped = Counter(
            "burstflow_cron_runs_skipped",
            "Scheduled runs not created, by reason (when, forbid, suspended, stopped, deadline).",
            ["reason"],
            registry=registry,
        )
        self.submission_failures = Counter(
            "burstflow_cron_submission_failures",
            "Runs that could not be submitted: creations the API server refused (AlreadyExists is adopted, not "
            "counted) and `when` expressions that failed to evaluate.",
            ["namespace"],
            registry=registry,
        )
        self.scheduling_lag = Histogram(
            "burstflow_cron_scheduling_lag_seconds",
            "Time from a run's scheduled time to the creation of its Workflow.",
            buckets=LAG_BUCKETS,
            registry=registry,
        )
        self.prepared_decisions = Counter(
            "burstflow_cron_prepared_decisions",
            "Decisions prepared before their due instant, by what became of them at that instant: used (only the "
            "create was left to do) or stale (something changed since; decided again as usual).",
            ["result"],
            registry=registry,
        )
        self.cron_workflows = Gauge(
            "burstflow_cron_workflows", "CronWorkflows known to the service.", registry=registry
        )
        self.spec_errors = Gauge(
            "burstflow_cron_spec_errors", "CronWorkflows whose spec does not compile (SpecError).", registry=registry
        )
        self.is_leader = Gauge(
            "burstflow_leader_is_leader",
            "1 while this replica holds the component's Lease.",
            ["component"],
            registry=registry,
        )
        self.is_leader.labels(component="cron").set(0)
        for reason in SKIP_REASONS:
            self.runs_skipped.labels(reason=reason)
        self.prepared_used = self.prepared_decisions.labels(result="used")
        self.prepared_stale = self.prepared_decisions.labels(result="stale")
        self._created_in: dict[str, Counter] = {}

    def created_in(self, namespace: str) -> Counter:
        """`runs_created` of `namespace`, looked up once per namespace (a burst counts thousands of runs)."""
        child = self._created_in.get(namespace)
        if child is None:
            child = self._created_in[namespace] = self.runs_created.labels(namespace=namespace)
        return child

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """A sample's current value (0.0 when absent), e.g. `value("burstflow_cron_runs_created_total", {...})`."""
        found = self.registry.get_sample_value(name, labels or {})
        return 0.0 if found is None else found


def metrics_app(registry: CollectorRegistry, *, healthy: Callable[[], bool]) -> web.Application:
    """aiohttp app serving `/metrics` (Prometheus text format) and `/healthz` (200 while `healthy()`, else 503)."""

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        if healthy():
            return web.Response(text="ok\n")
        return web.Response(status=503, text="unhealthy\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    return app


async def start_metrics_server(app: web.Application, *, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve `app` on host:port (port 0 picks a free one); returns the runner (to clean up) and the bound port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = port
    server = getattr(site, "_server", None)
    if server is not None and server.sockets:
        bound = server.sockets[0].getsockname()[1]
    return runner, bound
