"""Cron schedules as Argo parses them (robfig/cron v3 `ParseStandard`), with Burstflow's DST rules, compiled once.

Grammar (robfig v3, standard parser): exactly 5 fields `minute hour day-of-month month day-of-week`; `*` and `?`;
lists, ranges `a-b`, steps `a-b/n`, `*/n`, `a/n` (= `a-max/n`); month names JAN-DEC and weekday names SUN-SAT (any
case); weekdays 0-6 (7 is rejected, as in robfig); when both day fields are restricted a day matches either (Vixie
OR rule), when one is `*`/`?` (not `*/n`) both must match; descriptors `@yearly @annually @monthly @weekly @daily
@midnight @hourly` and `@every <Go duration>`; an optional `CRON_TZ=<zone> ` or `TZ=<zone> ` prefix.

Time zones and daylight saving (the issue's rules; croniter moves gap times to 03:00 and runs fixed hours twice,
which is why iteration is our own and croniter is only the oracle in tests):
- a local time inside a spring-forward gap does not exist and does not run that day;
- in a repeated fall-back hour a schedule whose hour field is a wildcard (`*`, `?`, `*/n`, `@hourly`) runs at every
  real occurrence; a schedule with a fixed hour runs once, at the first occurrence (Vixie cron).
`@every` fires at `anchor + k * duration` (k >= 1) in real time, anchored at the last scheduled time (or creation).
"""
from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

UTC = timezone.utc
# robfig gives up after five years of searching and reports "never" (zero time); so do we.
SEARCH_YEARS = 5
ONE_MINUTE = timedelta(minutes=1)


class ScheduleError(ValueError):
    """A schedule or time zone that cannot be parsed; the message is robfig's wording where robfig has one."""


@dataclass(frozen=True)
class _Bounds:
    name: str
    low: int
    high: int
    names: dict[str, int] | None = None


_MONTH_NAMES = {name.lower(): i for i, name in enumerate(calendar.month_abbr) if name}
_DOW_NAMES = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}
_FIELDS = (
    _Bounds("minute", 0, 59),
    _Bounds("hour", 0, 23),
    _Bounds("day of month", 1, 31),
    _Bounds("month", 1, 12, _MONTH_NAMES),
    _Bounds("day of week", 0, 6, _DOW_NAMES),
)
_DESCRIPTORS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


def load_zone(name: str) -> ZoneInfo:
    """An IANA zone by name; raises ScheduleError `invalid timezone "<name>": unknown time zone <name>` (Argo)."""
    return _load_zone(name)


@lru_cache(maxsize=512)
def _load_zone(name: str) -> ZoneInfo:
    try:
        if not name or name == "Local" or name != name.strip():
            raise ValueError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ScheduleError(f"invalid timezone {name!r}: unknown time zone {name}") from None


def split_timezone_prefix(text: str) -> tuple[str | None, str]:
    """`CRON_TZ=Europe/Paris 0 1 * * *` -> ("Europe/Paris", "0 1 * * *"); no prefix -> (None, text)."""
    stripped = text.strip()
    if stripped.startswith(("TZ=", "CRON_TZ=")):
        space = stripped.find(" ")
        if space < 0:
            return stripped[stripped.index("=") + 1:], ""
        return stripped[stripped.index("=") + 1:space], stripped[space:].strip()
    return None, stripped


class Schedule:
    """One parsed schedule. `next_after(t, anchor)` is the first fire instant strictly after `t` (aware, UTC)."""

    text: str
    never_fires: bool = False

    def next_after(self, t: datetime, anchor: datetime | None = None) -> datetime | None:
        raise NotImplementedError

    def latest_in(self, low: datetime, high: datetime, anchor: datetime | None = None) -> datetime | None:
        """The last fire instant in `(low, high]`, searching backwards in growing windows (bounded work)."""
        window = timedelta(hours=1)
        while True:
            start = max(low, high - window)
            latest = None
            cursor = self.next_after(start, anchor)
            while cursor is not None and cursor <= high:
                latest = cursor
                cursor = self.next_after(cursor, anchor)
            if latest is not None or start == low:
                return latest
            window *= 24 if window < timedelta(days=31) else 4


@dataclass(frozen=True, eq=False)
class CronSchedule(Schedule):
    """A 5-field schedule in a zone. Field sets are sorted tuples; `*_next` are lookup tables value -> next allowed."""

    text: str
    zone: ZoneInfo | None
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    doms: frozenset[int]
    months: tuple[int, ...]
    dows: frozenset[int]
    dom_star: bool
    dow_star: bool
    wildcard_hour: bool
    never_fires: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "_minute_next", _next_table(self.minutes, 60))
        object.__setattr__(self, "_hour_next", _next_table(self.hours, 24))
        object.__setattr__(self, "_month_next", _next_table(self.months, 13))
        # (t, next_after(t)) of the last query that found a time. Any t' with t <= t' < next_after(t) has the same
        # answer (nothing fires in between), so the many CronWorkflows sharing this parsed schedule (parse_schedule
        # is cached) decide at start-up and in a burst without walking the calendar again. One tuple, replaced
        # whole: safe when `when` expressions move a decision into a worker thread.
        object.__setattr__(self, "_memo", None)

    def day_matches(self, day: date) -> bool:
        dom = day.day in self.doms
        dow = (day.weekday() + 1) % 7 in self.dows
        if self.dom_star or self.dow_star:
            return dom and dow
        return dom or dow

    def next_naive(self, start: datetime, limit_year: int) -> datetime | None:
        """The first local wall-clock minute >= `start` (naive) that matches every field, up to `limit_year`."""
        year, month, day, hour, minute = start.year, start.month, start.day, start.hour, start.minute
        minute_next, hour_next, month_next = self._minute_next, self._hour_next, self._month_next
        while year <= limit_year:
            wanted_month = month_next[month]
            if wanted_month is None:
                year, month, day, hour, minute = year + 1, self.months[0], 1, 0, 0
                continue
            if wanted_month != month:
                month, day, hour, minute = wanted_month, 1, 0, 0
            last_day = calendar.monthrange(year, month)[1]
            while day <= last_day and not self.day_matches(date(year, month, day)):
                day, hour, minute = day + 1, 0, 0
            if day > last_day:
                year, month, day, hour, minute = (year + 1, 1, 1, 0, 0) if month == 12 else (year, month + 1, 1, 0, 0)
                continue
            wanted_hour = hour_next[hour]
            if wanted_hour is None:
                day, hour, minute = day + 1, 0, 0
                if day > last_day:
                    year, month, day = (year + 1, 1, 1) if month == 12 else (year, month + 1, 1)
                continue
            if wanted_hour != hour:
                hour, minute = wanted_hour, 0
            wanted_minute = minute_next[minute]
            if wanted_minute is None:
                hour, minute = hour + 1, 0
                if hour > 23:
                    day, hour = day + 1, 0
                    if day > last_day:
                        year, month, day = (year + 1, 1, 1) if month == 12 else (year, month + 1, 1)
                continue
            return datetime(year, month, day, hour, wanted_minute)
        return None

    def next_after(self, t: datetime, anchor: datetime | None = None) -> datetime | None:
        if self.never_fires:
            return None
        memo = self._memo
        if memo is not None and memo[0] <= t < memo[1]:
            return memo[1]
        found = self._next_after(t)
        if found is not None:
            object.__setattr__(self, "_memo", (t, found))
        return found

    def _next_after(self, t: datetime) -> datetime | None:
        zone = self.zone
        if zone is None:
            naive = t.astimezone(UTC).replace(tzinfo=None, second=0, microsecond=0)
            found = self.next_naive(naive + ONE_MINUTE, naive.year + SEARCH_YEARS)
            return found.replace(tzinfo=UTC) if found is not None else None
        local = t.astimezone(zone)
        base = local.replace(tzinfo=None, second=0, microsecond=0, fold=0)
        limit_year = base.year + SEARCH_YEARS
        best = None
        cursor = self.next_naive(base + ONE_MINUTE, limit_year)
        while cursor is not None:
            best = self._first_instant_after(cursor, t)
            if best is not None:
                break
            cursor = self.next_naive(cursor + ONE_MINUTE, limit_year)
        if self.wildcard_hour and local.fold == 0:
            # Still in the first pass of a repeated hour: its second pass (fold=1) comes before later wall times.
            first, second = _offsets(base, zone)
            if first > second:
                repeat = self._second_pass_after(base, first - second, t)
                if repeat is not None and (best is None or repeat < best):
                    best = repeat
        return best

    def _first_instant_after(self, naive: datetime, t: datetime) -> datetime | None:
        zone = self.zone
        first, second = _offsets(naive, zone)
        if first == second:
            instant = (naive - first).replace(tzinfo=UTC)
            return instant if instant > t else None
        if first < second:
            return None  # inside a spring-forward gap: this wall time does not exist today
        earlier = (naive - first).replace(tzinfo=UTC)
        if earlier > t:
            return earlier
        if self.wildcard_hour:
            later = (naive - second).replace(tzinfo=UTC)
            return later if later > t else None
        return None

    def _second_pass_after(self, base: datetime, overlap: timedelta, t: datetime) -> datetime | None:
        cursor = self.next_naive(base - overlap, base.year + 1)
        while cursor is not None and cursor <= base + overlap:
            first, second = _offsets(cursor, self.zone)
            if first > second:
                instant = (cursor - second).replace(tzinfo=UTC)
                if instant > t:
                    return instant
            cursor = self.next_naive(cursor + ONE_MINUTE, base.year + 1)
        return None


@dataclass(frozen=True, eq=False)
class EverySchedule(Schedule):
    """`@every <duration>`: fires at `anchor + k * seconds`, k >= 1 (whole seconds, as robfig truncates)."""

    text: str
    seconds: int
    never_fires: bool = False

    def next_after(self, t: datetime, anchor: datetime | None = None) -> datetime | None:
        if anchor is None:
            anchor = t
        base = anchor.astimezone(UTC).replace(microsecond=0)
        elapsed = (t - base).total_seconds()
        steps = max(1, int(elapsed // self.seconds) + 1)
        return base + timedelta(seconds=steps * self.seconds)

    def latest_in(self, low: datetime, high: datetime, anchor: datetime | None = None) -> datetime | None:
        base = (anchor or low).astimezone(UTC).replace(microsecond=0)
        steps = int((high - base).total_seconds() // self.seconds)
        if steps < 1:
            return None
        latest = base + timedelta(seconds=steps * self.seconds)
        return latest if latest > low else None


def _offsets(naive: datetime, zone: ZoneInfo) -> tuple[timedelta, timedelta]:
    return (naive.replace(tzinfo=zone).utcoffset(), naive.replace(tzinfo=zone, fold=1).utcoffset())


def _next_table(values: tuple[int, ...], size: int) -> tuple[int | None, ...]:
    table: list[int | None] = [None] * (size + 1)
    upcoming = None
    for value in range(size, -1, -1):
        if value in values:
            upcoming = value
        table[value] = upcoming
    return tuple(table)


def parse_schedule(text: str, timezone_name: str | None = None) -> Schedule:
    """Parse one schedule string in `timezone_name` (None: UTC); a `CRON_TZ=`/`TZ=` prefix overrides the zone.

    Compiled schedules are cached by (text, zone). Raises ScheduleError with robfig's wording.
    """
    if not isinstance(text, str):
        raise ScheduleError(f"schedule must be a string, not {type(text).__name__}")
    return _parse_cached(text, timezone_name or None)


@lru_cache(maxsize=4096)
def _parse_cached(text: str, timezone_name: str | None) -> Schedule:
    if not text.strip():
        raise ScheduleError("empty spec string")
    prefix_zone, body = split_timezone_prefix(text)
    zone_name = timezone_name
    if prefix_zone is not None:
        try:
            zone_name = load_zone(prefix_zone).key
        except ScheduleError:
            raise ScheduleError(f"provided bad location {prefix_zone}: unknown time zone {prefix_zone}") from None
    zone = None if zone_name in (None, "UTC", "Etc/UTC") else load_zone(zone_name)
    if not body:
        raise ScheduleError("empty spec string")
    if body.startswith("@"):
        if body.startswith("@every "):
            return EverySchedule(text=text, seconds=_parse_every(body))
        expanded = _DESCRIPTORS.get(body)
        if expanded is None:
            raise ScheduleError(f"unrecognized descriptor: {body}")
        body = expanded
    fields = body.split()
    if len(fields) != 5:
        raise ScheduleError(f"expected exactly 5 fields, found {len(fields)}: [{' '.join(fields)}]")
    parsed = [_parse_field(field, bounds) for field, bounds in zip(fields, _FIELDS)]
    (minutes, _), (hours, _), (doms, dom_star), (months, _), (dows, dow_star) = parsed
    schedule = CronSchedule(
        text=text,
        zone=zone,
        minutes=tuple(sorted(minutes)),
        hours=tuple(sorted(hours)),
        doms=frozenset(doms),
        months=tuple(sorted(months)),
        dows=frozenset(dows),
        dom_star=dom_star,
        dow_star=dow_star,
        wildcard_hour=fields[1].startswith(("*", "?")),
    )
    # Eight years from a leap-year start covers every calendar combination (Feb 29 included).
    if schedule.next_naive(datetime(2000, 1, 1), 2008) is None:
        object.__setattr__(schedule, "never_fires", True)
    return schedule


def _parse_field(field: str, bounds: _Bounds) -> tuple[set[int], bool]:
    values: set[int] = set()
    star = False
    for expr in (part for part in field.split(",") if part):
        bits, is_star = _parse_range(expr, bounds)
        values |= bits
        star = star or is_star
    return values, star


def _parse_range(expr: str, bounds: _Bounds) -> tuple[set[int], bool]:
    range_and_step = expr.split("/")
    low_and_high = range_and_step[0].split("-")
    single = len(low_and_high) == 1
    star = False
    if low_and_high[0] in ("*", "?"):
        start, end, star = bounds.low, bounds.high, True
    else:
        start = _parse_int_or_name(low_and_high[0], bounds)
        if len(low_and_high) == 1:
            end = start
        elif len(low_and_high) == 2:
            end = _parse_int_or_name(low_and_high[1], bounds)
        else:
            raise ScheduleError(f"too many hyphens: {expr}")
    if len(range_and_step) == 1:
        step = 1
    elif len(range_and_step) == 2:
        step = _parse_int(range_and_step[1])
        if step == 0:
            raise ScheduleError(f"step of range should be a positive number: {expr}")
        if single:
            end = bounds.high
        if step > 1:
            star = False
    else:
        raise ScheduleError(f"too many slashes: {expr}")
    if start < bounds.low:
        raise ScheduleError(f"beginning of range ({start}) below minimum ({bounds.low}): {expr}")
    if end > bounds.high:
        raise ScheduleError(f"end of range ({end}) above maximum ({bounds.high}): {expr}")
    if start > end:
        raise ScheduleError(f"beginning of range ({start}) beyond end of range ({end}): {expr}")
    return set(range(start, end + 1, step)), star


def _parse_int_or_name(text: str, bounds: _Bounds) -> int:
    if bounds.names and text.lower() in bounds.names:
        return bounds.names[text.lower()]
    return _parse_int(text)


def _parse_int(text: str) -> int:
    if not re.fullmatch(r"[+-]?\d+", text):
        raise ScheduleError(f'failed to parse int from {text}: strconv.Atoi: parsing "{text}": invalid syntax')
    number = int(text)
    if number < 0:
        raise ScheduleError(f"negative number ({number}) not allowed: {text}")
    return number


_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_GO_PART = re.compile(r"(\d+\.?\d*|\.\d+)([a-zµμ]*)")


def parse_go_duration(text: str) -> float:
    """Seconds in a Go `time.ParseDuration` string (`1h30m`, `90s`, `1.5h`); ScheduleError with Go's wording."""
    body = text
    sign = 1.0
    if body[:1] in "+-" and body:
        sign, body = (-1.0 if body[0] == "-" else 1.0), body[1:]
    if body == "0":
        return 0.0
    if not body:
        raise ScheduleError(f'time: invalid duration "{text}"')
    total = 0.0
    position = 0
    while position < len(body):
        match = _GO_PART.match(body, position)
        if match is None:
            raise ScheduleError(f'time: invalid duration "{text}"')
        number, unit = match.groups()
        if not unit:
            raise ScheduleError(f'time: missing unit in duration "{text}"')
        if unit not in _GO_UNITS:
            raise ScheduleError(f'time: unknown unit "{unit}" in duration "{text}"')
        total += float(number) * _GO_UNITS[unit]
        position = match.end()
    return sign * total


def _parse_every(body: str) -> int:
    raw = body[len("@every "):].strip()
    try:
        seconds = parse_go_duration(raw)
    except ScheduleError as error:
        raise ScheduleError(f"failed to parse duration {body}: {error}") from None
    # robfig silently raises shorter delays to 1 s and truncates to whole seconds; we refuse instead of guessing.
    if seconds < 1:
        raise ScheduleError(f"@every duration must be at least 1s: {raw}")
    return int(seconds)


@dataclass(frozen=True)
class Fire:
    """One decision instant of a schedule set and the schedules (as written) that fire at it."""

    time: datetime
    schedules: tuple[str, ...]


class ScheduleSet:
    """Several schedules of one CronWorkflow: their fire instants united; coinciding instants are one `Fire`."""

    __slots__ = ("schedules", "texts")

    def __init__(self, schedules: tuple[Schedule, ...]) -> None:
        self.schedules = schedules
        self.texts = tuple(schedule.text for schedule in schedules)

    @property
    def never_fires(self) -> bool:
        return all(schedule.never_fires for schedule in self.schedules)

    def next_after(self, t: datetime, anchor: datetime | None = None) -> Fire | None:
        """The earliest fire strictly after `t` over all schedules, or None when none can fire."""
        best: datetime | None = None
        names: list[str] = []
        for schedule in self.schedules:
            candidate = schedule.next_after(t, anchor)
            if candidate is None:
                continue
            if best is None or candidate < best:
                best, names = candidate, [schedule.text]
            elif candidate == best:
                names.append(schedule.text)
        return Fire(best, tuple(names)) if best is not None else None

    def fires(self, after: datetime, until: datetime, anchor: datetime | None = None, limit: int = 1000) -> list[Fire]:
        """Every fire in `(after, until]`, at most `limit` of them."""
        result: list[Fire] = []
        cursor = after
        while len(result) < limit:
            fire = self.next_after(cursor, anchor)
            if fire is None or fire.time > until:
                break
            result.append(fire)
            cursor = fire.time
        return result

    def latest_in(self, low: datetime, high: datetime, anchor: datetime | None = None,
                  cap: int = 101) -> tuple[datetime | None, int]:
        """The latest fire in `(low, high]` and how many fires there are, counting at most `cap`.

        Exact for up to `cap` fires; beyond that the latest is found with a bounded backwards search, so a long
        outage costs the same as a short one.
        """
        fires = self.fires(low, high, anchor, limit=cap)
        if len(fires) < cap:
            return (fires[-1].time if fires else None), len(fires)
        candidates = [s.latest_in(low, high, anchor) for s in self.schedules]
        found = [c for c in candidates if c is not None]
        return (max(found) if found else fires[-1].time), cap
