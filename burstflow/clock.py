"""An injectable clock, so scheduling logic never reads wall time directly and tests can run hours in milliseconds."""
from __future__ import annotations

import asyncio
import heapq
import itertools
from datetime import datetime, timedelta, timezone
from typing import Protocol


class Clock(Protocol):
    """What every time-dependent component receives instead of calling `datetime.now()` / `asyncio.sleep()`."""

    def now(self) -> datetime:
        """The current instant, timezone-aware (UTC)."""

    async def sleep(self, seconds: float) -> None:
        """Suspend the caller for `seconds` of this clock's time."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards (for timeouts and latencies)."""


class SystemClock:
    """Wall time."""

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def monotonic(self) -> float:
        return asyncio.get_running_loop().time()


class FakeClock:
    """A clock that only moves when told to, or when every sleeper is waiting on it.

    `sleep(s)` parks the caller until `advance()` moves time past its deadline. With `autojump=True` time jumps
    straight to the earliest pending deadline as soon as the event loop has nothing else to do, so a cron runner
    can be driven through days of simulated time in milliseconds without any test sleeping on wall time.
    """

    def __init__(self, start: datetime, *, autojump: bool = False) -> None:
        if start.tzinfo is None:
            raise ValueError("FakeClock needs a timezone-aware start time")
        self._now = start.astimezone(timezone.utc)
        self._sleepers: list[tuple[datetime, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._autojump = autojump
        self._jumper: asyncio.Task[None] | None = None

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._now.timestamp()

    async def sleep(self, seconds: float) -> None:
        deadline = self._now + timedelta(seconds=max(0.0, seconds))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (deadline, next(self._seq), future))
        self._wake_due()
        if self._autojump:
            self._ensure_jumper()
        await future

    def set(self, when: datetime) -> None:
        """Move time to `when` (never backwards) and wake every sleeper whose deadline has passed."""
        when = when.astimezone(timezone.utc)
        if when < self._now:
            raise ValueError(f"FakeClock cannot go backwards: {when} < {self._now}")
        self._now = when
        self._wake_due()

    def advance(self, seconds: float) -> None:
        self.set(self._now + timedelta(seconds=seconds))

    def next_deadline(self) -> datetime | None:
        self._drop_cancelled()
        return self._sleepers[0][0] if self._sleepers else None

    def _drop_cancelled(self) -> None:
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)

    def _wake_due(self) -> None:
        self._drop_cancelled()
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)

    def _ensure_jumper(self) -> None:
        if self._jumper is None or self._jumper.done():
            self._jumper = asyncio.get_running_loop().create_task(self._jump_when_idle())

    async def _jump_when_idle(self) -> None:
        # Let every ready task run (several loop iterations) before declaring the loop idle and jumping.
        while True:
            for _ in range(20):
                await asyncio.sleep(0)
            deadline = self.next_deadline()
            if deadline is None:
                return
            if deadline > self._now:
                self.set(deadline)
            else:
                self._wake_due()
