"""`when` / stopStrategy expressions: Argo's expr-lang subset translated to CEL; the table runs on both CEL engines."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from burstflow.cel import available_engines
from cron.expressions import ExpressionError, compile_stop, compile_when, translate, variables

UTC = timezone.utc
LAST_RUN = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
# A missing engine shows as a skip with its reason (cel-expr-python has wheels for a few platforms only), never as
# rows that silently were not run.
ENGINES = [pytest.param(engine, id=engine, marks=pytest.mark.skipif(
    engine not in available_engines(), reason=f"{engine} CEL engine not installed")) for engine in ("native", "python")]
SEED_WHEN = ("{{= cronworkflow.lastScheduledTime == nil || "
             "(now() - cronworkflow.lastScheduledTime).Seconds() > 3600 }}")


def context(*, last=LAST_RUN, now=LAST_RUN + timedelta(hours=2), failed=0, succeeded=0):
    return variables(name="nightly", namespace="etl", labels={"team": "data"}, annotations={"owner": "ana"},
                     failed=failed, succeeded=succeeded, last_scheduled_time=last, now=now)


WHEN_TABLE = [
    ("seed, never ran", SEED_WHEN, dict(last=None), True),
    ("seed, 3 minutes after the last run", SEED_WHEN, dict(now=LAST_RUN + timedelta(minutes=3)), False),
    ("seed, exactly 3600 s after", SEED_WHEN, dict(now=LAST_RUN + timedelta(seconds=3600)), False),
    ("seed, 3600.05 s after (Go float seconds)", SEED_WHEN, dict(now=LAST_RUN + timedelta(seconds=3600.05)), True),
    ("seed, 61 minutes after", SEED_WHEN, dict(now=LAST_RUN + timedelta(minutes=61)), True),
    ("nil check negated", "{{= cronworkflow.lastScheduledTime != nil }}", dict(last=None), False),
    ("nil on the left", "{{= nil == cronworkflow.lastScheduledTime }}", dict(last=None), True),
    ("and/or/not words", "{{= not (cronworkflow.failed > 2) and cronworkflow.succeeded >= 0 }}", {}, True),
    ("failed below 3", "{{= cronworkflow.failed < 3 }}", dict(failed=3), False),
    ("minutes", "{{= (now() - cronworkflow.lastScheduledTime).Minutes() >= 120 }}", {}, True),
    ("hours", "{{= (now() - cronworkflow.lastScheduledTime).Hours() < 1.5 }}", {}, False),
    ("name and namespace", "{{= cronworkflow.name == 'nightly' && cronworkflow.namespace == \"etl\" }}", {}, True),
    ("labels map", "{{= cronworkflow.labels.team == 'data' }}", {}, True),
    ("annotations are the real annotations", "{{= cronworkflow.annotations['owner'] == 'ana' }}", {}, True),
    ("string literal untouched", "{{= cronworkflow.name != 'nil and now()' }}", {}, True),
    ("plain CEL with has()", "!has(cronworkflow.lastScheduledTime) || now - cronworkflow.lastScheduledTime "
                             "> duration('1h')", {}, True),
    ("plain CEL timestamp compare", "now > cronworkflow.lastScheduledTime", {}, True),
]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name, text, overrides, expected", WHEN_TABLE, ids=[row[0] for row in WHEN_TABLE])
def test_when_table(engine, name, text, overrides, expected):
    assert compile_when(text, engine).evaluate(context(**overrides)) is expected


STOP_TABLE = [
    ("released expression", "cronworkflow.failed >= 3", "expression", dict(failed=3), True),
    ("released expression, below", "cronworkflow.failed >= 3", "expression", dict(failed=2), False),
    ("pre-release condition, bare name", "failed >= 10", "condition", dict(failed=10), True),
    ("pre-release condition, below", "failed >= 10", "condition", dict(failed=9), False),
    ("condition mixing counters", "succeeded > 0 && failed == 0", "condition", dict(succeeded=1), True),
]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name, text, field, overrides, expected", STOP_TABLE, ids=[row[0] for row in STOP_TABLE])
def test_stop_table(engine, name, text, field, overrides, expected):
    assert compile_stop(text, field, engine).evaluate(context(**overrides)) is expected


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    "text, fragment",
    [
        ("{{= cronworkflow.failed >= }}", "1:"),
        ("{{cronworkflow.name}}", "only one {{= <expression> }}"),
        ("{{= cronworkflow.failed > 1 }} && {{= true }}", "only one {{= <expression> }}"),
        ("{{= unknown.thing > 1 }}", "undeclared reference to 'unknown"),
        ("{{= cronworkflow.failed # 2 }}", "unexpected character '#'"),
        ("   ", "expression is empty"),
    ],
)
def test_unparseable_when_is_a_precise_error(engine, text, fragment):
    with pytest.raises(ExpressionError) as caught:
        compile_when(text, engine)
    message = str(caught.value)
    if engine == "python" and fragment == "1:":
        fragment = "cronworkflow.failed >="  # cel-python points with a caret instead of line:column
    assert fragment in message


@pytest.mark.parametrize("engine", ENGINES)
def test_non_boolean_result_is_an_error(engine):
    with pytest.raises(ExpressionError, match="expected a boolean"):
        compile_when("{{= cronworkflow.failed + 1 }}", engine).evaluate(context())


def test_translation_of_the_seed():
    cel = translate("cronworkflow.lastScheduledTime == nil || (now() - cronworkflow.lastScheduledTime).Seconds() > 3600")
    assert cel.startswith("(!cronworkflow_hasLastScheduledTime) || dyn(")
    assert "now()" not in cel and "nil" not in cel


def test_compiled_once():
    assert compile_when(SEED_WHEN) is compile_when(SEED_WHEN)
