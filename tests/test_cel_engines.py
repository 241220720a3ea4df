"""The CEL table every policy expression relies on, run on both engines so they agree (burstflow.cel)."""
from __future__ import annotations

import re

import pytest

from burstflow import cel
from tests.conftest import load_admission

REQUEST = load_admission("pod-create-argo-workflow-pod.json")["body"]["request"]
VARIABLES = {"object": REQUEST["object"],
             "namespaceObject": {"metadata": {"name": "argo-jobs", "labels": {"vci": "true"}}},
             "request": {k: v for k, v in REQUEST.items() if k not in ("object", "oldObject")}}
ENGINES = [pytest.param(e, id=e) for e in (cel.NATIVE, cel.PYTHON)]

TABLE = [
    ("label lookup", "object.metadata.labels['workflows.argoproj.io/workflow']", "argo-vci-demo-x7k2p"),
    ("label compare", "object.metadata.labels['workflows.argoproj.io/workflow'] != ''", True),
    ("exists macro", "object.spec.containers.exists(c, c.name == 'main')", True),
    ("all macro", "object.spec.containers.all(c, has(c.resources.requests))", True),
    ("map macro", "object.spec.containers.map(c, c.name)", ["wait", "main"]),
    ("filter + size", "size(object.spec.containers.filter(c, c.name == 'main'))", 1),
    ("has on missing field", "has(object.spec.nodeName)", False),
    ("in on map keys", "'vci' in namespaceObject.metadata.labels", True),
    ("namespace label", "namespaceObject.metadata.labels.vci == 'true'", True),
    ("request fields", "request.operation == 'CREATE' && request.dryRun == false", True),
    ("null field", "object.metadata.creationTimestamp == null", True),
    ("string concat", "object.metadata.namespace + '/' + object.metadata.name",
     "argo-jobs/argo-vci-demo-x7k2p-whalesay-1234567890"),
    ("int to string", "string(size(object.spec.containers))", "2"),
    ("ternary", "has(object.metadata.labels.team) ? object.metadata.labels.team : 'none'", "none"),
    ("startsWith", "object.spec.containers[1].image.startsWith('paas-cn-shanghai')", True),
    ("matches regex", "object.metadata.name.matches('^argo-.*-[0-9]+$')", True),
]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name, expression, expected", TABLE, ids=[row[0] for row in TABLE])
def test_cel_table(engine, name, expression, expected):
    if engine not in cel.available_engines():
        pytest.skip(f"{engine} engine not installed")
    env = cel.Environment(list(VARIABLES), engine=engine)
    result = env.compile(expression).evaluate(env.activation(VARIABLES))
    assert (type(result), result) == (type(expected), expected)  # plain Python values; True is not 1


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("expression", [
    "object.metadata.labels['missing']",
    "object.spec.containers[5].name",
    "1 / 0",
], ids=["missing key", "index out of range", "division by zero"])
def test_evaluation_errors_raise_cel_error(engine, expression):
    if engine not in cel.available_engines():
        pytest.skip(f"{engine} engine not installed")
    env = cel.Environment(list(VARIABLES), engine=engine)
    with pytest.raises(cel.CelError):
        env.compile(expression).evaluate(env.activation(VARIABLES))


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("expression", ["object.metadata.(", "pod.metadata.name", ""],
                         ids=["syntax", "undeclared variable", "empty"])
def test_compile_errors_raise_cel_error(engine, expression):
    if engine not in cel.available_engines():
        pytest.skip(f"{engine} engine not installed")
    with pytest.raises(cel.CelError):
        cel.Environment(list(VARIABLES), engine=engine).compile(expression)


@pytest.mark.parametrize("engine", ENGINES)
def test_one_activation_serves_many_programs(engine):
    if engine not in cel.available_engines():
        pytest.skip(f"{engine} engine not installed")
    env = cel.Environment(list(VARIABLES), engine=engine)
    activation = env.activation(VARIABLES)
    programs = [env.compile(expression) for _, expression, _ in TABLE]
    assert [p.evaluate(activation) for p in programs] == [expected for _, _, expected in TABLE]


# The shared cost bound (issue 12 item 9): comprehension iterations, nested ones included, are counted the same way
# on both engines; the limit is the native runtime's own. Each row: id, list length, expression, expected.
BUDGET = [
    ("9,999 iterations pass", cel.ITERATION_BUDGET - 1, "xs.all(x, x >= 0)", True),
    ("10,000 iterations fail", cel.ITERATION_BUDGET, "xs.all(x, x >= 0)", cel.BUDGET_MESSAGE),
    ("nested iterations count", 3334, "xs.exists(x, [1, 2].all(y, x + y < 0))", cel.BUDGET_MESSAGE),
]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name, size, expression, expected", BUDGET, ids=[row[0] for row in BUDGET])
def test_iteration_budget_is_the_same_on_both_engines(engine, name, size, expression, expected):
    if engine not in cel.available_engines():
        pytest.skip(f"{engine} engine not installed")
    program = cel.Environment(["xs"], engine=engine).compile(expression)
    try:
        result = program.evaluate({"xs": list(range(size))})
    except cel.CelError as error:
        result = str(error)
    assert result == expected


@pytest.mark.parametrize("engine", ENGINES)
def test_evaluation_messages_are_short(engine):
    """An engine message quoting a huge value is cut, so a condition or log line stays readable."""
    if engine not in cel.available_engines():
        pytest.skip(f"{engine} engine not installed")
    program = cel.Environment(["m"], engine=engine).compile("m['" + "k" * 5000 + "'] == 1")
    with pytest.raises(cel.CelError) as caught:
        program.evaluate({"m": {"a": 1}})
    assert len(str(caught.value)) <= cel.MAX_MESSAGE_CHARS


@pytest.mark.parametrize("engine", ENGINES)
def test_compile_error_says_where_and_what_was_expected(engine):
    if engine not in cel.available_engines():
        pytest.skip(f"{engine} engine not installed")
    with pytest.raises(cel.CelError) as caught:
        cel.Environment(list(VARIABLES), engine=engine).compile("object.metadata.name ==")
    message = str(caught.value)
    # Line and column (the engines place an error at the end of input a token apart), then what was expected.
    assert re.match(r"1:2[2-4]: Syntax error: .* expecting ", message) and "\n" not in message, message
