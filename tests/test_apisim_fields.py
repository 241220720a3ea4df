"""Field selector parsing and matching on the local endpoint (pure tables); label selectors are in test_selectors.py."""
from __future__ import annotations

import pytest

from burstflow.apisim.fields import fields_match, parse_field_selector
from burstflow.apisim.resources import POD_FIELDS
from burstflow.apisim.status import ApiError

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
