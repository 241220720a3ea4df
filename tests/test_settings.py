"""One settings convention for both services (burstflow.settings): flag over `BURSTFLOW_<SERVICE>_<FIELD>` over the
default, errors naming the flag and the variable, and the pod's identity from the downward API the same way."""
from __future__ import annotations

import argparse
import dataclasses
import json
import socket
from dataclasses import dataclass
from typing import ClassVar

import pytest
import yaml

from burstflow.cli import build_parser
from burstflow.cron.settings import CronSettings
from burstflow.settings import (
    PodIdentity,
    Settings,
    SettingsError,
    add_arguments,
    flag_name,
    load,
    pod_identity,
    setting,
)
from burstflow.webhook.settings import WebhookSettings, add_settings_arguments, settings_from_args
from tests.conftest import ROOT

HERE = pod_identity({})  # what an empty environment resolves to on this machine (host name; SA file or default)


@dataclass(frozen=True)
class Example(Settings):
    """Every supported kind once."""

    SERVICE: ClassVar[str] = "example"

    enabled: bool = setting(True, reason="on by default")
    count: int = setting(3, reason="three")
    ratio: float = setting(0.5, reason="half")
    name: str = setting("x", reason="a name")
    path: str | None = setting(None, reason="unset")
    tags: tuple[str, ...] = setting((), reason="none")
    timeout_seconds: float = setting(1.0, reason="one second", aliases=("BURSTFLOW_TIMEOUT",))
    mode: str = setting("fast", choices=("fast", "slow"), reason="fast")
    token: str = setting("", secret=True, reason="a secret")
    holder: str = setting("", pod="name", reason="the pod")

    def validate(self) -> None:
        if self.count < 0:
            raise SettingsError(f"{self.source('count')}: must be >= 0, not {self.count}")


def parse(cls, argv):
    parser = argparse.ArgumentParser()
    add_arguments(parser, cls)
    return parser.parse_args(argv)


# --- pod identity -----------------------------------------------------------------------------------------------

def test_pod_identity_from_the_downward_api(tmp_path):
    account = tmp_path / "namespace"
    account.write_text("from-file\n")
    assert pod_identity({"POD_NAME": "cron-7d9f-x", "POD_NAMESPACE": "burstflow-system"},
                        namespace_file=str(account)) == PodIdentity("cron-7d9f-x", "burstflow-system")


def test_pod_identity_falls_back_to_the_host_name_and_the_service_account_file(tmp_path):
    account = tmp_path / "namespace"
    account.write_text("team-a\n")
    assert pod_identity({"POD_NAME": " ", "POD_NAMESPACE": ""}, namespace_file=str(account),
                        hostname=lambda: "host-1") == PodIdentity("host-1", "team-a")


def test_pod_identity_outside_a_pod_is_the_host_name_in_default(tmp_path):
    assert pod_identity({}, namespace_file=str(tmp_path / "absent"), hostname=lambda: "laptop") == PodIdentity(
        "laptop", "default")
    assert pod_identity({}, namespace_file=str(tmp_path / "absent")).name == socket.gethostname()


@pytest.mark.parametrize("cls", [CronSettings, WebhookSettings], ids=["cron", "webhook"])
def test_both_services_take_identity_and_lease_namespace_from_the_pod(cls):
    settings = cls.from_env({"POD_NAME": "burstflow-x-7d9c-x2", "POD_NAMESPACE": "burstflow-system"})
    assert (settings.identity, settings.lease_namespace) == ("burstflow-x-7d9c-x2", "burstflow-system")
    prefix = cls.env_prefix()
    explicit = cls.from_env({"POD_NAME": "pod", "POD_NAMESPACE": "ns", f"{prefix}IDENTITY": "replica-a",
                             f"{prefix}LEASE_NAMESPACE": "leases"})
    assert (explicit.identity, explicit.lease_namespace) == ("replica-a", "leases")
    flagged = load(cls, {"POD_NAME": "pod"}, args=parse(cls, ["--identity", "replica-b"]),
                   pod=PodIdentity("ignored", "team-a"))
    assert (flagged.identity, flagged.lease_namespace) == ("replica-b", "team-a")


def test_the_cron_lease_namespace_defaults_to_the_pods_namespace_not_default():
    settings = load(CronSettings, {}, pod=PodIdentity("cron-0", "team-a"))
    assert (settings.identity, settings.lease_namespace) == ("cron-0", "team-a")


def test_cron_reads_one_identity_convention_only():
    settings = CronSettings.from_env({"BURSTFLOW_POD_NAME": "old", "BURSTFLOW_POD_NAMESPACE": "old-ns"})
    assert (settings.identity, settings.lease_namespace) == (HERE.name, HERE.namespace)


# --- the loader -------------------------------------------------------------------------------------------------

def test_every_kind_converts_from_the_environment():
    settings = load(Example, {
        "BURSTFLOW_EXAMPLE_ENABLED": "off", "BURSTFLOW_EXAMPLE_COUNT": " 7 ", "BURSTFLOW_EXAMPLE_RATIO": "0.25",
        "BURSTFLOW_EXAMPLE_NAME": "y", "BURSTFLOW_EXAMPLE_PATH": "/k", "BURSTFLOW_EXAMPLE_TAGS": "a, b,,c",
        "BURSTFLOW_TIMEOUT": "4", "BURSTFLOW_EXAMPLE_MODE": "SLOW", "BURSTFLOW_EXAMPLE_TOKEN": "s3cret",
        "POD_NAME": "pod-1", "UNRELATED": "x"})
    assert settings == Example(enabled=False, count=7, ratio=0.25, name="y", path="/k", tags=("a", "b", "c"),
                               timeout_seconds=4.0, mode="slow", token="s3cret", holder="pod-1")


def test_flag_over_variable_over_alias_over_default():
    environ = {"BURSTFLOW_EXAMPLE_COUNT": "7", "BURSTFLOW_EXAMPLE_TIMEOUT_SECONDS": "2", "BURSTFLOW_TIMEOUT": "4",
               "BURSTFLOW_EXAMPLE_ENABLED": "false", "BURSTFLOW_EXAMPLE_TAGS": "a,b", "POD_NAME": "p"}
    args = parse(Example, ["--count", "9", "--enabled", "--tags", "x", "--tags", "y,z"])
    settings = load(Example, environ, args=args)
    assert (settings.count, settings.enabled, settings.tags) == (9, True, ("x", "y,z"))
    assert settings.timeout_seconds == 2.0  # the service's own variable wins over the older alias
    assert load(Example, {"BURSTFLOW_TIMEOUT": "4", "POD_NAME": "p"}).timeout_seconds == 4.0
    assert load(Example, {"POD_NAME": "p"}, args=parse(Example, [])) == Example(holder="p")
    assert load(Example, {"BURSTFLOW_EXAMPLE_ENABLED": "true", "POD_NAME": "p"},
                args=parse(Example, ["--no-enabled"])).enabled is False


def test_blank_variables_keep_the_default():
    assert load(Example, {"BURSTFLOW_EXAMPLE_COUNT": "", "BURSTFLOW_EXAMPLE_PATH": " ", "POD_NAME": "p"}) == \
        Example(holder="p")


@pytest.mark.parametrize("environ, argv, message", [
    ({"BURSTFLOW_EXAMPLE_COUNT": "many"}, [],
     "--count/BURSTFLOW_EXAMPLE_COUNT: expected a whole number, not 'many'"),
    ({}, ["--count", "many"], "--count/BURSTFLOW_EXAMPLE_COUNT: expected a whole number, not 'many'"),
    ({"BURSTFLOW_EXAMPLE_ENABLED": "maybe"}, [],
     "--enabled/BURSTFLOW_EXAMPLE_ENABLED: expected true or false, not 'maybe'"),
    ({"BURSTFLOW_EXAMPLE_RATIO": "half"}, [], "--ratio/BURSTFLOW_EXAMPLE_RATIO: expected a number, not 'half'"),
    ({"BURSTFLOW_TIMEOUT": "soon"}, [],
     "BURSTFLOW_TIMEOUT (--timeout/BURSTFLOW_EXAMPLE_TIMEOUT_SECONDS): expected a number, not 'soon'"),
    ({}, ["--mode", "medium"], "--mode/BURSTFLOW_EXAMPLE_MODE: 'medium' is not one of fast, slow"),
    ({"BURSTFLOW_EXAMPLE_COUNT": "-1"}, [], "--count/BURSTFLOW_EXAMPLE_COUNT: must be >= 0, not -1"),
], ids=["int from variable", "int from flag", "bool", "float", "alias", "choice", "validation"])
def test_errors_name_the_flag_and_the_variable(environ, argv, message):
    with pytest.raises(SettingsError) as info:
        load(Example, {**environ, "POD_NAME": "p"}, args=parse(Example, argv))
    assert str(info.value) == message


def test_flags_are_derived_from_the_fields():
    parser = argparse.ArgumentParser()
    add_arguments(parser, Example)
    flags = {option for action in parser._actions for option in action.option_strings} - {"-h", "--help"}
    assert flags == {"--enabled", "--no-enabled", "--count", "--ratio", "--name", "--path", "--tags", "--timeout",
                     "--mode", "--holder"}  # a secret has no flag: it would show in the process list
    assert flag_name(next(f for f in dataclasses.fields(Example) if f.name == "token")) == ""


def test_secrets_are_redacted_and_kept_out_of_repr():
    shown = Example(token="hunter2").redacted()
    assert shown["token"] == "<redacted>" and "hunter2" not in json.dumps(shown)
    assert "hunter2" not in repr(Example(token="hunter2"))
    assert Example().redacted()["token"] == "" and Example(tags=("a",)).redacted()["tags"] == ["a"]


# --- the cron service -------------------------------------------------------------------------------------------

def test_cron_settings_read_their_variables_and_the_shared_metrics_port():
    settings = CronSettings.from_env({
        "POD_NAME": "cron-7d9f-abcde", "POD_NAMESPACE": "burstflow-system",
        "BURSTFLOW_METRICS_PORT": "9191", "BURSTFLOW_CRON_WORKERS": "8",
        "BURSTFLOW_CRON_LEADER_ELECTION": "false", "BURSTFLOW_CRON_NAMESPACE": "argo",
    })
    assert (settings.identity, settings.lease_namespace, settings.metrics_port) == (
        "cron-7d9f-abcde", "burstflow-system", 9191)
    assert (settings.workers, settings.leader_election, settings.namespace) == (8, False, "argo")
    assert CronSettings.from_env({"BURSTFLOW_METRICS_PORT": "9191", "BURSTFLOW_CRON_METRICS_PORT": "9292"}
                                 ).metrics_port == 9292


@pytest.mark.parametrize("env_vars, message", [
    ({"BURSTFLOW_CRON_WORKERS": "many"}, "--workers/BURSTFLOW_CRON_WORKERS: expected a whole number, not 'many'"),
    ({"BURSTFLOW_CRON_WORKERS": "0"}, "--workers/BURSTFLOW_CRON_WORKERS: must be at least 1, not 0"),
    ({"BURSTFLOW_CRON_LEADER_ELECTION": "maybe"},
     "--leader-election/BURSTFLOW_CRON_LEADER_ELECTION: expected true or false, not 'maybe'"),
    ({"BURSTFLOW_CRON_RENEW_DEADLINE_SECONDS": "20"},
     "--renew-deadline/BURSTFLOW_CRON_RENEW_DEADLINE_SECONDS 20: must be less than "
     "--lease-duration/BURSTFLOW_CRON_LEASE_DURATION_SECONDS 15"),
    ({"BURSTFLOW_CRON_LOG_FORMAT": "xml"}, "--log-format/BURSTFLOW_CRON_LOG_FORMAT: 'xml' is not one of json, text"),
    ({"BURSTFLOW_CRON_CONFLICT_RETRIES": "0"},
     "--conflict-retries/BURSTFLOW_CRON_CONFLICT_RETRIES: must be at least 1, not 0"),
    ({"BURSTFLOW_CRON_PREPARE_AHEAD_SECONDS": "-1"},
     "--prepare-ahead/BURSTFLOW_CRON_PREPARE_AHEAD_SECONDS: must be >= 0, not -1.0"),
], ids=["not an int", "no workers", "not a bool", "renew deadline above lease", "unknown log format",
        "no conflict retries", "negative preparation lead"])
def test_cron_settings_errors_name_the_flag_and_the_variable(env_vars, message):
    with pytest.raises(SettingsError) as info:
        CronSettings.from_env(env_vars)
    assert str(info.value).startswith(message)


def test_cron_run_takes_a_flag_for_every_setting_and_flags_win():
    args = build_parser().parse_args([
        "cron", "run", "--no-leader-election", "--workers", "3", "--lease-name", "bf", "--lease-duration", "20",
        "--renew-deadline", "12", "--retry-period", "3", "--conflict-retries", "2", "--error-backoff", "0.5",
        "--prepare-ahead", "0", "--identity", "replica-a", "--lease-namespace", "leases", "--namespace", "argo", "--metrics-host",
        "127.0.0.1", "--metrics-port", "0", "--log-format", "text", "--log-level", "DEBUG", "--kubeconfig", "/k"])
    settings = CronSettings.from_args(args, {"BURSTFLOW_CRON_WORKERS": "8", "BURSTFLOW_CRON_LEADER_ELECTION": "true"})
    assert settings == CronSettings(
        namespace="argo", kubeconfig="/k", metrics_host="127.0.0.1", metrics_port=0, leader_election=False,
        lease_name="bf", lease_namespace="leases", identity="replica-a", lease_duration_seconds=20,
        renew_deadline_seconds=12, retry_period_seconds=3, workers=3, conflict_retries=2,
        error_backoff_seconds=0.5, prepare_ahead_seconds=0.0, log_format="text", log_level="debug")


@pytest.mark.parametrize("argv, env, message", [
    (["cron", "run", "--no-leader-election"], {"BURSTFLOW_CRON_WORKERS": "0"},
     "burstflow cron run: --workers/BURSTFLOW_CRON_WORKERS: must be at least 1, not 0"),
    (["cron", "run", "--metrics-port", "http"], {},
     "burstflow cron run: --metrics-port/BURSTFLOW_CRON_METRICS_PORT: expected a whole number, not 'http'"),
    (["webhook", "serve", "--port", "99999"], {},
     "burstflow webhook serve: --port/BURSTFLOW_WEBHOOK_PORT: 99999 is not a TCP port (0-65535)"),
    (["webhook", "serve", "--lease-duration", "0.6", "--renew-deadline", "0.4", "--retry-period", "0.05"], {},
     "burstflow webhook serve: --lease-duration/BURSTFLOW_WEBHOOK_LEASE_DURATION_SECONDS 0.6: must be a whole "
     "number of seconds >= 1 (a Lease stores leaseDurationSeconds in whole seconds)"),
    (["webhook", "serve"], {"BURSTFLOW_WEBHOOK_LOG_FORMAT": "xml"},
     "burstflow webhook serve: --log-format/BURSTFLOW_WEBHOOK_LOG_FORMAT: 'xml' is not one of json, text"),
], ids=["cron bad variable", "cron bad flag", "webhook bad flag value", "webhook sub-second lease flags",
        "webhook bad variable"])
def test_the_commands_refuse_bad_settings_with_exit_code_2_naming_flag_and_variable(argv, env, message,
                                                                                    monkeypatch, capsys):
    """(The webhook rows moved here from tests/test_webhook_server.py.)"""
    from burstflow.cli import main

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == message


@pytest.mark.parametrize("cls", [CronSettings, WebhookSettings], ids=["cron", "webhook"])
def test_every_setting_has_a_reason(cls):
    assert all(f.metadata.get("reason") for f in dataclasses.fields(cls))


# --- the webhook service (moved from tests/test_webhook_server.py) ----------------------------------------------

def test_webhook_settings_from_env_parse_every_kind():
    settings = WebhookSettings.from_env({
        "BURSTFLOW_WEBHOOK_PORT": "8443", "BURSTFLOW_WEBHOOK_POLICY_PATHS": "policies/, extra.yaml",
        "BURSTFLOW_WEBHOOK_POLICIES_FROM_CLUSTER": "false", "BURSTFLOW_WEBHOOK_DRAIN_TIMEOUT_SECONDS": "2.5",
        "BURSTFLOW_WEBHOOK_LOG_FORMAT": "json", "BURSTFLOW_WEBHOOK_KEY_FILE": "", "UNRELATED": "x",
        "BURSTFLOW_WEBHOOK_DRAIN_PERIOD_SECONDS": "1.5", "BURSTFLOW_WEBHOOK_FAIL_CLOSED": "true",
        "BURSTFLOW_WEBHOOK_LEASE_DURATION_SECONDS": "30", "POD_NAME": "webhook-0", "POD_NAMESPACE": "bf"})
    assert settings == WebhookSettings(port=8443, policy_paths=("policies/", "extra.yaml"),
                                       policies_from_cluster=False, drain_timeout_seconds=2.5, log_format="json",
                                       drain_period_seconds=1.5, fail_closed=True, lease_duration_seconds=30,
                                       identity="webhook-0", lease_namespace="bf")
    assert (WebhookSettings().drain_period_seconds, WebhookSettings().fail_closed) == (10.0, False)


@pytest.mark.parametrize("environ, message", [
    ({"BURSTFLOW_WEBHOOK_PORT": "https"}, "--port/BURSTFLOW_WEBHOOK_PORT: expected a whole number, not 'https'"),
    ({"BURSTFLOW_WEBHOOK_PORT": "70000"}, "--port/BURSTFLOW_WEBHOOK_PORT: 70000 is not a TCP port (0-65535)"),
    ({"BURSTFLOW_WEBHOOK_POLICIES_FROM_CLUSTER": "maybe"},
     "--cluster-policies/BURSTFLOW_WEBHOOK_POLICIES_FROM_CLUSTER: expected true or false, not 'maybe'"),
    ({"BURSTFLOW_WEBHOOK_LOG_FORMAT": "xml"}, "--log-format/BURSTFLOW_WEBHOOK_LOG_FORMAT: 'xml' is not one of "
     "json, text"),
    ({"BURSTFLOW_WEBHOOK_MAX_BODY_BYTES": "10"},
     "--max-body-bytes/BURSTFLOW_WEBHOOK_MAX_BODY_BYTES: 10 is too small to hold any AdmissionReview"),
    ({"BURSTFLOW_WEBHOOK_LEASE_DURATION_SECONDS": "0.6"}, "--lease-duration/BURSTFLOW_WEBHOOK_LEASE_DURATION_SECONDS "
     "0.6: must be a whole number of seconds >= 1 (a Lease stores leaseDurationSeconds in whole seconds)"),
    ({"BURSTFLOW_WEBHOOK_RENEW_DEADLINE_SECONDS": "15"}, "--renew-deadline/BURSTFLOW_WEBHOOK_RENEW_DEADLINE_SECONDS "
     "15: must be less than --lease-duration/BURSTFLOW_WEBHOOK_LEASE_DURATION_SECONDS 15 (the rule is "
     "--lease-duration/BURSTFLOW_WEBHOOK_LEASE_DURATION_SECONDS > --renew-deadline/"
     "BURSTFLOW_WEBHOOK_RENEW_DEADLINE_SECONDS > --retry-period/BURSTFLOW_WEBHOOK_RETRY_PERIOD_SECONDS: a leader "
     "that cannot renew stops before another may take over)"),
    ({"BURSTFLOW_WEBHOOK_DRAIN_PERIOD_SECONDS": "-1"},
     "--drain-period/BURSTFLOW_WEBHOOK_DRAIN_PERIOD_SECONDS: must be >= 0, got -1.0"),
], ids=["port not a number", "port out of range", "bad boolean", "bad log format", "tiny body limit",
        "sub-second lease", "renew deadline not below the lease", "negative drain period"])
def test_webhook_settings_reject_bad_values_naming_the_flag_and_the_variable(environ, message):
    with pytest.raises(ValueError) as info:
        WebhookSettings.from_env(environ)
    assert str(info.value) == message


def test_webhook_flags_override_environment_and_absent_flags_do_not():
    parser = argparse.ArgumentParser()
    add_settings_arguments(parser)
    args = parser.parse_args(["--port", "7443", "--policies", "a.yaml", "--policies", "dir/",
                              "--no-cluster-policies"])
    settings = settings_from_args(args, {"BURSTFLOW_WEBHOOK_PORT": "8443", "BURSTFLOW_WEBHOOK_METRICS_PORT": "9191"})
    assert (settings.port, settings.metrics_port) == (7443, 9191)
    assert settings.policy_paths == ("a.yaml", "dir/") and settings.policies_from_cluster is False
    assert settings_from_args(parser.parse_args([]), {}) == WebhookSettings(identity=HERE.name,
                                                                            lease_namespace=HERE.namespace)
    args = parser.parse_args(["--fail-closed", "--drain-period", "3", "--lease-duration", "20", "--renew-deadline",
                              "12", "--retry-period", "3"])
    settings = settings_from_args(args, {"BURSTFLOW_WEBHOOK_DRAIN_PERIOD_SECONDS": "5"})
    assert (settings.fail_closed, settings.drain_period_seconds) == (True, 3.0)
    assert (settings.lease_duration_seconds, settings.renew_deadline_seconds, settings.retry_period_seconds) == (
        20, 12, 3)
    assert settings_from_args(parser.parse_args(["--fail-open"]),
                              {"BURSTFLOW_WEBHOOK_FAIL_CLOSED": "true"}).fail_closed is False


def test_webhook_serve_keeps_every_flag_it_had():
    parser = argparse.ArgumentParser()
    add_settings_arguments(parser)
    flags = {option for action in parser._actions for option in action.option_strings}
    assert flags >= {
        "--cert-file", "--key-file", "--bind-address", "--port", "--metrics-address", "--metrics-port", "--policies",
        "--cluster-policies", "--no-cluster-policies", "--kubeconfig", "--identity", "--lease-namespace",
        "--pool-decision-timeout", "--pool-reservation-timeout", "--pool-reconcile-interval", "--log-format",
        "--log-level", "--max-body-bytes", "--drain-period", "--drain-timeout", "--fail-closed", "--fail-open",
        "--lease-duration", "--renew-deadline", "--retry-period", "--tls-reload-interval"}
    assert "--key-password" not in flags


def test_the_webhook_deployment_grace_period_covers_the_drain_period_and_the_requests_in_flight():
    [deployment] = [d for d in yaml.safe_load_all((ROOT / "manifests" / "base" / "webhook.yaml").read_text())
                    if d and d["kind"] == "Deployment"]
    spec = deployment["spec"]["template"]["spec"]
    env = {e["name"]: e["value"] for e in spec["containers"][0]["env"] if "value" in e}
    settings = WebhookSettings.from_env(env)
    # A few seconds beyond both for leaving the Lease election and closing the watches after the last request.
    assert spec["terminationGracePeriodSeconds"] >= settings.drain_period_seconds + settings.drain_timeout_seconds + 3


@pytest.mark.parametrize("overrides, message", [
    (dict(pool_decision_timeout_seconds=30), "--pool-decision-timeout/BURSTFLOW_WEBHOOK_POOL_DECISION_TIMEOUT_SECONDS: "
     "30 must be below 30 s, the longest an API server waits for a webhook"),
    (dict(pool_reservation_timeout_seconds=1), "--pool-reservation-timeout/"
     "BURSTFLOW_WEBHOOK_POOL_RESERVATION_TIMEOUT_SECONDS: 1 must exceed --pool-decision-timeout/"
     "BURSTFLOW_WEBHOOK_POOL_DECISION_TIMEOUT_SECONDS (2.0), or a slot could be freed before its pod was even "
     "admitted"),
    (dict(pool_reconcile_interval_seconds=0), "--pool-reconcile-interval/"
     "BURSTFLOW_WEBHOOK_POOL_RECONCILE_INTERVAL_SECONDS: must be > 0, got 0"),
], ids=["decision timeout beyond any webhook timeout", "reservation shorter than a decision", "zero interval"])
def test_webhook_pool_settings_are_checked(overrides, message):
    """(Moved from tests/test_webhook_wiring.py.)"""
    with pytest.raises(SettingsError) as info:
        WebhookSettings(**overrides)
    assert str(info.value) == message


def test_webhook_secrets_are_redacted():
    shown = WebhookSettings(key_password="hunter2").redacted()
    assert shown["key_password"] == "<redacted>" and "hunter2" not in json.dumps(shown)
    assert "hunter2" not in repr(WebhookSettings(key_password="hunter2"))
    assert WebhookSettings().redacted()["key_password"] == ""
