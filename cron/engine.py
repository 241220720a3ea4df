"""The cron service's pure decisions: given a compiled spec, its status, the known child Workflows and `now`, what to do.

Nothing here reads a clock, talks to Kubernetes or counts metrics. The runner gathers the inputs, calls `plan()`,
applies `apply_plan` (what the decision settled), performs the plan (create / adopt / terminate), then applies the
matching status transition (`apply_created`, `apply_adopted`, `apply_submission_error`, ...) and writes the status
guarded by resourceVersion.

Every decision is a function of the stored CronWorkflow (spec, status, the last-used-schedule annotation), its child
Workflows, `now` and `observed_since` (when the cron service, any replica, last started scheduling continuously).
Besides Argo's status fields the engine keeps two of its own in `status`, so that a restarted or new leader decides
exactly as the previous one would have:
- `lastDecidedTime`: every scheduled time at or before it has been decided (run, skipped or blocked) and is never
  decided again as an on-time tick;
- `blockedScheduledTime`: the most recent scheduled time blocked by `concurrencyPolicy: Forbid`, `suspend` or a stop,
  kept only while `startingDeadlineSeconds` is set; it runs late (once, under its own name) as soon as nothing
  blocks it any more and `now - time <= startingDeadlineSeconds` (Kubernetes' CronJob rule).
"""
from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from functools import lru_cache
from typing import Any

from burstflow.timefmt import format_time, parse_time

from burstflow.cron.expressions import ExpressionError, variables
from burstflow.cron.spec import ConcurrencyPolicy, CronSpec
from burstflow.cron.workflow import SCHEDULED_TIME_ANNOTATION, WORKFLOW_API_VERSION, workflow_name

COMPLETED_LABEL = "cronworkflows.argoproj.io/completed"
LAST_USED_SCHEDULE_ANNOTATION = "cronworkflows.argoproj.io/last-used-schedule"
def replace(obj: Any, /, **changes: Any) -> Any:
    """`dataclasses.replace` for this module's frozen dataclasses (plain fields, no `__post_init__`, no slots):
    a copy of `obj.__dict__` with `changes`, or `obj` itself when nothing changes. The runner applies four to six
    of these per decision; `dataclasses.replace` re-runs `__init__` through keyword handling and cost about a
    tenth of the service's own CPU per created run in a burst (benchmarks/cron_scale.py --profile burst)."""
    current = obj.__dict__
    if all(current[name] == value for name, value in changes.items()):
        return obj
    new = object.__new__(type(obj))
    new.__dict__.update(current)
    new.__dict__.update(changes)
    return new


# Kubernetes CronJob v2 warns (`TooManyMissedTimes`) above this many missed times, and still runs only the latest.
MISSED_WARNING_THRESHOLD = 100

PHASE_ACTIVE = "Active"
PHASE_STOPPED = "Stopped"
CONDITION_SPEC_ERROR = "SpecError"
CONDITION_SUBMISSION_ERROR = "SubmissionError"
CONDITION_COMPLETED = "Completed"
SUCCEEDED_PHASES = frozenset({"Succeeded"})
FAILED_PHASES = frozenset({"Failed", "Error"})


class SkipReason(str, Enum):
    """Why a due run was not created; the values are the `reason` label of `burstflow_cron_runs_skipped_total`."""

    WHEN = "when"
    FORBID = "forbid"
    SUSPENDED = "suspended"
    STOPPED = "stopped"
    DEADLINE = "deadline"


@dataclass(frozen=True)
class ActiveRef:
    """An entry of `status.active` (Argo: a core ObjectReference to a Workflow)."""

    name: str
    namespace: str = ""
    uid: str = ""
    resource_version: str = ""
    kind: str = "Workflow"
    api_version: str = WORKFLOW_API_VERSION

    @classmethod
    def from_dict(cls, ref: Mapping[str, Any]) -> ActiveRef:
        return cls(
            name=str(ref.get("name") or ""),
            namespace=str(ref.get("namespace") or ""),
            uid=str(ref.get("uid") or ""),
            resource_version=str(ref.get("resourceVersion") or ""),
            kind=str(ref.get("kind") or "Workflow"),
            api_version=str(ref.get("apiVersion") or WORKFLOW_API_VERSION),
        )

    def to_dict(self) -> dict[str, Any]:
        data = {"kind": self.kind, "apiVersion": self.api_version, "name": self.name, "namespace": self.namespace,
                "uid": self.uid, "resourceVersion": self.resource_version}
        return {key: value for key, value in data.items() if value}


@dataclass(frozen=True)
class Condition:
    """An entry of `status.conditions` in Argo's shape `{type, status, message}` (status is always "True")."""

    type: str
    message: str
    status: str = "True"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Condition:
        return cls(type=str(data.get("type") or ""), message=str(data.get("message") or ""),
                   status=str(data.get("status") or "True"))

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "status": self.status, "message": self.message}


@lru_cache(maxsize=4096)
def _parse_status_time(text: str) -> datetime | None:
    return parse_time(text)


def _status_time(value: Any) -> datetime | None:
    """`parse_time` of a status time, cached for strings: CronWorkflows on one schedule share their times, and a
    start-up reads three per CronWorkflow (datetimes are immutable, so sharing them is safe)."""
    return _parse_status_time(value) if isinstance(value, str) else parse_time(value)


@dataclass(frozen=True)
class CronStatus:
    """What the engine needs from a CronWorkflow's status and metadata.

    `last_used_schedule` mirrors the `cronworkflows.argoproj.io/last-used-schedule` annotation and `completed` the
    `cronworkflows.argoproj.io/completed` label; `last_decided_time` and `blocked_scheduled_time` are Burstflow's
    `status.lastDecidedTime` / `status.blockedScheduledTime` (module docstring); `apply_to_object` writes all of it
    back.
    """

    last_scheduled_time: datetime | None = None
    active: tuple[ActiveRef, ...] = ()
    succeeded: int = 0
    failed: int = 0
    phase: str = ""
    conditions: tuple[Condition, ...] = ()
    last_used_schedule: str | None = None
    completed: bool = False
    last_decided_time: datetime | None = None
    blocked_scheduled_time: datetime | None = None

    @classmethod
    def from_object(cls, cron: Mapping[str, Any]) -> CronStatus:
        """Read status, the annotation and the label from a CronWorkflow dict; tolerates a missing/partial status."""
        status = cron.get("status") or {}
        metadata = cron.get("metadata") or {}
        return cls(
            last_scheduled_time=_status_time(status.get("lastScheduledTime")),
            active=tuple(ActiveRef.from_dict(ref) for ref in status.get("active") or () if isinstance(ref, Mapping)),
            succeeded=int(status.get("succeeded") or 0),
            failed=int(status.get("failed") or 0),
            phase=str(status.get("phase") or ""),
            conditions=tuple(Condition.from_dict(c) for c in status.get("conditions") or () if isinstance(c, Mapping)),
            last_used_schedule=(metadata.get("annotations") or {}).get(LAST_USED_SCHEDULE_ANNOTATION),
            completed=(metadata.get("labels") or {}).get(COMPLETED_LABEL) == "true",
            last_decided_time=_status_time(status.get("lastDecidedTime")),
            blocked_scheduled_time=_status_time(status.get("blockedScheduledTime")),
        )

    def to_status(self) -> dict[str, Any]:
        """The `status` dict to write (Argo's field names; `lastScheduledTime` in RFC 3339 UTC)."""
        status: dict[str, Any] = {
            "active": [ref.to_dict() for ref in self.active],
            "succeeded": self.succeeded,
            "failed": self.failed,
            "conditions": [c.to_dict() for c in self.conditions],
        }
        if self.last_scheduled_time is not None:
            status["lastScheduledTime"] = format_time(self.last_scheduled_time)
        if self.phase:
            status["phase"] = self.phase
        if self.last_decided_time is not None:
            status["lastDecidedTime"] = format_time(self.last_decided_time)
        if self.blocked_scheduled_time is not None:
            status["blockedScheduledTime"] = format_time(self.blocked_scheduled_time)
        return status

    @property
    def stopped(self) -> bool:
        return self.phase == PHASE_STOPPED

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)

    def with_condition(self, condition: Condition) -> CronStatus:
        others = tuple(c for c in self.conditions if c.type != condition.type)
        return replace(self, conditions=others + (condition,))

    def without_condition(self, type_: str) -> CronStatus:
        if not any(c.type == type_ for c in self.conditions):
            return self
        return replace(self, conditions=tuple(c for c in self.conditions if c.type != type_))


@dataclass(frozen=True)
class Child:
    """A Workflow owned by the CronWorkflow, as far as the engine cares."""

    name: str
    namespace: str = ""
    uid: str = ""
    resource_version: str = ""
    phase: str = ""
    scheduled_time: datetime | None = None
    finished_at: datetime | None = None
    shutdown: str | None = None

    @classmethod
    def from_workflow(cls, workflow: Mapping[str, Any]) -> Child:
        """Read name/uid/phase, the scheduled-time annotation, `status.finishedAt` and `spec.shutdown`."""
        metadata = workflow.get("metadata") or {}
        status = workflow.get("status") or {}
        return cls(
            name=str(metadata.get("name") or ""),
            namespace=str(metadata.get("namespace") or ""),
            uid=str(metadata.get("uid") or ""),
            resource_version=str(metadata.get("resourceVersion") or ""),
            phase=str(status.get("phase") or ""),
            scheduled_time=parse_time((metadata.get("annotations") or {}).get(SCHEDULED_TIME_ANNOTATION)),
            finished_at=parse_time(status.get("finishedAt")),
            shutdown=(workflow.get("spec") or {}).get("shutdown") or None,
        )

    @property
    def finished(self) -> bool:
        return self.phase in SUCCEEDED_PHASES or self.phase in FAILED_PHASES

    def ref(self) -> ActiveRef:
        return ActiveRef(name=self.name, namespace=self.namespace, uid=self.uid,
                         resource_version=self.resource_version)


@dataclass(frozen=True)
class Skip:
    """A due scheduled time that was decided not to run, with the reason and a human message (for the Event)."""

    scheduled_time: datetime
    reason: SkipReason
    message: str


@dataclass(frozen=True)
class StopDecision:
    """The stop strategy became true: which expression, and the counters it saw."""

    expression: str
    message: str


@dataclass(frozen=True)
class Plan:
    """What the runner should do now for one CronWorkflow.

    At most one of `run` / `adopt` / `skip` is set. `run` is the scheduled time to create a Workflow for
    (`catch_up` says whether it runs late: missed during an outage, or blocked earlier by Forbid, suspend or a stop);
    before creating, terminate every ref in `terminate` (Replace; never the Workflow for `run` itself, never one
    already shut down). `adopt` is an existing child whose name matches the time being decided: record it
    (`apply_adopted`) instead of creating or terminating anything. `stop` is set when the stop strategy is true
    (checked at every decision, whether or not a time is due). `submission_error` is set when `when` failed to
    evaluate (apply it with `apply_submission_error`); `spec_error` when the stop strategy failed to evaluate
    (apply it with `apply_spec_error`; nothing runs). `next_wakeup` is the next instant to call `plan()` again
    (None: never, e.g. a schedule that cannot fire). `decided_through` and `blocked` are the new values of
    `status.lastDecidedTime` and `status.blockedScheduledTime`: apply them with `apply_plan` before the status
    is written. `missed` counts scheduled times in the window that will never run; the count stops at 102
    (`MISSED_WARNING_THRESHOLD + 2`: only "more than 100" matters, and counting further would cost work per time).
    `record_schedule` asks to record the current schedule key (the schedule changed since the last run).
    """

    run: datetime | None = None
    catch_up: bool = False
    adopt: Child | None = None
    terminate: tuple[ActiveRef, ...] = ()
    skip: Skip | None = None
    stop: StopDecision | None = None
    submission_error: str | None = None
    spec_error: str | None = None
    next_wakeup: datetime | None = None
    decided_through: datetime | None = None
    blocked: datetime | None = None
    missed: int = 0
    warnings: tuple[str, ...] = ()
    record_schedule: bool = False


def plan(
    spec: CronSpec,
    status: CronStatus,
    *,
    now: datetime,
    created: datetime,
    observed_since: datetime | None,
    children: Iterable[Child] = (),
) -> Plan:
    """Decide what to do at `now` from stored state only (see the module docstring).

    1. The window: `lower` = the latest of `status.lastScheduledTime` (else `created`) and `status.lastDecidedTime`;
       if the schedule changed since the last run (the last-used-schedule annotation differs), `lower` = `now`
       (times of the new schedule before the change are not owed, Argo #7182). `due` = the latest scheduled time in
       `(lower, now]` over all schedules; the times before it in the window are missed (warned above 100).
    2. The stop strategy is evaluated at every decision (so a child counted as failed stops the CronWorkflow at
       once, not at the next tick); true: Stopped, and `due` (if any) is blocked.
    3. With a `due` time: an existing child with its name is adopted. A time before `observed_since` (the service
       was not running then) runs only if `startingDeadlineSeconds` > 0 and `now - due <= deadline`. Then, in
       Argo's order: stopped, suspend (both block), `when` (false or failing: skipped for good), Forbid with a
       run in `status.active` (blocks; shut-down runs count until they finish), then run (Replace terminates the
       other active runs). A blocked time becomes `blocked` when a deadline is set, superseding an older one.
    4. Without a `due` time: a `blocked` time runs late once nothing blocks it (same checks, `when` included) and
       `now - blocked <= deadline`; past the deadline it is dropped.
    Every time decided here is settled in `decided_through`, so no later decision (any process) re-decides it.
    """
    schedule_set = spec.schedule_set
    anchor = status.last_scheduled_time or created
    lower = max(anchor, status.last_decided_time or anchor)
    schedule_changed = status.last_used_schedule is not None and status.last_used_schedule != spec.schedule_key
    if schedule_changed:
        lower = max(lower, now)
    due, count = schedule_set.latest_in(lower, now, anchor, cap=MISSED_WARNING_THRESHOLD + 2)
    upcoming = schedule_set.next_after(max(now, lower), anchor)
    next_wakeup = upcoming.time if upcoming is not None else None
    deadline = spec.starting_deadline_seconds or 0
    blocked = status.blocked_scheduled_time
    if blocked is not None and status.last_scheduled_time is not None and blocked <= status.last_scheduled_time:
        blocked = None
    base = dict(next_wakeup=next_wakeup, decided_through=status.last_decided_time, blocked=blocked,
                record_schedule=schedule_changed)
    if schedule_changed:
        base.update(decided_through=_latest(status.last_decided_time, now), blocked=None)

    stop: StopDecision | None = None
    stop_error: str | None = None
    if spec.stop is not None and not (status.stopped or status.completed):
        try:
            stop = evaluate_stop(spec, status, now=now)
        except ExpressionError as error:
            stop_error = f"failed to check CronWorkflow {spec.name!r} stopping condition: {error}"

    if due is not None:
        catch_up = observed_since is None or due < observed_since
        missed = count if catch_up else count - 1
        warnings: tuple[str, ...] = ()
        if missed > MISSED_WARNING_THRESHOLD:
            warnings = (f"more than {MISSED_WARNING_THRESHOLD} scheduled times were missed since "
                        f"{format_time(lower)}; only the latest ({format_time(due)}) is considered",)
        settled = {**base, "decided_through": _latest(status.last_decided_time, due), "missed": missed,
                   "warnings": warnings, "catch_up": catch_up}
        if blocked is not None and blocked < due:
            settled["blocked"] = None  # superseded: only the most recent blocked time may run late
        if catch_up and not _within(deadline, due, now):
            if not deadline:
                reason = (f"missed {format_time(due)} while the service was not running; no late run without "
                          f"startingDeadlineSeconds")
            else:
                reason = (f"missed {format_time(due)} by {int((now - due).total_seconds())}s, beyond "
                          f"startingDeadlineSeconds {deadline}")
            return Plan(skip=Skip(due, SkipReason.DEADLINE, reason), stop=stop, **_with_stop_error(settled, stop_error))
        return _decide_time(spec, status, due, now=now, children=children, stop=stop, stop_error=stop_error,
                            settled=settled, deadline=deadline)

    if blocked is not None:
        if not _within(deadline, blocked, now):
            reason = (f"blocked run for {format_time(blocked)} not started within startingDeadlineSeconds "
                      f"{deadline}")
            return Plan(skip=Skip(blocked, SkipReason.DEADLINE, reason), stop=stop,
                        **_with_stop_error({**base, "blocked": None}, stop_error))
        result = _decide_time(spec, status, blocked, now=now, children=children, stop=stop, stop_error=stop_error,
                              settled={**base, "catch_up": True}, deadline=deadline, late=True)
        if result.skip is not None and result.skip.reason in _BLOCKING:
            # Still blocked: nothing to report again (the time was reported when it was first blocked).
            return replace(result, skip=None)
        return result
    return Plan(stop=stop, **_with_stop_error(base, stop_error))


# Reasons that keep a time runnable later (within the deadline); every other skip is final.
_BLOCKING = frozenset({SkipReason.FORBID, SkipReason.SUSPENDED, SkipReason.STOPPED})


def _latest(a: datetime | None, b: datetime) -> datetime:
    return b if a is None or b > a else a


def _within(deadline: int, scheduled: datetime, now: datetime) -> bool:
    """Kubernetes' rule for starting late: a deadline is set (0 means none, as in Argo) and not yet passed."""
    return bool(deadline) and (now - scheduled).total_seconds() <= deadline


def _with_stop_error(fields: dict[str, Any], stop_error: str | None) -> dict[str, Any]:
    return {**fields, "spec_error": stop_error} if stop_error is not None else fields


def _decide_time(spec: CronSpec, status: CronStatus, due: datetime, *, now: datetime, children: Iterable[Child],
                 stop: StopDecision | None, stop_error: str | None, settled: dict[str, Any], deadline: int,
                 late: bool = False) -> Plan:
    """Steps 3 and 4 of `plan()` for one scheduled time (`late`: the blocked time, not a new one)."""
    name = workflow_name(spec.name, due)
    children = tuple(children)
    existing = next((child for child in children if child.name == name), None)
    fields = _with_stop_error(settled, stop_error)
    if existing is not None:
        return Plan(adopt=existing, stop=stop, **{**fields, "blocked": None if late else fields["blocked"]})

    def block(reason: SkipReason, message: str) -> Plan:
        return Plan(skip=Skip(due, reason, message), stop=stop,
                    **{**fields, "blocked": due if deadline else (None if late else fields["blocked"])})

    if stop_error is not None:
        return Plan(skip=Skip(due, SkipReason.STOPPED, stop_error), **{**fields, "blocked": None})
    if stop is not None:
        return block(SkipReason.STOPPED, stop.message)
    if status.stopped or status.completed:
        return block(SkipReason.STOPPED, "stopped by its stop strategy; not scheduling")
    if spec.suspend:
        return block(SkipReason.SUSPENDED, "spec.suspend is true")
    final = {**fields, "blocked": None if late else fields["blocked"]}
    if spec.when is not None:
        try:
            allowed = spec.when.evaluate(_expression_variables(spec, status, now))
        except ExpressionError as error:
            message = f"run policy error: {error}"
            return Plan(submission_error=message, skip=Skip(due, SkipReason.WHEN, message), **final)
        if not allowed:
            return Plan(skip=Skip(due, SkipReason.WHEN, f"spec.when is false for {format_time(due)}"), **final)
    # Argo counts every run in status.active, shut down (Terminate/Stop) or not, until it has finished (a child
    # seen finished before `reconcile_children` dropped it from the status does not count).
    finished = {child.name for child in children if child.finished}
    active = tuple(ref for ref in status.active if ref.name not in finished)
    if spec.concurrency_policy is ConcurrencyPolicy.FORBID and active:
        names = ", ".join(ref.name for ref in active)
        return block(SkipReason.FORBID, f"concurrencyPolicy Forbid and still active: {names}")
    terminate: tuple[ActiveRef, ...] = ()
    if spec.concurrency_policy is ConcurrencyPolicy.REPLACE:
        shut_down = {child.name for child in children if child.shutdown}
        # Never the Workflow of this very scheduled time (Argo bug 12625 terminates the run it just created), nor
        # one already shut down (Argo #11845).
        terminate = tuple(ref for ref in active if ref.name != name and ref.name not in shut_down)
    return Plan(run=due, terminate=terminate, **{**final, "blocked": None})


def apply_plan(status: CronStatus, decision: Plan, *, spec: CronSpec) -> CronStatus:
    """Record what `decision` settled: `lastDecidedTime`, `blockedScheduledTime` and, when the schedule changed,
    the new last-used-schedule key."""
    updated = replace(status, last_decided_time=decision.decided_through, blocked_scheduled_time=decision.blocked)
    if decision.record_schedule:
        updated = replace(updated, last_used_schedule=spec.schedule_key)
    return updated


def apply_recovered(status: CronStatus, *, now: datetime) -> CronStatus:
    """The spec was in error (a SpecError condition is stored) and is valid again: scheduled times that passed
    while it was broken are not owed (as in Argo, which never scheduled them), so they count as decided."""
    if status.condition(CONDITION_SPEC_ERROR) is None:
        return status
    return replace(status.without_condition(CONDITION_SPEC_ERROR),
                   last_decided_time=_latest(status.last_decided_time, now), blocked_scheduled_time=None)


def _expression_variables(spec: CronSpec, status: CronStatus, now: datetime) -> dict[str, Any]:
    return variables(name=spec.name, namespace=spec.namespace, labels=spec.labels, annotations=spec.annotations,
                     failed=status.failed, succeeded=status.succeeded,
                     last_scheduled_time=status.last_scheduled_time, now=now)


def evaluate_stop(spec: CronSpec, status: CronStatus, *, now: datetime) -> StopDecision | None:
    """Evaluate the stop strategy against the status counters; None when there is none or it is false.

    Raises `cron.expressions.ExpressionError` when the expression fails at evaluation (a SpecError for the caller).
    """
    if spec.stop is None:
        return None
    if not spec.stop.evaluate(_expression_variables(spec, status, now)):
        return None
    return StopDecision(
        expression=spec.stop.source,
        message=(f"stopped by stopStrategy.{spec.stop.field} {spec.stop.source!r} "
                 f"(succeeded={status.succeeded}, failed={status.failed})"),
    )


def recheck_stop(spec: CronSpec, status: CronStatus, *, now: datetime) -> StopDecision | None:
    """The stop strategy after a counter changed within a decision (a submission error counted as failed); None
    when it is false, already stopped, or fails (`plan()` reports evaluation failures)."""
    if spec.stop is None or status.stopped or status.completed:
        return None
    try:
        return evaluate_stop(spec, status, now=now)
    except ExpressionError:
        return None


def reconcile_children(status: CronStatus, children: Iterable[Child]) -> tuple[CronStatus, tuple[Child, ...]]:
    """Argo's `reconcileActiveWfs`: active = the unfinished children; count each child that leaves `active` finished.

    Returns the new status and the children counted now (so the caller can emit Events). A child already counted
    (not in `active` any more) is never counted twice; a finished child that was never active is not counted.
    """
    by_name = {child.name: child for child in children}
    active: list[ActiveRef] = []
    counted: list[Child] = []
    succeeded, failed = status.succeeded, status.failed
    for ref in status.active:
        child = by_name.get(ref.name)
        if child is None:
            continue
        if child.finished:
            counted.append(child)
            if child.phase in SUCCEEDED_PHASES:
                succeeded += 1
            else:
                failed += 1
            continue
        active.append(child.ref())
    listed = {ref.name for ref in status.active}
    for child in sorted(by_name.values(), key=lambda c: c.name):
        if not child.finished and child.name not in listed:
            active.append(child.ref())
    return replace(status, active=tuple(active), succeeded=succeeded, failed=failed), tuple(counted)


def apply_created(status: CronStatus, *, spec: CronSpec, scheduled_time: datetime, workflow: Mapping[str, Any]) -> CronStatus:
    """After a successful create: append the Workflow to `active`, phase Active, lastScheduledTime, clear
    SubmissionError, record the schedule used."""
    metadata = workflow.get("metadata") or {}
    ref = ActiveRef(name=str(metadata.get("name") or ""), namespace=str(metadata.get("namespace") or ""),
                    uid=str(metadata.get("uid") or ""), resource_version=str(metadata.get("resourceVersion") or ""))
    return _record_run(status, spec=spec, scheduled_time=scheduled_time, ref=ref)


def _record_run(status: CronStatus, *, spec: CronSpec, scheduled_time: datetime, ref: ActiveRef | None) -> CronStatus:
    active = tuple(r for r in status.active if ref is None or r.name != ref.name)
    if ref is not None:
        active += (ref,)
    last = status.last_scheduled_time
    if last is None or scheduled_time > last:
        last = scheduled_time
    blocked = status.blocked_scheduled_time
    updated = replace(status, active=active, last_scheduled_time=last, phase=status.phase if status.stopped
                      else PHASE_ACTIVE, last_used_schedule=spec.schedule_key,
                      last_decided_time=_latest(status.last_decided_time, scheduled_time),
                      blocked_scheduled_time=None if blocked is not None and blocked <= scheduled_time else blocked)
    return updated.without_condition(CONDITION_SUBMISSION_ERROR)


def apply_adopted(status: CronStatus, *, spec: CronSpec, child: Child) -> CronStatus:
    """A Workflow for the due time already exists (409 AlreadyExists or found in the cache): make the status say so
    (lastScheduledTime = its time if later, in `active` while unfinished) instead of forgetting it (Argo bug 14719)."""
    scheduled = child.scheduled_time
    if scheduled is None:
        scheduled = _time_from_name(spec.name, child.name) or status.last_scheduled_time
    if scheduled is None:
        return status
    return _record_run(status, spec=spec, scheduled_time=scheduled,
                       ref=None if child.finished else child.ref())


def _time_from_name(cron_name: str, name: str) -> datetime | None:
    suffix = name[len(cron_name) + 1:] if name.startswith(cron_name + "-") else ""
    return datetime.fromtimestamp(int(suffix), tz=timezone.utc) if suffix.isdigit() else None


def apply_submission_error(status: CronStatus, message: str) -> CronStatus:
    """Set the SubmissionError condition and, as Argo does, count it in `failed` (it can trip the stop strategy)."""
    updated = status.with_condition(Condition(CONDITION_SUBMISSION_ERROR, message))
    return replace(updated, failed=status.failed + 1)


def apply_spec_error(status: CronStatus, message: str) -> CronStatus:
    """Set (or replace) the SpecError condition; nothing else changes."""
    return status.with_condition(Condition(CONDITION_SPEC_ERROR, message))


def clear_spec_error(status: CronStatus) -> CronStatus:
    """Remove the SpecError condition (the spec is valid again)."""
    return status.without_condition(CONDITION_SPEC_ERROR)


def apply_stopped(status: CronStatus, decision: StopDecision) -> CronStatus:
    """Phase Stopped, the `cronworkflows.argoproj.io/completed: "true"` label, and a Completed condition saying which
    expression stopped it. Resume by removing the label and the phase
    (docs/concepts/cronworkflow.md, "Suspending and resuming (also after a stop)")."""
    updated = replace(status, phase=PHASE_STOPPED, completed=True)
    return updated.with_condition(Condition(CONDITION_COMPLETED, decision.message))


def apply_resumed(status: CronStatus) -> CronStatus:
    """Undo `apply_stopped`: phase Active, no completed label, no Completed condition (counters are kept, so a
    stop expression that is still true stops it again at the next decision)."""
    updated = replace(status, phase=PHASE_ACTIVE if status.stopped else status.phase, completed=False)
    return updated.without_condition(CONDITION_COMPLETED)


def history_to_delete(spec: CronSpec, children: Iterable[Child]) -> tuple[Child, ...]:
    """Finished children beyond the history limits: per bucket (Succeeded; Failed|Error) sorted by finishedAt
    descending (unknown last), keep the first N, return the rest."""
    children = list(children)
    buckets = (
        ([c for c in children if c.phase in SUCCEEDED_PHASES], spec.successful_history_limit),
        ([c for c in children if c.phase in FAILED_PHASES], spec.failed_history_limit),
    )
    doomed: list[Child] = []
    for bucket, keep in buckets:
        bucket.sort(key=lambda c: (c.finished_at is not None, c.finished_at or _MIN_TIME, c.name), reverse=True)
        doomed.extend(bucket[keep:])
    return tuple(doomed)


_MIN_TIME = datetime.min.replace(tzinfo=timezone.utc)


def apply_to_object(cron: Mapping[str, Any], status: CronStatus) -> dict[str, Any]:
    """A deep copy of `cron` carrying `status`, the last-used-schedule annotation and the completed label.

    The runner writes `status` through the status subresource and, when metadata differs from the original, the
    metadata through the main resource (both guarded by resourceVersion).
    """
    # Labels and annotations are string maps: one level of copying is a deep copy of them.
    updated = {key: ({part: (dict(inner) if part in ("labels", "annotations") and isinstance(inner, Mapping)
                             else copy.deepcopy(inner)) for part, inner in value.items()}
                     if key == "metadata" and isinstance(value, Mapping) else copy.deepcopy(value))
               for key, value in cron.items()}
    metadata = updated.setdefault("metadata", {})
    if status.last_used_schedule is not None:
        metadata.setdefault("annotations", {})[LAST_USED_SCHEDULE_ANNOTATION] = status.last_used_schedule
    labels = metadata.get("labels") or {}
    if status.completed:
        labels[COMPLETED_LABEL] = "true"
    else:
        labels.pop(COMPLETED_LABEL, None)
    if labels or "labels" in metadata:
        metadata["labels"] = labels
    updated["status"] = status.to_status()
    return updated
