"""The cron service's settings: one frozen dataclass, each field a `--flag` and a `BURSTFLOW_CRON_<FIELD>` variable."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from burstflow.leader import LeaseSettings
from burstflow.logs import LogSettings
from burstflow.settings import SettingsError, setting

__all__ = ["CronSettings", "SettingsError"]


@dataclass(frozen=True)
class CronSettings(LeaseSettings, LogSettings):
    """Everything `burstflow cron run` can be told: flag, then `BURSTFLOW_CRON_<FIELD>`, then the default.

    The Lease settings (identity, lease_namespace, the durations) come from `LeaseSettings`, as the webhook's do.
    """

    SERVICE: ClassVar[str] = "cron"

    namespace: str = setting("", reason=(
        "empty watches CronWorkflows in every namespace (needs a ClusterRole); a name watches only that namespace "
        "(a Role is enough)"), help="watch only this namespace (default: all namespaces)")
    kubeconfig: str | None = setting(None, reason=(
        "None takes $KUBECONFIG, else the in-cluster service account in a pod, else ~/.kube/config"),
        help="kubeconfig file (default: $KUBECONFIG, in-cluster, ~/.kube/config)")
    metrics_host: str = setting("0.0.0.0", reason="Prometheus scrapes the pod IP",
                                help="address to serve /metrics and /healthz on")
    metrics_port: int = setting(9090, aliases=("BURSTFLOW_METRICS_PORT",), reason=(
        "Argo's controller serves metrics on 9090 and teams scrape that port with a PodMonitor"),
        help="port of /metrics and /healthz; 0 picks a free one")
    leader_election: bool = setting(True, off_flag="--no-leader-election", reason=(
        "one replica schedules, the others wait; off only when exactly one replica runs"),
        help="campaign for the Lease before scheduling")
    lease_name: str = setting("burstflow-cron", reason=(
        "one Lease per installation of the cron service; with --shards N, shard I elects on LEASE_NAME-shard-I-of-N"),
        help="name of the Lease (with --shards N: LEASE_NAME-shard-I-of-N)")
    workers: int = setting(64, reason=(
        "decisions run concurrently across CronWorkflows (never two for one CronWorkflow): enough to keep one core "
        "busy creating while the API server answers (10,000 runs due at once: 32 left the process idle a tenth "
        "of the time, 64 does not)"),
        help="CronWorkflows decided concurrently")
    conflict_retries: int = setting(5, reason=(
        "a status write that keeps answering 409 is re-read and re-decided at most this many times in one "
        "decision; then the key goes back into the queue with the fresh object from the watch"),
        help="re-reads of a CronWorkflow whose status write conflicts, per decision")
    shards: int = setting(1, reason=(
        "one process schedules every namespace; N > 1 splits namespaces over N shards by crc32(namespace) % N, each "
        "shard with its own Lease (see cron/shards.py); every shard of an installation is given the same N"),
        help="number of shards the namespaces are split over", metavar="N")
    shard: int = setting(0, reason="this process's shard, 0..N-1; run one Deployment per shard",
                         help="which shard this process is (0..N-1)", metavar="I")
    prepare_ahead_seconds: float = setting(10.0, reason=(
        "a due run's decision and Workflow body are computed this long before its scheduled time, so at the due "
        "instant only the create is left (10,000 runs due in one minute go out about a third sooner); a prepared "
        "decision is used only if nothing it was based on changed, else the run is decided at the due instant as "
        "usual. CronWorkflows with `when` or a stop strategy are always decided at the due instant (their "
        "expressions see `now`); 0 turns preparation off"),
        help="seconds before a run is due to prepare its decision (0: off)")
    error_backoff_seconds: float = setting(5.0, reason=(
        "the pause before retrying a CronWorkflow whose decision failed on an API error (5xx, timeouts)"),
        help="seconds before retrying a decision that failed on an API error")

    def validate(self) -> None:
        """Raise `SettingsError` for values the service cannot use (the Lease's rules first)."""
        super().validate()
        if not 0 <= self.metrics_port <= 65535:
            raise SettingsError(f"{self.source('metrics_port')}: {self.metrics_port} is not a TCP port (0-65535)")
        if self.workers < 1:
            raise SettingsError(f"{self.source('workers')}: must be at least 1, not {self.workers}")
        if self.conflict_retries < 1:
            raise SettingsError(f"{self.source('conflict_retries')}: must be at least 1, not {self.conflict_retries}")
        if self.shards < 1:
            raise SettingsError(f"{self.source('shards')}: must be at least 1, not {self.shards}")
        if not 0 <= self.shard < self.shards:
            raise SettingsError(f"{self.source('shard')}: must be between 0 and {self.shards - 1} "
                                f"({self.source('shards')} is {self.shards}), not {self.shard}")
        if self.shards > 1 and self.namespace:
            raise SettingsError(f"{self.source('shards')}: shards split namespaces, but "
                                f"{self.source('namespace')} watches only {self.namespace!r}; set one or the other")
        if self.prepare_ahead_seconds < 0:
            raise SettingsError(f"{self.source('prepare_ahead_seconds')}: must be >= 0, not "
                                f"{self.prepare_ahead_seconds}")
        if self.error_backoff_seconds < 0:
            raise SettingsError(f"{self.source('error_backoff_seconds')}: must be >= 0, not "
                                f"{self.error_backoff_seconds}")
