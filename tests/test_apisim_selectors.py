"""Label and field selector parsing and matching (pure tables)."""
from __future__ import annotations

import pytest

from burstflow.apisim.resources import POD_FIELDS
from burstflow.apisim.selectors import (fields_match, labels_match, parse_field_selector, parse_label_selector,
                                        selector_from_label_selector)
from burstflow.apisim.status import ApiError

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
], ids=lambda v: v if isinstance(v, str) else None)
def test_label_selector_table(selector, labels, expected):
    assert labels_match(parse_label_selector(selector), labels) is expected


@pytest.mark.parametrize("selector", ["app=wf,", "a b", "in (x)", "bad key!=x y"])
def test_malformed_label_selector_is_a_400_naming_the_selector(selector):
    with pytest.raises(ApiError) as err:
        parse_label_selector(selector)
    assert err.value.code == 400
    assert "unable to parse requirement" in err.value.body["message"]


def test_webhook_label_selector_with_match_expressions():
    match = selector_from_label_selector({"matchLabels": {"vci": "true"},
                                          "matchExpressions": [{"key": "team", "operator": "NotIn",
                                                                "values": ["infra"]}]})
    assert match({"vci": "true", "team": "ml"})
    assert not match({"vci": "true", "team": "infra"})
    assert not match({"team": "ml"})
    assert selector_from_label_selector({})({})


RUNNING = {"metadata": {"name": "p1", "namespace": "capture"}, "status": {"phase": "Running"}}


@pytest.mark.parametrize("selector, expected", [
    ("status.phase=Running", True),
    ("status.phase!=Running", False),
    ("status.phase!=Succeeded,metadata.namespace=capture", True),
    ("metadata.name==p2", False),
    ("spec.nodeName=", True),
])
def test_pod_field_selector_table(selector, expected):
    assert fields_match(parse_field_selector(selector, POD_FIELDS, custom=False), RUNNING, POD_FIELDS) is expected


def test_unsupported_field_selectors_answer_400_worded_like_the_server():
    with pytest.raises(ApiError) as builtin:
        parse_field_selector("spec.foo=x", POD_FIELDS, custom=False)
    assert builtin.value.body["message"] == "field label not supported: spec.foo"
    with pytest.raises(ApiError) as custom:
        parse_field_selector("status.phase=x", {"metadata.name": None, "metadata.namespace": None}, custom=True)
    assert custom.value.body["message"] == ('"status.phase" is not a known field selector: only "metadata.name", '
                                            '"metadata.namespace"')
