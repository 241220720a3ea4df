"""The CEL table every policy expression relies on, run on both engines so they agree (burstflow.cel)."""
from __future__ import annotations

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
