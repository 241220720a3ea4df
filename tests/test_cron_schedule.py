"""Schedule parsing (robfig v3 ParseStandard rules and messages), iteration, DST rules and schedule sets."""
from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest
from croniter import croniter

from burstflow.cron.schedule import ScheduleError, ScheduleSet, parse_go_duration, parse_schedule

UTC = timezone.utc
NY = "America/New_York"
# 2026-03-08: New York springs forward at 02:00 EST -> 03:00 EDT (02:00-02:59 do not exist).
BEFORE_SPRING_FORWARD = datetime(2026, 3, 8, 5, 0, tzinfo=UTC)  # 00:00 EST
# 2026-11-01: New York falls back at 02:00 EDT -> 01:00 EST (01:00-01:59 happen twice).
BEFORE_FALL_BACK = datetime(2026, 11, 1, 3, 0, tzinfo=UTC)  # 23:00 EDT on Oct 31
NEW_YEAR = datetime(2026, 1, 1, tzinfo=UTC)


def fires(expr: str, start: datetime, count: int, zone: str | None = None) -> list[str]:
    schedule = parse_schedule(expr, zone)
    out, cursor = [], start
    for _ in range(count):
        cursor = schedule.next_after(cursor)
        if cursor is None:
            break
        out.append(cursor.strftime("%m-%d %H:%MZ"))
    return out


@pytest.mark.parametrize(
    "expr, message",
    [
        ("* * * * * *", "expected exactly 5 fields, found 6: [* * * * * *]"),
        ("* * * *", "expected exactly 5 fields, found 4: [* * * *]"),
        ("", "empty spec string"),
        ("@reboot", "unrecognized descriptor: @reboot"),
        ("0 12737123 * * *", "end of range (12737123) above maximum (23): 12737123"),
        ("* * * 13 *", "end of range (13) above maximum (12): 13"),
        ("* * * * 7", "end of range (7) above maximum (6): 7"),
        ("* * 0 * *", "beginning of range (0) below minimum (1): 0"),
        ("5-1 * * * *", "beginning of range (5) beyond end of range (1): 5-1"),
        ("*/0 * * * *", "step of range should be a positive number: */0"),
        ("L * * * *", 'failed to parse int from L: strconv.Atoi: parsing "L": invalid syntax'),
        ("1-2-3 * * * *", "too many hyphens: 1-2-3"),
        ("1/2/3 * * * *", "too many slashes: 1/2/3"),
        ("@every 1d", 'failed to parse duration @every 1d: time: unknown unit "d" in duration "1d"'),
        ("@every 10", 'failed to parse duration @every 10: time: missing unit in duration "10"'),
        ("@every 500ms", "@every duration must be at least 1s: 500ms"),
        ("CRON_TZ=Mars/Olympus 0 1 * * *", "provided bad location Mars/Olympus: unknown time zone Mars/Olympus"),
    ],
)
def test_invalid_schedules_get_robfig_messages(expr, message):
    with pytest.raises(ScheduleError) as caught:
        parse_schedule(expr)
    assert str(caught.value) == message


def test_unknown_timezone_is_argo_message():
    with pytest.raises(ScheduleError, match=r"invalid timezone 'Nowhere/Town': unknown time zone Nowhere/Town"):
        parse_schedule("0 1 * * *", "Nowhere/Town")


@pytest.mark.parametrize(
    "expr, expected",
    [
        ("0 12 ? * MON", ["01-05 12:00Z", "01-12 12:00Z"]),  # names and `?`
        ("0 0 1 jan,JUL *", ["01-01 00:00Z", "07-01 00:00Z"]),
        ("0 0 13 * 5", ["01-02 00:00Z", "01-09 00:00Z", "01-13 00:00Z"]),  # both days restricted: DOM OR DOW
        ("0 0 */10 * 5", ["01-01 00:00Z", "01-02 00:00Z", "01-09 00:00Z"]),  # */10 is not a star: still OR
        ("0 0 * * 5", ["01-02 00:00Z", "01-09 00:00Z"]),  # DOM star: AND
        ("0 0 */1 * 5", ["01-02 00:00Z", "01-09 00:00Z"]),  # */1 keeps robfig's star bit: AND
        ("30 5/6 * * *", ["01-01 05:30Z", "01-01 11:30Z", "01-01 17:30Z", "01-01 23:30Z"]),  # N/step = N-max/step
        ("@yearly", ["01-01 00:00Z"]),
        ("@monthly", ["01-01 00:00Z", "02-01 00:00Z"]),
        ("@weekly", ["01-04 00:00Z", "01-11 00:00Z"]),
        ("@daily", ["01-01 00:00Z", "01-02 00:00Z"]),
        ("@hourly", ["01-01 00:00Z", "01-01 01:00Z"]),
    ],
)
def test_grammar(expr, expected):
    assert fires(expr, NEW_YEAR - timedelta(seconds=1), len(expected)) == expected


def test_never_firing_schedule_parses_and_never_fires():
    schedule = parse_schedule("0 0 30 2 *")
    assert schedule.never_fires
    assert schedule.next_after(NEW_YEAR) is None
    assert not parse_schedule("0 0 29 2 *").never_fires  # leap day: fires every four years


@pytest.mark.parametrize("expr", ["*/7 * * * *", "0 9-17 * * 1-5", "15,45 */2 1,15 * *", "0 0 1 */3 *",
                                  "5 4 * * SUN", "0 0 13 * 5", "30 2 29 2 *", "0 22 * * 1-5"])
def test_agrees_with_croniter_in_utc(expr):
    """Away from DST (UTC) croniter is right, so it is the oracle for field semantics."""
    rng = random.Random(expr)
    for _ in range(20):
        start = NEW_YEAR + timedelta(minutes=rng.randrange(0, 5 * 365 * 24 * 60), seconds=rng.randrange(60))
        ours = parse_schedule(expr).next_after(start)
        theirs = croniter(expr, start).get_next(datetime)
        assert ours == theirs, (expr, start)


def test_spring_forward_gap_time_does_not_run_that_day():
    assert fires("30 2 * * *", BEFORE_SPRING_FORWARD, 2, NY) == ["03-09 06:30Z", "03-10 06:30Z"]
    # croniter moves it to 03:00 EDT instead, which is why iteration is ours.
    moved = croniter("30 2 * * *", BEFORE_SPRING_FORWARD.astimezone(parse_schedule("0 0 * * *", NY).zone))
    assert moved.get_next(datetime).astimezone(UTC).strftime("%H:%M") == "07:00"


def test_spring_forward_wildcard_hour_runs_every_real_hour():
    assert fires("30 * * * *", BEFORE_SPRING_FORWARD, 4, NY) == [
        "03-08 05:30Z", "03-08 06:30Z", "03-08 07:30Z", "03-08 08:30Z"]  # 00:30 EST, 01:30 EST, 03:30 EDT, ...


def test_fall_back_fixed_hour_runs_once_at_first_occurrence():
    assert fires("30 1 * * *", BEFORE_FALL_BACK, 2, NY) == ["11-01 05:30Z", "11-02 06:30Z"]  # 01:30 EDT only
    assert fires("*/20 1 * * *", BEFORE_FALL_BACK, 4, NY) == [
        "11-01 05:00Z", "11-01 05:20Z", "11-01 05:40Z", "11-02 06:00Z"]
    # A service (re)started inside the second pass must not run the fixed hour's second 01:30 (EST).
    inside_second_pass = datetime(2026, 11, 1, 6, 10, tzinfo=UTC)  # 01:10 EST, after 01:30 EDT already ran
    assert fires("30 1 * * *", inside_second_pass, 1, NY) == ["11-02 06:30Z"]
    # croniter runs it twice (01:30 EDT and 01:30 EST).
    twice = croniter("30 1 * * *", BEFORE_FALL_BACK.astimezone(parse_schedule("0 0 * * *", NY).zone))
    assert [twice.get_next(datetime).astimezone(UTC).strftime("%d %H:%M") for _ in range(2)] == ["01 05:30", "01 06:30"]


@pytest.mark.parametrize("expr", ["30 * * * *", "30 */1 * * *", "30 ? * * *"])
def test_fall_back_wildcard_hour_runs_every_real_hour(expr):
    assert fires(expr, BEFORE_FALL_BACK, 5, NY) == [
        "11-01 03:30Z", "11-01 04:30Z", "11-01 05:30Z", "11-01 06:30Z", "11-01 07:30Z"]


def test_fall_back_hourly_runs_every_real_hour_from_inside_the_repeat():
    assert fires("@hourly", BEFORE_FALL_BACK, 5, NY) == [
        "11-01 04:00Z", "11-01 05:00Z", "11-01 06:00Z", "11-01 07:00Z", "11-01 08:00Z"]
    inside_second_pass = datetime(2026, 11, 1, 6, 10, tzinfo=UTC)  # 01:10 EST
    assert fires("*/20 * * * *", inside_second_pass, 3, NY) == ["11-01 06:20Z", "11-01 06:40Z", "11-01 07:00Z"]


def test_timezone_prefix_alone_sets_the_zone():
    assert fires("CRON_TZ=Asia/Tokyo 0 9 * * *", NEW_YEAR, 1) == ["01-02 00:00Z"]
    assert fires("TZ=Asia/Tokyo 0 9 * * *", NEW_YEAR, 1) == ["01-02 00:00Z"]
    assert fires("0 9 * * *", NEW_YEAR, 1, "Asia/Tokyo") == ["01-02 00:00Z"]


def test_every_is_anchored_to_the_anchor_not_to_the_caller():
    schedule = parse_schedule("@every 1h30m")
    anchor = datetime(2026, 1, 1, 10, 0, 7, tzinfo=UTC)
    assert schedule.next_after(anchor, anchor) == datetime(2026, 1, 1, 11, 30, 7, tzinfo=UTC)
    assert schedule.next_after(datetime(2026, 1, 1, 14, 0, tzinfo=UTC), anchor) == datetime(2026, 1, 1, 14, 30, 7,
                                                                                             tzinfo=UTC)
    assert schedule.latest_in(anchor, datetime(2026, 1, 1, 14, 0, tzinfo=UTC), anchor) == datetime(
        2026, 1, 1, 13, 0, 7, tzinfo=UTC)


@pytest.mark.parametrize("text, seconds", [("1h30m", 5400), ("90s", 90), ("1.5h", 5400), ("2h45m30.5s", 9930.5),
                                           ("300ms", 0.3), ("0", 0)])
def test_go_durations(text, seconds):
    assert parse_go_duration(text) == pytest.approx(seconds)


def test_coinciding_fires_of_several_schedules_are_one_decision():
    both = ScheduleSet((parse_schedule("*/3 * * * *"), parse_schedule("*/5 * * * *")))
    fired = both.fires(NEW_YEAR, NEW_YEAR + timedelta(minutes=16))
    assert [(f.time.minute, f.schedules) for f in fired] == [
        (3, ("*/3 * * * *",)), (5, ("*/5 * * * *",)), (6, ("*/3 * * * *",)), (9, ("*/3 * * * *",)),
        (10, ("*/5 * * * *",)), (12, ("*/3 * * * *",)), (15, ("*/3 * * * *", "*/5 * * * *"))]


def test_latest_in_long_window_is_bounded_and_exact():
    every_minute = ScheduleSet((parse_schedule("* * * * *"),))
    latest, count = every_minute.latest_in(NEW_YEAR, NEW_YEAR + timedelta(days=400, seconds=30), cap=101)
    assert latest == NEW_YEAR + timedelta(days=400) and count == 101
    latest, count = every_minute.latest_in(NEW_YEAR, NEW_YEAR + timedelta(minutes=3))
    assert latest == NEW_YEAR + timedelta(minutes=3) and count == 3


def test_compiled_schedules_are_cached():
    assert parse_schedule("*/5 * * * *", NY) is parse_schedule("*/5 * * * *", NY)


@pytest.mark.parametrize("expr,zone", [("*/7 * * * *", None), ("30 1 * * *", "America/New_York"),
                                       ("* 1 * * *", "Europe/London"), ("0 12 * * 1-5", "UTC")])
def test_next_after_is_the_same_whatever_was_asked_before(expr, zone):
    """A parsed schedule is shared by every CronWorkflow using it and remembers its last answer: queries in any
    order (backwards, repeated, across DST changes) must give what a freshly parsed schedule gives."""
    shared = parse_schedule(expr, zone)
    rng = random.Random(f"{expr}{zone}")
    start = datetime(2026, 3, 7, tzinfo=timezone.utc)  # both zones change their clocks within the next weeks
    for _ in range(400):
        t = start + timedelta(seconds=rng.randrange(0, 60 * 24 * 3600))
        if rng.random() < 0.3:
            t = t.replace(second=0, microsecond=0)
        fresh = type(shared)(**{f: getattr(shared, f) for f in shared.__dataclass_fields__})
        answer = shared.next_after(t)
        assert answer == fresh.next_after(t), t
        # Then from the answer itself, as `ScheduleSet.fires` walks: strictly after it, never it again.
        assert shared.next_after(answer) == fresh.next_after(answer) > answer, answer
