"""`when` / stopStrategy expressions: Argo's expr-lang subset translated to CEL; the table runs on both CEL engines."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import re

import pytest

from burstflow.cel import available_engines
from burstflow.cron.expressions import ExpressionError, compile_stop, compile_when, translate, variables

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
    # Argo's workflow/cron/operator_test.go TestEvaluateWhen (its status has a lastScheduledTime 30 min ago).
    ("argo: nil or > 30 s", "{{= cronworkflow.lastScheduledTime == nil || ( (now() - "
                            "cronworkflow.lastScheduledTime).Seconds() > 30) }}", dict(now=LAST_RUN + timedelta(minutes=30)),
     True),
    ("argo: nil and < 30 s", "{{= cronworkflow.lastScheduledTime == nil && ( (now() - "
                             "cronworkflow.lastScheduledTime).Seconds() < 30) }}",
     dict(now=LAST_RUN + timedelta(minutes=30)), False),
    ("argo: != nil", "{{= cronworkflow.lastScheduledTime != nil }}", {}, True),
    ("argo: == nil when never ran", "{{= cronworkflow.lastScheduledTime == nil }}", dict(last=None), True),
    ("argo: minutes >= 30", "{{= (now() - cronworkflow.lastScheduledTime).Minutes() >= 30 }}",
     dict(now=LAST_RUN + timedelta(minutes=30)), True),
    ("argo: minutes < 50", "{{= (now() - cronworkflow.lastScheduledTime).Minutes() <  50 }}",
     dict(now=LAST_RUN + timedelta(minutes=30)), True),
    # Argo's docs/cron-workflows.md "Skip backwards" recipe (7200 s).
    ("argo docs: skip backwards, 1 h later", "{{= cronworkflow.lastScheduledTime == nil || (now() - "
                                             "cronworkflow.lastScheduledTime).Seconds() > 7200 }}",
     dict(now=LAST_RUN + timedelta(hours=1)), False),
    # Simple tags inside string literals (docs/variables.md, CronWorkflows): Argo substitutes their text.
    ("simple tag: namespace", "'{{cronworkflow.namespace}}' == 'etl'", {}, True),
    ("simple tag: name inside a longer string", "\"run-{{cronworkflow.name}}\" == 'run-nightly'", {}, True),
    ("simple tag: label", "'{{cronworkflow.labels.team}}' == 'data'", {}, True),
    ("simple tag: labels.json", "'{{cronworkflow.labels.json}}' == '{\"team\":\"data\"}'", {}, True),
    ("simple tag next to an expression", "{{= cronworkflow.failed < 3 }} && '{{cronworkflow.namespace}}' != 'prod'",
     {}, True),
    ("two expressions", "{{= cronworkflow.failed < 3 }} && {{= cronworkflow.succeeded == 0 }}", {}, True),
    # expr-lang's 7/2 is 3.5, CEL's is 3: integer literals around '/' become doubles.
    ("division of integer literals is a fraction", "{{= 7/2 == 3.5 }}", {}, True),
    ("division after Seconds()", "{{= (now() - cronworkflow.lastScheduledTime).Seconds() / 60 > 119 }}", {}, True),
    ("explicit doubles", "double(cronworkflow.failed) / 2.0 == 1.5", dict(failed=3), True),
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
        ("{{cronworkflow.name}} == 'x'", "{{cronworkflow.name}} at offset 0 is outside a string literal"),
        ("'{{cronworkflow.failed}}' == '3'", "failed to resolve {{cronworkflow.failed}} to string"),
        ("'{{workflow.name}}' == 'x'", "unknown variable {{workflow.name}} at offset 1: expected cronworkflow.name"),
        ("{{= }}", "empty {{= }} at offset 0: expected an expression"),
        ("'{{cronworkflow.name' == 'x'", "unclosed '{{' in the string literal at offset 0"),
        ("{{= cronworkflow.failed / 2 > 1 }}", "'/' at offset 21"),
        ("{{= unknown.thing > 1 }}", "undeclared reference to 'unknown"),
        ("{{= cronworkflow.failed # 2 }}", "unexpected character '#'"),
        ("   ", "expression is empty"),
    ],
)
def test_unparseable_when_is_a_precise_error(engine, text, fragment):
    with pytest.raises(ExpressionError) as caught:
        compile_when(text, engine)
    message = str(caught.value)
    assert fragment in message
    if fragment == "1:":  # where, and what was expected, on both engines
        assert re.match(r"1:2[2-4]: Syntax error: .* expecting ", message), message


@pytest.mark.parametrize("engine", ENGINES)
def test_non_boolean_result_is_an_error(engine):
    with pytest.raises(ExpressionError, match="^spec.when: expected a boolean, got int 1$"):
        compile_when("{{= cronworkflow.failed + 1 }}", engine).evaluate(context())


@pytest.mark.parametrize("engine", ENGINES)
def test_runaway_expression_fails_with_a_short_message_naming_the_field(engine):
    """Issue 12 item 9: a 200x200x200 comprehension stops at the shared iteration budget on both engines, and the
    message is the field path and the reason, not the (long) expression."""
    items = ", ".join(str(i) for i in range(200))
    text = (f"{{{{= [{items}].all(a, [{items}].all(b, [{items}].all(c, a + b + c >= 0))) }}}}")
    with pytest.raises(ExpressionError) as caught:
        compile_when(text, engine).evaluate(context())
    assert str(caught.value) == "spec.when: iteration budget exceeded (at most 9999 comprehension iterations)"
    with pytest.raises(ExpressionError) as caught:
        compile_stop("cronworkflow.name", "expression", engine).evaluate(context())
    assert str(caught.value) == "spec.stopStrategy.expression: expected a boolean, got str 'nightly'"


def test_translation_of_the_seed():
    cel = translate("cronworkflow.lastScheduledTime == nil || (now() - cronworkflow.lastScheduledTime).Seconds() > 3600")
    assert cel.startswith("(!cronworkflow_hasLastScheduledTime) || dyn(")
    assert "now()" not in cel and "nil" not in cel


def test_compiled_once():
    assert compile_when(SEED_WHEN) is compile_when(SEED_WHEN)
