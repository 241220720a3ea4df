"""The one CRD-schema validator (`burstflow.crdschema`), behind `policies validate`, the policy compilers and the
local endpoint: the Kubernetes dialect of OpenAPI, nulls pruned as kube-apiserver prunes them, and each caller's
wording (jsonschema's for policy files, the 422 causes for the endpoint)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from burstflow.apisim.schema import SchemaValidator
from burstflow.crdschema import CrdSchema, api_field, field_path, prune_nulls, rule_failures
from burstflow.webhook import policy
from burstflow.webhook.loader import Document, compile_objects

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "api"

SCHEMA = {"type": "object", "properties": {
    "name": {"type": "string"},
    "note": {"type": "string", "nullable": True},
    "port": {"x-kubernetes-int-or-string": True},
    "items": {"type": "array", "items": {"type": "object", "required": ["key"], "properties": {
        "key": {"type": "string"}, "value": {"type": "string"}}}},
    "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
}}


@pytest.mark.parametrize("obj, violations", [
    ({"name": "a", "note": None}, []),
    ({"name": None}, []),
    ({"items": [{"key": "k", "value": None}]}, []),
    ({"items": [{"key": None}]}, [(("items", 0), "required")]),
    ({"port": 8080}, []),
    ({"port": "http"}, []),
    ({"port": 1.5}, [(("port",), "anyOf")]),
    ({"note": 5}, [(("note",), "type")]),
    ({"labels": {"a": None}}, []),
    ({"labels": {"a": 1}}, [(("labels", "a"), "type")]),
], ids=["nullable null", "non-nullable null is pruned", "nested null is pruned", "required null is missing",
        "int-or-string int", "int-or-string string", "int-or-string neither", "nullable keeps its type",
        "additionalProperties null pruned", "additionalProperties typed"])
def test_violations_follow_the_api_server(obj, violations):
    assert [(v.path, v.keyword) for v in CrdSchema(SCHEMA).violations(obj)] == violations


def test_prune_returns_the_same_object_when_nothing_is_dropped():
    obj = {"name": "a", "items": [{"key": "k"}], "free": {"x": None}}
    assert prune_nulls(obj, SCHEMA) is obj
    assert prune_nulls({"name": None, "items": [{"key": "k", "value": None}]}, SCHEMA) == {"items": [{"key": "k"}]}


def test_unknown_fields_outside_preserved_objects():
    found = CrdSchema(SCHEMA).unknown_fields({"nam": "a", "free": {"anything": 1}, "items": [{"key": "k", "x": 1}]})
    assert [(v.path, v.message) for v in found] == [
        (("nam",), "unknown field 'nam' (known: free, items, labels, name, note, port)"),
        (("items", 0, "x"), "unknown field 'x' (known: key, value)")]


def test_paths_as_policy_authors_and_as_the_server_print_them():
    assert field_path(["spec", "labels", "bad key", "x", 0]) == "spec.labels[bad key].x[0]"
    assert api_field(["spec", "labels", "bad key", 0]) == "spec.labels.bad key[0]"


def test_type_cause_is_the_one_a_real_server_wrote():
    recorded = json.loads((FIXTURES / "workflow-create-422-schema.json").read_text())["body"]["details"]["causes"][0]
    schema = CrdSchema({"type": "object", "properties": {"spec": {"type": "object", "properties": {
        "entrypoint": {"type": "string"}}}}})
    assert [v.cause() for v in schema.violations({"spec": {"entrypoint": 5}})] == [recorded]


def burst_profile_schema() -> dict:
    return next(v for v in policy.crd()["spec"]["versions"] if v["name"] == policy.VERSION)["schema"]["openAPIV3Schema"]


def test_local_endpoint_refuses_a_required_field_sent_as_null_as_the_server_does():
    # kube-apiserver 1.24 (dry run against ../shared/harness): "spec.match.matchConditions[0].name: Required value"
    # and the "some validation rules were not checked" cause.
    obj = {"apiVersion": "burstflow.io/v1alpha1", "kind": "BurstProfile", "metadata": {"name": "p"},
           "spec": {"match": {"matchConditions": [{"name": None, "expression": "true"}]}}}
    causes = SchemaValidator(burst_profile_schema()).causes(obj)
    assert [(c["reason"], c["field"]) for c in causes] == [("FieldValueRequired", "spec.match.matchConditions[0].name"),
                                                           ("FieldValueInvalid", "<nil>")]


def test_policy_with_null_fields_compiles_as_the_server_stores_it():
    # The real server prunes these nulls and accepts the object (then defaults priority 0, seccomp RuntimeDefault).
    obj = {"apiVersion": "burstflow.io/v1alpha1", "kind": "BurstProfile", "metadata": {"name": "p"},
           "spec": {"priority": None, "seccomp": None, "annotations": {"a": "b"}}}
    policies, errors = compile_objects([Document("policies/x.yaml", obj)], compilers={})
    assert [str(e) for e in errors] == []
    (profile,) = policies.profiles
    assert (profile.priority, profile.seccomp, profile.annotations) == (0, True, (("a", "b"),))


RULES = {"type": "object", "properties": {"spec": {"type": "object", "x-kubernetes-validations": [
    {"rule": "self.replicas <= 10", "message": "at most 10 replicas"},
    {"rule": "self.replicas >= oldSelf.replicas"},
    {"rule": "self.missing == 1", "message": "reads a field that is not there"},
], "properties": {"replicas": {"type": "integer"}}}}}


def test_rules_run_as_on_a_write_transition_rules_only_against_an_old_object():
    created = rule_failures(RULES, {"spec": {"replicas": 11}})
    assert [(f.path, f.message, f.error is not None) for f in created] == [
        (("spec",), "at most 10 replicas", False), (("spec",), "reads a field that is not there", True)]
    updated = rule_failures(RULES, {"spec": {"replicas": 3}}, {"spec": {"replicas": 5}})
    assert [f.message for f in updated] == ["failed rule: self.replicas >= oldSelf.replicas",
                                            "reads a field that is not there"]


def test_local_endpoint_words_a_failed_rule_as_the_servers_422_cause():
    schema = CrdSchema(RULES)
    obj = {"spec": {"replicas": 11, "missing": 1}}
    assert schema.violations(obj) == []
    assert SchemaValidator(RULES).causes(obj) == [
        {"reason": "FieldValueInvalid", "field": "spec", "message": 'Invalid value: "object": at most 10 replicas'}]
