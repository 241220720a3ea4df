"""FakeClock: manual stepping, autojump, and idle-gated stepping with real sockets in flight."""
from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from burstflow.clock import FakeClock, SystemClock

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def test_needs_an_aware_start():
    with pytest.raises(ValueError, match="timezone-aware"):
        FakeClock(datetime(2026, 1, 1))


def test_never_goes_backwards():
    clock = FakeClock(T0)
    with pytest.raises(ValueError, match="backwards"):
        clock.set(T0 - timedelta(seconds=1))


async def test_sleep_wakes_only_when_time_passes_its_deadline():
    clock = FakeClock(T0)
    task = asyncio.create_task(clock.sleep(60))
    await asyncio.sleep(0)
    clock.advance(59)
    await asyncio.sleep(0)
    assert not task.done()
    clock.advance(1)
    await asyncio.sleep(0)
    assert task.done()
    assert clock.now() == T0 + timedelta(seconds=60)


async def test_cancelled_sleeper_is_not_a_deadline():
    clock = FakeClock(T0)
    task = asyncio.create_task(clock.sleep(10))
    await asyncio.sleep(0)
    assert clock.next_deadline() == T0 + timedelta(seconds=10)
    task.cancel()
    await asyncio.sleep(0)
    assert clock.next_deadline() is None


async def test_autojump_runs_a_day_of_hourly_sleeps_instantly():
    clock = FakeClock(T0, autojump=True)
    seen = []
    for _ in range(24):
        await clock.sleep(3600)
        seen.append(clock.now())
    assert seen[-1] == T0 + timedelta(days=1)
    assert seen == [T0 + timedelta(hours=h + 1) for h in range(24)]


async def test_autojump_waits_for_a_registered_idle_check():
    clock = FakeClock(T0, autojump=True)
    busy = True
    clock.add_idle_check(lambda: not busy)
    sleeper = asyncio.create_task(clock.sleep(5))
    for _ in range(5):
        await asyncio.sleep(0.002)
    assert clock.now() == T0 and not sleeper.done()
    busy = False
    await asyncio.wait_for(sleeper, 2)
    assert clock.now() == T0 + timedelta(seconds=5)


async def test_run_until_visits_every_deadline_in_order_and_stops_at_the_target():
    clock = FakeClock(T0)
    ticks = []

    async def ticker():
        while True:
            await clock.sleep(60)
            ticks.append(clock.now())

    task = asyncio.create_task(ticker())
    steps = await clock.run_until(T0 + timedelta(minutes=10, seconds=30))
    assert steps == 10
    assert ticks == [T0 + timedelta(minutes=m + 1) for m in range(10)]
    assert clock.now() == T0 + timedelta(minutes=10, seconds=30)
    task.cancel()


async def test_run_until_does_not_move_time_while_an_http_answer_is_in_flight():
    """The server answers only after 20 ms of real time; a heuristic jump would move time before the answer."""
    clock = FakeClock(T0)
    in_flight = 0
    answered_at = []

    async def handle(reader, writer):
        await reader.readline()
        await asyncio.sleep(0.02)
        writer.write(b"pong\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    async def client():
        nonlocal in_flight
        await clock.sleep(30)
        in_flight += 1
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"ping\n")
        await reader.readline()
        answered_at.append(clock.now())
        in_flight -= 1
        writer.close()
        await clock.sleep(30)

    task = asyncio.create_task(client())
    await clock.run_until(T0 + timedelta(minutes=5), idle=lambda: in_flight == 0)
    assert answered_at == [T0 + timedelta(seconds=30)]
    await task
    server.close()
    await server.wait_closed()


async def test_settle_raises_when_a_component_stays_busy():
    clock = FakeClock(T0)
    with pytest.raises(TimeoutError, match="still busy"):
        await clock.settle(idle=lambda: False, timeout=0.05)


async def test_system_clock_is_utc_and_monotonic():
    clock = SystemClock()
    assert clock.now().tzinfo is timezone.utc
    first = clock.monotonic()
    await clock.sleep(0)
    assert clock.monotonic() >= first
