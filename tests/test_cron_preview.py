"""`burstflow cron preview`: upcoming run times, the schedules behind them, and the simulated `when` decision."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from burstflow.cli import main
from burstflow.cron.preview import preview

UTC = timezone.utc
ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "policies" / "cronworkflow-seed.yaml"
JUST_BEFORE_TEN = datetime(2026, 1, 5, 9, 58, tzinfo=UTC)


def seed() -> dict:
    return yaml.safe_load(SEED.read_text())


def test_seed_preview_simulates_the_3600_second_gate():
    rows, warnings = preview(seed(), start=JUST_BEFORE_TEN, count=56)  # 28 decisions an hour
    assert warnings == ()
    runs = [row.time for row in rows if row.decision == "run"]
    assert runs == [datetime(2026, 1, 5, 10, 0, tzinfo=UTC), datetime(2026, 1, 5, 11, 0, tzinfo=UTC)]
    assert {row.decision for row in rows} == {"run", "skip"}
    minute_15 = [row for row in rows if row.time == datetime(2026, 1, 5, 10, 15, tzinfo=UTC)]
    assert len(minute_15) == 1 and minute_15[0].schedules == ("*/3 * * * *", "*/5 * * * *")


def test_preview_in_a_timezone_across_spring_forward():
    obj = seed()
    obj["spec"].update(schedules=["30 2 * * *"], timezone="America/New_York")
    del obj["spec"]["when"]
    rows, _ = preview(obj, start=datetime(2026, 3, 7, 12, tzinfo=UTC), count=2)
    assert [row.local.strftime("%m-%d %H:%M %Z") for row in rows] == ["03-09 02:30 EDT", "03-10 02:30 EDT"]


def test_suspended_and_stopped_rows():
    obj = seed()
    obj["spec"]["suspend"] = True
    assert {row.decision for row in preview(obj, start=JUST_BEFORE_TEN, count=3)[0]} == {"suspended"}
    obj = seed()
    obj["status"] = {"failed": 10}
    rows, _ = preview(obj, start=JUST_BEFORE_TEN, count=2)
    assert {row.decision for row in rows} == {"stopped"}
    assert "failed >= 10" in rows[0].reason


def test_when_that_depends_on_missing_data_is_unknown():
    obj = seed()
    obj["spec"]["when"] = "{{= cronworkflow.labels.tier == 'gold' }}"
    rows, _ = preview(obj, start=JUST_BEFORE_TEN, count=1)
    assert rows[0].decision == "unknown" and "tier" in rows[0].reason


def test_cli_table(capsys):
    assert main(["cron", "preview", str(SEED), "--from", "2026-01-05T09:58:00Z", "--count", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["TIME", "(UTC)", "LOCAL", "SCHEDULES", "WHEN"]
    assert out[1].startswith("2026-01-05T10:00:00Z") and out[1].endswith("run")
    assert out[2].startswith("2026-01-05T10:03:00Z") and out[2].endswith("skip")


def test_cli_json(capsys):
    assert main(["cron", "preview", str(SEED), "--from", "2026-01-05T09:58:00Z", "-n", "1", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{
        "time": "2026-01-05T10:00:00Z", "local": "2026-01-05T10:00:00+00:00",
        "schedules": ["*/3 * * * *", "*/5 * * * *"], "decision": "run", "reason": ""}]


def test_cli_invalid_file_lists_errors(tmp_path, capsys):
    bad = seed()
    bad["spec"]["schedules"] = ["0 0 2 * * *"]
    bad["spec"]["timezone"] = "Mars/Olympus"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    assert main(["cron", "preview", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}: spec.timezone: invalid timezone 'Mars/Olympus'" in err
    assert "spec.schedules[0]: cron schedule '0 0 2 * * *' is malformed: expected exactly 5 fields" in err


def test_cli_never_firing_warns(tmp_path, capsys):
    obj = seed()
    obj["spec"]["schedules"] = ["0 0 30 2 *"]
    path = tmp_path / "feb30.yaml"
    path.write_text(yaml.safe_dump(obj))
    assert main(["cron", "preview", str(path)]) == 0
    captured = capsys.readouterr()
    assert "can never fire" in captured.err and len(captured.out.splitlines()) == 1


@pytest.mark.parametrize("argv, message", [(["--from", "yesterday"], "not an RFC 3339 time"),
                                           (["--count", "0"], "must be at least 1")])
def test_cli_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit):
        main(["cron", "preview", str(SEED), *argv])
    assert message in capsys.readouterr().err
