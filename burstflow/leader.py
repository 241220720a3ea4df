"""Lease-based leader election over coordination.k8s.io/v1 with client-go's semantics, so exactly one replica of a service does the work that must not be done twice.

The record lives in a Lease's spec (`holderIdentity`, `leaseDurationSeconds`, `acquireTime`, `renewTime`,
`leaseTransitions`) and every write is a resourceVersion-guarded PUT, so two candidates racing for it get one
success and one 409 Conflict. Like client-go, a candidate judges expiry by *its own* clock: a lease is free when
its record has not changed for `lease_duration` since this candidate last saw it change (the holder's
`renewTime` is never compared with our clock, so clock skew between machines cannot cause two leaders).
Safety comes from `renew_deadline < lease_duration`: a leader that cannot renew stops calling itself leader
`renew_deadline` after its last successful renewal, before any other candidate may take the lease.
"""
from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from burstflow.aio import cancel_and_wait
from burstflow.clock import Clock, SystemClock
from burstflow.kube import LEASES, AlreadyExists, Conflict, Kube, KubeError, NotFound
from burstflow.logs import fields
from burstflow.settings import Settings, SettingsError, setting
from burstflow.timefmt import format_time

log = logging.getLogger(__name__)

Callback = Callable[[], Awaitable[Any]]


def check_lease_durations(*, lease_duration: tuple[str, float], renew_deadline: tuple[str, float],
                          retry_period: tuple[str, float]) -> None:
    """Raise ValueError unless each duration is a whole number of seconds >= 1 and
    lease_duration > renew_deadline > retry_period. Each argument is (how to name it in the message, value), so a
    service can name its flag or variable: the message gives that name, the value and the rule it breaks.

    Whole seconds because a Lease stores `leaseDurationSeconds` as an integer >= 1 (the API server answers 422 to
    0), and a fractional duration would be written shorter than the one the elector times itself by, breaking
    `renew_deadline < the duration others wait`.
    """
    for name, value in (lease_duration, renew_deadline, retry_period):
        whole = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                 and value == int(value))
        if not whole or value < 1:
            raise ValueError(f"{name} {_show(value)}: must be a whole number of seconds >= 1 (a Lease stores "
                             "leaseDurationSeconds in whole seconds)")
    rule = f"the rule is {lease_duration[0]} > {renew_deadline[0]} > {retry_period[0]}"
    if not lease_duration[1] > renew_deadline[1]:
        raise ValueError(f"{renew_deadline[0]} {_show(renew_deadline[1])}: must be less than {lease_duration[0]} "
                         f"{_show(lease_duration[1])} ({rule}: a leader that cannot renew stops before another may "
                         "take over)")
    if not renew_deadline[1] > retry_period[1]:
        raise ValueError(f"{retry_period[0]} {_show(retry_period[1])}: must be less than {renew_deadline[0]} "
                         f"{_show(renew_deadline[1])} ({rule}: a leader gets at least one retry before it stops)")


def _show(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else repr(value)


@dataclass(frozen=True)
class LeaseSettings(Settings):
    """The settings every service that campaigns for a Lease declares the same way (a service's settings
    dataclass derives from this one): who this replica is, where its Lease lives, and client-go's durations."""

    identity: str = setting("", pod="name", reason=(
        "unique per replica: empty takes POD_NAME (downward API), else the host name, which in a pod is the pod "
        "name"), help="this replica's name in the Lease (default: $POD_NAME, else the host name)")
    lease_namespace: str = setting("", pod="namespace", reason=(
        "the Lease lives next to the pod: empty takes POD_NAMESPACE, else the service account's namespace, "
        "else default"), help="namespace of the Lease (default: $POD_NAMESPACE, else the service account's namespace)")
    lease_duration_seconds: float = setting(15.0, reason=(
        "client-go's default (kube-controller-manager's too): how long the other replicas wait for a silent leader "
        "before taking over; whole seconds, as the Lease stores it"),
        help="whole seconds others wait for a silent leader")
    renew_deadline_seconds: float = setting(10.0, reason=(
        "client-go's default: a leader that cannot renew for this long stops; below the lease duration so it "
        "stops before anyone else may start"), help="whole seconds a leader retries a failed renewal before it stops")
    retry_period_seconds: float = setting(2.0, reason="client-go's default: the pause between Lease attempts",
                                          help="whole seconds between Lease attempts")

    def validate(self) -> None:
        """Raise `SettingsError` unless the durations follow client-go's rules (`check_lease_durations`)."""
        try:
            check_lease_durations(
                lease_duration=(self.source("lease_duration_seconds"), self.lease_duration_seconds),
                renew_deadline=(self.source("renew_deadline_seconds"), self.renew_deadline_seconds),
                retry_period=(self.source("retry_period_seconds"), self.retry_period_seconds))
        except ValueError as error:
            raise SettingsError(str(error)) from None


def _micro_time(when: datetime) -> str:
    """A Lease's MicroTime (`renewTime`, `acquireTime`): RFC 3339 in UTC, always six fraction digits."""
    return format_time(when, timespec="microseconds")


class LeaderElector:
    """One candidate for the Lease `namespace/name`, identified by `identity` (unique per replica: the pod name).

    Durations (seconds) default to client-go's: `lease_duration` 15 (how long others wait for a silent leader),
    `renew_deadline` 10 (how long a leader keeps retrying a failed renewal before it steps down),
    `retry_period` 2 (pause between attempts). Candidates retry acquisition after
    `retry_period * (1 + jitter * random())` so replicas started together do not hammer the server in step.
    Requires whole seconds >= 1 with lease_duration > renew_deadline > retry_period (`check_lease_durations`);
    raises ValueError otherwise. The Lease records exactly `lease_duration`.

    `on_change(is_leader)` is called on every transition (wire a gauge to it). `is_leader` is true only while
    this candidate holds the lease AND its last successful renewal is less than `renew_deadline` old, even if the
    renewing task is stuck in a slow request. `last_seen_renewal` tells a new leader when its predecessor was last
    seen alive; `in_flight` counts Lease requests under way (tests on a fake clock wait for it to reach 0).
    """

    def __init__(self, kube: Kube, *, name: str, namespace: str, identity: str, clock: Clock | None = None,
                 lease_duration: float = 15.0, renew_deadline: float = 10.0, retry_period: float = 2.0,
                 jitter: float = 1.2, on_change: Callable[[bool], None] | None = None,
                 rng: random.Random | None = None) -> None:
        if not identity:
            raise ValueError("leader election needs a non-empty identity")
        check_lease_durations(lease_duration=("lease_duration", lease_duration),
                              renew_deadline=("renew_deadline", renew_deadline),
                              retry_period=("retry_period", retry_period))
        if jitter < 0:
            raise ValueError(f"jitter must be >= 0, got {jitter}")
        self.kube = kube
        self.name = name
        self.namespace = namespace
        self.identity = identity
        self.clock: Clock = clock or kube.clock or SystemClock()
        self.lease_duration = int(lease_duration)
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.jitter = jitter
        self.on_change = on_change
        self._rng = rng or random.Random()
        self._leading = False
        self._renewed_at: datetime | None = None
        self._observed: dict | None = None
        self._observed_rv: str | None = None
        self._observed_at: datetime | None = None
        self._other_seen_at: datetime | None = None
        self._leader_event = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._release_on_stop = True
        self.attempts = 0
        self.transitions = 0
        self.in_flight = 0

    # ------------------------------------------------------------------------------------------------ state

    @property
    def _context(self) -> dict[str, Any]:
        """The `extra=` of this elector's log lines: the Lease, and who is asking."""
        return fields(namespace=self.namespace, name=self.name, kind="Lease", identity=self.identity)

    @property
    def is_leader(self) -> bool:
        return (self._leading and self._renewed_at is not None
                and self.clock.now() < self._renewed_at + timedelta(seconds=self.renew_deadline))

    @property
    def observed_holder(self) -> str | None:
        """The holder in the last Lease record this candidate read or wrote ("" when released)."""
        return None if self._observed is None else (self._observed.get("spec") or {}).get("holderIdentity", "")

    @property
    def last_seen_renewal(self) -> datetime | None:
        """When (on this candidate's clock) it last saw the Lease record change to one naming another holder, or
        none: another candidate's renewal, acquisition or release. That holder was alive then (a release is its
        last act as leader). None until it has seen one. Records written by this candidate, and records naming
        this candidate's identity, never count.
        """
        return self._other_seen_at

    async def wait_until_leader(self) -> None:
        await self._leader_event.wait()

    def _set_leading(self, leading: bool) -> None:
        if leading == self._leading:
            return
        self._leading = leading
        if leading:
            self._leader_event.set()
            self.transitions += 1
            log.info("%s: became leader of lease %s/%s", self.identity, self.namespace, self.name, extra=self._context)
        else:
            self._leader_event.clear()
            log.info("%s: no longer leader of lease %s/%s", self.identity, self.namespace, self.name,
                     extra=self._context)
        if self.on_change is not None:
            try:
                self.on_change(leading)
            except Exception:  # noqa: BLE001 - a metrics callback must not break the election
                log.exception("leader on_change callback failed")

    # ------------------------------------------------------------------------------------------------ running

    def start(self, on_start: Callback | None = None, on_stop: Callback | None = None) -> asyncio.Task[None]:
        """Run the election in a background task (see `run`); returns it."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self.run(on_start, on_stop),
                                                                name=f"leader-{self.name}-{self.identity}")
        return self._task

    async def stop(self, *, release: bool = True) -> None:
        """Stop competing. A leader first stops its work (cancels `on_start`, awaits `on_stop`), then, with
        `release`, clears the Lease's holder so another candidate takes over at its next attempt instead of
        waiting for the lease to expire. `release=False` behaves like a crashed process.
        """
        self._release_on_stop = release
        await cancel_and_wait(self._task)

    async def __aenter__(self) -> LeaderElector:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def run(self, on_start: Callback | None = None, on_stop: Callback | None = None) -> None:
        """Campaign until cancelled: acquire the lease, run `on_start()` as a task while leading (it is
        cancelled when leadership is lost), await `on_stop()` after losing it, then campaign again.
        """
        try:
            while True:
                await self._acquire()
                self._set_leading(True)
                work = asyncio.get_running_loop().create_task(self._guard(on_start)) if on_start else None
                try:
                    await self._renew_until_lost()
                finally:
                    self._set_leading(False)
                    if work is not None:
                        work.cancel()
                        await asyncio.gather(work, return_exceptions=True)
                    if on_stop is not None:
                        await self._guard(on_stop)
        except asyncio.CancelledError:
            if self._release_on_stop:
                await self._release()
            raise

    async def _guard(self, callback: Callback) -> None:
        try:
            await callback()
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the election outlives a failing leader callback
            log.exception("%s: leader callback %r failed", self.identity, callback)

    async def _acquire(self) -> None:
        while not await self.try_acquire_or_renew():
            await self.clock.sleep(self.retry_period * (1 + self.jitter * self._rng.random()))

    async def _renew_until_lost(self) -> None:
        while True:
            await self.clock.sleep(self.retry_period)
            while True:
                if await self.try_acquire_or_renew():
                    break
                if self.observed_holder not in ("", self.identity):
                    log.warning("%s: lease %s/%s is now held by %s; stepping down", self.identity,
                                self.namespace, self.name, self.observed_holder, extra=self._context)
                    return
                assert self._renewed_at is not None
                if self.clock.now() >= self._renewed_at + timedelta(seconds=self.renew_deadline):
                    log.warning("%s: could not renew lease %s/%s within %ss; stepping down", self.identity,
                                self.namespace, self.name, self.renew_deadline, extra=self._context)
                    return
                await self.clock.sleep(self.retry_period)

    # ------------------------------------------------------------------------------------------------ one attempt

    async def try_acquire_or_renew(self) -> bool:
        """One attempt, as client-go's tryAcquireOrRenew: create the Lease if missing; take it if it is free
        (no holder, or unchanged for its leaseDurationSeconds as seen by us); renew it if we hold it. Returns
        whether we hold it now. Never raises a KubeError: failures count as "not now" and are logged.
        """
        self.attempts += 1
        self.in_flight += 1
        try:
            return await self._attempt(self.clock.now())
        finally:
            self.in_flight -= 1

    async def _attempt(self, now: datetime) -> bool:
        try:
            try:
                lease = await self.kube.get(LEASES, self.name, namespace=self.namespace)
            except NotFound:
                created = await self.kube.create(LEASES, self._new_lease(now), namespace=self.namespace)
                self._observe(created, now, written=True)
                self._renewed_at = now
                return True
            self._observe(lease, now)
            spec = lease.get("spec") or {}
            holder = spec.get("holderIdentity") or ""
            if holder and holder != self.identity and not self._expired(lease, now):
                return False
            record = dict(spec)
            record.update(holderIdentity=self.identity, leaseDurationSeconds=self.lease_duration,
                          renewTime=_micro_time(now))
            if holder != self.identity:
                record["acquireTime"] = _micro_time(now)
                record["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
            body = dict(lease, spec=record)
            updated = await self.kube.replace(LEASES, body, namespace=self.namespace)
            self._observe(updated, now, written=True)
            self._renewed_at = now
            return True
        except (Conflict, AlreadyExists):
            await self._reread(now)
            return False
        except KubeError as exc:
            log.warning("%s: lease %s/%s attempt failed: %s", self.identity, self.namespace, self.name, exc,
                        extra=self._context)
            return False

    def _expired(self, lease: dict, now: datetime) -> bool:
        duration = float((lease.get("spec") or {}).get("leaseDurationSeconds") or self.lease_duration)
        assert self._observed_at is not None
        return now >= self._observed_at + timedelta(seconds=duration)

    def _observe(self, lease: dict, now: datetime, *, written: bool = False) -> None:
        """Record a Lease as read (`written=False`) or as returned by this candidate's own write."""
        rv = (lease.get("metadata") or {}).get("resourceVersion")
        if rv != self._observed_rv:
            self._observed_rv = rv
            self._observed_at = now
            if not written and (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                self._other_seen_at = now
        self._observed = lease

    async def _reread(self, now: datetime) -> None:
        try:
            self._observe(await self.kube.get(LEASES, self.name, namespace=self.namespace), now)
        except KubeError as exc:
            log.debug("%s: re-reading lease after conflict failed: %s", self.identity, exc, extra=self._context)

    def _new_lease(self, now: datetime) -> dict:
        stamp = _micro_time(now)
        return {"apiVersion": LEASES.api_version, "kind": LEASES.kind,
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": self.lease_duration,
                         "acquireTime": stamp, "renewTime": stamp, "leaseTransitions": 0}}

    async def _release(self) -> None:
        """Clear the holder (client-go's ReleaseOnCancel) if the last record we saw is ours; best effort."""
        if self._observed is None or self.observed_holder != self.identity:
            return
        now = self.clock.now()
        spec = dict(self._observed.get("spec") or {})
        spec.update(holderIdentity="", leaseDurationSeconds=1, renewTime=_micro_time(now),
                    acquireTime=_micro_time(now))
        try:
            released = await self.kube.replace(LEASES, dict(self._observed, spec=spec), namespace=self.namespace)
            self._observe(released, now, written=True)
            log.info("%s: released lease %s/%s", self.identity, self.namespace, self.name, extra=self._context)
        except KubeError as exc:
            log.warning("%s: could not release lease %s/%s: %s", self.identity, self.namespace, self.name, exc,
                        extra=self._context)
