"""`burstflow cron preview`: the next run times of a CronWorkflow file, and what `when` decides, without a cluster.

The simulation assumes every run it allows really happens: `cronworkflow.lastScheduledTime` becomes that run's
scheduled time, so a gate such as the seed's "at least 3600 s since the last run" is decided for each row. Counters
(`failed`, `succeeded`) stay as the file's `status` says (0 without one). `now()` is taken one second after the
scheduled time, because the service evaluates `when` just after the instant: a boundary such as exactly 3600 s
comes out as it will in the service.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from burstflow.timefmt import format_time, parse_time
from burstflow.cron.engine import CronStatus, evaluate_stop
from burstflow.cron.expressions import ExpressionError, variables
from burstflow.cron.spec import CronSpec, parse_cron_workflow

# The service decides a tick shortly after its instant; see the module docstring.
EVALUATION_LAG = timedelta(seconds=1)


@dataclass(frozen=True)
class PreviewRow:
    """One upcoming decision instant. `decision`: run, skip (when false), suspended, stopped, or unknown (the
    expression cannot be evaluated from the spec alone; `reason` says why)."""

    time: datetime
    local: datetime
    schedules: tuple[str, ...]
    decision: str
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"time": format_time(self.time), "local": self.local.isoformat(), "schedules": list(self.schedules),
                "decision": self.decision, "reason": self.reason}


class PreviewError(ValueError):
    """The file is not a valid CronWorkflow; `errors` lists every field-path error."""

    def __init__(self, errors: tuple[str, ...]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


def preview(obj: Mapping[str, Any], *, start: datetime, count: int, engine: str | None = None
            ) -> tuple[list[PreviewRow], tuple[str, ...]]:
    """The next `count` decision instants after `start` and what would happen at each; plus the parse warnings.

    Raises PreviewError for an invalid CronWorkflow.
    """
    result = parse_cron_workflow(obj, engine=engine)
    if result.spec is None:
        raise PreviewError(result.errors)
    spec: CronSpec = result.spec
    status = CronStatus.from_object(obj)
    created = parse_time((obj.get("metadata") or {}).get("creationTimestamp")) or start
    zone = next((s.zone for s in spec.schedule_set.schedules if getattr(s, "zone", None) is not None), None)
    rows: list[PreviewRow] = []
    cursor = start
    last = status.last_scheduled_time
    while len(rows) < count:
        fire = spec.schedule_set.next_after(cursor, last or created)
        if fire is None:
            break
        cursor = fire.time
        decision, reason = _decide(spec, status, last, fire.time + EVALUATION_LAG)
        if decision == "run":
            last = fire.time
        local = fire.time.astimezone(zone) if zone is not None else fire.time
        rows.append(PreviewRow(fire.time, local, fire.schedules, decision, reason))
    return rows, result.warnings


def _decide(spec: CronSpec, status: CronStatus, last: datetime | None, now: datetime) -> tuple[str, str]:
    if status.stopped or status.completed:
        return "stopped", "status.phase is Stopped"
    try:
        stop = evaluate_stop(spec, status, now=now)
    except ExpressionError as error:
        return "unknown", str(error)
    if stop is not None:
        return "stopped", stop.message
    if spec.suspend:
        return "suspended", "spec.suspend is true"
    if spec.when is None:
        return "run", ""
    try:
        allowed = spec.when.evaluate(variables(
            name=spec.name, namespace=spec.namespace, labels=spec.labels, annotations=spec.annotations,
            failed=status.failed, succeeded=status.succeeded, last_scheduled_time=last, now=now))
    except ExpressionError as error:
        return "unknown", str(error)
    return ("run", "") if allowed else ("skip", "when is false")


def render_table(rows: list[PreviewRow]) -> str:
    """Aligned text columns: TIME (UTC), LOCAL, SCHEDULES, WHEN."""
    header = ("TIME (UTC)", "LOCAL", "SCHEDULES", "WHEN")
    lines = [(format_time(r.time), r.local.strftime("%Y-%m-%d %H:%M %Z"), ", ".join(r.schedules),
              r.decision + (f" ({r.reason})" if r.reason and r.decision == "unknown" else "")) for r in rows]
    widths = [max(len(header[i]), *(len(line[i]) for line in lines)) if lines else len(header[i]) for i in range(4)]
    out = ["  ".join(text.ljust(widths[i]) for i, text in enumerate(header)).rstrip()]
    out += ["  ".join(text.ljust(widths[i]) for i, text in enumerate(line)).rstrip() for line in lines]
    return "\n".join(out)
