"""Parse and validate a CronWorkflow object into a frozen, compiled `CronSpec`, or field-path errors.

`parse_cron_workflow(obj)` never raises on bad input: it returns a `ParseResult` whose `errors` each name the field
path (`spec.schedules[1]: cron schedule "..." is malformed: ...`) and whose `warnings` are advisory (a schedule that
can never fire). Schedules and expressions are compiled here, once; the engine only evaluates them.
"""
from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from functools import lru_cache
from types import MappingProxyType
from typing import Any

from burstflow.cron.expressions import ExpressionError, StopExpression, WhenExpression, compile_stop, compile_when
from burstflow.cron.schedule import ScheduleError, ScheduleSet, load_zone, parse_schedule, split_timezone_prefix

API_VERSION = "burstflow.io/v1alpha1"
KIND = "CronWorkflow"
# `<name>-<unix seconds>` must fit a 63-character label value: 52 + 1 + 10 digits (Argo's and Kubernetes' limit).
MAX_NAME_LENGTH = 52
# Argo's controller defaults (workflow/cron/operator.go enforceHistoryLimit).
DEFAULT_SUCCESSFUL_HISTORY = 3
DEFAULT_FAILED_HISTORY = 1
# Bounds the CRD also declares, so the API server can cost its CEL validation rules (and so both agree).
MAX_SCHEDULES = 20
MAX_SCHEDULE_LENGTH = 256


class ConcurrencyPolicy(str, Enum):
    """What to do when a run is due while earlier runs are still active."""

    ALLOW = "Allow"
    FORBID = "Forbid"
    REPLACE = "Replace"


# The labels and annotations of a CronWorkflow without expressions: nothing reads them (one shared empty map).
_NO_STRINGS: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class CronSpec:
    """A validated, compiled CronWorkflow. Hashable parts only; the raw object stays with the caller.

    `schedule_key` is the value Argo stores in the `cronworkflows.argoproj.io/last-used-schedule` annotation
    (comma-joined `CRON_TZ=<tz> <schedule>` strings): a catch-up run is only allowed when the recorded key equals it.
    `labels` and `annotations` are the CronWorkflow's, for its `when` and stop expressions; without either they are
    empty (nothing reads them).

    The cron service keeps one per CronWorkflow (100,000 of them), so it is kept small: slots, and what many
    CronWorkflows repeat (namespace, zone, schedule texts, the schedule set) is one shared object.
    """

    name: str
    namespace: str
    uid: str
    schedules: tuple[str, ...]
    schedule_set: ScheduleSet
    timezone: str | None
    when: WhenExpression | None
    stop: StopExpression | None
    concurrency_policy: ConcurrencyPolicy
    starting_deadline_seconds: int | None
    successful_history_limit: int
    failed_history_limit: int
    suspend: bool
    schedule_key: str
    labels: Mapping[str, str] = field(default_factory=lambda: _NO_STRINGS)
    annotations: Mapping[str, str] = field(default_factory=lambda: _NO_STRINGS)


@dataclass(frozen=True)
class ParseResult:
    """`spec` is set iff `errors` is empty. `warnings` may be present either way."""

    spec: CronSpec | None
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.errors


def parse_cron_workflow(obj: Mapping[str, Any], *, engine: str | None = None) -> ParseResult:
    """Validate and compile a CronWorkflow dict (apiVersion burstflow.io/v1alpha1 or argoproj.io/v1alpha1).

    Never raises for bad input; every error names its field path. `engine` picks the CEL engine (default: the
    process default from `burstflow.cel`).
    """
    errors: list[str] = []
    warnings: list[str] = []
    if not isinstance(obj, Mapping):
        return ParseResult(None, (f"a CronWorkflow must be an object, not {type(obj).__name__}",))
    api_version = obj.get("apiVersion")
    if api_version not in (API_VERSION, "argoproj.io/v1alpha1"):
        errors.append(f"apiVersion: must be {API_VERSION!r}, not {api_version!r}")
    if obj.get("kind") != KIND:
        errors.append(f"kind: must be {KIND!r}, not {obj.get('kind')!r}")
    metadata = obj.get("metadata")
    if not isinstance(metadata, Mapping):
        metadata = {}
        errors.append("metadata: required")
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        errors.append("metadata.name: required")
        name = ""
    elif len(name) > MAX_NAME_LENGTH:
        errors.append(f"metadata.name: cron workflow name {name!r} must not be more than {MAX_NAME_LENGTH} "
                      f"characters long (currently {len(name)})")
    labels = _string_map(metadata.get("labels"), "metadata.labels", errors)
    annotations = _string_map(metadata.get("annotations"), "metadata.annotations", errors)
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        errors.append("spec: required")
        return ParseResult(None, tuple(errors), tuple(warnings))

    timezone_name = spec.get("timezone") or None
    if timezone_name is not None:
        if not isinstance(timezone_name, str):
            errors.append(f"spec.timezone: must be a string, not {type(timezone_name).__name__}")
            timezone_name = None
        else:
            try:
                load_zone(timezone_name)
            except ScheduleError as error:
                errors.append(f"spec.timezone: {error}")
                timezone_name = None

    texts, paths = _schedule_texts(spec, errors)
    schedules = []
    for text, path in zip(texts, paths):
        prefix_zone, _ = split_timezone_prefix(text)
        if prefix_zone is not None and spec.get("timezone"):
            errors.append(f"{path}: cannot use both spec.timezone and a TZ= or CRON_TZ= prefix in the schedule")
            continue
        try:
            schedule = parse_schedule(text, timezone_name)
        except ScheduleError as error:
            errors.append(f"{path}: cron schedule {text!r} is malformed: {error}")
            continue
        if schedule.never_fires:
            warnings.append(f"{path}: cron schedule {text!r} can never fire (no date matches it)")
        schedules.append(schedule)

    when = None
    if spec.get("when") not in (None, ""):
        try:
            when = compile_when(spec["when"], engine) if isinstance(spec["when"], str) else None
            if when is None:
                errors.append(f"spec.when: must be a string, not {type(spec['when']).__name__}")
        except ExpressionError as error:
            errors.append(f"spec.when: {error}")
    stop = _stop_strategy(spec.get("stopStrategy"), engine, errors)

    policy_text = spec.get("concurrencyPolicy") or "Allow"
    try:
        policy = ConcurrencyPolicy(policy_text)
    except ValueError:
        errors.append(f"spec.concurrencyPolicy: {policy_text!r} is not a valid concurrencyPolicy "
                      f"(Allow, Forbid or Replace)")
        policy = ConcurrencyPolicy.ALLOW
    deadline = spec.get("startingDeadlineSeconds")
    if deadline is not None:
        if not _is_int(deadline):
            errors.append(f"spec.startingDeadlineSeconds: must be an integer, not {deadline!r}")
            deadline = None
        elif deadline < 0:
            errors.append("spec.startingDeadlineSeconds: startingDeadlineSeconds must be positive")
            deadline = None
    successful = _history_limit(spec, "successfulJobsHistoryLimit", DEFAULT_SUCCESSFUL_HISTORY, errors)
    failed = _history_limit(spec, "failedJobsHistoryLimit", DEFAULT_FAILED_HISTORY, errors)
    suspend = spec.get("suspend", False)
    if suspend is None:
        suspend = False
    if not isinstance(suspend, bool):
        errors.append(f"spec.suspend: must be true or false, not {suspend!r}")
    workflow_metadata = spec.get("workflowMetadata")
    if workflow_metadata is not None:
        if not isinstance(workflow_metadata, Mapping):
            errors.append("spec.workflowMetadata: must be an object")
        else:
            _string_map(workflow_metadata.get("labels"), "spec.workflowMetadata.labels", errors)
            _string_map(workflow_metadata.get("annotations"), "spec.workflowMetadata.annotations", errors)
    if not isinstance(spec.get("workflowSpec"), Mapping):
        errors.append("spec.workflowSpec: required (an Argo Workflow spec)")

    if errors:
        return ParseResult(None, tuple(errors), tuple(warnings))
    prefix = f"CRON_TZ={timezone_name} " if timezone_name else ""
    expressions = when is not None or stop is not None
    texts = tuple(map(sys.intern, texts))
    return ParseResult(
        CronSpec(
            name=name,
            namespace=sys.intern(str(metadata.get("namespace") or "")),
            uid=str(metadata.get("uid") or ""),
            schedules=texts,
            schedule_set=_schedule_set(tuple(schedules)),
            timezone=sys.intern(timezone_name) if timezone_name else None,
            when=when,
            stop=stop,
            concurrency_policy=policy,
            starting_deadline_seconds=deadline,
            successful_history_limit=successful,
            failed_history_limit=failed,
            suspend=bool(suspend),
            schedule_key=sys.intern(",".join(prefix + text for text in texts)),
            labels=labels if expressions else _NO_STRINGS,
            annotations=annotations if expressions else _NO_STRINGS,
        ),
        (),
        tuple(warnings),
    )


@lru_cache(maxsize=4096)
def _schedule_set(schedules: tuple[Any, ...]) -> ScheduleSet:
    """One ScheduleSet per set of compiled schedules (`parse_schedule` caches those): CronWorkflows with the same
    schedules share it."""
    return ScheduleSet(schedules)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _string_map(value: Any, path: str, errors: list[str]) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values()):
        errors.append(f"{path}: must be a map of strings")
        return {}
    return dict(value)


def _schedule_texts(spec: Mapping[str, Any], errors: list[str]) -> tuple[list[str], list[str]]:
    many = spec.get("schedules")
    one = spec.get("schedule")
    if many not in (None, []) and one not in (None, ""):
        errors.append("spec.schedule: cron workflow cant be configured with both Spec.Schedule and Spec.Schedules")
        return [], []
    if one not in (None, ""):
        if not isinstance(one, str):
            errors.append(f"spec.schedule: must be a string, not {type(one).__name__}")
            return [], []
        if len(one) > MAX_SCHEDULE_LENGTH:
            errors.append(f"spec.schedule: longer than {MAX_SCHEDULE_LENGTH} characters")
            return [], []
        return [one], ["spec.schedule"]
    if many in (None, []):
        errors.append("spec.schedules: cron workflow must have at least one schedule")
        return [], []
    if not isinstance(many, list):
        errors.append(f"spec.schedules: must be a list of strings, not {type(many).__name__}")
        return [], []
    if len(many) > MAX_SCHEDULES:
        errors.append(f"spec.schedules: at most {MAX_SCHEDULES} schedules, not {len(many)}")
        return [], []
    texts, paths = [], []
    for index, text in enumerate(many):
        if not isinstance(text, str):
            errors.append(f"spec.schedules[{index}]: must be a string, not {type(text).__name__}")
            continue
        if len(text) > MAX_SCHEDULE_LENGTH:
            errors.append(f"spec.schedules[{index}]: longer than {MAX_SCHEDULE_LENGTH} characters")
            continue
        texts.append(text)
        paths.append(f"spec.schedules[{index}]")
    return texts, paths


def _stop_strategy(value: Any, engine: str | None, errors: list[str]) -> StopExpression | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        errors.append("spec.stopStrategy: must be an object with `expression` (or the pre-release `condition`)")
        return None
    present = [key for key in ("expression", "condition") if value.get(key) not in (None, "")]
    if len(present) != 1:
        errors.append("spec.stopStrategy: set exactly one of `expression` or `condition`")
        return None
    key = present[0]
    text = value[key]
    if not isinstance(text, str):
        errors.append(f"spec.stopStrategy.{key}: must be a string, not {type(text).__name__}")
        return None
    try:
        return compile_stop(text, key, engine)
    except ExpressionError as error:
        errors.append(f"spec.stopStrategy.{key}: {error}")
        return None


def _history_limit(spec: Mapping[str, Any], key: str, default: int, errors: list[str]) -> int:
    value = spec.get(key)
    if value is None:
        return default
    if not _is_int(value):
        errors.append(f"spec.{key}: must be an integer, not {value!r}")
        return default
    # Argo: a negative limit means the default; 0 keeps none.
    return default if value < 0 else value
