"""The webhook service's settings: one frozen dataclass, each field a `--flag` and a `BURSTFLOW_WEBHOOK_<FIELD>`
variable (flag over variable over default, loaded by burstflow.settings)."""
from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from burstflow.leader import LeaseSettings
from burstflow.logs import LogSettings
from burstflow.settings import SettingsError, setting

ENV_PREFIX = "BURSTFLOW_WEBHOOK_"

MIB = 1024 * 1024
# The API server refuses request bodies over 3 MiB, so no stored object is larger; an AdmissionReview carries at
# most two of them (`object` and `oldObject` on UPDATE) plus a small envelope (userInfo, options): 2 x 3 MiB + 1 MiB.
DEFAULT_MAX_BODY_BYTES = 7 * MIB
# admissionregistration.k8s.io/v1 caps a webhook's timeoutSeconds at 30.
MAX_WEBHOOK_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class WebhookSettings(LeaseSettings, LogSettings):
    """Everything `burstflow webhook serve` can be told; each field says why its default is what it is.

    Built by `from_env(mapping)` or `from_args(args, mapping)` (burstflow.settings). Invalid values raise
    `SettingsError` (a ValueError) naming the flag and the variable. The pool reconciler's Lease settings
    (identity, lease_namespace, the durations) come from `LeaseSettings`, as the cron service's do.
    """

    SERVICE: ClassVar[str] = "webhook"

    cert_file: str = setting("/etc/burstflow/tls/tls.crt", reason=(
        "where a kubernetes.io/tls Secret (cert-manager or `burstflow certs`) is mounted"),
        help="serving certificate (PEM chain)")
    key_file: str = setting("/etc/burstflow/tls/tls.key", reason=(
        "the key of that same Secret"), help="private key of the serving certificate (PEM)")
    key_password: str = setting("", secret=True, reason=(
        "only for an encrypted private key; Secrets usually hold a plain one (a variable only: a flag would show "
        "in the process list)"))
    bind_address: str = setting("0.0.0.0", reason=(
        "the API server reaches the pod IP through the Service, so listen on every interface"),
        help="address for the HTTPS listener")
    port: int = setting(9443, reason=(
        "unprivileged (the container runs as non-root) and the usual admission-webhook port"),
        help="HTTPS port for /mutate, /healthz, /readyz")
    metrics_address: str = setting("0.0.0.0", reason=(
        "Prometheus scrapes the pod IP"), help="address for the plain-HTTP metrics listener")
    metrics_port: int = setting(9090, reason=(
        "plain HTTP, separate from the webhook port so scraping needs no client certificate trust"),
        help="plain-HTTP port for /metrics")
    policy_paths: tuple[str, ...] = setting((), flag="--policies", metavar="PATH", reason=(
        "files or directories of policy YAML (GitOps, or tests); none by default: policies come from the cluster"),
        help="policy file or directory")
    policies_from_cluster: bool | None = setting(None, flag="--cluster-policies", off_flag="--no-cluster-policies",
                                                 reason=(
        "None (auto) watches the cluster when it is reachable by configuration: a kubeconfig is given or the process "
        "runs in a pod; otherwise only policy files are used, so a laptop run needs no flag"),
        help="watch policies in the cluster (default when --kubeconfig is given or in a pod); "
             "--no-cluster-policies uses only --policies files and never contacts a cluster")
    kubeconfig: str = setting("", reason=(
        "empty means the in-cluster service account"), help="kubeconfig file (default: in-cluster service account)")
    pool_decision_timeout_seconds: float = setting(2.0, reason=(
        "a counted pool placement must answer well inside the webhook's timeoutSeconds (10 s in the manifests), "
        "leaving room for TLS, the profiles and the API server's round trip"),
        help="seconds a pool placement may wait for the API before whenUnavailable answers")
    pool_reservation_timeout_seconds: float = setting(60.0, reason=(
        "a reserved slot whose pod never appeared is freed after this; the API server stores an admitted pod "
        "within seconds, so a minute only frees slots of pods that were really lost"),
        help="seconds before a reserved slot whose pod never appeared is freed")
    pool_reconcile_interval_seconds: float = setting(1.0, reason=(
        "how often the leader folds pod changes into the pools' status; one write per policy per second at most"),
        help="seconds between the pool reconciler's passes")
    max_body_bytes: int = setting(DEFAULT_MAX_BODY_BYTES, reason=(
        "the API server caps objects at 3 MiB and a review carries at most two, plus 1 MiB of envelope"),
        help="largest request body accepted (default 7 MiB)")
    drain_period_seconds: float = setting(10.0, reason=(
        "after SIGTERM the pod leaves the Service's endpoints, but every API server only stops calling it once that "
        "removal has reached it (endpoints controller, then each API server's informer: usually 1-5 s, slower under "
        "load); until then new calls still arrive here, so keep accepting and answering them for 10 s"),
        help="seconds to keep accepting and answering requests after SIGTERM while /readyz fails, so that endpoint "
             "removal reaches every API server first")
    drain_timeout_seconds: float = setting(15.0, reason=(
        "after the drain period, requests in flight may finish for this long: longer than any call an API server "
        "still waits for (timeoutSeconds is 5 in the manifests, 10 by default); drain period + this + a few seconds "
        "to release the Lease stay inside the pod's 30 s terminationGracePeriodSeconds"),
        help="seconds to let in-flight requests finish after the drain period")
    fail_closed: bool = setting(False, off_flag="--fail-open", reason=(
        "an unexpected error of ours admits the pod unmutated (with a warning, a log line and a metric) so that one "
        "bug cannot block every workflow pod; true denies it instead, for teams that prefer no unmutated pods"),
        help="deny a pod when the webhook fails unexpectedly; --fail-open (the default) admits it unmutated, with "
             "a warning")
    tls_reload_interval_seconds: float = setting(10.0, reason=(
        "kubelet refreshes mounted Secrets within about a minute; two stat() calls every 10 s cost nothing"),
        help="seconds between checks of the certificate files")

    def validate(self) -> None:
        """Raise `SettingsError` naming the flag and the variable of a value the webhook cannot use."""
        super().validate()
        for name in ("port", "metrics_port"):
            value = getattr(self, name)
            if not 0 <= value <= 65535:
                raise SettingsError(f"{self.source(name)}: {value} is not a TCP port (0-65535)")
        if self.max_body_bytes < 1024:
            raise SettingsError(f"{self.source('max_body_bytes')}: {self.max_body_bytes} is too small to hold any "
                                "AdmissionReview")
        if self.drain_period_seconds < 0:
            raise SettingsError(f"{self.source('drain_period_seconds')}: must be >= 0, got "
                                f"{self.drain_period_seconds}")
        for name in ("drain_timeout_seconds", "tls_reload_interval_seconds", "pool_decision_timeout_seconds",
                     "pool_reservation_timeout_seconds", "pool_reconcile_interval_seconds"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{self.source(name)}: must be > 0, got {getattr(self, name)}")
        if self.pool_decision_timeout_seconds >= MAX_WEBHOOK_TIMEOUT_SECONDS:
            raise SettingsError(
                f"{self.source('pool_decision_timeout_seconds')}: {self.pool_decision_timeout_seconds} must be below "
                f"{MAX_WEBHOOK_TIMEOUT_SECONDS:.0f} s, the longest an API server waits for a webhook")
        if self.pool_reservation_timeout_seconds <= self.pool_decision_timeout_seconds:
            raise SettingsError(
                f"{self.source('pool_reservation_timeout_seconds')}: {self.pool_reservation_timeout_seconds} must "
                f"exceed {self.source('pool_decision_timeout_seconds')} ({self.pool_decision_timeout_seconds}), or "
                "a slot could be freed before its pod was even admitted")
        if not self.cert_file or not self.key_file:
            raise SettingsError(f"{self.source('cert_file')} and {self.source('key_file')} must both be set")


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """A flag for every setting but the key password; each defaults to None, so only flags given override."""
    WebhookSettings.add_arguments(parser)


def settings_from_args(args: argparse.Namespace, environ: Mapping[str, str]) -> WebhookSettings:
    """The flags that were given, then the environment, then the defaults."""
    return WebhookSettings.from_args(args, environ)
