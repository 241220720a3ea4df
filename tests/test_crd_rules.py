"""Every validation rule of the shipped CRDs rejects an object that breaks it, offline and on the API server.

Offline means `burstflow policies validate` (BurstProfiles, ResourcePolicies) or `burstflow cron preview`
(CronWorkflows); Argo's own Workflow rules are only the API server's. On the API server the objects are created with
`dryRun=All`, so the same table runs unchanged on the local endpoint and, with BURSTFLOW_E2E_KUBECONFIG, on a real
one, and the 422 must name the same field and message on both (the messages were captured from kube-apiserver 1.24).
CRDs whose rules do not compile there are refused by both endpoints as well.
"""
from __future__ import annotations

import copy
import functools
import io
import json
import uuid
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from burstflow.cli import main as burstflow
from burstflow.kube import BURSTPROFILES, CONFIGMAPS, CRDS, CRON_WORKFLOWS, NAMESPACES, RESOURCEPOLICIES, Invalid
from tests.conftest import POLICIES, ROOT

CRD_DIR = ROOT / "manifests" / "base" / "crds"
SEED_CRON = yaml.safe_load((POLICIES / "cronworkflow-seed.yaml").read_text())


def _profile(spec: dict) -> dict:
    return {"apiVersion": "burstflow.io/v1alpha1", "kind": "BurstProfile", "metadata": {"name": "rule-test"},
            "spec": spec}


def _pools(spec: dict) -> dict:
    return {"apiVersion": "burstflow.io/v1alpha1", "kind": "ResourcePolicy",
            "metadata": {"name": "rule-test", "namespace": "rule-test"},
            "spec": {"selector": {"app": "render"}, "subsets": [{"name": "vci"}], **spec}}


def _cron(*, metadata: dict | None = None, drop: tuple[str, ...] = (), **spec: Any) -> dict:
    obj = copy.deepcopy(SEED_CRON)
    obj["metadata"] = metadata or {"name": "rule-test"}
    for key in drop:
        obj["spec"].pop(key)
    obj["spec"].update(spec)
    return obj


def _workflow(**spec: Any) -> dict:
    return _cron(workflowSpec={"entrypoint": "main", **spec})


def _templates(*templates: dict) -> dict:
    return _workflow(templates=list(templates))


@dataclass(frozen=True)
class Case:
    id: str
    obj: dict
    # What the API server answers: the one 422 cause, as {"reason", "field", "message"}.
    field: str
    message: str
    # Which rule or plain OpenAPI constraint of which CRD this row is for (the coverage test reads it).
    rule: str
    reason: str = "FieldValueInvalid"
    # A fragment of the offline tool's error, or None when only the API server checks the rule.
    offline: str | None = None

    @property
    def kind(self) -> str:
        return self.obj["kind"]


def _cel(type_name: str, message: str) -> str:
    return f'Invalid value: "{type_name}": {message}'


SELECTOR_VALUES = "In and NotIn need values; Exists and DoesNotExist take none"
SPOT = "spotPriceLimit is required with, and only allowed with, spotStrategy SpotWithPriceLimit"
RATIO_PATTERN = r"^(0*\.[0-9]+|0+|0*1(\.0+)?)$"

CASES = [
    # --- BurstProfile ----------------------------------------------------------------------------------------------
    Case("profile: In without values",
         _profile({"match": {"namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "In"}]}}}),
         "spec.match.namespaceSelector.matchExpressions[0]", _cel("object", SELECTOR_VALUES),
         rule=SELECTOR_VALUES, offline=SELECTOR_VALUES),
    Case("profile: Exists with values",
         _profile({"match": {"objectSelector": {"matchExpressions": [{"key": "a", "operator": "Exists",
                                                                      "values": ["x"]}]}}}),
         "spec.match.objectSelector.matchExpressions[0]", _cel("object", SELECTOR_VALUES),
         rule=SELECTOR_VALUES, offline=SELECTOR_VALUES),
    Case("profile: duplicate matchConditions names",
         _profile({"match": {"matchConditions": [{"name": "a", "expression": "true"},
                                                 {"name": "a", "expression": "false"}]}}),
         "spec.match.matchConditions", _cel("array", "matchConditions names must be unique"),
         rule="matchConditions names must be unique", offline="matchConditions names must be unique"),
    Case("profile: spot price limit without its strategy",
         _profile({"provider": {"alibaba-eci": {"spotPriceLimit": "0.5"}}}),
         "spec.provider.alibaba-eci", _cel("object", SPOT), rule=SPOT, offline=SPOT),
    Case("profile: price-limit strategy without a limit",
         _profile({"provider": {"alibaba-eci": {"spotStrategy": "SpotWithPriceLimit"}}}),
         "spec.provider.alibaba-eci", _cel("object", SPOT), rule=SPOT, offline=SPOT),
    Case("profile: spot fallback without a spot strategy",
         _profile({"provider": {"alibaba-eci": {"spotFallback": True}}}),
         "spec.provider.alibaba-eci", _cel("object", "spotFallback only applies with a spotStrategy"),
         rule="spotFallback only applies with a spotStrategy", offline="spotFallback only applies with a spotStrategy"),
    Case("profile: Exists toleration with a value",
         _profile({"tolerations": [{"key": "k", "operator": "Exists", "value": "v"}]}),
         "spec.tolerations[0]", _cel("object", "a toleration with operator Exists must not have a value"),
         rule="a toleration with operator Exists must not have a value",
         offline="a toleration with operator Exists must not have a value"),
    Case("profile: tolerationSeconds without NoExecute",
         _profile({"tolerations": [{"key": "k", "effect": "NoSchedule", "tolerationSeconds": 5}]}),
         "spec.tolerations[0]", _cel("object", "tolerationSeconds only applies to effect NoExecute"),
         rule="tolerationSeconds only applies to effect NoExecute",
         offline="tolerationSeconds only applies to effect NoExecute"),
    Case("profile: no provider in the provider map", _profile({"provider": {}}),
         "spec.provider", "Invalid value: 0: spec.provider in body should have at least 1 properties",
         rule="minProperties spec.provider", offline="spec.provider"),
    # --- ResourcePolicy --------------------------------------------------------------------------------------------
    Case("pools: empty selector", _pools({"selector": {}}),
         "spec.selector", "Invalid value: 0: spec.selector in body should have at least 1 properties",
         rule="minProperties spec.selector", offline="must select something"),
    Case("pools: ratio above 1", _pools({"subsets": [{"name": "vci", "maxReplicasRatio": "1.5"}]}),
         "spec.subsets[0].maxReplicasRatio",
         f'Invalid value: "1.5": spec.subsets[0].maxReplicasRatio in body should match \'{RATIO_PATTERN}\'',
         rule="pattern maxReplicasRatio", offline="must be within [0, 1]"),
    # --- CronWorkflow: Burstflow's rules ---------------------------------------------------------------------------
    Case("cron: name longer than 52", _cron(metadata={"name": "n" * 53}),
         "<nil>", _cel("object", "metadata.name must not be more than 52 characters long"),
         rule="metadata.name must not be more than 52 characters long", offline="must not be more than 52"),
    Case("cron: schedule and schedules", _cron(schedule="* * * * *"),
         "spec", _cel("object", "set exactly one of spec.schedules or spec.schedule"),
         rule="set exactly one of spec.schedules or spec.schedule", offline="both Spec.Schedule and Spec.Schedules"),
    Case("cron: no schedule at all", _cron(drop=("schedules",)),
         "spec", _cel("object", "set exactly one of spec.schedules or spec.schedule"),
         rule="set exactly one of spec.schedules or spec.schedule", offline="must have at least one schedule"),
    Case("cron: timezone and a CRON_TZ prefix",
         _cron(timezone="Europe/Paris", schedules=["CRON_TZ=UTC 0 * * * *"]),
         "spec", _cel("object", "cannot use both spec.timezone and a TZ= or CRON_TZ= prefix in a schedule"),
         rule="cannot use both spec.timezone and a TZ= or CRON_TZ= prefix in a schedule",
         offline="cannot use both spec.timezone and a TZ= or CRON_TZ= prefix"),
    Case("cron: timezone longer than any zone name", _cron(timezone="Z" * 65),
         "spec.timezone", "Too long: may not be longer than 64", reason="FieldValueTooLong",
         rule="maxLength spec.timezone", offline="spec.timezone"),
    Case("cron: both stop forms", _cron(stopStrategy={"expression": "cronworkflow.failed > 1",
                                                      "condition": "failed > 1"}),
         "spec.stopStrategy", _cel("object", "set exactly one of stopStrategy.expression or stopStrategy.condition"),
         rule="set exactly one of stopStrategy.expression or stopStrategy.condition",
         offline="set exactly one of `expression` or `condition`"),
    Case("cron: empty stop strategy", _cron(stopStrategy={}),
         "spec.stopStrategy", _cel("object", "set exactly one of stopStrategy.expression or stopStrategy.condition"),
         rule="set exactly one of stopStrategy.expression or stopStrategy.condition",
         offline="set exactly one of `expression` or `condition`"),
    # --- CronWorkflow: Argo's Workflow rules (only the API server checks them) -------------------------------------
    Case("argo: two artifact locations",
         _workflow(arguments={"artifacts": [{"name": "a", "raw": {"data": "x"}, "http": {"url": "http://x"}}]}),
         "spec.workflowSpec.arguments.artifacts[0]", _cel("object", "at most one artifact location can be specified"),
         rule="at most one artifact location can be specified"),
    Case("argo: real-time gauge on resourcesDuration",
         _workflow(metrics={"prometheus": [{"name": "m", "help": "h", "gauge": {
             "realtime": True, "value": "{{resourcesDuration.cpu}}"}}]}),
         "spec.workflowSpec.metrics.prometheus[0].gauge",
         _cel("object", "'resourcesDuration.*' metrics cannot be used in real-time gauges"),
         rule="'resourcesDuration.*' metrics cannot be used in real-time gauges"),
    Case("argo: depends and dependencies",
         _templates({"name": "main", "dag": {"tasks": [{"name": "a", "template": "a", "depends": "b",
                                                        "dependencies": ["b"]}]}}),
         "spec.workflowSpec.templates[0].dag.tasks[0]", _cel("object", "cannot use both 'depends' and 'dependencies'"),
         rule="cannot use both 'depends' and 'dependencies'"),
    Case("argo: continueOn with depends",
         _templates({"name": "main", "dag": {"tasks": [{"name": "a", "template": "a", "depends": "b",
                                                        "continueOn": {"failed": True}}]}}),
         "spec.workflowSpec.templates[0].dag.tasks[0]", _cel("object", "cannot use 'continueOn' when using 'depends'"),
         rule="cannot use 'continueOn' when using 'depends'"),
    Case("argo: task name starting with a digit",
         _templates({"name": "main", "dag": {"tasks": [{"name": "1a", "template": "a", "depends": "b"}]}}),
         "spec.workflowSpec.templates[0].dag.tasks[0]",
         _cel("object", "task name cannot begin with a digit when using 'depends' or 'dependencies'"),
         rule="task name cannot begin with a digit when using 'depends' or 'dependencies'"),
    Case("argo: sequence with count and end",
         _templates({"name": "main", "steps": [[{"name": "s", "template": "a",
                                                 "withSequence": {"count": "2", "end": "5"}}]]}),
         "spec.workflowSpec.templates[0].steps[0][0].withSequence",
         _cel("object", "only one of count or end can be defined"), rule="only one of count or end can be defined"),
    Case("argo: manifest and manifestFrom",
         _templates({"name": "main", "resource": {"action": "create", "manifest": "{}",
                                                  "manifestFrom": {"artifact": {"name": "m"}}}}),
         "spec.workflowSpec.templates[0].resource",
         _cel("object", "only one of manifest or manifestFrom can be specified"),
         rule="only one of manifest or manifestFrom can be specified"),
    Case("argo: two template types",
         _templates({"name": "main", "container": {"image": "alpine"}, "suspend": {}}),
         "spec.workflowSpec.templates", _cel("array", "template must have at most one template type"),
         rule="template must have at most one template type"),
    Case("argo: timeout on a steps template",
         _templates({"name": "main", "timeout": "5s", "steps": [[{"name": "s", "template": "a"}]]}),
         "spec.workflowSpec.templates", _cel("array", "timeout cannot be applied to steps or dag templates"),
         rule="timeout cannot be applied to steps or dag templates"),
    Case("argo: activeDeadlineSeconds on a dag template",
         _templates({"name": "main", "activeDeadlineSeconds": 5, "dag": {"tasks": [{"name": "a", "template": "a"}]}}),
         "spec.workflowSpec.templates", _cel("array", "activeDeadlineSeconds is only valid for leaf templates"),
         rule="activeDeadlineSeconds is only valid for leaf templates"),
]
RESOURCES = {"BurstProfile": BURSTPROFILES, "ResourcePolicy": RESOURCEPOLICIES, "CronWorkflow": CRON_WORKFLOWS}


@functools.lru_cache(maxsize=None)
def _crd(name: str) -> dict:
    """A shipped CRD, parsed once (the CronWorkflow CRD is 2.7 MB of YAML); callers only read it."""
    return yaml.load((CRD_DIR / f"{name}.burstflow.io.yaml").read_text(), Loader=yaml.CSafeLoader)


def _rules(node: Any) -> list[dict]:
    """Every x-kubernetes-validations entry in a schema."""
    if isinstance(node, dict):
        return list(node.get("x-kubernetes-validations") or []) + [r for v in node.values() for r in _rules(v)]
    if isinstance(node, list):
        return [r for v in node for r in _rules(v)]
    return []


@pytest.mark.parametrize("crd", ["burstprofiles", "resourcepolicies", "cronworkflows"])
def test_every_rule_of_every_crd_has_a_rejection_case(crd):
    messages = {rule.get("message") or rule["rule"] for rule in _rules(_crd(crd))}
    tested = {case.rule for case in CASES}
    assert messages - tested == set(), f"rules of {crd} without a case in CASES"


@pytest.mark.parametrize("crd", ["burstprofiles", "resourcepolicies", "cronworkflows"])
def test_every_crd_compiles_as_kube_apiserver_compiles_it(crd):
    """Offline, the check the API server makes when the CRD is applied (rules type-checked against the schema)."""
    from burstflow.apisim.rules import crd_rule_causes

    assert crd_rule_causes(_crd(crd)) == []


def _rule_nodes(node: Any) -> list[dict]:
    if isinstance(node, dict):
        own = [node] if node.get("x-kubernetes-validations") else []
        return own + [n for v in node.values() for n in _rule_nodes(v)]
    if isinstance(node, list):
        return [n for v in node for n in _rule_nodes(v)]
    return []


def _bounded(schema: dict) -> bool:
    kind = schema.get("type")
    if kind == "string":
        return "maxLength" in schema
    if kind == "array":
        return "maxItems" in schema
    if kind == "object" and "additionalProperties" in schema:
        return "maxProperties" in schema
    return True


@pytest.mark.parametrize("crd", ["burstprofiles", "resourcepolicies", "cronworkflows"])
def test_every_string_list_and_map_a_rule_reads_is_bounded(crd):
    """The server prices a rule by the sizes of what it reads: every value a rule reads (not just tests with
    has()) declares its maxLength / maxItems / maxProperties, so the cost stays small on every version."""
    import re

    unbounded = []
    for node in _rule_nodes(_crd(crd)):
        fields = dict(node.get("properties") or {})
        fields.update((node.get("items") or {}).get("properties") or {})  # what `t` in `self.all(t, ...)` reads
        for rule in node["x-kubernetes-validations"]:
            text = re.sub(r"has\([^)]*\)", "", rule["rule"])
            if re.search(r"\bself\b(?!\.)", text) and not _bounded(node):
                unbounded.append((rule["rule"], "self"))
            for name in set(re.findall(r"\b[A-Za-z_]\w*\.(\w+)\b(?!\s*\()", text)):
                if name in fields and not _bounded(fields[name]):
                    unbounded.append((rule["rule"][:60], name))
    assert unbounded == []


def test_the_rules_replaced_by_openapi_constraints_stay_constraints():
    """`size(self)` does not compile on an object on any server version: the selector says it with minProperties."""
    spec = _crd("resourcepolicies")["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["properties"]["selector"]["minProperties"] == 1
    assert spec["properties"]["subsets"]["items"]["properties"]["maxReplicasRatio"]["pattern"] == RATIO_PATTERN


def _offline(tmp_path: Path, case: Case) -> tuple[int, str]:
    path = tmp_path / "object.yaml"
    path.write_text(yaml.safe_dump(case.obj))
    argv = ["cron", "preview", str(path), "--count", "1"] if case.kind == "CronWorkflow" else \
        ["policies", "validate", str(path)]
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = burstflow(argv)
    return code, out.getvalue() + err.getvalue()


@pytest.mark.parametrize("case", [c for c in CASES if c.offline], ids=[c.id for c in CASES if c.offline])
def test_the_offline_tools_reject_what_the_rule_rejects(tmp_path, case):
    code, output = _offline(tmp_path, case)
    assert code == 1 and case.offline in output, output


@pytest.mark.parametrize("kind", ["BurstProfile", "ResourcePolicy", "CronWorkflow"])
def test_the_offline_tools_accept_the_valid_base_objects(tmp_path, kind):
    """The rows differ from these by the one broken rule, so a rejection above is the rule's."""
    base = {"BurstProfile": _profile({}), "ResourcePolicy": _pools({}), "CronWorkflow": _cron()}[kind]
    code, output = _offline(tmp_path, Case("base", base, "", "", rule=""))
    assert code == 0, output


_INSTALLED_ON: set[tuple[str, str]] = set()
CRD_FILES = {"BurstProfile": "burstprofiles", "ResourcePolicy": "resourcepolicies", "CronWorkflow": "cronworkflows"}
BASES = {"BurstProfile": _profile({}), "ResourcePolicy": _pools({}), "CronWorkflow": _cron()}
UNCHECKED = {"reason": "FieldValueInvalid", "field": "<nil>",
             "message": 'Invalid value: "null": some validation rules were not checked because the object was '
                        "invalid; correct the existing errors to complete validation"}


def _named(case: Case, namespace: str) -> dict:
    obj = copy.deepcopy(case.obj)
    if case.kind != "CronWorkflow" or case.field != "<nil>":
        obj["metadata"]["name"] = f"rule-{uuid.uuid4().hex[:8]}"
    if case.kind != "BurstProfile":
        obj["metadata"]["namespace"] = namespace
    return obj


@pytest.mark.parametrize("kind", list(CRD_FILES))
async def test_the_api_server_rejects_what_each_rule_rejects(kube, kube_target, namespace, install_crds, kind):
    """One test per CRD (installing the CronWorkflow CRD takes seconds), every row of CASES for it: a dry-run
    create answers 422 with the row's cause first, the valid base object is accepted."""
    key = (kube_target.kubeconfig or "", kind)
    if key not in _INSTALLED_ON:  # a real cluster keeps the CRDs; each test's local endpoint is a fresh one
        await install_crds(CRD_DIR / f"{CRD_FILES[kind]}.burstflow.io.yaml")
        if kube_target.real:
            _INSTALLED_ON.add(key)
    await kube.create(RESOURCES[kind], _named(Case("base", BASES[kind], "", "", rule=""), namespace), dry_run=True)
    wrong = []
    for case in (c for c in CASES if c.kind == kind):
        try:
            await kube.create(RESOURCES[kind], _named(case, namespace), dry_run=True)
        except Invalid as error:
            causes = error.status["details"]["causes"]
            expected = {"reason": case.reason, "field": case.field, "message": case.message}
            if causes[0] != expected or causes[1:] not in ([], [UNCHECKED]):
                wrong.append((case.id, causes))
        else:
            wrong.append((case.id, "accepted"))
    assert wrong == []


async def test_every_example_policy_is_accepted_by_the_api_server(kube, kube_target, namespace, install_crds):
    """A server-side dry run of every object in policies/ (namespaced ones moved to the test's namespace, profile
    ConfigMaps kept in kube-system), as `kubectl apply --dry-run=server -f policies/` would do."""
    for kind, name in CRD_FILES.items():
        key = (kube_target.kubeconfig or "", kind)
        if key not in _INSTALLED_ON:
            await install_crds(CRD_DIR / f"{name}.burstflow.io.yaml")
            if kube_target.real:
                _INSTALLED_ON.add(key)
    resources = {**RESOURCES, "ConfigMap": CONFIGMAPS, "Namespace": NAMESPACES}
    created = []
    for path in sorted(POLICIES.glob("*.yaml")):
        for obj in (doc for doc in yaml.safe_load_all(path.read_text()) if doc):
            resource = resources[obj["kind"]]
            if resource.namespaced and obj["kind"] != "ConfigMap":
                obj["metadata"]["namespace"] = namespace
            stored = await kube.create(resource, obj, dry_run=True)
            created.append(f"{path.name}: {stored['kind']}/{stored['metadata']['name']}")
    assert len(created) == len(list(POLICIES.glob("*.yaml"))), created


# --- CRDs whose rules do not compile --------------------------------------------------------------------------------

def _widget_crd(**spec_schema: Any) -> dict:
    group = "rules.test.burstflow.io"
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"widgets.{group}"},
            "spec": {"group": group, "scope": "Namespaced", "names": {"kind": "Widget", "plural": "widgets"},
                     "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                         "type": "object", "properties": {"spec": {"type": "object", **spec_schema}}}}}]}}


SPEC = "spec.validation.openAPIV3Schema.properties[spec]"


def _rule_value(rule: str, message: str = "") -> str:
    return f"Invalid value: apiextensions.ValidationRule{{Rule:{json.dumps(rule)}, Message:{json.dumps(message)}}}"


def _strip_type_names(text: str) -> str:
    import re

    return re.sub(r"selfType\d+", "selfType", text)


BAD_RULES: list[tuple[str, dict, list[tuple[str, str, str]]]] = [
    ("size() of an object",
     {"properties": {"selector": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                                  "x-kubernetes-validations": [{"rule": "size(self) > 0", "message": "m"}]}}},
     [("FieldValueInvalid", f"{SPEC}.properties[selector].x-kubernetes-validations[0].rule",
       _rule_value("size(self) > 0", "m") + ": compilation failed: ERROR: <input>:1:5: found no matching overload "
       "for 'size' applied to '(selfType)'\n | size(self) > 0\n | ....^")]),
    ("a field the schema does not declare",
     {"properties": {"a": {"type": "string"}}, "x-kubernetes-validations": [{"rule": "has(self.missing)"}]},
     [("FieldValueInvalid", f"{SPEC}.x-kubernetes-validations[0].rule",
       _rule_value("has(self.missing)") + ": compilation failed: ERROR: <input>:1:4: undefined field 'missing'\n"
       " | has(self.missing)\n | ...^")]),
    ("a rule that is not a bool",
     {"properties": {"a": {"type": "string"}}, "x-kubernetes-validations": [{"rule": "self.a"}]},
     [("FieldValueInvalid", f"{SPEC}.x-kubernetes-validations[0].rule",
       _rule_value("self.a") + ": cel expression must evaluate to a bool")]),
    ("has() equality, over 1.24's cost budget",
     {"properties": {"a": {"type": "string"}, "b": {"type": "string"}},
      "x-kubernetes-validations": [{"rule": "has(self.a) != has(self.b)"}]},
     [("FieldValueForbidden", f"{SPEC}.x-kubernetes-validations[0].rule",
       "Forbidden: estimated rule cost exceeds budget by factor of more than 100x (try simplifying the rule, or "
       "adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)"),
      ("FieldValueForbidden", f"{SPEC}.x-kubernetes-validations[0].rule",
       "Forbidden: contributed to estimated rule cost total exceeding cost limit for entire OpenAPIv3 schema"),
      ("FieldValueForbidden", "spec.validation.openAPIV3Schema",
       "Forbidden: x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema exceeds budget by "
       "factor of more than 100x (try simplifying the rule, or adding maxItems, maxProperties, and maxLength where "
       "arrays, maps, and strings are declared)")]),
]


@pytest.mark.parametrize("schema, expected", [(s, e) for _, s, e in BAD_RULES], ids=[i for i, _, _ in BAD_RULES])
async def test_a_crd_whose_rule_does_not_compile_is_refused(kube, schema, expected):
    with pytest.raises(Invalid) as caught:
        await kube.create(CRDS, _widget_crd(**schema), dry_run=True)
    causes = caught.value.status["details"]["causes"]
    assert sorted((c["reason"], c["field"], _strip_type_names(c["message"])) for c in causes) == sorted(expected)


@pytest.mark.parametrize("rule", ["has(self.a) ? !has(self.b) : has(self.b)", "has(self.a) == true",
                                  "!has(self.a) || self.a.startsWith('x')", "size(self.m) <= 3"])
async def test_the_forms_every_version_accepts_compile(kube, rule):
    schema = {"properties": {"a": {"type": "string", "maxLength": 8}, "b": {"type": "string"},
                             "m": {"type": "object", "maxProperties": 4, "additionalProperties": {"type": "string"}}},
              "x-kubernetes-validations": [{"rule": rule}]}
    created = await kube.create(CRDS, _widget_crd(**schema), dry_run=True)
    assert created["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
        "x-kubernetes-validations"] == [{"rule": rule}]
