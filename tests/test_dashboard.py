"""The Grafana dashboard: the panels an operator needs, and every series it queries is one the services export."""
from __future__ import annotations

import json
import re

import pytest
from prometheus_client import CollectorRegistry

from tests.conftest import ROOT

DASHBOARD = ROOT / "manifests" / "monitoring" / "grafana-dashboard.json"
# Labels Prometheus attaches to every scraped series (target labels of a PodMonitor), not the services.
TARGET_LABELS = {"job", "pod", "namespace", "instance", "container", "endpoint", "service"}


def exported_families() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Every metric family the webhook, pool and cron services register: name -> (type, label names)."""
    from burstflow.cron.metrics import CronMetrics
    from burstflow.webhook.metrics import WebhookMetrics
    from burstflow.webhook.pools.metrics import PoolMetrics

    families: dict[str, tuple[str, tuple[str, ...]]] = {}
    for factory in (WebhookMetrics, PoolMetrics, CronMetrics):
        registry = CollectorRegistry()
        factory(registry)
        for collector in list(registry._collector_to_names):
            for family in collector.describe():
                labels = tuple(getattr(collector, "_labelnames", ()))
                families[family.name] = (family.type, labels)
    return families


def series_names(families: dict[str, tuple[str, tuple[str, ...]]]) -> dict[str, tuple[str, ...]]:
    """The sample names Prometheus stores for each family (counters get `_total`, histograms three series)."""
    out: dict[str, tuple[str, ...]] = {}
    for name, (kind, labels) in families.items():
        if kind == "counter":
            out[f"{name}_total"] = labels
        elif kind == "histogram":
            out[f"{name}_bucket"] = (*labels, "le")
            out[f"{name}_sum"] = labels
            out[f"{name}_count"] = labels
        else:
            out[name] = labels
    return out


def queries(dashboard: dict) -> list[tuple[str, str]]:
    """(panel title, expression) for every target of every panel, rows included."""
    found = []

    def walk(panels):
        for panel in panels:
            for target in panel.get("targets", []):
                found.append((panel["title"], target["expr"]))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    return found


def metric_references(expr: str) -> list[tuple[str, set[str]]]:
    """(metric name, label names used with it) for each `burstflow_*` selector and its aggregation clause."""
    refs = []
    for match in re.finditer(r"(burstflow_[a-z_]+)(\{[^}]*\})?", expr):
        labels = set(re.findall(r"([a-zA-Z_]+)\s*(?:=~|!=|!~|=)", match.group(2) or ""))
        refs.append((match.group(1), labels))
    grouping = set()
    for clause in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
        grouping |= {label.strip() for label in clause.split(",") if label.strip()}
    return [(name, labels | grouping) for name, labels in refs]


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def test_every_queried_series_is_exported_with_the_labels_used(dashboard):
    exported = series_names(exported_families())
    checked = 0
    for title, expr in queries(dashboard):
        for name, labels in metric_references(expr):
            assert name in exported, f"panel {title!r} queries {name}, which no service exports"
            unknown = labels - set(exported[name]) - TARGET_LABELS
            assert not unknown, f"panel {title!r}: {name} has no label(s) {sorted(unknown)}"
            checked += 1
    assert checked >= 15


def test_the_check_rejects_a_misspelt_metric_and_an_unknown_label():
    exported = series_names(exported_families())
    [(name, _)] = metric_references("rate(burstflow_webhook_admission_total[5m])")
    assert name not in exported
    [(name, labels)] = metric_references("sum by (policy) (rate(burstflow_cron_runs_created_total[5m]))")
    assert name in exported and labels - set(exported[name]) - TARGET_LABELS == {"policy"}


@pytest.mark.parametrize("metric", [
    "burstflow_webhook_admissions_total",
    "burstflow_webhook_admission_duration_seconds_bucket",
    "burstflow_pool_placed",
    "burstflow_pool_effective_max",
    "burstflow_cron_runs_created_total",
    "burstflow_cron_runs_skipped_total",
    "burstflow_cron_submission_failures_total",
    "burstflow_cron_scheduling_lag_seconds_bucket",
    "burstflow_leader_is_leader",
    "burstflow_webhook_policy_load_errors_total",
    "burstflow_cron_spec_errors",
])
def test_the_panels_issue_6_lists_are_there(dashboard, metric):
    assert any(metric in expr for _, expr in queries(dashboard)), f"no panel queries {metric}"


@pytest.mark.parametrize("title, needle", [
    ("Admissions per second by outcome", "by (outcome)"),
    ("Admission latency p50 / p99", "histogram_quantile(0.99"),
    ("Pool usage per policy and subset", "by (namespace, policy, subset)"),
    ("Runs created / skipped / failed", "by (reason)"),
    ("Scheduling lag p50 / p99", "histogram_quantile(0.50"),
])
def test_panels_break_down_as_an_operator_reads_them(dashboard, title, needle):
    exprs = [expr for t, expr in queries(dashboard) if t == title]
    assert exprs, f"no panel {title!r}"
    assert any(needle in expr for expr in exprs)


def test_dashboard_is_importable(dashboard):
    assert dashboard["uid"] == "burstflow" and dashboard["schemaVersion"] >= 36
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24
