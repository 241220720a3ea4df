"""Pool reservations written to ResourcePolicy status with group commit: one guarded status write decides a batch.

Every admission that needs a slot queues its token here. Per policy, one writer task takes everything queued,
decides the whole batch in order against the freshest status it has, and writes ONE resourceVersion-guarded
replace of the status subresource. Only after that write succeeded are the callers answered, so two replicas
(or two batches) can never both spend the same slot: the loser gets 409 Conflict, re-reads, and re-decides its
whole batch against the winner's counts. While a write is in flight new admissions queue up, so under a burst the
batches grow by themselves and the writes per admitted pod fall; an idle policy pays one write per pod, at once.
"""
from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, field
from typing import Any

from burstflow import kube as k
from burstflow.clock import Clock
from burstflow.webhook.pools.metrics import PoolMetrics
from burstflow.webhook.pools.model import ResourcePolicy
from burstflow.webhook.pools.placement import PoolChoice
from burstflow.webhook.pools.usage import Usage, reserve_batch, status_from_usage, usage_from_status, with_status

log = logging.getLogger(__name__)


class LedgerUnavailable(Exception):
    """No decision could be written in time (API unreachable, erroring or too slow)."""


class PolicyMissing(LedgerUnavailable):
    """The ResourcePolicy no longer exists on the server (deleted since the webhook loaded it)."""


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


class Ledger:
    """Reservations for every policy of one webhook process, over one gateway connection."""

    def __init__(self, *, kube: k.Kube, clock: Clock, metrics: PoolMetrics | None = None,
                 retry_initial: float = 0.02, retry_max: float = 0.5) -> None:
        self.kube = kube
        self.clock = clock
        self.metrics = metrics
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self._delay = retry_initial
        self._queues: dict[tuple[str, str], _Queue] = {}

    async def reserve(self, policy: ResourcePolicy, token: str, *, timeout: float) -> PoolChoice:
        """Decide a new pod's placement and, when it is placed, count it under `token` before returning.

        Raises LedgerUnavailable when no write succeeded within `timeout` seconds (the request is then
        withdrawn; a write already in flight may still count it, which the reconciler frees after the
        reservation timeout when no pod carries the token).
        """
        queue = self._queues.setdefault(policy.key, _Queue())
        future: asyncio.Future[PoolChoice] = asyncio.get_running_loop().create_future()
        queue.waiting.append(_Request(policy, token, future))
        if queue.writer is None or queue.writer.done():
            queue.writer = asyncio.create_task(self._write_batches(policy.key), name=f"pool-ledger-{policy.key}")
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
        """Cancel the writer tasks (their callers get LedgerUnavailable through their own timeouts)."""
        tasks = [q.writer for q in self._queues.values() if q.writer and not q.writer.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _write_batches(self, key: tuple[str, str]) -> None:
        queue = self._queues[key]
        batch: list[_Request] = []
        try:
            while queue.waiting or batch:
                batch = await self._commit(queue, batch)
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

    async def _commit(self, queue: _Queue, carried: list[_Request]) -> list[_Request]:
        """One attempt: read (unless our last write's answer is at hand), take everything queued (plus `carried`,
        a batch that lost a race), decide, write.

        Returns the requests still unanswered (empty after a successful write). The batch is taken *after* the
        read, so admissions that arrive while the read is in flight join this write instead of waiting for the
        next one. Writing against a stale object is safe: the resourceVersion guard answers 409, and the retry
        reads.
        """
        policy = (carried or queue.waiting)[-1].policy
        try:
            # The object our last write returned is usually still current (the reconciler writes about once a
            # second), so write against it without a read; a 409 clears it and the retry reads.
            obj = queue.cached or await self.kube.get(k.RESOURCEPOLICIES, policy.name, namespace=policy.namespace)
        except k.NotFound:
            self._fail(carried + queue.waiting, PolicyMissing(
                f"ResourcePolicy {policy.namespace}/{policy.name} not found"))
            queue.waiting = []
            return []
        except k.KubeError as error:
            await self._backoff(policy, error)
            return carried
        batch = [request for request in carried + queue.waiting if not request.future.done()]
        queue.waiting = []
        if not batch:
            return []
        policy = batch[-1].policy
        usage = usage_from_status(policy, obj.get("status"))
        now = self.clock.now()
        decisions = reserve_batch(policy, usage, [request.token for request in batch], now)
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
        if self.metrics:
            self.metrics.observe_status(policy, status)
        for request, decision in zip(batch, decisions):
            if not request.future.done():
                request.future.set_result(decision)
        return []

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
