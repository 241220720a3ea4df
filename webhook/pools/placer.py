"""The admitter's pool hook: pick the ResourcePolicy for a pod, get a counted placement from the ledger, shape the pod."""
from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from burstflow.webhook.pools import metrics as m
from burstflow.webhook.pools.ledger import Ledger, LedgerUnavailable, PolicyMissing
from burstflow.webhook.pools.model import LAST_POOL, ResourcePolicy
from burstflow.webhook.pools.placement import (DENY, LEAVE_UNPLACED, PLACE, PoolChoice, mark_unplaced,
                                     previous_placement, select_policy, shape_pod)

# Default bound on waiting for a counted decision. The webhook's own timeoutSeconds (manifests: 10 s) must leave
# room for TLS, the rest of the mutation and the API server's round trip, so 2 s answers well before it.
DEFAULT_DECISION_TIMEOUT = 2.0


@dataclass(frozen=True)
class Placement:
    """What the pool hook decided for one pod.

    `pod` is the pod to continue with (the input itself when no policy manages it); `denied` is (code, message)
    when the admission must be refused (429: Argo requeues the step); `result` is a metrics label.
    """

    pod: dict[str, Any]
    denied: tuple[int, str] | None = None
    warnings: tuple[str, ...] = ()
    policy: str | None = None
    subset: str | None = None
    result: str = ""


class PoolPlacer:
    """Places pods by ResourcePolicy; counts through `ledger` unless the request is a dry run or a reinvocation."""

    def __init__(self, *, ledger: Ledger, metrics: m.PoolMetrics | None = None,
                 decision_timeout: float = DEFAULT_DECISION_TIMEOUT,
                 new_token: Callable[[], str] = lambda: secrets.token_hex(8)) -> None:
        self.ledger = ledger
        self.metrics = metrics
        self.decision_timeout = decision_timeout
        self.new_token = new_token

    async def place(self, pod: Mapping[str, Any], *, namespace: str, policies: Sequence[ResourcePolicy],
                    dry_run: bool = False) -> Placement:
        """Never raises for API trouble: after `decision_timeout` the policy's `whenUnavailable` answers."""
        policy, warnings = select_policy(policies, pod, namespace)
        if policy is None:
            return Placement(pod=dict(pod))
        previous = previous_placement(pod, policy)
        if previous is not None:
            token, index = previous
            if index is None:
                return self._finish(policy, PoolChoice(LEAVE_UNPLACED), pod, token, m.REUSED, warnings)
            return self._finish(policy, PoolChoice(PLACE, index), pod, token, m.REUSED, warnings)
        token = self.new_token()
        try:
            if dry_run:
                usage = await self.ledger.snapshot(policy, timeout=self.decision_timeout)
                return self._finish(policy, usage.decide(policy), pod, token, m.DRY_RUN, warnings)
            spare = self.ledger.take(policy)
            if spare is not None:
                decision, token = spare   # a slot of this replica's block: already counted, no API call
            else:
                decision = await self.ledger.reserve(policy, token, timeout=self.decision_timeout)
        except PolicyMissing as error:
            return Placement(pod=dict(pod), warnings=tuple(warnings) + (f"pool placement skipped: {error}",))
        except LedgerUnavailable as error:
            return self._unavailable(policy, pod, token, str(error), warnings)
        result = m.OVERFLOW if decision.over_max else m.RESERVED
        return self._finish(policy, decision, pod, token, result, warnings)

    def _unavailable(self, policy: ResourcePolicy, pod: Mapping[str, Any], token: str, reason: str,
                     warnings: list[str]) -> Placement:
        if policy.when_unavailable == LAST_POOL:
            last = len(policy.subsets) - 1
            note = (f"pool counts unavailable ({reason}); placed in {policy.subsets[last].name} without a "
                    f"reservation (whenUnavailable: LastPool)")
            return self._finish(policy, PoolChoice(PLACE, last, message=note), pod, token, m.UNRESERVED, warnings)
        message = (f"pool counts for ResourcePolicy {policy.namespace}/{policy.name} unavailable ({reason}); "
                   f"retry later (whenUnavailable: Deny)")
        return self._finish(policy, PoolChoice(DENY, message=message), pod, token, m.DENIED, warnings)

    def _finish(self, policy: ResourcePolicy, decision: PoolChoice, pod: Mapping[str, Any], token: str, result: str,
                warnings: list[str]) -> Placement:
        notes = tuple(warnings) + ((decision.message,) if decision.message and decision.action != DENY else ())
        if decision.action == DENY:
            self._count(policy, "", m.DENIED)
            return Placement(pod=dict(pod), denied=(429, decision.message), warnings=notes, policy=policy.name,
                             result=m.DENIED)
        if decision.action == LEAVE_UNPLACED:
            self._count(policy, "", m.UNPLACED if result != m.REUSED else result)
            return Placement(pod=mark_unplaced(pod, policy=policy, token=token), warnings=notes, policy=policy.name,
                             result=m.UNPLACED if result != m.REUSED else result)
        subset = policy.subsets[decision.subset].name
        self._count(policy, subset, result)
        return Placement(pod=shape_pod(pod, policy=policy, subset=decision.subset, token=token), warnings=notes,
                         policy=policy.name, subset=subset, result=result)

    def _count(self, policy: ResourcePolicy, subset: str, result: str) -> None:
        if self.metrics:
            self.metrics.count_placement(policy, subset, result)
