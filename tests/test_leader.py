"""Tests of Lease leader election (burstflow.leader) against the local ApiSim or a real cluster, in fake time."""
from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from burstflow.clock import FakeClock
from burstflow.kube import LEASES, Kube
from burstflow.leader import LeaderElector
from tests.conftest import load_api

pytestmark = pytest.mark.kube

T0 = datetime(2026, 11, 23, tzinfo=timezone.utc)


class SteppedClock(FakeClock):
    """A FakeClock that knows who is parked in `sleep`, so a test can advance time only once every elector has
    finished its HTTP round trips and is waiting for the clock again."""

    def __init__(self, start: datetime) -> None:
        super().__init__(start)
        self.parked: dict[int, datetime] = {}
        self._tokens = 0

    async def sleep(self, seconds: float) -> None:
        self._tokens += 1
        token = self._tokens
        self.parked[token] = self.now() + timedelta(seconds=max(0.0, seconds))
        try:
            await super().sleep(seconds)
        finally:
            del self.parked[token]

    async def settle(self, sleepers: int, timeout: float = 5.0) -> None:
        """Wait (on real I/O, not on time) until `sleepers` tasks are parked with deadlines still ahead."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not (len(self.parked) == sleepers and all(d > self.now() for d in self.parked.values())):
            if loop.time() > deadline:
                raise AssertionError(f"{len(self.parked)} sleepers parked, expected {sleepers}")
            await asyncio.sleep(0.002)


def elector(kube, clock, identity: str, namespace: str, **kwargs) -> LeaderElector:
    return LeaderElector(kube, name="burstflow-test", namespace=namespace, identity=identity, clock=clock,
                         jitter=0.0, **kwargs)


async def lease(kube, namespace: str) -> dict:
    return await kube.get(LEASES, "burstflow-test", namespace=namespace)


def test_durations_must_leave_room_for_safety(kube):
    with pytest.raises(ValueError, match="lease_duration > renew_deadline > retry_period"):
        LeaderElector(kube, name="l", namespace="n", identity="a", renew_deadline=15.0)
    with pytest.raises(ValueError, match="identity"):
        LeaderElector(kube, name="l", namespace="n", identity="")


@pytest.mark.parametrize("durations, message", [
    ({"lease_duration": 0.6, "renew_deadline": 0.4, "retry_period": 0.05},
     "lease_duration 0.6: must be a whole number of seconds >= 1 (a Lease stores leaseDurationSeconds in whole "
     "seconds)"),
    ({"lease_duration": 1.5, "renew_deadline": 1, "retry_period": 0.5}, "lease_duration 1.5: must be a whole"),
    ({"lease_duration": 0, "renew_deadline": 0, "retry_period": 0}, "lease_duration 0: must be a whole"),
    ({"lease_duration": 15, "renew_deadline": 10, "retry_period": 0.5}, "retry_period 0.5: must be a whole"),
    ({"lease_duration": 15, "renew_deadline": float("nan"), "retry_period": 2}, "renew_deadline nan: must be"),
    ({"lease_duration": 3, "renew_deadline": 3, "retry_period": 1},
     "renew_deadline 3: must be less than lease_duration 3 (the rule is lease_duration > renew_deadline > "
     "retry_period: a leader that cannot renew stops before another may take over)"),
    ({"lease_duration": 3, "renew_deadline": 2, "retry_period": 2}, "retry_period 2: must be less than "
     "renew_deadline 2"),
], ids=["sub-second (written as 0)", "fractional (written shorter)", "zero", "sub-second retry", "not a number",
        "renew deadline equals the lease", "retry equals the renew deadline"])
def test_durations_are_whole_seconds_as_a_lease_stores_them(kube, durations, message):
    with pytest.raises(ValueError) as info:
        LeaderElector(kube, name="l", namespace="n", identity="a", **durations)
    assert str(info.value).startswith(message)


@pytest.mark.parametrize("environ, message", [
    ({"BURSTFLOW_CRON_LEASE_DURATION_SECONDS": "0.6", "BURSTFLOW_CRON_RENEW_DEADLINE_SECONDS": "0.4",
      "BURSTFLOW_CRON_RETRY_PERIOD_SECONDS": "0.05"},
     "--lease-duration/BURSTFLOW_CRON_LEASE_DURATION_SECONDS 0.6: must be a whole number of seconds >= 1"),
    ({"BURSTFLOW_CRON_LEASE_DURATION_SECONDS": "10"},
     "--renew-deadline/BURSTFLOW_CRON_RENEW_DEADLINE_SECONDS 10: must be less than "
     "--lease-duration/BURSTFLOW_CRON_LEASE_DURATION_SECONDS 10"),
], ids=["sub-second", "renew deadline not below the lease"])
def test_cron_settings_refuse_durations_a_lease_cannot_hold_at_start_up(environ, message):
    from burstflow.cron.settings import CronSettings, SettingsError

    with pytest.raises(SettingsError) as info:
        CronSettings.from_env(environ)
    assert str(info.value).startswith(message)


async def test_first_candidate_creates_the_lease_record_as_client_go_does(kube, namespace):
    clock = FakeClock(T0)
    a = elector(kube, clock, "cron-0", namespace)
    assert await a.try_acquire_or_renew()
    record = await lease(kube, namespace)
    captured = load_api("lease-create-201.json")["body"]
    assert set(record["spec"]) == set(captured["spec"])
    assert record["spec"] == {"holderIdentity": "cron-0", "leaseDurationSeconds": 15,
                              "acquireTime": "2026-11-23T00:00:00.000000Z",
                              "renewTime": "2026-11-23T00:00:00.000000Z", "leaseTransitions": 0}

    clock.advance(10)
    assert await a.try_acquire_or_renew()
    renewed = (await lease(kube, namespace))["spec"]
    captured_update = load_api("lease-update-200.json")["body"]["spec"]
    assert renewed == dict(captured_update, holderIdentity="cron-0")  # same record the capture shows after 10 s


async def test_a_candidate_waits_a_full_lease_duration_from_when_it_saw_the_record_change(kube, namespace):
    clock = FakeClock(T0)
    a, b = elector(kube, clock, "a", namespace), elector(kube, clock, "b", namespace)
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()  # b first sees the record now
    clock.advance(14.9)
    assert not await b.try_acquire_or_renew()
    clock.advance(0.1)
    assert await b.try_acquire_or_renew()
    spec = (await lease(kube, namespace))["spec"]
    assert (spec["holderIdentity"], spec["leaseTransitions"], spec["acquireTime"]) == (
        "b", 1, "2026-11-23T00:00:15.000000Z")
    assert not await a.try_acquire_or_renew()  # a's record is gone: it must wait like anyone else


async def test_renewals_push_the_expiry_for_others(kube, namespace):
    clock = FakeClock(T0)
    a, b = elector(kube, clock, "a", namespace), elector(kube, clock, "b", namespace)
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    for _ in range(5):
        clock.advance(10)
        assert await a.try_acquire_or_renew()
        assert not await b.try_acquire_or_renew()
    spec = (await lease(kube, namespace))["spec"]
    assert (spec["holderIdentity"], spec["acquireTime"], spec["leaseTransitions"]) == (
        "a", "2026-11-23T00:00:00.000000Z", 0)


async def test_last_seen_renewal_is_when_another_holder_was_last_seen_alive(kube, namespace):
    clock = FakeClock(T0)
    a, b = elector(kube, clock, "a", namespace), elector(kube, clock, "b", namespace)
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    assert b.last_seen_renewal == T0 and a.last_seen_renewal is None  # a only ever saw its own records
    clock.advance(10)
    assert await a.try_acquire_or_renew()
    clock.advance(1)
    assert not await b.try_acquire_or_renew()
    assert b.last_seen_renewal == T0 + timedelta(seconds=11)  # b saw a's renewal when it next looked
    clock.advance(1)
    assert not await b.try_acquire_or_renew()
    assert b.last_seen_renewal == T0 + timedelta(seconds=11)  # unchanged record: no sign of life
    a.start()
    await asyncio.wait_for(a.wait_until_leader(), 5)
    await a.stop()  # releases the lease
    assert (await lease(kube, namespace))["spec"]["holderIdentity"] == ""
    clock.advance(1)
    assert await b.try_acquire_or_renew()  # released: free at once
    assert b.last_seen_renewal == T0 + timedelta(seconds=13)  # the release is a's last sign of life
    clock.advance(2)
    assert await b.try_acquire_or_renew()
    assert b.last_seen_renewal == T0 + timedelta(seconds=13)  # b's own writes never count
    assert a.last_seen_renewal is None  # nor did a's release count for a


class GatedKube(Kube):
    """The gateway, with Lease reads held until the test opens the gate."""

    gate: asyncio.Event

    async def get(self, *args, **kwargs):
        await self.gate.wait()
        return await super().get(*args, **kwargs)


async def test_in_flight_counts_lease_requests_under_way(kubeconfig, namespace):
    gated = await GatedKube.connect(kubeconfig)
    gated.gate = asyncio.Event()
    try:
        a = elector(gated, FakeClock(T0), "a", namespace)
        attempt = asyncio.create_task(a.try_acquire_or_renew())
        await asyncio.sleep(0)
        assert a.in_flight == 1
        gated.gate.set()
        assert await attempt
        assert a.in_flight == 0
    finally:
        await gated.close()


async def test_candidates_racing_for_a_free_lease_get_exactly_one_winner(kube, namespace):
    clock = FakeClock(T0)
    candidates = [elector(kube, clock, f"c{i}", namespace) for i in range(4)]
    assert await candidates[0].try_acquire_or_renew()
    for c in candidates[1:]:
        assert not await c.try_acquire_or_renew()
    clock.advance(15)
    results = await asyncio.gather(*(c.try_acquire_or_renew() for c in candidates[1:]))
    assert sum(results) == 1
    winner = candidates[1 + results.index(True)]
    assert (await lease(kube, namespace))["spec"]["holderIdentity"] == winner.identity
    assert all(c.observed_holder == winner.identity for c in candidates[1:])  # losers re-read after the 409


async def test_a_409_on_renewal_is_not_an_error(sim, kube, namespace):
    clock = FakeClock(T0)
    a = elector(kube, clock, "a", namespace)
    assert await a.try_acquire_or_renew()
    sim.faults.add(method="PUT", path=r"/leases/burstflow-test$", status=409, times=1)
    assert not await a.try_acquire_or_renew()
    assert await a.try_acquire_or_renew()


async def run_in_steps(clock: SteppedClock, electors: list[LeaderElector], *, seconds: float, step: float = 1.0,
                       running: int | None = None) -> list[tuple[float, tuple[str, ...]]]:
    """Advance fake time in `step`s; after each, record who claims to lead. Never two at once."""
    timeline = []
    for i in range(int(seconds / step)):
        clock.advance(step)
        await clock.settle(running if running is not None else len(electors))
        leaders = tuple(e.identity for e in electors if e.is_leader)
        assert len(leaders) <= 1, f"two leaders at t+{(i + 1) * step}s: {leaders}"
        timeline.append(((i + 1) * step, leaders))
    return timeline


def first_time(timeline, leaders: tuple[str, ...]) -> float:
    return next(t for t, who in timeline if who == leaders)


async def test_one_leads_and_the_other_takes_over_after_a_crash(kube, namespace):
    clock = SteppedClock(T0)
    changes: list[tuple[str, bool]] = []
    a = elector(kube, clock, "a", namespace, on_change=lambda v: changes.append(("a", v)))
    b = elector(kube, clock, "b", namespace, on_change=lambda v: changes.append(("b", v)))
    a.start()
    await asyncio.wait_for(a.wait_until_leader(), 5)
    b.start()
    await clock.settle(2)
    timeline = await run_in_steps(clock, [a, b], seconds=30)
    assert {who for _, who in timeline} == {("a",)}

    await a.stop(release=False)  # a crashes: the lease still names it
    crash = clock.now()
    timeline = await run_in_steps(clock, [a, b], seconds=30, running=1)
    takeover = first_time(timeline, ("b",))
    assert 15 <= takeover <= 15 + 2 + 1, timeline  # lease duration after b last saw a renew, plus one retry
    assert (await lease(kube, namespace))["spec"]["leaseTransitions"] == 1
    assert changes == [("a", True), ("a", False), ("b", True)]
    assert clock.now() > crash
    await b.stop()


async def test_release_on_stop_hands_over_at_the_next_retry(kube, namespace):
    clock = SteppedClock(T0)
    stopped: list[str] = []
    a, b = elector(kube, clock, "a", namespace), elector(kube, clock, "b", namespace)

    async def stop_a() -> None:
        stopped.append("a")

    a.start(on_stop=stop_a)
    await asyncio.wait_for(a.wait_until_leader(), 5)
    b.start()
    await clock.settle(2)
    await a.stop()
    assert stopped == ["a"] and not a.is_leader
    assert (await lease(kube, namespace))["spec"]["holderIdentity"] == ""
    timeline = await run_in_steps(clock, [a, b], seconds=4, running=1)
    assert first_time(timeline, ("b",)) <= b.retry_period
    spec = (await lease(kube, namespace))["spec"]
    assert (spec["holderIdentity"], spec["leaseTransitions"]) == ("b", 1)
    await b.stop()


async def test_a_leader_that_cannot_renew_steps_down_before_anyone_else_may_lead(sim, kube, namespace):
    clock = SteppedClock(T0)
    work_cancelled = asyncio.Event()

    async def work() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            work_cancelled.set()
            raise

    a, b = elector(kube, clock, "a", namespace), elector(kube, clock, "b", namespace)
    a.start(on_start=work)
    await asyncio.wait_for(a.wait_until_leader(), 5)
    b.start()
    await clock.settle(2)
    fault = sim.faults.add(method="PUT", path=r"/leases/burstflow-test$", status=503)
    timeline = await run_in_steps(clock, [a, b], seconds=12)
    lost = next(t for t, who in timeline if who == ())
    assert lost == pytest.approx(a.renew_deadline, abs=1.0), timeline
    assert work_cancelled.is_set() and a.transitions == 1
    sim.faults.rules.remove(fault)
    timeline = await run_in_steps(clock, [a, b], seconds=10)
    assert {who for _, who in timeline} - {()} in ({("a",)}, {("b",)})  # somebody leads again, one at a time
    await asyncio.gather(a.stop(), b.stop())
