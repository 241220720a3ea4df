"""The cron service's leader election: the Lease elector, plus where a new leader's on-time runs begin."""
from __future__ import annotations

from datetime import datetime, timedelta

from burstflow.clock import Clock
from burstflow.kube import Kube
from burstflow.leader import LeaderElector

from burstflow.cron import shards
from burstflow.cron.settings import CronSettings


class CronLeaderElector(LeaderElector):
    """The Lease election, plus what a new leader must know to tell on-time runs from catch-ups after a failover.

    While standing by, the elector records (on its own clock, `last_seen_renewal`) the last time it saw another
    holder's Lease record change: that holder was scheduling then. On taking over soon after (the lease expired or
    was released), scheduling has been continuous since about then, so ticks in between are on-time runs, not
    catch-ups bound by `startingDeadlineSeconds`; after a long outage (no live holder seen recently) the new
    leader's own start is the boundary.
    """

    def observed_since(self, now: datetime) -> datetime:
        """Where continuous scheduling began, as seen at takeover time `now`."""
        # The last change we saw can be one jittered retry period after the holder's real last renewal, and a
        # holder keeps deciding for up to renew_deadline after it; a failover takes at most lease_duration plus
        # one jittered retry period after the last change we saw.
        slack = self.retry_period * (1 + self.jitter)
        seen = self.last_seen_renewal
        if seen is not None and now - seen <= timedelta(seconds=self.lease_duration + 2 * slack):
            return seen - timedelta(seconds=slack)
        return now


def elector_from_settings(kube: Kube, settings: CronSettings, *, clock: Clock) -> CronLeaderElector | None:
    """The elector for the Lease `settings.lease_namespace/lease_name` (with several shards, that shard's own Lease:
    `shards.lease_name`), or None when leader election is off."""
    if not settings.leader_election:
        return None
    name = shards.lease_name(settings.lease_name, shards=settings.shards, shard=settings.shard)
    return CronLeaderElector(
        kube, name=name, namespace=settings.lease_namespace, identity=settings.identity, clock=clock,
        lease_duration=settings.lease_duration_seconds, renew_deadline=settings.renew_deadline_seconds,
        retry_period=settings.retry_period_seconds)
