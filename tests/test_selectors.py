"""The one label-selector module (pure tables): the list/watch query string the local endpoint parses, the
`metav1.LabelSelector` objects policies and webhook configurations hold, and that both compile to the same thing."""
from __future__ import annotations

import pytest

from burstflow.kube import CONFIGMAPS, KubeError
from burstflow.selectors import EVERYTHING, Requirement, Selector, SelectorError, compile_selector, parse_label_selector

POOL_POD = {"app": "wf", "burstflow.io/pool": "vci-pool"}


@pytest.mark.parametrize("selector, labels, expected", [
    ("app=wf", POOL_POD, True),
    ("app==wf", POOL_POD, True),
    ("app=other", POOL_POD, False),
    ("app!=other", POOL_POD, True),
    ("missing!=x", POOL_POD, True),
    ("burstflow.io/pool in (vci-pool, ecs-pool)", POOL_POD, True),
    ("burstflow.io/pool in (ecs-pool)", POOL_POD, False),
    ("burstflow.io/pool notin (ecs-pool)", POOL_POD, True),
    ("missing notin (x)", POOL_POD, True),
    ("burstflow.io/pool", POOL_POD, True),
    ("missing", POOL_POD, False),
    ("!missing", POOL_POD, True),
    ("!app", POOL_POD, False),
    ("app=wf,burstflow.io/pool in (vci-pool),!gpu", POOL_POD, True),
    ("app=wf,gpu", POOL_POD, False),
    ("", POOL_POD, True),
    ("app=wf", None, False),
], ids=lambda v: v if isinstance(v, str) else None)
def test_query_string_table(selector, labels, expected):
    assert parse_label_selector(selector).matches(labels) is expected


# Messages of kube-apiserver 1.24's 400 answers, captured from the real server (../shared/harness) with
# `kubectl get --raw '/api/v1/namespaces/default/pods?labelSelector=...'`.
NAME_RULE = ("must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric "
             "character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
             "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")
VALUE_RULE = ("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must "
              "start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used "
              "for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")
SUBDOMAIN_RULE = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and "
                  "must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation "
                  "is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
OPERATORS_EXPECTED = "expected: in, notin, =, ==, !=, gt, lt"
MALFORMED = [
    ("app=wf,", "found '', expected: identifier after ','"),
    ("a,,b", "found ',', expected: identifier after ','"),
    (",a", "found ',', expected: !, identifier, or 'end of string'"),
    ("=b", "found '=', expected: !, identifier, or 'end of string'"),
    ("(a)", "found '(', expected: !, identifier, or 'end of string'"),
    ("a=b c", "found 'c', expected: ',' or 'end of string'"),
    ("a=b=c", "found '=', expected: ',' or 'end of string'"),
    ("a=b==c", "found '==', expected: ',' or 'end of string'"),
    ("!a=b", "found '=', expected: ',' or 'end of string'"),
    ("!a b", "found 'b', expected: ',' or 'end of string'"),
    ("a in (b)x", "found 'x', expected: ',' or 'end of string'"),
    ("a in (b))", "found ')', expected: ',' or 'end of string'"),
    ("a b", f"unable to parse requirement: found 'b', {OPERATORS_EXPECTED}"),
    ("a!", f"unable to parse requirement: found '!', {OPERATORS_EXPECTED}"),
    ("a gt 5", f"unable to parse requirement: found 'gt', {OPERATORS_EXPECTED}"),
    ("in (x)", f"unable to parse requirement: found '(', {OPERATORS_EXPECTED}"),
    ("a in b", "unable to parse requirement: found 'b' expected: '('"),
    ("a in (b", "unable to parse requirement: found '', expected: ',' or ')'"),
    ("a in (b c)", "unable to parse requirement: found 'c', expected: ',' or ')'"),
    ("a in (b,=)", "unable to parse requirement: found '=', expected: ',', or identifier"),
    ("a=(b)", "unable to parse requirement: found '(', expected: identifier"),
    ("a=!b", "unable to parse requirement: found '!', expected: identifier"),
    ("a<>b", "unable to parse requirement: found '>', expected: identifier"),
    ("!", "unable to parse requirement: found '', expected: identifier"),
    ("!!a", "unable to parse requirement: found '!', expected: identifier"),
    ("-a=-b", f'unable to parse requirement: <nil>: Invalid value: "-a": name part {NAME_RULE}'),
    ("k" * 64 + "=x", f'unable to parse requirement: <nil>: Invalid value: "{"k" * 64}": name part must be no more '
                      f'than 63 characters'),
    ("/a=b", 'unable to parse requirement: <nil>: Invalid value: "/a": prefix part must be non-empty'),
    ("A.B/c=d", f'unable to parse requirement: <nil>: Invalid value: "A.B/c": prefix part {SUBDOMAIN_RULE}'),
    ("a/b/c=d", f'unable to parse requirement: <nil>: Invalid value: "a/b/c": a qualified name {NAME_RULE} with an '
                f"optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"),
    ("a=-b", f'unable to parse requirement: values[0][a]: Invalid value: "-b": {VALUE_RULE}'),
    ("a=b,c in (-x,y)", f'unable to parse requirement: values[0][c]: Invalid value: "-x": {VALUE_RULE}'),
    ("a=" + "v" * 64, f'unable to parse requirement: values[0][a]: Invalid value: "{"v" * 64}": must be no more than '
                      f'63 characters'),
    ("a in (-x,-y)", f'unable to parse requirement: [values[0][a]: Invalid value: "-x": {VALUE_RULE}, values[1][a]: '
                     f'Invalid value: "-y": {VALUE_RULE}]'),
    ("a>x", 'unable to parse requirement: values[0]: Invalid value: "x": for \'Gt\', \'Lt\' operators, the value must be '
            'an integer'),
    ("a>", 'unable to parse requirement: values[0]: Invalid value: "": for \'Gt\', \'Lt\' operators, the value must be '
           'an integer'),
]


@pytest.mark.parametrize("selector, message", MALFORMED, ids=[selector[:20] for selector, _ in MALFORMED])
def test_malformed_query_string_is_refused_with_the_servers_message(selector, message):
    with pytest.raises(SelectorError) as err:
        parse_label_selector(selector)
    assert str(err.value) == message


@pytest.mark.parametrize("selector, labels, expected", [
    ("a in ()", {"a": ""}, True),
    ("a in (,b)", {"a": ""}, True),
    ("a in (b,,c)", {"a": "c"}, True),
    ("a==", {"a": ""}, True),
    ("a=", {"a": "x"}, False),
    ("in", {"in": "x"}, True),
    ("a in (in)", {"a": "in"}, True),
    ("notin=b", {"notin": "b"}, True),
    (" a = b , c ", {"a": "b", "c": ""}, True),
    ("a in(b)", {"a": "b"}, True),
    ("a>5", {"a": "6"}, True),
    ("a>5", {"a": "5"}, False),
    ("a<5,b", {"a": "-3", "b": ""}, True),
    ("a<5", {"a": "x"}, False),
    ("a<5", {}, False),
], ids=lambda v: v if isinstance(v, str) else None)
def test_query_string_forms_the_server_accepts(selector, labels, expected):
    assert parse_label_selector(selector).matches(labels) is expected


async def test_the_endpoint_answers_a_bad_label_selector_with_400_and_the_servers_message(kube, namespace):
    for selector, message in (MALFORMED[0], MALFORMED[12], MALFORMED[25]):
        with pytest.raises(KubeError) as err:
            await kube.list(CONFIGMAPS, namespace=namespace, label_selector=selector)
        assert (err.value.code, err.value.message) == (400, message)


@pytest.mark.parametrize("text, raw", [
    ("vci=true,team notin (infra)", {"matchLabels": {"vci": "true"},
                                     "matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["infra"]}]}),
    ("a in (x,y),b,!c", {"matchExpressions": [{"key": "a", "operator": "In", "values": ["y", "x"]},
                                              {"key": "b", "operator": "Exists"},
                                              {"key": "c", "operator": "DoesNotExist"}]}),
    ("a!=x", {"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["x"]}]}),
    ("", {}),
], ids=["labels and NotIn", "In Exists DoesNotExist", "not equal", "empty"])
def test_query_string_and_label_selector_object_compile_to_the_same_selector(text, raw):
    assert parse_label_selector(text) == compile_selector(raw)


@pytest.mark.parametrize("labels, expected", [
    ({"vci": "true", "team": "ml"}, True),
    ({"vci": "true", "team": "infra"}, False),
    ({"team": "ml"}, False),
    ({"vci": "true"}, True),
])
def test_label_selector_object_with_match_expressions(labels, expected):
    selector = compile_selector({"matchLabels": {"vci": "true"},
                                 "matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["infra"]}]})
    assert selector.matches(labels) is expected


def test_unset_and_empty_selectors_match_everything():
    assert compile_selector(None) is EVERYTHING
    assert compile_selector({}).matches({}) and compile_selector({}).empty
    assert EVERYTHING.matches(None)


def test_grouped_checks_agree_with_requirement_by_requirement():
    requirements = (Requirement("a", "In", frozenset({"1"})), Requirement("a", "In", frozenset({"2"})),
                    Requirement("b", "Exists"), Requirement("c", "DoesNotExist"),
                    Requirement("d", "In", frozenset({"x", "y"})), Requirement("e", "NotIn", frozenset({"z"})))
    selector = Selector(requirements)
    for labels in ({"a": "1", "b": "", "d": "x"}, {"a": "2", "b": "", "d": "y"}, {"a": "1", "b": "", "d": "y", "c": ""},
                   {"a": "1", "b": "", "d": "x", "e": "z"}, {"a": "1", "b": "", "d": "x", "e": "w"}):
        assert selector.matches(labels) is all(r.matches(labels) for r in requirements), labels


@pytest.mark.parametrize("raw, path, message", [
    ([], "", "must be an object with matchLabels/matchExpressions, not list"),
    ({"matchLabel": {}}, "matchLabel", "unknown field (a selector has matchLabels and matchExpressions)"),
    ({"matchLabels": ["a"]}, "matchLabels", "must be a map of label key to value"),
    ({"matchLabels": {"a": 5}}, "matchLabels.a", "value must be a string, not 5 (quote it in YAML)"),
    ({"matchExpressions": {"key": "a"}}, "matchExpressions", "must be a list"),
    ({"matchExpressions": ["a"]}, "matchExpressions[0]", "must be an object with key, operator and values"),
    ({"matchExpressions": [{"operator": "Exists"}]}, "matchExpressions[0].key", "is required"),
    ({"matchExpressions": [{"key": "a", "operator": "Near"}]}, "matchExpressions[0].operator",
     "must be one of In, NotIn, Exists, DoesNotExist, not 'Near'"),
    ({"matchExpressions": [{"key": "a", "operator": "In", "values": [1]}]}, "matchExpressions[0].values",
     "must be a list of strings"),
    ({"matchExpressions": [{"key": "a", "operator": "In"}]}, "matchExpressions[0].values",
     "must be non-empty for operator In"),
    ({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}, "matchExpressions[0].values",
     "must be empty for operator Exists"),
], ids=lambda v: v if isinstance(v, str) and v else None)
def test_invalid_label_selector_objects_name_the_field(raw, path, message):
    with pytest.raises(SelectorError) as err:
        compile_selector(raw)
    assert (err.value.path, err.value.message) == (path, message)
