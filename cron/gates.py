"""When the cron runner's status writers may write: creates of a burst of due runs go out before status writes."""
from __future__ import annotations

import asyncio
from collections.abc import Callable


class StatusWriteGates:
    """The gates of the status writers, opened and closed from the decision queue (see `CronRunner`).

    A *gated* writer starts a write only while no decision is queued. The one *ungated* writer may also write once
    per `workers` decisions taken while decisions are queued, so writes keep moving under a constant stream of
    decisions (the deferral is bounded) yet take at most about one request in `workers + 1` from a burst of
    creates. `queue_empty` tells whether a decision is queued; call `update()` whenever that may have changed.
    """

    def __init__(self, *, workers: int, queue_empty: Callable[[], bool]) -> None:
        self.workers = workers
        self.queue_empty = queue_empty
        self._drained = asyncio.Event()  # no decision is queued: every status writer may write
        self._trickle = asyncio.Event()  # the ungated status writer may write
        self._taken = 0
        self._trickle_at = 0
        self.update()

    def decision_taken(self) -> None:
        """A worker took a decision off the queue."""
        self._taken += 1
        self.update()

    async def wait(self, *, gated: bool) -> None:
        """Return when a writer of this kind may start its next write."""
        if gated:
            await self._drained.wait()
            return
        await self._trickle.wait()
        self._trickle_at = self._taken + self.workers
        self.update()

    def update(self) -> None:
        """All gates open when the queue is empty; otherwise only the ungated writer's, and only once `workers`
        decisions were taken since its last write."""
        if self.queue_empty():
            self._drained.set()
            self._trickle.set()
            return
        self._drained.clear()
        if self._taken >= self._trickle_at:
            self._trickle.set()
        else:
            self._trickle.clear()
