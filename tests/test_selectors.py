"""The one label-selector module (pure tables): the list/watch query string the local endpoint parses, the
`metav1.LabelSelector` objects policies and webhook configurations hold, and that both compile to the same thing."""
from __future__ import annotations

import pytest

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


@pytest.mark.parametrize("selector, message", [
    ("app=wf,", 'unable to parse requirement: found \'\', expected: identifier in selector "app=wf,"'),
    ("a b", 'unable to parse requirement: unexpected text in selector "a b": "a b"'),
    ("in (x)", 'unable to parse requirement: unexpected text in selector "in (x)": "in (x)"'),
    ("bad key!=x y", 'unable to parse requirement: unexpected text in selector "bad key!=x y": "bad key!=x y"'),
    ("-bad=x", 'unable to parse requirement: invalid label key "-bad" in selector "-bad=x"'),
    ("k" * 64 + "=x", f'unable to parse requirement: invalid label key "{"k" * 64}" in selector "{"k" * 64}=x"'),
])
def test_malformed_query_string_names_the_selector(selector, message):
    # kube-apiserver 1.24 also starts with "unable to parse requirement" but names the token it expected.
    with pytest.raises(SelectorError) as err:
        parse_label_selector(selector)
    assert str(err.value) == message


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
