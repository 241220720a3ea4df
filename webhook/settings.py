"""The webhook service's settings: one frozen dataclass built from environment variables, then command-line flags."""
from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from burstflow.leader import check_lease_durations

ENV_PREFIX = "BURSTFLOW_WEBHOOK_"
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")

MIB = 1024 * 1024
# The API server refuses request bodies over 3 MiB, so no stored object is larger; an AdmissionReview carries at
# most two of them (`object` and `oldObject` on UPDATE) plus a small envelope (userInfo, options): 2 x 3 MiB + 1 MiB.
DEFAULT_MAX_BODY_BYTES = 7 * MIB
# admissionregistration.k8s.io/v1 caps a webhook's timeoutSeconds at 30.
MAX_WEBHOOK_TIMEOUT_SECONDS = 30.0
# Set by the Deployment through the downward API (fieldRef metadata.name / metadata.namespace).
POD_NAME_ENV = "POD_NAME"
POD_NAMESPACE_ENV = "POD_NAMESPACE"
# How a start-up error names each Lease duration (the variables are BURSTFLOW_WEBHOOK_<FIELD>).
LEASE_FLAGS = ("--lease-duration", "--renew-deadline", "--retry-period")


def _reason(text: str, *, secret: bool = False) -> dict[str, Any]:
    return {"reason": text, "secret": secret}


@dataclass(frozen=True)
class WebhookSettings:
    """Everything `burstflow webhook serve` can be told; each field's metadata carries why its default is what it is.

    Built by `from_env(mapping)` (variables `BURSTFLOW_WEBHOOK_<FIELD>`), then `with_overrides(...)` for flags.
    Invalid values raise ValueError naming the variable or field.
    """

    cert_file: str = field(default="/etc/burstflow/tls/tls.crt", metadata=_reason(
        "where a kubernetes.io/tls Secret (cert-manager or `burstflow certs`) is mounted"))
    key_file: str = field(default="/etc/burstflow/tls/tls.key", metadata=_reason(
        "the key of that same Secret"))
    key_password: str = field(default="", repr=False, metadata=_reason(
        "only for an encrypted private key; Secrets usually hold a plain one", secret=True))
    bind_address: str = field(default="0.0.0.0", metadata=_reason(
        "the API server reaches the pod IP through the Service, so listen on every interface"))
    port: int = field(default=9443, metadata=_reason(
        "unprivileged (the container runs as non-root) and the usual admission-webhook port"))
    metrics_address: str = field(default="0.0.0.0", metadata=_reason(
        "Prometheus scrapes the pod IP"))
    metrics_port: int = field(default=9090, metadata=_reason(
        "plain HTTP, separate from the webhook port so scraping needs no client certificate trust"))
    policy_paths: tuple[str, ...] = field(default=(), metadata=_reason(
        "files or directories of policy YAML (GitOps, or tests); none by default: policies come from the cluster"))
    policies_from_cluster: bool | None = field(default=None, metadata=_reason(
        "None (auto) watches the cluster when it is reachable by configuration: a kubeconfig is given or the process "
        "runs in a pod; otherwise only policy files are used, so a laptop run needs no flag"))
    kubeconfig: str = field(default="", metadata=_reason(
        "empty means the in-cluster service account"))
    identity: str = field(default="", metadata=_reason(
        "this replica's name in the pool reconciler's Lease; empty takes POD_NAME (downward API), else the host "
        "name, which in a pod is the pod name"))
    lease_namespace: str = field(default="", metadata=_reason(
        "where the pool reconciler's Lease lives; empty takes POD_NAMESPACE, else the service account's namespace, "
        "else default"))
    pool_decision_timeout_seconds: float = field(default=2.0, metadata=_reason(
        "a counted pool placement must answer well inside the webhook's timeoutSeconds (10 s in the manifests), "
        "leaving room for TLS, the profiles and the API server's round trip"))
    pool_reservation_timeout_seconds: float = field(default=60.0, metadata=_reason(
        "a reserved slot whose pod never appeared is freed after this; the API server stores an admitted pod "
        "within seconds, so a minute only frees slots of pods that were really lost"))
    pool_reconcile_interval_seconds: float = field(default=1.0, metadata=_reason(
        "how often the leader folds pod changes into the pools' status; one write per policy per second at most"))
    log_format: str = field(default="text", metadata=_reason(
        "text for people; json for log pipelines"))
    log_level: str = field(default="info", metadata=_reason(
        "info logs start-up, reloads and malformed requests; debug adds one line per admission"))
    max_body_bytes: int = field(default=DEFAULT_MAX_BODY_BYTES, metadata=_reason(
        "the API server caps objects at 3 MiB and a review carries at most two, plus 1 MiB of envelope"))
    drain_period_seconds: float = field(default=10.0, metadata=_reason(
        "after SIGTERM the pod leaves the Service's endpoints, but every API server only stops calling it once that "
        "removal has reached it (endpoints controller, then each API server's informer: usually 1-5 s, slower under "
        "load); until then new calls still arrive here, so keep accepting and answering them for 10 s"))
    drain_timeout_seconds: float = field(default=15.0, metadata=_reason(
        "after the drain period, requests in flight may finish for this long: longer than any call an API server "
        "still waits for (timeoutSeconds is 5 in the manifests, 10 by default); drain period + this + a few seconds "
        "to release the Lease stay inside the pod's 30 s terminationGracePeriodSeconds"))
    fail_closed: bool = field(default=False, metadata=_reason(
        "an unexpected error of ours admits the pod unmutated (with a warning, a log line and a metric) so that one "
        "bug cannot block every workflow pod; true denies it instead, for teams that prefer no unmutated pods"))
    lease_duration_seconds: float = field(default=15.0, metadata=_reason(
        "client-go's default: how long the other replicas wait for a silent pool reconciler before taking over; "
        "whole seconds, as the Lease stores it"))
    renew_deadline_seconds: float = field(default=10.0, metadata=_reason(
        "client-go's default: a reconciler that cannot renew for this long stops; below the lease duration so it "
        "stops before anyone else may start"))
    retry_period_seconds: float = field(default=2.0, metadata=_reason(
        "client-go's default: the pause between Lease attempts"))
    tls_reload_interval_seconds: float = field(default=10.0, metadata=_reason(
        "kubelet refreshes mounted Secrets within about a minute; two stat() calls every 10 s cost nothing"))

    def __post_init__(self) -> None:
        for name in ("port", "metrics_port"):
            value = getattr(self, name)
            if not 0 <= value <= 65535:
                raise ValueError(f"{name}: {value} is not a TCP port (0-65535)")
        if self.log_format not in LOG_FORMATS:
            raise ValueError(f"log_format: {self.log_format!r} is not one of {', '.join(LOG_FORMATS)}")
        if self.log_level not in LOG_LEVELS:
            raise ValueError(f"log_level: {self.log_level!r} is not one of {', '.join(LOG_LEVELS)}")
        if self.max_body_bytes < 1024:
            raise ValueError(f"max_body_bytes: {self.max_body_bytes} is too small to hold any AdmissionReview")
        if self.drain_period_seconds < 0:
            raise ValueError(f"drain_period_seconds: must be >= 0, got {self.drain_period_seconds}")
        check_lease_durations(lease_duration=(LEASE_FLAGS[0], self.lease_duration_seconds),
                              renew_deadline=(LEASE_FLAGS[1], self.renew_deadline_seconds),
                              retry_period=(LEASE_FLAGS[2], self.retry_period_seconds))
        for name in ("drain_timeout_seconds", "tls_reload_interval_seconds", "pool_decision_timeout_seconds",
                     "pool_reservation_timeout_seconds", "pool_reconcile_interval_seconds"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)}")
        if self.pool_decision_timeout_seconds >= MAX_WEBHOOK_TIMEOUT_SECONDS:
            raise ValueError(f"pool_decision_timeout_seconds: {self.pool_decision_timeout_seconds} must be below "
                             f"{MAX_WEBHOOK_TIMEOUT_SECONDS:.0f} s, the longest an API server waits for a webhook")
        if self.pool_reservation_timeout_seconds <= self.pool_decision_timeout_seconds:
            raise ValueError(f"pool_reservation_timeout_seconds: {self.pool_reservation_timeout_seconds} must exceed "
                             f"pool_decision_timeout_seconds ({self.pool_decision_timeout_seconds}), or a slot could "
                             "be freed before its pod was even admitted")
        if not self.cert_file or not self.key_file:
            raise ValueError("cert_file and key_file must both be set")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> WebhookSettings:
        """Settings from `BURSTFLOW_WEBHOOK_*` variables; unset or empty variables keep the default.

        `POLICY_PATHS` is a comma-separated list; booleans accept true/false/1/0/yes/no (unset keeps an automatic
        default). `identity` and `lease_namespace` fall back to POD_NAME and POD_NAMESPACE.
        """
        values: dict[str, Any] = {}
        for name, variable in (("identity", POD_NAME_ENV), ("lease_namespace", POD_NAMESPACE_ENV)):
            if environ.get(variable, "").strip():
                values[name] = environ[variable].strip()
        for f in dataclasses.fields(cls):
            variable = ENV_PREFIX + f.name.upper()
            raw = environ.get(variable, "").strip()
            if raw:
                try:
                    values[f.name] = _parse(f, raw)
                except ValueError as exc:
                    raise ValueError(f"{variable}={raw!r}: {exc}") from None
        try:
            return cls(**values)
        except ValueError as exc:
            raise ValueError(f"from environment: {exc}") from None

    def with_overrides(self, **overrides: Any) -> WebhookSettings:
        """A copy with every override that is not None applied (flags win over the environment)."""
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def redacted(self) -> dict[str, Any]:
        """Every field for the start-up log line, secrets replaced by "<redacted>" (or "" when unset)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("secret"):
                value = "<redacted>" if value else ""
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


def _parse(f: dataclasses.Field, raw: str) -> Any:
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    if kind == "int":
        return int(raw)
    if kind == "float":
        return float(raw)
    if kind.startswith("bool"):
        lowered = raw.lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise ValueError("expected true or false")
    if kind.startswith("tuple"):
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return raw


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags for every setting; each defaults to None so that only flags actually given override the environment."""
    group = parser.add_argument_group("webhook settings (flags override BURSTFLOW_WEBHOOK_* variables)")
    group.add_argument("--cert-file", help="serving certificate (PEM chain)")
    group.add_argument("--key-file", help="private key of the serving certificate (PEM)")
    group.add_argument("--bind-address", help="address for the HTTPS listener")
    group.add_argument("--port", type=int, help="HTTPS port for /mutate, /healthz, /readyz (default 9443)")
    group.add_argument("--metrics-address", help="address for the plain-HTTP metrics listener")
    group.add_argument("--metrics-port", type=int, help="plain-HTTP port for /metrics (default 9090)")
    group.add_argument("--policies", dest="policy_paths", action="append", metavar="PATH",
                       help="policy file or directory (repeatable)")
    cluster = group.add_mutually_exclusive_group()
    cluster.add_argument("--cluster-policies", dest="policies_from_cluster", action="store_const", const=True,
                         help="watch policies in the cluster (default when --kubeconfig is given or in a pod)")
    cluster.add_argument("--no-cluster-policies", dest="policies_from_cluster", action="store_const", const=False,
                         help="use only --policies files; never contact a cluster")
    group.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster service account)")
    group.add_argument("--identity", help="this replica's Lease holder name (default: $POD_NAME, else host name)")
    group.add_argument("--lease-namespace",
                       help="namespace of the pool reconciler's Lease (default: $POD_NAMESPACE, else the service "
                            "account's namespace)")
    group.add_argument("--pool-decision-timeout", dest="pool_decision_timeout_seconds", type=float,
                       help="seconds a pool placement may wait for the API before whenUnavailable answers (default 2)")
    group.add_argument("--pool-reservation-timeout", dest="pool_reservation_timeout_seconds", type=float,
                       help="seconds before a reserved slot whose pod never appeared is freed (default 60)")
    group.add_argument("--pool-reconcile-interval", dest="pool_reconcile_interval_seconds", type=float,
                       help="seconds between the pool reconciler's passes (default 1)")
    group.add_argument("--log-format", choices=LOG_FORMATS)
    group.add_argument("--log-level", choices=LOG_LEVELS)
    group.add_argument("--max-body-bytes", type=int, help="largest request body accepted (default 7 MiB)")
    group.add_argument("--drain-period", dest="drain_period_seconds", type=float,
                       help="seconds to keep accepting and answering requests after SIGTERM while /readyz fails, "
                            "so that endpoint removal reaches every API server first (default 10)")
    group.add_argument("--drain-timeout", dest="drain_timeout_seconds", type=float,
                       help="seconds to let in-flight requests finish after the drain period (default 15)")
    closed = group.add_mutually_exclusive_group()
    closed.add_argument("--fail-closed", dest="fail_closed", action="store_const", const=True,
                        help="deny a pod when the webhook fails unexpectedly (default: admit it unmutated, with a "
                             "warning)")
    closed.add_argument("--fail-open", dest="fail_closed", action="store_const", const=False,
                        help="admit a pod unmutated, with a warning, when the webhook fails unexpectedly (default)")
    group.add_argument("--lease-duration", dest="lease_duration_seconds", type=float,
                       help="whole seconds others wait for a silent pool reconciler (default 15)")
    group.add_argument("--renew-deadline", dest="renew_deadline_seconds", type=float,
                       help="whole seconds a pool reconciler retries a failed renewal before it stops (default 10)")
    group.add_argument("--retry-period", dest="retry_period_seconds", type=float,
                       help="whole seconds between Lease attempts (default 2)")
    group.add_argument("--tls-reload-interval", dest="tls_reload_interval_seconds", type=float,
                       help="seconds between checks of the certificate files (default 10)")


def settings_from_args(args: argparse.Namespace, environ: Mapping[str, str]) -> WebhookSettings:
    """The environment first, then the flags that were given."""
    overrides = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(WebhookSettings)}
    if overrides.get("policy_paths") is not None:
        overrides["policy_paths"] = tuple(overrides["policy_paths"])
    return WebhookSettings.from_env(environ).with_overrides(**overrides)
