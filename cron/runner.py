"""The cron service's IO shell: watches CronWorkflows and their Workflows, wakes each CronWorkflow when it is next due,
asks the pure engine what to do, and performs it (create / adopt / terminate / delete, guarded status writes, Events).

Shape (Kubernetes CronJob v2 with Argo's semantics):
- two Reflectors keep caches of `burstflow.io` CronWorkflows and of `argoproj.io` Workflows labelled
  `workflows.argoproj.io/cron-workflow`; every change enqueues the owning CronWorkflow's key;
- one heap of next wake-ups (one live entry per CronWorkflow, stale entries skipped) and one timer task sleeping on
  the injected Clock until the earliest; nothing polls per CronWorkflow;
- a work queue with N workers that never hands the same key to two workers (one decision at a time per
  CronWorkflow); a key enqueued while it is being decided is decided again afterwards;
- a decision that created a Workflow leaves its CronWorkflow status write to N status writers, which wait while
  decisions are queued (one of them lets a write through per N decisions), so a burst of due runs gets all its
  creates out first: the scheduling lag is create time - scheduled time;
- a run due at T is *prepared* `prepare_ahead_seconds` before T (decision and Workflow body computed with now = T) by
  one preparer task; at T the worker only validates it (same CronWorkflow resourceVersion, same children, same
  term, T <= now < next wake-up) and creates, so a burst's CPU at the due instant is the creates' alone. A stale
  one is dropped and the run decided as usual. Only plain on-time runs are prepared (no `when`/stop expressions,
  which see `now`; nothing to terminate, adopt, skip or warn about), for which `engine.plan` gives the same plan
  at every instant of [T, next wake-up);
- only the Lease holder decides; standbys keep their caches warm and take over with `observed_since` set to the
  previous holder's last renewal, so ticks inside a failover are on-time runs, not deadline-bound catch-ups;
- nothing decided is kept in memory: what was decided lives in the CronWorkflow's status (`lastDecidedTime`,
  `blockedScheduledTime`, see cron/engine.py), so a restarted or new leader decides exactly as the old one would;
- `when` and stop expressions on the pure-Python CEL engine are evaluated in a worker thread, so an expensive one
  (up to the CEL iteration budget) does not hold up the other CronWorkflows' decisions.

Exactly once: the Workflow name `<cron>-<unix seconds>` is the lock. A 409 AlreadyExists on create is adopted into
`status.active`/`lastScheduledTime` (Argo bug 14719 forgets it). Status is written through the status subresource
with the resourceVersion the decision was based on; a 409 Conflict re-reads the object and decides again, so a
stale status never overwrites a newer one.
"""
from __future__ import annotations

import asyncio
import collections
import gc
import hashlib
import heapq
import itertools
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson

from burstflow.cel import PYTHON as PYTHON_CEL
from burstflow.clock import Clock
from burstflow.kube import (
    CRON_WORKFLOWS,
    WORKFLOWS,
    AlreadyExists,
    Conflict,
    Kube,
    KubeError,
    NotFound,
    Reflector,
    TooManyRequests,
    Unavailable,
    WatchEvent,
    encode_json,
    object_key,
)
from burstflow.logs import fields
from burstflow.timefmt import format_time, parse_time

from burstflow.cron import engine, shards
from burstflow.cron.engine import Child, CronStatus, Plan
from burstflow.cron.gates import StatusWriteGates
from burstflow.cron.leader import CronLeaderElector
from burstflow.cron.metrics import CronMetrics
from burstflow.cron.settings import CronSettings
from burstflow.cron.spec import ParseResult, parse_cron_workflow
from burstflow.cron.workflow import CRON_LABEL, SCHEDULED_TIME_ANNOTATION, build_workflow, scheduled_time_text

log = logging.getLogger("burstflow.cron")

COMPONENT = "burstflow-cron"
# List page size of both watches: 100,000 CronWorkflows are 20 round trips, not 200, and one page of full objects
# (the most the service holds undecoded at once) stays around 20 MiB.
LIST_PAGE_SIZE = 5_000
# Allocations between young-generation collections while `run` runs (CPython's default is 700). A burst of 10,000 runs
# allocates millions of short-lived objects, nearly all freed by reference counting: at 700 the collector ran about
# 270 times in one (0.3-0.4 s of a 4-6 s burst), at 20,000 about 10 times (0.06-0.09 s), peak memory unchanged.
GC_YOUNG_THRESHOLD = 20_000
Key = tuple[str, str]  # (namespace, CronWorkflow name)


class _YoungGcThreshold:
    """Raises the collector's young-generation threshold to `GC_YOUNG_THRESHOLD` while at least one runner runs in
    the process (the setting is the process's), and puts back what was there when the last one stops."""

    def __init__(self) -> None:
        self.users = 0
        self.saved: tuple[int, ...] | None = None

    def enter(self) -> None:
        if self.users == 0:
            self.saved = gc.get_threshold()
            gc.set_threshold(max(GC_YOUNG_THRESHOLD, self.saved[0]), *self.saved[1:])
        self.users += 1

    def exit(self) -> None:
        self.users -= 1
        if self.users == 0 and self.saved is not None:
            gc.set_threshold(*self.saved)


_young_gc_threshold = _YoungGcThreshold()


def _rv_int(obj: Mapping[str, Any] | None) -> int | None:
    try:
        return int(((obj or {}).get("metadata") or {}).get("resourceVersion") or "")
    except ValueError:
        return None


def _packed_cron(obj: Mapping[str, Any]) -> dict[str, Any]:
    """What the CronWorkflow cache holds: the identity fields as a small dict (keys, resourceVersions and uids
    are read from it without decoding) and the whole object as compact JSON bytes, decoded once per decision
    (`_unpacked`). A decoded object is five to six times its JSON size in Python; at 100,000 CronWorkflows
    that is the difference between about 160 MiB and 450 MiB of cache. `managedFields` is left out: the
    service never reads it and a real API server keeps it when a write omits it."""
    meta = obj.get("metadata") or {}
    slim_meta = {key: meta[key] for key in ("namespace", "name", "uid", "resourceVersion", "deletionTimestamp")
                 if key in meta}
    if "managedFields" in meta:
        obj = {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}
    # orjson hands back a bytes object with 4 KiB allocated however short the JSON; keep an exact-size copy.
    return {"metadata": slim_meta, "packed": bytes(memoryview(orjson.dumps(obj)))}


def _unpacked(cached: Mapping[str, Any]) -> Mapping[str, Any]:
    packed = cached.get("packed")
    if packed is None:
        return cached
    obj = orjson.loads(packed)
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        # The same values as the cache's own strings: what a decision keeps (the compiled spec's name, namespace and
        # uid) then shares them instead of holding one more copy per CronWorkflow.
        meta.update(cached["metadata"])
    return obj


# What a decision reads of a Workflow (`Child.from_workflow`, the owner check, the cron label); Argo Workflows'
# status carries every node of the run, which the service never needs.
def _slim_workflow(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    slim_meta = {key: meta[key] for key in ("namespace", "name", "uid", "resourceVersion", "creationTimestamp",
                                            "deletionTimestamp", "ownerReferences") if key in meta}
    labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
    if CRON_LABEL in labels:
        slim_meta["labels"] = {CRON_LABEL: labels[CRON_LABEL]}
    if SCHEDULED_TIME_ANNOTATION in annotations:
        slim_meta["annotations"] = {SCHEDULED_TIME_ANNOTATION: annotations[SCHEDULED_TIME_ANNOTATION]}
    status = obj.get("status") or {}
    slim: dict[str, Any] = {"metadata": slim_meta,
                            "status": {key: status[key] for key in ("phase", "finishedAt") if key in status}}
    shutdown = (obj.get("spec") or {}).get("shutdown")
    if shutdown:
        slim["spec"] = {"shutdown": shutdown}
    return slim


def _newer(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The more recent of two versions of one object (by resourceVersion when both are integers, else `b`)."""
    if a is None:
        return b
    if b is None:
        return a
    ra, rb = _rv_int(a), _rv_int(b)
    if ra is not None and rb is not None and ra > rb:
        return a
    return b


@dataclass
class _Outcome:
    """What one decision did, for logs, metrics and the caller's retry logic."""

    conflict: bool = False
    created: bool = False
    next_wakeup: datetime | None = None
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)


@dataclass
class _Decided:
    """A decision whose Workflow writes (terminate, create) are done and whose CronWorkflow writes are not yet:
    `status` (and the labels/annotations it implies) replaces `original`, then the skip is counted and
    `deletions` carried out (see `CronRunner._finish`)."""

    cron: Mapping[str, Any] | None
    original: CronStatus | None  # None: read from `cron` when unpacked (a prepared run's, see `_decide_prepared`)
    status: CronStatus
    outcome: _Outcome
    skip: engine.Skip | None = None
    deletions: list[Child] = field(default_factory=list)
    next_wakeup: datetime | None = None
    # While the decision waits for a status writer: the CronWorkflow decided for as the cache's packed JSON (`cron`
    # is None then), a reference to bytes the cache holds anyway instead of a decoded copy per waiting decision
    # (10,000 runs due at once: about 40 MiB, and as many dicts for the garbage collector to scan).
    packed: bytes | None = None

    def unpack(self) -> Mapping[str, Any]:
        """`cron`, decoded from `packed` if it was packed; `original` read from it if it was left for now."""
        if self.cron is None:
            self.cron, self.packed = orjson.loads(self.packed), None
        if self.original is None:
            self.original = CronStatus.from_object(self.cron)
        return self.cron


@dataclass(slots=True)
class _Prepared:
    """A plain on-time run decided ahead of its due instant `when` (`CronRunner._prepare`): the status to record
    it in and the Workflow to create as JSON bytes. It holds while the CronWorkflow version (`uid`,
    `resource_version`), its children (`children`, see `CronRunner._children_stamp`) and the term
    (`observed_since`) are those it was decided from, and `when <= now < next_wakeup` (the plan is the same at
    every instant of that interval). Kept small: 10,000 of them wait for a busy minute."""

    when: datetime
    next_wakeup: datetime | None
    uid: str | None
    resource_version: str | None
    children: tuple[tuple[str, str | None], ...]
    observed_since: datetime | None
    spec: Any
    status: CronStatus
    name: str  # the Workflow's
    body: bytes
    deletions: tuple[Child, ...]


class CronRunner:
    """Schedules every CronWorkflow the Reflectors see. `await run()` until cancelled.

    Contracts:
    - time is read only from `clock`; one `now` per decision;
    - without `elector` this instance is always the leader (tests, single-replica installs) and treats every
      scheduled time at or after its own start as on-time;
    - `idle()` is True when nothing is queued, being decided, due, or written-but-not-yet-seen on a watch: tests
      step a FakeClock only then (`clock.run_until(t, idle=runner.idle)`).
    """

    def __init__(
        self,
        *,
        kube: Kube,
        clock: Clock,
        settings: CronSettings,
        metrics: CronMetrics,
        elector: CronLeaderElector | None = None,
    ) -> None:
        self.kube = kube
        self.clock = clock
        self.settings = settings
        self.metrics = metrics
        self.elector = elector
        namespace = settings.namespace or None
        # With several shards, only this shard's namespaces are kept (cron/shards.py); None keeps everything.
        keep = shards.key_filter(shards=settings.shards, shard=settings.shard)
        self.crons = Reflector(kube, CRON_WORKFLOWS, namespace=namespace, on_event=self._on_cron_event, clock=clock,
                               transform=_packed_cron, page_size=LIST_PAGE_SIZE, keep=keep)
        self.workflows = Reflector(
            kube, WORKFLOWS, namespace=namespace, label_selector=CRON_LABEL, on_event=self._on_workflow_event,
            clock=clock, transform=_slim_workflow, page_size=LIST_PAGE_SIZE, keep=keep,
        )
        self._children: dict[Key, dict[str, Mapping[str, Any]]] = {}
        self._fresh: dict[Key, Mapping[str, Any]] = {}
        # key -> (digest of uid, spec, labels, annotations; the compiled spec; the resourceVersion it was read at)
        self._parsed: dict[Key, tuple[bytes, ParseResult, str | None]] = {}
        self._reported: dict[Key, set[str]] = {}
        self._spec_errors: set[Key] = set()
        # Wake-ups (time, seq, key), one live entry per CronWorkflow, stale ones skipped: `_heap` holds those more
        # than `_prepare_lead` ahead, `_soon` those within it (handed to the preparer when they entered it).
        self._heap: list[tuple[datetime, int, Key]] = []
        self._soon: list[tuple[datetime, int, Key]] = []
        self._prepare_lead = timedelta(seconds=settings.prepare_ahead_seconds)
        self._wake_at: dict[Key, datetime] = {}
        self._seq = itertools.count()
        self._queue: asyncio.Queue[Key] = asyncio.Queue()
        self._writes: asyncio.Queue[tuple[Key, _Decided]] = asyncio.Queue()
        self._gates = StatusWriteGates(workers=settings.workers, queue_empty=lambda: self._queue.empty())
        self._queued: set[Key] = set()
        self._processing: set[Key] = set()
        self._dirty: set[Key] = set()
        self._pending_echo: dict[tuple[str, str, str], int | None] = {}
        # Workflows whose create is in flight -> whether their ADDED event came first and was held back.
        self._creating: dict[tuple[str, str], bool] = {}
        self._wake = asyncio.Event()
        # Preparation (see the module docstring): the keys whose time to prepare has come, for the preparer task
        # (none with a lead of 0: it is not started); what it prepared.
        self._prep_queue: collections.deque[tuple[Key, datetime]] = collections.deque()
        self._prep_ready = asyncio.Event()
        self._prepared: dict[Key, _Prepared] = {}
        self._leading = False
        self._observed_since: datetime | None = None
        self._term_tasks: list[asyncio.Task[None]] = []
        self._in_flight_terms = 0
        self._froze = False  # `run` has frozen the garbage collector's view of the caches (`_freeze_long_lived`)
        self._freeze_pending = False
        self.decisions = 0

    # ------------------------------------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Watch, then (as leader) schedule until cancelled. Reflectors stop when this returns."""
        self.crons.start()
        self.workflows.start()
        _young_gc_threshold.enter()
        try:
            await asyncio.gather(self.crons.wait_synced(), self.workflows.wait_synced())
            self._freeze_long_lived()
            if self.elector is None:
                await self.start_leading(self.clock.now())
                await asyncio.Event().wait()
            else:
                await self.elector.run(self._lead, self.stop_leading)
        finally:
            await self.stop_leading()
            await self.crons.stop()
            await self.workflows.stop()
            if self._froze:
                gc.unfreeze()
            _young_gc_threshold.exit()

    def _freeze_long_lived(self) -> None:
        """Move every object alive now out of the cyclic garbage collector's sight (`gc.freeze`): the caches and
        compiled specs of 100,000 CronWorkflows are millions of objects that live as long as the service, and each
        full collection walks them all (about 0.5 s each at 100,000, two or three in a burst of 10,000 runs,
        besides every younger collection scanning what points into them). Called once the caches are listed and
        again once the start-up decisions are done; frozen objects are still freed by reference counting when
        dropped (a replaced CronWorkflow's), and `run` unfreezes them when it ends."""
        self._freeze_pending = False
        self._froze = True
        gc.freeze()

    async def _lead(self) -> None:
        await self.start_leading(self.elector.observed_since(self.clock.now()))
        await asyncio.Event().wait()

    async def start_leading(self, observed_since: datetime | None) -> None:
        """Begin a term: decide every known CronWorkflow now, then follow wake-ups and events.

        `observed_since` is when scheduling was last known to be running (this start, or the previous leader's
        last renewal on a failover); due times at or after it are on-time runs.
        """
        if self._leading:
            return
        self._leading = True
        self._freeze_pending = self._froze  # once `run` froze the caches: freeze again after the first decisions
        self._observed_since = observed_since or self.clock.now()
        self.metrics.is_leader.labels(component="cron").set(1)
        log.info("leading", extra=fields(observed_since=format_time(self._observed_since)))
        self._term_tasks = [asyncio.get_running_loop().create_task(self._timer(), name="cron-timer")]
        self._term_tasks += [
            asyncio.get_running_loop().create_task(self._worker(), name=f"cron-worker-{i}")
            for i in range(self.settings.workers)
        ]
        self._term_tasks += [
            asyncio.get_running_loop().create_task(self._status_writer(gated=i > 0), name=f"cron-status-writer-{i}")
            for i in range(self.settings.workers)
        ]
        if self.settings.prepare_ahead_seconds > 0:
            self._term_tasks.append(asyncio.get_running_loop().create_task(self._preparer(), name="cron-preparer"))
        for key in list(self.crons.cache):
            self._enqueue(key)

    async def stop_leading(self) -> None:
        """End a term: stop deciding (a decision in progress is cancelled; its writes are idempotent)."""
        if not self._leading and not self._term_tasks:
            return
        self._leading = False
        self.metrics.is_leader.labels(component="cron").set(0)
        tasks, self._term_tasks = self._term_tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._heap.clear()
        self._soon.clear()
        self._wake_at.clear()
        self._prep_queue.clear()
        self._prepared.clear()
        self._queued.clear()
        self._processing.clear()
        self._dirty.clear()
        self._queue = asyncio.Queue()
        self._writes = asyncio.Queue()
        self._gates.update()
        log.info("stopped leading")

    @property
    def leading(self) -> bool:
        return self._leading

    def idle(self) -> bool:
        """Nothing queued, being decided, due now, or awaiting its own watch echo (see class docstring)."""
        if not (self.crons.has_synced and self.workflows.has_synced):
            return False
        if getattr(self.elector, "in_flight", 0):
            return False
        if self._queued or self._processing or self._dirty or self._pending_echo or self._prep_queue:
            return False
        if self._leading:
            self._drop_stale_wakeups()
            target = self._timer_target()
            if target is not None and target <= self.clock.now():
                return False
        return True

    def debug_state(self) -> dict[str, Any]:
        """Counts behind `idle()`, for diagnosing a runner that never settles."""
        return {"synced": (self.crons.has_synced, self.workflows.has_synced), "queued": len(self._queued),
                "processing": len(self._processing), "status_writes_waiting": self._writes.qsize(),
                "dirty": len(self._dirty),
                "pending_echo": list(self._pending_echo)[:3], "heap_top": self._timer_target(),
                "now": self.clock.now(), "decisions": self.decisions}

    def healthy(self) -> bool:
        """For /healthz: the watches are running (a standby is healthy too)."""
        return all(
            r._task is not None and not r._task.done() for r in (self.crons, self.workflows)  # noqa: SLF001
        )

    # ------------------------------------------------------------------------------------------------ events

    async def _on_cron_event(self, event: WatchEvent) -> None:
        key = object_key(event.object)
        self._echo_seen(CRON_WORKFLOWS.plural, event)
        if event.type == "DELETED":
            self._forget(key)
            self._update_gauges()
            return
        self._update_gauges()
        own = self._is_own_echo(key, event.object)
        fresh = self._fresh.get(key)
        if fresh is not None and (_rv_int(fresh) or 0) <= (_rv_int(event.object) or -1):
            del self._fresh[key]  # the cache has caught up with our own write: keep one copy, not two
        if own:
            return
        self._enqueue(key)

    async def _on_workflow_event(self, event: WatchEvent) -> None:
        workflow = event.object
        own = self._pending_echo.get((WORKFLOWS.plural, *object_key(workflow)), -1) == _rv_int(workflow)
        self._echo_seen(WORKFLOWS.plural, event)
        meta = workflow.get("metadata") or {}
        cron_name = (meta.get("labels") or {}).get(CRON_LABEL)
        if not cron_name:
            return
        key = (meta.get("namespace") or "", cron_name)
        children = self._children.setdefault(key, {})
        if event.type == "DELETED":
            children.pop(meta.get("name"), None)
        else:
            current = children.get(meta.get("name"))
            children[meta.get("name")] = _newer(current, workflow)
        if own and event.type != "DELETED":
            return  # our own create/terminate coming back: the decision that wrote it already accounted for it
        creating = (meta.get("namespace") or "", meta.get("name") or "")
        if event.type == "ADDED" and creating in self._creating:
            # Often the watch delivers a create before its response does. The create's outcome (created, or
            # AlreadyExists and adopted) accounts for this object; `_submit` re-decides if it ends otherwise.
            self._creating[creating] = True
            return
        self._enqueue(key)

    def _forget(self, key: Key) -> None:
        for table in (self._fresh, self._parsed, self._reported, self._wake_at, self._prepared):
            table.pop(key, None)
        self._spec_errors.discard(key)

    def _update_gauges(self) -> None:
        self.metrics.cron_workflows.set(len(self.crons.cache))
        self.metrics.spec_errors.set(len(self._spec_errors))

    def _expect_echo(self, plural: str, obj: Mapping[str, Any] | None, *, deleted: bool = False, key=None) -> None:
        """Remember a write until the watch delivers it (`idle()` waits for that, and own echoes are not
        re-decided). Only integer resourceVersions are tracked (real servers' are etcd revisions)."""
        if obj is None and key is None:
            return
        ns, name = key or object_key(obj)
        rv = None if deleted else _rv_int(obj)
        if rv is None and not deleted:
            return
        # The watch event can arrive before the write's own response: then the cache already shows it.
        cache = self.crons.cache if plural == CRON_WORKFLOWS.plural else self.workflows.cache
        cached = cache.get((ns, name))
        if deleted and cached is None:
            return
        if not deleted and (_rv_int(cached) or -1) >= rv:
            return
        self._pending_echo[(plural, ns, name)] = rv

    def _echo_seen(self, plural: str, event: WatchEvent) -> None:
        ns, name = object_key(event.object)
        wanted_key = (plural, ns, name)
        if wanted_key not in self._pending_echo:
            return
        wanted = self._pending_echo[wanted_key]
        if event.type == "DELETED":
            del self._pending_echo[wanted_key]
            return
        if wanted is None:
            return
        rv = _rv_int(event.object)
        if rv is None or rv >= wanted:
            del self._pending_echo[wanted_key]

    def _is_own_echo(self, key: Key, obj: Mapping[str, Any]) -> bool:
        fresh = self._fresh.get(key)
        return fresh is not None and _rv_int(fresh) is not None and _rv_int(fresh) == _rv_int(obj)

    # ------------------------------------------------------------------------------------------------ queue

    def _enqueue(self, key: Key) -> None:
        if not self._leading:
            return
        if key in self._processing:
            self._dirty.add(key)
            return
        if key in self._queued:
            return
        self._queued.add(key)
        self._queue.put_nowait(key)
        self._gates.update()

    def _schedule(self, key: Key, when: datetime | None) -> None:
        if when is None:
            self._wake_at.pop(key, None)
            return
        if self._wake_at.get(key) == when:
            return
        self._wake_at[key] = when
        earliest = self._timer_target()
        heapq.heappush(self._heap, (when, next(self._seq), key))
        if earliest is None or when - self._prepare_lead < earliest:
            self._wake.set()

    def _timer_target(self) -> datetime | None:
        """The next instant the timer has work: the earliest wake-up's time to prepare (`_prepare_lead` before it), or
        the earliest wake-up within the lead (stale entries may make it early; the timer then only drops them)."""
        if self._heap and self._soon:
            return min(self._heap[0][0] - self._prepare_lead, self._soon[0][0])
        if self._heap:
            return self._heap[0][0] - self._prepare_lead
        return self._soon[0][0] if self._soon else None

    def _drop_stale_wakeups(self) -> None:
        for heap in (self._heap, self._soon):
            while heap and self._wake_at.get(heap[0][2]) != heap[0][0]:
                heapq.heappop(heap)

    def _take_soon(self, now: datetime) -> None:
        """Move the wake-ups within the preparation lead from `_heap` to `_soon`, handing the preparer those
        still ahead (with no lead, only the due ones move)."""
        horizon = now + self._prepare_lead
        while self._heap and self._heap[0][0] <= horizon:
            entry = heapq.heappop(self._heap)
            when, _, key = entry
            if self._wake_at.get(key) != when:
                continue  # stale: the key was rescheduled
            heapq.heappush(self._soon, entry)
            if when > now:
                self._prep_queue.append((key, when))
                self._prep_ready.set()

    async def _timer(self) -> None:
        while True:
            self._wake.clear()
            now = self.clock.now()
            self._take_soon(now)
            self._drop_stale_wakeups()
            while self._soon and self._soon[0][0] <= now:
                when, _, key = heapq.heappop(self._soon)
                if self._wake_at.get(key) == when:
                    del self._wake_at[key]
                    self._enqueue(key)
                self._drop_stale_wakeups()
            waiters = [asyncio.ensure_future(self._wake.wait())]
            target = self._timer_target()
            if target is not None:
                delay = (target - now).total_seconds()
                waiters.append(asyncio.ensure_future(self.clock.sleep(delay)))
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()

    async def _preparer(self) -> None:
        """Prepare the keys the timer hands over, one at a time, yielding to the loop between them (a due
        decision never waits for more than one preparation). Preparing is an optimisation: a failure is logged
        and the run decided at its due instant as usual."""
        while True:
            await self._prep_ready.wait()
            self._prep_ready.clear()
            while self._prep_queue:
                key, when = self._prep_queue.popleft()
                if self.clock.now() < when and self._wake_at.get(key) == when and key not in self._processing:
                    try:
                        self._prepare(key, when)
                    except Exception as error:  # noqa: BLE001 - decided at the due instant instead
                        log.warning("preparing a run failed; deciding it when due", exc_info=error,
                                    extra=_fields(key))
                await asyncio.sleep(0)

    def _prepare(self, key: Key, when: datetime) -> None:
        """Decide `key` as of its due instant `when` and keep the result when it is a plain on-time run."""
        self._prepared.pop(key, None)
        cron = self._current(key)
        meta = (cron or {}).get("metadata") or {}
        created = parse_time(meta.get("creationTimestamp"))
        if cron is None or meta.get("deletionTimestamp") or created is None or key in self._spec_errors:
            return
        result = self._parse(key, cron)
        if not result.ok or result.warnings:
            return
        spec = result.spec
        if spec.when is not None or spec.stop is not None:
            return  # their expressions see `now`: decided at the due instant
        original = CronStatus.from_object(cron)
        if original.condition(engine.CONDITION_SPEC_ERROR) is not None:
            return  # `apply_recovered` depends on `now`
        children = self._children_of(key, meta.get("uid"))
        status, counted = engine.reconcile_children(original, children)
        if counted:
            return  # the decision logs the finished runs it counts
        decision = engine.plan(spec, status, now=when, created=created, observed_since=self._observed_since,
                               children=children)
        if (decision.run != when or decision.catch_up or decision.terminate or decision.adopt is not None
                or decision.skip is not None or decision.stop is not None or decision.submission_error is not None
                or decision.spec_error is not None or decision.missed or decision.warnings):
            return
        cached_meta = (self.crons.cache.get(key) or {}).get("metadata") or {}
        if cached_meta.get("resourceVersion") == meta.get("resourceVersion"):
            meta = cached_meta  # the cache's strings, not a second copy per prepared run
        workflow = build_workflow(cron, when)
        self._prepared[key] = _Prepared(
            when=when, next_wakeup=decision.next_wakeup, uid=meta.get("uid"),
            resource_version=meta.get("resourceVersion"), children=self._children_stamp(key),
            observed_since=self._observed_since, spec=spec, status=engine.apply_plan(status, decision, spec=spec),
            name=workflow["metadata"]["name"], body=encode_json(workflow),
            deletions=tuple(engine.history_to_delete(spec, children)))

    def _children_stamp(self, key: Key) -> tuple[tuple[str, str | None], ...]:
        """Which versions of which children a decision saw (any watch event or own write changes it)."""
        return tuple((name, (workflow.get("metadata") or {}).get("resourceVersion"))
                     for name, workflow in self._children.get(key, {}).items())

    def _take_prepared(self, key: Key) -> tuple[_Prepared, Mapping[str, Any]] | None:
        """The decision prepared for `key` with the CronWorkflow it was based on (the cache's packed entry, or our
        own newer write), if one is due now and still holds; a stale one is dropped and counted."""
        prepared = self._prepared.get(key)
        if prepared is None:
            return None
        now = self.clock.now()
        if now < prepared.when:
            return None  # decided early (an event): the preparation is for the due instant
        del self._prepared[key]
        current = self._latest(key)
        meta = (current or {}).get("metadata") or {}
        next_wakeup = prepared.next_wakeup
        if (current is None or meta.get("deletionTimestamp") or meta.get("uid") != prepared.uid
                or meta.get("resourceVersion") != prepared.resource_version
                or (next_wakeup is not None and now >= next_wakeup)
                or self._observed_since != prepared.observed_since or key in self._spec_errors
                or self._children_stamp(key) != prepared.children):
            self.metrics.prepared_stale.inc()
            return None
        self.metrics.prepared_used.inc()
        return prepared, current

    async def _decide_prepared(self, key: Key, prepared: _Prepared, cron: Mapping[str, Any]) -> _Decided:
        """`_decide` for a prepared run: only the create (and what follows it) is left."""
        self.decisions += 1
        outcome = _Outcome()
        decision = Plan(run=prepared.when, next_wakeup=prepared.next_wakeup)  # all `_submit` reads of the plan
        status = await self._submit(key, None, prepared.spec, prepared.status, decision, outcome,
                                    prepared=(prepared.name, prepared.body))
        if status.failed != prepared.status.failed:
            status = self._stop_at_once(key, prepared.spec, status, outcome)
        packed = cron.get("packed") if cron is self.crons.cache.get(key) else None
        return _Decided(cron=None if packed is not None else cron, packed=packed, original=None, status=status,
                        outcome=outcome, deletions=list(prepared.deletions), next_wakeup=prepared.next_wakeup)

    async def _worker(self) -> None:
        """Take keys off the decision queue. A decision that created a Workflow hands its CronWorkflow writes to
        the status writers and the worker moves on, so when many runs are due at once every create goes out
        before the status writes that would otherwise sit between them (the lag is create time - scheduled time).
        The key stays in `_processing` until its writes are done: still one decision at a time per CronWorkflow.
        """
        while True:
            key = await self._queue.get()
            self._gates.decision_taken()
            self._queued.discard(key)
            self._processing.add(key)
            deferred = False
            try:
                deferred = await self._decide_first(key)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - one CronWorkflow's failure must not stop the others
                self._retry_later(key, error)
            finally:
                if not deferred:
                    self._release(key)

    async def _status_writer(self, *, gated: bool) -> None:
        """Finish deferred decisions (status write, counting, history deletions, Events) when the gates let this
        writer through (`StatusWriteGates`: creates of a burst go out first, writes still keep moving)."""
        while True:
            key, decided = await self._writes.get()
            try:
                await self._gates.wait(gated=gated)
                await self._reconcile(key, decided)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - one CronWorkflow's failure must not stop the others
                self._retry_later(key, error)
            finally:
                self._release(key)

    def _release(self, key: Key) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self._enqueue(key)
        if self._freeze_pending and not self._processing and self._queue.empty():
            self._freeze_long_lived()  # the start-up decisions are done: what they compiled lives on

    def _retry_later(self, key: Key, error: Exception) -> None:
        if isinstance(error, (Unavailable, TooManyRequests)):
            log.warning("API unavailable; retrying", extra=_fields(key, error=str(error)))
        else:
            log.error("decision failed", exc_info=error, extra=_fields(key))
        self._schedule(key, self.clock.now() + timedelta(seconds=self.settings.error_backoff_seconds))

    # ------------------------------------------------------------------------------------------------ decisions

    def _latest(self, key: Key) -> Mapping[str, Any] | None:
        """The newest known version of `key`, undecoded: our own write's response when it is newer than the cache
        (same uid), else the cache's entry (packed); None when the cache does not have it."""
        cached = self.crons.cache.get(key)
        if cached is None:
            return None
        fresh = self._fresh.get(key)
        if fresh is not None and (fresh.get("metadata") or {}).get("uid") != (cached.get("metadata") or {}).get("uid"):
            fresh = None
        if fresh is not None and _newer(fresh, cached) is fresh:
            return fresh
        return cached

    def _current(self, key: Key) -> Mapping[str, Any] | None:
        """`_latest`, decoded."""
        latest = self._latest(key)
        return None if latest is None else _unpacked(latest)

    def _deciding(self, key: Key) -> Mapping[str, Any] | None:
        """The CronWorkflow to decide for, or None (after clearing its wake-up) when it is gone or being deleted."""
        cron = self._current(key)
        if cron is None or (cron.get("metadata") or {}).get("deletionTimestamp"):
            self._schedule(key, None)
            return None
        return cron

    async def _decide_first(self, key: Key) -> bool:
        """Decide once (with the prepared decision when it holds); returns True when the CronWorkflow writes were
        handed to the status writers."""
        taken = self._take_prepared(key)
        if taken is not None:
            decided = await self._decide_prepared(key, *taken)
        else:
            cron = self._deciding(key)
            if cron is None:
                return False
            decided = await self._decide(key, cron)
        if decided.outcome.created:
            self._pack(key, decided)
            self._writes.put_nowait((key, decided))
            return True
        await self._reconcile(key, decided)
        return False

    def _pack(self, key: Key, decided: _Decided) -> None:
        """Hold a deferred decision's CronWorkflow as the cache's packed bytes when they are the version decided
        for (same uid and resourceVersion; the cache leaves out only managedFields, which a write may omit)."""
        cached = self.crons.cache.get(key)
        packed = cached.get("packed") if cached is not None else None
        if packed is None or decided.cron is None:
            return
        meta, cached_meta = decided.cron.get("metadata") or {}, cached.get("metadata") or {}
        if (meta.get("resourceVersion") and meta.get("resourceVersion") == cached_meta.get("resourceVersion")
                and meta.get("uid") == cached_meta.get("uid")):
            decided.cron, decided.packed = None, packed

    async def _reconcile(self, key: Key, decided: _Decided | None = None) -> None:
        """Commit a decision, re-reading and deciding again after each 409 Conflict (at most `conflict_retries`
        decisions in all; then the key goes back to the queue). `decided` is a first decision already made."""
        if decided is not None:
            decided.unpack()
        for _ in range(self.settings.conflict_retries):
            if decided is None:
                cron = self._deciding(key)
                if cron is None:
                    return
                decided = await self._decide(key, cron)
            outcome = await self._finish(key, decided)
            if not outcome.conflict:
                self._schedule(key, outcome.next_wakeup)
                for type_, reason, message in outcome.events:
                    await self.kube.emit_event(dict(decided.cron), reason=reason, message=message, type=type_,
                                               component=COMPONENT)
                return
            decided = None
            try:
                fresh = await self.kube.get(CRON_WORKFLOWS, key[1], namespace=key[0])
            except NotFound:
                return
            self._fresh[key] = fresh
        log.warning("status write kept conflicting; deciding again later", extra=_fields(key))
        self._enqueue(key)

    def _parse(self, key: Key, cron: Mapping[str, Any]) -> ParseResult:
        """The compiled spec of `cron`, compiled again only when its spec, labels or annotations changed."""
        meta = cron.get("metadata") or {}
        rv = meta.get("resourceVersion")
        known = self._parsed.get(key)
        if known is not None and rv and known[2] == rv:
            # The very version it was compiled from (a resourceVersion names one write of one object): e.g. the
            # start-up decision's, when the CronWorkflow comes due. No digest to compute.
            return known[1]
        # A digest, not the texts: 100,000 CronWorkflows' specs would be kept twice otherwise.
        fingerprint = hashlib.blake2b(orjson.dumps(
            [meta.get("uid"), cron.get("spec"), meta.get("labels") or {}, meta.get("annotations") or {}],
            option=orjson.OPT_SORT_KEYS, default=str), digest_size=16).digest()
        result = known[1] if known is not None and known[0] == fingerprint else parse_cron_workflow(cron)
        cached = self.crons.cache.get(key)
        if cached is not None and (cached.get("metadata") or {}).get("resourceVersion") == rv:
            rv = cached["metadata"]["resourceVersion"]  # the cache's string, not a second copy per CronWorkflow
        self._parsed[key] = (fingerprint, result, rv)
        return result

    def _children_of(self, key: Key, uid: str | None) -> list[Child]:
        out = []
        for workflow in self._children.get(key, {}).values():
            owners = (workflow.get("metadata") or {}).get("ownerReferences") or []
            controller = next((o for o in owners if o.get("controller")), None)
            if uid and controller is not None and controller.get("uid") != uid:
                continue  # a same-named CronWorkflow's child (e.g. one deleted and re-created)
            out.append(Child.from_workflow(workflow))
        return out

    def _report_once(self, key: Key, outcome: _Outcome, type_: str, reason: str, message: str) -> None:
        seen = self._reported.setdefault(key, set())
        if (reason, message) in seen:
            return
        seen.add((reason, message))
        outcome.events.append((type_, reason, message))

    async def _decide(self, key: Key, cron: Mapping[str, Any]) -> _Decided:
        """Decide for `cron` and do the Workflow writes (terminate, create); the CronWorkflow writes are left to
        `_finish`."""
        self.decisions += 1
        now = self.clock.now()
        outcome = _Outcome()
        meta = cron.get("metadata") or {}
        original = CronStatus.from_object(cron)
        status = original
        result = self._parse(key, cron)
        if not result.ok:
            message = "; ".join(result.errors)
            status = engine.apply_spec_error(status, message)
            if key not in self._spec_errors:
                self._spec_errors.add(key)
                self._update_gauges()
            # Times that pass while the spec is broken are not owed later (`engine.apply_recovered`).
            self._report_once(key, outcome, "Warning", "SpecError", message)
            log.warning("invalid spec", extra=_fields(key, errors=list(result.errors)))
            return _Decided(cron=cron, original=original, status=status, outcome=outcome)
        if key in self._spec_errors:
            self._spec_errors.discard(key)
            self._update_gauges()
            self._reported.pop(key, None)
        # A stored SpecError means times since the last decision passed while the spec was broken: not owed.
        status = engine.apply_recovered(status, now=now)
        spec = result.spec
        for warning in result.warnings:
            self._report_once(key, outcome, "Warning", "SpecWarning", warning)
        children = self._children_of(key, meta.get("uid"))
        status, counted = engine.reconcile_children(status, children)
        for child in counted:
            log.info("run finished", extra=_fields(key, workflow=child.name, phase=child.phase))
        created_at = parse_time(meta.get("creationTimestamp")) or now
        inputs = dict(now=now, created=created_at, observed_since=self._observed_since, children=children)
        if _slow_expressions(spec):
            decision: Plan = await asyncio.to_thread(engine.plan, spec, status, **inputs)
        else:
            decision = engine.plan(spec, status, **inputs)
        status = engine.apply_plan(status, decision, spec=spec)
        if decision.spec_error is not None:
            status = engine.apply_spec_error(status, decision.spec_error)
            self._report_once(key, outcome, "Warning", "SpecError", decision.spec_error)
        if decision.stop is not None:
            status = engine.apply_stopped(status, decision.stop)
            outcome.events.append(("Normal", "Stopped", decision.stop.message))
            log.info("stopped", extra=_fields(key, expression=decision.stop.expression))
        if decision.submission_error is not None:
            status = engine.apply_submission_error(status, decision.submission_error)
            self.metrics.submission_failures.labels(namespace=key[0]).inc()
            outcome.events.append(("Warning", "SubmissionError", decision.submission_error))
        if decision.missed > engine.MISSED_WARNING_THRESHOLD:
            outcome.events.append((
                "Warning", "TooManyMissedTimes",
                f"more than {engine.MISSED_WARNING_THRESHOLD} scheduled times were missed; only the latest is "
                "considered",
            ))
        for warning in decision.warnings:
            outcome.events.append(("Warning", "ScheduleWarning", warning))
        if decision.skip is not None and decision.skip.reason is not engine.SkipReason.STOPPED:
            # A Stopped CronWorkflow is not scheduled any more (Argo ignores it); its ticks are only counted.
            outcome.events.append(("Normal", "RunSkipped", decision.skip.message))
        if decision.adopt is not None:
            status = engine.apply_adopted(status, spec=spec, child=decision.adopt)
            log.info("adopted existing run", extra=_fields(key, workflow=decision.adopt.name))
        if decision.run is not None:
            counted = status
            status = await self._submit(key, cron, spec, status, decision, outcome)
            if status.failed != counted.failed:
                status = self._stop_at_once(key, spec, status, outcome)
        if decision.submission_error is not None:
            status = self._stop_at_once(key, spec, status, outcome)
        return _Decided(cron=cron, original=original, status=status, outcome=outcome, skip=decision.skip,
                        deletions=list(engine.history_to_delete(spec, children)), next_wakeup=decision.next_wakeup)

    def _stop_at_once(self, key: Key, spec, status: CronStatus, outcome: _Outcome) -> CronStatus:
        """A submission error counted in `failed` during this decision: the stop strategy sees the new count now,
        in the same status write (Argo counts it too, and would stop at its next check)."""
        stop = engine.recheck_stop(spec, status, now=self.clock.now())
        if stop is None:
            return status
        outcome.events.append(("Normal", "Stopped", stop.message))
        log.info("stopped", extra=_fields(key, expression=stop.expression))
        return engine.apply_stopped(status, stop)

    async def _finish(self, key: Key, decided: _Decided) -> _Outcome:
        """The CronWorkflow writes of a decision; `conflict` set on 409 (nothing after the write is done then)."""
        outcome = decided.outcome
        if not await self._commit(key, decided.cron, decided.original, decided.status):
            outcome.conflict = True
            return outcome
        # Counted only once the decision is committed, so a conflict-and-retry never counts a skip twice.
        if decided.skip is not None:
            self.metrics.runs_skipped.labels(reason=decided.skip.reason.value).inc()
            log.info("run skipped", extra=_fields(
                key, scheduled=format_time(decided.skip.scheduled_time), reason=decided.skip.reason.value))
        for child in decided.deletions:
            await self._delete_child(key, child)
        outcome.next_wakeup = decided.next_wakeup
        return outcome

    async def _submit(self, key: Key, cron, spec, status: CronStatus, decision: Plan, outcome: _Outcome, *,
                      prepared: tuple[str, bytes] | None = None) -> CronStatus:
        """Terminate (Replace), then create the Workflow for `decision.run`: built from `cron`, or, when it was
        prepared, `prepared` = (its name, its JSON bytes), sent as they are (held as bytes: a tenth of the memory of
        the dicts while it waits, and nothing to encode at the due instant)."""
        scheduled = decision.run
        for ref in decision.terminate:
            await self._terminate(key, ref)
        if prepared is not None:
            name, workflow = prepared
        else:
            workflow = build_workflow(cron, scheduled)
            name = workflow["metadata"]["name"]
        self._creating[(key[0], name)] = False
        accounted = False
        try:
            created = await self.kube.create(WORKFLOWS, workflow, namespace=key[0])
            accounted = True
        except AlreadyExists:
            accounted = True
            try:
                existing = await self.kube.get(WORKFLOWS, name, namespace=key[0])
            except NotFound:
                # Created and deleted in between (history limit elsewhere): it existed, so the time is done.
                existing = orjson.loads(workflow) if isinstance(workflow, bytes) else workflow
            self._remember_child(key, existing)
            log.info("run already exists; adopted", extra=_fields(key, workflow=name))
            return engine.apply_adopted(status, spec=spec, child=Child.from_workflow(existing))
        except (Unavailable, TooManyRequests):
            raise
        except KubeError as error:
            message = f"Failed to submit Workflow: {error.message}"
            self.metrics.submission_failures.labels(namespace=key[0]).inc()
            outcome.events.append(("Warning", "SubmissionError", message))
            log.warning("submission failed", extra=_fields(key, workflow=name, error=str(error)))
            return engine.apply_submission_error(status, message)
        finally:
            if self._creating.pop((key[0], name), False) and not accounted:
                self._enqueue(key)
        self._remember_child(key, created)
        self._expect_echo(WORKFLOWS.plural, created)
        outcome.created = True
        lag = (self.clock.now() - scheduled).total_seconds()
        self.metrics.scheduling_lag.observe(max(0.0, lag))
        self.metrics.created_in(key[0]).inc()
        log.info("run created", extra=_fields(
            key, workflow=name, scheduled=scheduled_time_text(scheduled), catch_up=decision.catch_up, lag_seconds=lag))
        return engine.apply_created(status, spec=spec, scheduled_time=scheduled, workflow=created)

    def _remember_child(self, key: Key, workflow: Mapping[str, Any]) -> None:
        """Record a Workflow this service wrote, from the write's response. At the same resourceVersion the
        version already held is kept: it is usually the Workflow reflector's cached object (the watch often
        delivers a create before its response), so the child is held once, not once more per response."""
        workflow = _slim_workflow(workflow)
        name = (workflow.get("metadata") or {}).get("name")
        children = self._children.setdefault(key, {})
        children[name] = _newer(workflow, children.get(name))

    async def _terminate(self, key: Key, ref) -> None:
        """Replace: stop an active run the way Argo does (`spec.shutdown: Terminate`); the Workflow stays."""
        try:
            patched = await self.kube.patch(WORKFLOWS, ref.name, {"spec": {"shutdown": "Terminate"}},
                                            namespace=ref.namespace or key[0])
        except NotFound:
            return
        self._remember_child(key, patched)
        self._expect_echo(WORKFLOWS.plural, patched)
        log.info("run terminated (Replace)", extra=_fields(key, workflow=ref.name))

    async def _delete_child(self, key: Key, child: Child) -> None:
        try:
            await self.kube.delete(WORKFLOWS, child.name, namespace=child.namespace or key[0])
        except NotFound:
            pass
        else:
            self._expect_echo(WORKFLOWS.plural, None, deleted=True, key=(child.namespace or key[0], child.name))
        self._children.get(key, {}).pop(child.name, None)
        log.info("history limit: deleted", extra=_fields(key, workflow=child.name, phase=child.phase))

    async def _commit(self, key: Key, cron: Mapping[str, Any], original: CronStatus, status: CronStatus) -> bool:
        """Write what changed: status through /status, then labels/annotations through the object, each guarded
        by the resourceVersion read. Returns False on 409 Conflict (the caller re-reads and decides again)."""
        # Only labels, annotations and status change; the engine deep-copies what it is given, so give it only
        # those two maps (this runs for every decision, including the many that write nothing, and a real server's
        # managedFields alone is larger than the rest of the metadata).
        meta = cron.get("metadata") or {}
        if status == original and (meta.get("labels") or {}).get(engine.COMPLETED_LABEL, "true") == "true":
            # Nothing to write: `original` was read from this object's status, annotation and label, so
            # `apply_to_object` would give them back unchanged (most decisions, e.g. every start-up decision of a
            # CronWorkflow in steady state). A completed label other than "true" is still removed below.
            return True
        target = engine.apply_to_object(
            {"metadata": {part: meta[part] for part in ("labels", "annotations") if part in meta}}, status)
        current: Mapping[str, Any] = cron
        try:
            if status != original:
                body = {**cron, "metadata": {**(cron.get("metadata") or {})}, "status": target["status"]}
                current = await self.kube.replace(CRON_WORKFLOWS, body, namespace=key[0], subresource="status")
                self._fresh[key] = current
                self._expect_echo(CRON_WORKFLOWS.plural, current)
            patch = _metadata_patch(cron.get("metadata") or {}, target.get("metadata") or {})
            if patch:
                patch["metadata"]["resourceVersion"] = (current.get("metadata") or {}).get("resourceVersion")
                current = await self.kube.patch(CRON_WORKFLOWS, key[1], patch, namespace=key[0])
                self._fresh[key] = current
                self._expect_echo(CRON_WORKFLOWS.plural, current)
        except Conflict:
            log.info("status write conflict; re-reading", extra=_fields(key))
            return False
        return True


def _slow_expressions(spec) -> bool:
    """The spec has `when`/stop expressions on the pure-Python CEL engine (up to seconds at the iteration budget)."""
    return any(expression is not None and expression.program.env.engine == PYTHON_CEL
               for expression in (spec.when, spec.stop))


def _metadata_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any] | None:
    """A merge patch turning `old`'s labels/annotations into `new`'s (None when equal)."""
    patch: dict[str, Any] = {}
    for part in ("labels", "annotations"):
        before, after = old.get(part) or {}, new.get(part) or {}
        if before == after:
            continue
        diff = {k: v for k, v in after.items() if before.get(k) != v}
        diff.update({k: None for k in before if k not in after})
        patch[part] = diff
    return {"metadata": patch} if patch else None


def _fields(key: Key, **more: Any) -> dict[str, Any]:
    """The `extra=` of a log line about one CronWorkflow (burstflow.logs: namespace, name, kind, then `more`)."""
    return fields(namespace=key[0], name=key[1], kind="CronWorkflow", **more)
