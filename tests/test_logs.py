"""One logging setup and one JSON schema for both services (burstflow.logs)."""
from __future__ import annotations

import dataclasses
import io
import json
import logging
import re
import subprocess
import sys
from datetime import datetime, timezone

import pytest

from burstflow.logs import JsonFormatter, TextFormatter, configure_logging, fields
from tests.conftest import ROOT

# 2026-11-23T07:30:00.125Z: UTC, milliseconds, a Z.
RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
AT = datetime(2026, 11, 23, 7, 30, 0, 125_999, tzinfo=timezone.utc)


def record(message="created %s", args=("wf-1",), *, level=logging.INFO, extra=None, exc_info=None):
    entry = logging.LogRecord("burstflow.cron", level, __file__, 1, message, args, exc_info)
    entry.created = AT.timestamp()
    entry.msecs = 125.999
    for key, value in (extra or {}).items():
        setattr(entry, key, value)
    return entry


def test_a_json_line_has_the_fixed_keys_then_the_context_fields_then_the_exception():
    try:
        raise KeyError("spec")
    except KeyError:
        exc_info = sys.exc_info()
    line = JsonFormatter().format(record(
        level=logging.WARNING, exc_info=exc_info,
        extra=fields(uid="0f1e", namespace="argo", name="etl", kind="CronWorkflow", lag_seconds=0.25)))
    entry = json.loads(line)
    assert list(entry) == ["time", "level", "logger", "message", "uid", "namespace", "name", "kind", "lag_seconds",
                           "exception"]
    assert entry["time"] == "2026-11-23T07:30:00.125Z" and RFC3339_MS.match(entry["time"])
    assert (entry["level"], entry["logger"], entry["message"]) == ("warning", "burstflow.cron", "created wf-1")
    assert (entry["namespace"], entry["name"], entry["kind"], entry["lag_seconds"]) == (
        "argo", "etl", "CronWorkflow", 0.25)
    assert entry["exception"].startswith("Traceback") and "KeyError: 'spec'" in entry["exception"]
    assert "\n" not in line


def test_a_json_line_without_context_and_with_values_json_cannot_hold():
    assert list(json.loads(JsonFormatter().format(record()))) == ["time", "level", "logger", "message"]
    entry = json.loads(JsonFormatter().format(record(extra=fields(at=AT, message="shadowed"))))
    assert entry["at"] == str(AT)
    assert (entry["message"], entry["field_message"]) == ("created wf-1", "shadowed")


def test_the_time_is_the_records_instant_in_utc_with_milliseconds_across_seconds():
    """Lines of one second share its formatting: each still shows its own instant, also as seconds roll over."""
    for step in range(400):
        created = AT.timestamp() + step * 0.0371
        entry = logging.LogRecord("burstflow.cron", logging.INFO, __file__, 1, "tick", (), None)
        entry.created = created
        expected = datetime.fromtimestamp(created, timezone.utc).isoformat(timespec="milliseconds")
        assert json.loads(JsonFormatter().format(entry))["time"] == expected.replace("+00:00", "Z")


def test_json_lines_carry_any_value_the_standard_encoder_would():
    @dataclasses.dataclass
    class Ref:
        name: str

    entry = json.loads(JsonFormatter().format(record(extra=fields(
        big=2**70, name="Zürich ✓", ref=Ref("wf"), nested={"at": AT, "n": [1, 2.5, None, True]}))))
    assert entry["big"] == 2**70
    assert entry["name"] == "Zürich ✓"
    assert entry["ref"] == str(Ref("wf"))
    assert entry["nested"] == {"at": str(AT), "n": [1, 2.5, None, True]}


def test_a_text_line_reads_time_level_logger_message_then_key_value_pairs():
    line = TextFormatter().format(record(extra=fields(namespace="argo", name="etl", kind="CronWorkflow")))
    assert line == "2026-11-23T07:30:00.125Z info    burstflow.cron: created wf-1 namespace=argo name=etl kind=CronWorkflow"


@pytest.mark.parametrize("log_format, formatter", [("json", JsonFormatter), ("text", TextFormatter)])
def test_configure_logging_installs_one_root_handler_and_quiets_the_access_log(log_format, formatter):
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logging.getLogger("aiohttp.access").level)
    stream = io.StringIO()
    try:
        configure_logging(log_format, "DEBUG", stream=stream)
        assert len(root.handlers) == 1 and isinstance(root.handlers[0].formatter, formatter)
        assert root.level == logging.DEBUG
        assert logging.getLogger("aiohttp.access").getEffectiveLevel() == logging.WARNING
        logging.getLogger("burstflow.test").debug("hello", extra=fields(name="x"))
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging.getLogger("aiohttp.access").setLevel(saved[2])
    assert "hello" in stream.getvalue() and "x" in stream.getvalue()
    with pytest.raises(ValueError, match="'xml' is not one of json, text"):
        configure_logging("xml", "info", stream=stream)


def test_cron_run_logs_json_lines_of_the_shared_schema(tmp_path):
    """`burstflow cron run` wires settings into logging: its start-up lines are of the shared schema."""
    missing = tmp_path / "missing-kubeconfig"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "POD_NAME": "cron-0", "POD_NAMESPACE": "bf"}
    done = subprocess.run([sys.executable, "-m", "burstflow.cli", "cron", "run", "--kubeconfig", str(missing),
                           "--log-format", "json", "--metrics-port", "0"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert all(list(line)[:4] == ["time", "level", "logger", "message"] and RFC3339_MS.match(line["time"])
               for line in lines)  # the client library's own lines too: one handler formats every line
    ours = [line for line in lines if line["logger"].startswith("burstflow.")]
    assert [line["message"] for line in ours] == ["starting", "cannot connect to Kubernetes"]
    assert (ours[0]["settings"]["identity"], ours[0]["settings"]["lease_namespace"]) == ("cron-0", "bf")
    assert str(missing) in ours[1]["error"]
