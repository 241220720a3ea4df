"""An injectable clock, so scheduling logic never reads wall time directly and tests can run hours in milliseconds."""
from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Protocol

IdleCheck = Callable[[], bool]

# One "quiet pass" yields to the event loop this many times; loopback socket data written by an in-process server
# is picked up within a couple of iterations, a chain of awaiting tasks within a few more.
_YIELDS_PER_PASS = 20


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

    "Nothing else to do" is judged by yielding to the loop; that cannot see work a component has in flight over
    real sockets (an HTTP request the server has not answered yet). Components that know when they are busy
    register an idle check (`add_idle_check`, or `idle=` on `settle` / `jump` / `run_until`): time then only moves
    when every check answers True, which makes stepping deterministic with real HTTP in flight.
    """

    def __init__(self, start: datetime, *, autojump: bool = False) -> None:
        if start.tzinfo is None:
            raise ValueError("FakeClock needs a timezone-aware start time")
        self._now = start.astimezone(timezone.utc)
        self._sleepers: list[tuple[datetime, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._autojump = autojump
        self._jumper: asyncio.Task[None] | None = None
        self._idle_checks: list[IdleCheck] = []

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

    def add_idle_check(self, check: IdleCheck) -> Callable[[], None]:
        """Make time wait (autojump, `jump`, `run_until`) until `check()` is True; returns a function removing it."""
        self._idle_checks.append(check)

        def remove() -> None:
            if check in self._idle_checks:
                self._idle_checks.remove(check)

        return remove

    def _idle(self, extra: IdleCheck | None) -> bool:
        return all(check() for check in self._idle_checks) and (extra is None or extra())

    async def settle(self, *, idle: IdleCheck | None = None, passes: int = 3, timeout: float = 10.0) -> None:
        """Return once the loop has made `passes` consecutive quiet passes with every idle check True.

        A quiet pass yields to the loop repeatedly and then waits one millisecond of real time (for work handed to
        threads, e.g. a client's DNS or kubeconfig loading). Real time here only waits for IO to land; simulated
        time does not move. Raises `TimeoutError` when the checks do not all become True within `timeout` real
        seconds (a component stuck busy is a bug the test should see, not hang on).
        """
        loop = asyncio.get_running_loop()
        give_up = loop.time() + timeout
        quiet = 0
        while quiet < passes:
            for _ in range(_YIELDS_PER_PASS):
                await asyncio.sleep(0)
            await asyncio.sleep(0.001)
            if self._idle(idle):
                quiet += 1
            else:
                quiet = 0
                if loop.time() > give_up:
                    raise TimeoutError(f"FakeClock.settle: still busy after {timeout} s of real time")

    async def jump(self, *, idle: IdleCheck | None = None, limit: datetime | None = None) -> datetime | None:
        """Settle, then move time to the earliest pending deadline (not beyond `limit`); return it, or None if
        no sleeper is pending (or the earliest is after `limit`)."""
        await self.settle(idle=idle)
        deadline = self.next_deadline()
        if deadline is None or (limit is not None and deadline > limit):
            return None
        if deadline > self._now:
            self.set(deadline)
        else:
            self._wake_due()
        return deadline

    async def run_until(self, when: datetime, *, idle: IdleCheck | None = None, max_steps: int = 100_000) -> int:
        """Step time deadline by deadline up to `when`, settling before every step and after the last one, so
        every sleeper sees each of its deadlines in order (as it would in real time). Returns the steps taken."""
        when = when.astimezone(timezone.utc)
        steps = 0
        while steps < max_steps:
            if await self.jump(idle=idle, limit=when) is None:
                break
            steps += 1
        else:
            raise RuntimeError(f"FakeClock.run_until: more than {max_steps} deadlines before {when}")
        if when > self._now:
            self.set(when)
        await self.settle(idle=idle)
        return steps

    async def run_for(self, seconds: float, *, idle: IdleCheck | None = None, max_steps: int = 100_000) -> int:
        """`run_until(now + seconds)`."""
        return await self.run_until(self._now + timedelta(seconds=seconds), idle=idle, max_steps=max_steps)

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
            if not self._idle(None):
                await asyncio.sleep(0.001)
                continue
            if deadline > self._now:
                self.set(deadline)
            else:
                self._wake_due()
