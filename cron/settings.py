"""The cron service's settings: one frozen dataclass built from environment variables (and CLI overrides)."""
from __future__ import annotations

import dataclasses
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

from burstflow.leader import check_lease_durations

PREFIX = "BURSTFLOW_CRON_"


class SettingsError(ValueError):
    """An environment variable with a value the service cannot use; the message names the variable."""


# Variables shared by every Burstflow service (manifests/base/*.yaml set them from the downward API).
SHARED_NAMES = {
    "BURSTFLOW_METRICS_PORT": "metrics_port",
    "BURSTFLOW_POD_NAME": "identity",
    "BURSTFLOW_POD_NAMESPACE": "lease_namespace",
    "POD_NAME": "identity",
    "POD_NAMESPACE": "lease_namespace",
}


def _default_identity() -> str:
    # In a Deployment the pod name is unique per replica, and the hostname is the pod name.
    return socket.gethostname()


@dataclass(frozen=True)
class CronSettings:
    """Everything `burstflow cron run` can be told. Every field has a default and a reason."""

    # Empty = watch CronWorkflows in every namespace (needs a ClusterRole); a name = only that namespace (a Role).
    namespace: str = ""
    # None = in-cluster service account when running in a pod, else ~/.kube/config.
    kubeconfig: str | None = None
    # Argo's controller serves metrics on 9090 and teams scrape that port with a PodMonitor.
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 9090
    # Leader election: one replica schedules, the others wait. Durations are client-go's defaults
    # (kube-controller-manager uses the same): a crashed leader is replaced within lease_duration + retry_period.
    leader_election: bool = True
    lease_name: str = "burstflow-cron"
    lease_namespace: str = "default"
    identity: str = field(default_factory=_default_identity)
    lease_duration_seconds: float = 15.0
    renew_deadline_seconds: float = 10.0
    retry_period_seconds: float = 2.0
    # Decisions run concurrently across CronWorkflows (never two for one CronWorkflow): enough to create 1,000
    # Workflows due in the same minute within a second against a responsive API server.
    workers: int = 32
    # A status write that keeps answering 409 is re-read and re-decided at most this many times in one decision;
    # after that the key goes back into the queue (with the fresh object from the watch).
    conflict_retries: int = 5
    # Back-off before retrying a CronWorkflow whose decision failed on an API error (5xx, timeouts).
    error_backoff_seconds: float = 5.0
    # "json" for log shippers, "text" for humans at a terminal.
    log_format: str = "json"
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides) -> "CronSettings":
        """Read `BURSTFLOW_CRON_<FIELD>` variables (upper-case field names); `overrides` (non-None) win.

        The shared variables `BURSTFLOW_METRICS_PORT`, `BURSTFLOW_POD_NAME` (identity) and `BURSTFLOW_POD_NAMESPACE`
        (lease namespace) apply unless the `BURSTFLOW_CRON_` variable is set. Raises `SettingsError` naming the
        variable for a value of the wrong type or out of range.
        """
        values: dict[str, object] = {}
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        for name, field_name in SHARED_NAMES.items():
            if env.get(name, "").strip() and field_name not in values:
                values[field_name] = _convert(name, env[name].strip(), types[field_name])
        for f in dataclasses.fields(cls):
            name = PREFIX + f.name.upper()
            if name not in env:
                continue
            raw = env[name].strip()
            values[f.name] = _convert(name, raw, f.type)
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise `SettingsError` for inconsistent values (client-go's rules for the lease durations)."""
        if not 0 < self.metrics_port < 65536 and self.metrics_port != 0:
            raise SettingsError(f"{PREFIX}METRICS_PORT: {self.metrics_port} is not a TCP port")
        if self.workers < 1:
            raise SettingsError(f"{PREFIX}WORKERS: must be at least 1, not {self.workers}")
        if self.conflict_retries < 1:
            raise SettingsError(f"{PREFIX}CONFLICT_RETRIES: must be at least 1, not {self.conflict_retries}")
        try:  # whole seconds >= 1 and LEASE_DURATION > RENEW_DEADLINE > RETRY_PERIOD (burstflow.leader)
            check_lease_durations(
                lease_duration=(f"{PREFIX}LEASE_DURATION_SECONDS", self.lease_duration_seconds),
                renew_deadline=(f"{PREFIX}RENEW_DEADLINE_SECONDS", self.renew_deadline_seconds),
                retry_period=(f"{PREFIX}RETRY_PERIOD_SECONDS", self.retry_period_seconds))
        except ValueError as error:
            raise SettingsError(str(error)) from None
        if self.log_format not in ("json", "text"):
            raise SettingsError(f"{PREFIX}LOG_FORMAT: must be 'json' or 'text', not {self.log_format!r}")

    def redacted(self) -> dict[str, object]:
        """The settings as logged at start-up (nothing here is secret; the kubeconfig is a path)."""
        return dataclasses.asdict(self)


def _convert(name: str, raw: str, kind: str):
    kind = kind.replace(" ", "")
    try:
        if kind == "bool":
            lowered = raw.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"expected true or false, not {raw!r}")
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError as error:
        raise SettingsError(f"{name}: {error}") from None
    if kind == "str|None":
        return raw or None
    return raw
