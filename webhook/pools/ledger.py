"""Pool reservations written to ResourcePolicy status with group commit: one guarded status write decides a batch.

Every admission that needs a slot queues its token here. Per policy, one writer task takes everything queued,
decides the whole batch in order against the freshest status it has, and writes ONE resourceVersion-guarded
replace of the status subresource. Only after that write succeeded are the callers answered, so two replicas
(or two batches) can never both spend the same slot: the loser gets 409 Conflict, re-reads, and re-decides its
whole batch against the winner's counts. While a write is in flight new admissions queue up, so under a burst the
batches grow by themselves and the writes per admitted pod fall; an idle policy pays one write per pod, at once.

Slot blocks (`BlockSettings`, on in a running webhook): when a pool has plenty of room, the same write also
reserves a block of spare tokens in it, sized from this replica's recent demand and capped at a fraction of the
pool's remaining room. Later admissions take a spare token from the block with no API round trip: the token was
counted in a guarded write, so handing it to a pod changes no count. Near a pool's cap (a block would be smaller
than `min_slots`) and for policies with a `maxReplicasRatio` the ledger reserves exactly one slot per pod, as
without blocks. Spare tokens are handed out only within `handout` seconds of their write, returned by a guarded
write after `idle` seconds without demand, and otherwise expire like any reservation.
"""
from __future__ import annotations

import asyncio
import logging
import math
import random
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from burstflow import kube as k
from burstflow.clock import Clock
from burstflow.webhook.pools.metrics import PoolMetrics
from burstflow.webhook.pools.model import ResourcePolicy
from burstflow.webhook.pools.placement import PLACE, PoolChoice, effective_maxes
from burstflow.webhook.pools.usage import Usage, reserve_batch, status_from_usage, usage_from_status, with_status

log = logging.getLogger(__name__)


class LedgerUnavailable(Exception):
    """No decision could be written in time (API unreachable, erroring or too slow)."""


class PolicyMissing(LedgerUnavailable):
    """The ResourcePolicy no longer exists on the server (deleted since the webhook loaded it)."""


@dataclass(frozen=True)
class BlockSettings:
    """How a replica reserves spare slots ahead of demand (see the module docstring)."""

    # A block holds at most this share of the pool's room left after the batch it is written with, so blocks
    # never fill a pool: each replica's block leaves at least three quarters of what it found to the others.
    fraction: float = 0.25
    # Smaller blocks are not reserved: near a pool's cap every slot is reserved for exactly one pod.
    min_slots: int = 32
    # At most this many spare slots per replica and policy (about 17 bytes each in the status).
    max_slots: int = 256
    # Demand = this replica's admissions for the policy in the last `window` seconds.
    window: float = 1.0
    # Spare slots are returned after this long without an admission for the policy.
    idle: float = 2.0
    # A spare slot is handed out only this long after its write: with the webhook's timeout (<= 30 s) its pod
    # still appears well within the reservation timeout (60 s), so a handed-out slot is never expired before
    # its pod is counted.
    handout: float = 10.0


@dataclass
class _Slot:
    subset: int
    token: str
    reserved: float  # clock.monotonic() of the write that reserved it


@dataclass
class _Request:
    policy: ResourcePolicy
    token: str
    future: asyncio.Future[PoolChoice]


@dataclass
class _Queue:
    waiting: list[_Request] = field(default_factory=list)
    writer: asyncio.Task[None] | None = None
    # The object as our last write returned it, for dry-run snapshots.
    cached: dict[str, Any] | None = None
    # Slot blocks: spare tokens counted in the status and not handed out yet, oldest first; the policy they were
    # reserved for and the subset the cached counts send the next pod to; demand times; spare tokens to remove
    # from the status with the next write; tokens of a block being written (kept across retries).
    spare: deque[_Slot] = field(default_factory=deque)
    spare_policy: ResourcePolicy | None = None
    next_subset: int = 0
    demand: deque[float] = field(default_factory=deque)
    returning: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    returner: asyncio.Task[None] | None = None


class Ledger:
    """Reservations for every policy of one webhook process, over one gateway connection."""

    def __init__(self, *, kube: k.Kube, clock: Clock, metrics: PoolMetrics | None = None,
                 retry_initial: float = 0.02, retry_max: float = 0.5, blocks: BlockSettings | None = None,
                 new_token: Callable[[], str] = lambda: secrets.token_hex(8)) -> None:
        self.kube = kube
        self.clock = clock
        self.metrics = metrics
        self.blocks = blocks
        self.new_token = new_token
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self._delay = retry_initial
        self._queues: dict[tuple[str, str], _Queue] = {}

    def take(self, policy: ResourcePolicy) -> tuple[PoolChoice, str] | None:
        """A spare slot of this replica's block for a new pod, as (placement, token), without any API call; None
        when there is none to hand out (then `reserve` a slot). Every call counts as demand for block sizing."""
        if self.blocks is None:
            return None
        queue = self._queues.setdefault(policy.key, _Queue())
        now = self.clock.monotonic()
        queue.demand.append(now)
        while queue.demand and queue.demand[0] < now - self.blocks.window:
            queue.demand.popleft()
        if queue.spare and queue.spare_policy != policy:
            self._give_back(queue, policy, len(queue.spare))   # the policy changed: counts were decided for the old
        while queue.spare and queue.spare[0].reserved < now - self.blocks.handout:
            self._give_back(queue, policy, 1)
        if queue.spare and queue.spare[0].subset > queue.next_subset:
            # Our freshest counts have room in an earlier pool (pods there finished): that pool comes first, so the
            # spare slots go back and the pod is reserved per pod.
            self._give_back(queue, policy, len(queue.spare))
        if not queue.spare:
            return None
        slot = queue.spare.popleft()
        return PoolChoice(PLACE, slot.subset), slot.token

    def spare_slots(self, policy: ResourcePolicy, subset: str | None = None) -> int:
        """Spare block slots this replica holds for `policy` (in `subset`, or in all), not handed out or returned."""
        queue = self._queues.get(policy.key)
        index = policy.subset_index(subset) if subset is not None else None
        return sum(1 for slot in queue.spare if subset is None or slot.subset == index) if queue else 0

    async def reserve(self, policy: ResourcePolicy, token: str, *, timeout: float) -> PoolChoice:
        """Decide a new pod's placement and, when it is placed, count it under `token` before returning.

        Raises LedgerUnavailable when no write succeeded within `timeout` seconds (the request is then
        withdrawn; a write already in flight may still count it, which the reconciler frees after the
        reservation timeout when no pod carries the token).
        """
        queue = self._queues.setdefault(policy.key, _Queue())
        future: asyncio.Future[PoolChoice] = asyncio.get_running_loop().create_future()
        queue.waiting.append(_Request(policy, token, future))
        self._start_writer(queue, policy)
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except asyncio.TimeoutError:
            future.cancel()
            raise LedgerUnavailable(f"no pool decision for ResourcePolicy {policy.namespace}/{policy.name} "
                                    f"within {timeout:g}s") from None
        finally:
            if not future.done():
                future.cancel()

    async def snapshot(self, policy: ResourcePolicy, *, timeout: float) -> Usage:
        """The last counts this process knows (or one read): what a dry-run admission is placed against."""
        queue = self._queues.get(policy.key)
        obj = queue.cached if queue else None
        if obj is None:
            try:
                obj = await asyncio.wait_for(
                    self.kube.get(k.RESOURCEPOLICIES, policy.name, namespace=policy.namespace), timeout)
            except asyncio.TimeoutError:
                raise LedgerUnavailable(f"reading ResourcePolicy {policy.namespace}/{policy.name} took over "
                                        f"{timeout:g}s") from None
            except k.NotFound:
                raise PolicyMissing(f"ResourcePolicy {policy.namespace}/{policy.name} not found") from None
            except k.KubeError as error:
                raise LedgerUnavailable(f"reading ResourcePolicy {policy.namespace}/{policy.name}: {error}") from None
        return usage_from_status(policy, obj.get("status"))

    async def close(self) -> None:
        """Cancel the writer tasks (their callers get LedgerUnavailable through their own timeouts). Spare slots
        are not returned: they expire with the reservation timeout."""
        tasks = [task for q in self._queues.values() for task in (q.writer, q.returner) if task and not task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _start_writer(self, queue: _Queue, policy: ResourcePolicy) -> None:
        if queue.writer is None or queue.writer.done():
            queue.writer = asyncio.create_task(self._write_batches(policy.key, policy),
                                               name=f"pool-ledger-{policy.key}")

    def _give_back(self, queue: _Queue, policy: ResourcePolicy, count: int) -> None:
        """Move `count` spare slots (oldest first) to the next write's removals."""
        for _ in range(min(count, len(queue.spare))):
            queue.returning.append(queue.spare.popleft().token)
        self._start_writer(queue, policy)

    def _start_returner(self, queue: _Queue, policy: ResourcePolicy) -> None:
        if queue.returner is None or queue.returner.done():
            queue.returner = asyncio.create_task(self._return_when_idle(queue, policy),
                                                 name=f"pool-ledger-return-{policy.key}")

    async def _return_when_idle(self, queue: _Queue, policy: ResourcePolicy) -> None:
        """Return the spare slots once no admission wanted one for `idle` seconds."""
        assert self.blocks is not None
        while queue.spare:
            last = queue.demand[-1] if queue.demand else -math.inf
            wait = last + self.blocks.idle - self.clock.monotonic()
            if wait > 0:
                await self.clock.sleep(wait)
                continue
            self._give_back(queue, policy, len(queue.spare))

    async def _write_batches(self, key: tuple[str, str], policy: ResourcePolicy) -> None:
        queue = self._queues[key]
        batch: list[_Request] = []
        try:
            while queue.waiting or batch or queue.returning:
                batch = await self._commit(queue, batch, policy)
        except asyncio.CancelledError:
            for request in batch + queue.waiting:
                if not request.future.done():
                    request.future.set_exception(LedgerUnavailable("pool ledger is shutting down"))
            raise
        except Exception as error:  # noqa: BLE001 - every caller must get an answer, whatever went wrong
            log.exception("pool ledger %s/%s: batch failed", *key)
            for request in batch + queue.waiting:
                if not request.future.done():
                    request.future.set_exception(LedgerUnavailable(f"pool ledger failed: {error}"))
            queue.waiting = []

    async def _commit(self, queue: _Queue, carried: list[_Request], policy: ResourcePolicy) -> list[_Request]:
        """One attempt: read (unless our last write's answer is at hand), take everything queued (plus `carried`,
        a batch that lost a race), decide, write.

        Returns the requests still unanswered (empty after a successful write). The batch is taken *after* the
        read, so admissions that arrive while the read is in flight join this write instead of waiting for the
        next one. Writing against a stale object is safe: the resourceVersion guard answers 409, and the retry
        reads.
        """
        policy = (carried or queue.waiting)[-1].policy if carried or queue.waiting else policy
        try:
            # The object our last write returned is usually still current (the reconciler writes about once a
            # second), so write against it without a read; a 409 clears it and the retry reads.
            obj = queue.cached or await self.kube.get(k.RESOURCEPOLICIES, policy.name, namespace=policy.namespace)
        except k.NotFound:
            self._fail(carried + queue.waiting, PolicyMissing(
                f"ResourcePolicy {policy.namespace}/{policy.name} not found"))
            queue.waiting = []
            queue.returning = []
            return []
        except k.KubeError as error:
            await self._backoff(policy, error)
            return carried
        batch = [request for request in carried + queue.waiting if not request.future.done()]
        queue.waiting = []
        returning = list(queue.returning)
        if not batch and not returning:
            return []
        policy = batch[-1].policy if batch else policy
        usage = usage_from_status(policy, obj.get("status"))
        now = self.clock.now()
        # Returned spare slots, and a block an earlier attempt may have written (its outcome unknown), leave the
        # counts before anything is decided: the block below is decided afresh against the current room.
        for token in returning + queue.pending:
            holder = usage.holder(token)
            if holder is not None:
                del usage.reservations[holder][token]
        decisions = reserve_batch(policy, usage, [request.token for request in batch], now)
        block = self._block(queue, policy, usage, decisions, now)
        status = status_from_usage(policy, usage, now=now, previous=obj.get("status"))
        try:
            written = await self.kube.replace(k.RESOURCEPOLICIES, with_status(obj, status), subresource="status")
        except k.Conflict:
            self._count_write("conflict")
            queue.cached = None
            # Another replica just wrote: step aside for a moment so the two do not collide again in lockstep.
            await asyncio.sleep(random.uniform(0, self.retry_initial))
            return batch
        except k.NotFound:
            queue.cached = None
            self._fail(batch, PolicyMissing(f"ResourcePolicy {policy.namespace}/{policy.name} not found"))
            return []
        except k.KubeError as error:
            self._count_write("error")
            queue.cached = None
            await self._backoff(policy, error)
            return batch
        self._count_write("ok", written)
        queue.cached = written
        self._delay = self.retry_initial
        queue.returning = queue.returning[len(returning):]
        queue.pending = []
        if block is not None:
            subset, tokens = block
            if queue.spare_policy != policy:
                self._give_back(queue, policy, len(queue.spare))
            queue.spare_policy = policy
            reserved = self.clock.monotonic()
            queue.spare.extend(_Slot(subset, token, reserved) for token in tokens)
            self._start_returner(queue, policy)
        # The first pool with room by the counts just written (all of them when none has): a spare slot in a
        # later pool than this is not handed out.
        decision = usage.decide(policy)
        has_room = decision.action == PLACE and not decision.over_max and decision.subset is not None
        queue.next_subset = decision.subset if has_room else len(policy.subsets)
        if self.metrics:
            self.metrics.observe_status(policy, status)
        for request, decision in zip(batch, decisions):
            if not request.future.done():
                request.future.set_result(decision)
        return []

    def _block(self, queue: _Queue, policy: ResourcePolicy, usage: Usage, decisions: list[PoolChoice],
               now: Any) -> tuple[int, list[str]] | None:
        """Reserve a block of spare slots in `usage` (mutated) when the pool the next pod goes to has plenty of
        room; returns (subset index, tokens) or None. Its tokens are kept in `queue.pending` until the write's
        outcome is known, so a retry recognises a block an unanswered write may have stored."""
        settings = self.blocks
        if settings is None or any(subset.ratio is not None for subset in policy.subsets):
            return None
        if queue.spare and queue.spare_policy == policy:
            wanted = len(queue.demand) - len(queue.spare)
        else:
            wanted = len(queue.demand)
        decision = usage.decide(policy)
        if decision.action != PLACE or decision.over_max or not decisions:
            return None
        if queue.spare and queue.spare[0].subset != decision.subset:
            return None   # one block at a time, in one pool
        index = decision.subset
        limit = effective_maxes(policy, usage.placed(policy), usage.unplaced)[index]
        size = min(settings.max_slots - len(queue.spare), wanted)
        if limit is not None:
            size = min(size, math.floor((limit - usage.count(policy.subsets[index].name)) * settings.fraction))
        if size < settings.min_slots:
            return None
        while len(queue.pending) < size:
            queue.pending.append(self.new_token())
        tokens = queue.pending[:size]
        for token in tokens:
            usage.reserve(policy.subsets[index].name, token, now)
        return index, tokens

    async def _backoff(self, policy: ResourcePolicy, error: Exception) -> None:
        log.warning("pool ledger %s/%s: %s; retrying in %.2fs", policy.namespace, policy.name, error, self._delay)
        # IO pacing between retries, not scheduling logic: callers are bounded by their own timeouts.
        await asyncio.sleep(self._delay)
        self._delay = min(self._delay * 2, self.retry_max)

    @staticmethod
    def _fail(requests: list[_Request], error: Exception) -> None:
        for request in requests:
            if not request.future.done():
                request.future.set_exception(error)

    def _count_write(self, result: str, written: dict[str, Any] | None = None) -> None:
        if self.metrics:
            self.metrics.count_write(result, written)
