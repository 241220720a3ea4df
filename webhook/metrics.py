"""The webhook's Prometheus metrics, registered into a registry the caller passes in (names as in docs/reference/metrics.md)."""
from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

INTERNAL_ERROR_ACTIONS = ("admitted", "denied")
OUTCOMES = ("mutated", "unchanged", "skipped", "denied", "error", "malformed")

# Admissions take well under a millisecond when healthy; the API server's webhook timeout is 10 s by default
# (30 s at most), so the buckets reach from 0.25 ms to 10 s.
DURATION_BUCKETS = (0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class WebhookMetrics:
    """Every webhook metric, bound to one registry.

    `admissions_total{outcome, profile}` counts each admission once: `profile` is the applied profile names joined
    with "," in the order they were applied ("" when none), so `sum by (outcome)` is the number of admissions.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.admissions = Counter(
            "burstflow_webhook_admissions_total", "AdmissionReviews answered, by outcome and applied profiles.",
            ["outcome", "profile"], registry=registry)
        self.admission_duration = Histogram(
            "burstflow_webhook_admission_duration_seconds",
            "Time from request body received to response encoded, for /mutate.",
            buckets=DURATION_BUCKETS, registry=registry)
        self.malformed = Counter(
            "burstflow_webhook_malformed_requests_total", "Requests to /mutate rejected as malformed, by reason.",
            ["reason"], registry=registry)
        self.policy_load_errors = Counter(
            "burstflow_webhook_policy_load_errors_total", "Policies that failed to compile, by source.",
            ["source"], registry=registry)
        self.policies_loaded = Gauge(
            "burstflow_webhook_policies_loaded", "Policies currently in effect, by kind.",
            ["kind"], registry=registry)
        self.tls_reloads = Counter(
            "burstflow_webhook_tls_reloads_total", "Serving certificate reloads that took effect.",
            registry=registry)
        self.internal_errors = Counter(
            "burstflow_webhook_internal_errors",
            "Admissions that failed with an unexpected error of the webhook, by what the pod got: admitted "
            "(unmutated, with a warning; the default) or denied (--fail-closed).",
            ["action"], registry=registry)
        for action in INTERNAL_ERROR_ACTIONS:  # export 0 before the first error, so alerts see a series
            self.internal_errors.labels(action=action)
        self._admission_children: dict[tuple[str, tuple[str, ...]], Counter] = {}

    def count_admission(self, outcome: str, profiles: Iterable[str] = ()) -> None:
        """One admission answered; `outcome` is one of OUTCOMES."""
        key = (outcome, tuple(profiles))
        child = self._admission_children.get(key)
        if child is None:  # labels() takes a lock and builds a key each time: cache the few combinations that occur
            child = self._admission_children[key] = self.admissions.labels(outcome=outcome, profile=",".join(key[1]))
        child.inc()

    def count_malformed(self, reason: str) -> None:
        """A malformed request: counted under its reason and as a `malformed` admission."""
        self.malformed.labels(reason=reason).inc()
        self.admissions.labels(outcome="malformed", profile="").inc()
