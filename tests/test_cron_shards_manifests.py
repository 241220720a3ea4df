"""The sharded cron installation (manifests/components/cron-sharded, manifests/overlays/cron-sharded) renders with
`kubectl kustomize`, validates, runs one Deployment per shard that reads its shard from its own label, and differs
from the unsharded installation only where sharding must."""
from __future__ import annotations

import copy

import pytest
import yaml

from burstflow.cron import shards
from burstflow.cron.settings import CronSettings
from tests.test_manifests import (
    KUBE_VERSIONS, MANIFESTS, NAMESPACE, all_of, crd_schemas, find, kustomize_build, restricted_violations,
    validate_object, workdir,  # noqa: F401 - a fixture
)

SHARD_LABEL = "burstflow.io/cron-shard"
COMPONENT = MANIFESTS / "components" / "cron-sharded"


@pytest.fixture(scope="module")
def sharded(workdir) -> list[dict]:  # noqa: F811
    return kustomize_build(workdir / "overlays" / "cron-sharded")


@pytest.fixture(scope="module")
def unsharded(workdir) -> list[dict]:  # noqa: F811
    return kustomize_build(workdir / "overlays" / "cert-manager")


def shard_deployments(objects: list[dict]) -> list[dict]:
    return sorted((d for d in all_of(objects, "Deployment") if d["metadata"]["name"].startswith("burstflow-cron")),
                  key=lambda d: d["metadata"]["name"])


def resolved_env(deployment: dict) -> dict[str, str]:
    """The cron container's env as the process sees it: downward-API fields resolved against the pod template."""
    template = deployment["spec"]["template"]
    [container] = template["spec"]["containers"]
    env = {}
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
            continue
        path = item["valueFrom"]["fieldRef"]["fieldPath"]
        if path.startswith("metadata.labels['"):
            env[item["name"]] = template["metadata"]["labels"][path[len("metadata.labels['"):-2]]
        else:
            env[item["name"]] = {"metadata.name": "burstflow-cron-shard-x-5d8f-abcde",
                                 "metadata.namespace": NAMESPACE}[path]
    return env


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_every_object_validates_against_the_kubernetes_schema(sharded, version):
    crds = crd_schemas(sharded)
    for obj in sharded:
        validate_object(obj, version=version, crds=crds)


def test_one_deployment_and_one_budget_per_shard_replace_the_single_cron_deployment(sharded):
    names = [d["metadata"]["name"] for d in shard_deployments(sharded)]
    assert names == ["burstflow-cron-shard-0", "burstflow-cron-shard-1", "burstflow-cron-shard-2"]
    budgets = sorted(b["metadata"]["name"] for b in all_of(sharded, "PodDisruptionBudget"))
    assert budgets == ["burstflow-cron-shard-0", "burstflow-cron-shard-1", "burstflow-cron-shard-2",
                       "burstflow-webhook"]
    for deployment in shard_deployments(sharded):
        assert deployment["spec"]["replicas"] == 2  # a leader and a standby per shard
        assert restricted_violations(deployment["spec"]["template"]) == [], deployment["metadata"]["name"]


def test_each_shard_is_told_the_count_and_its_own_index_and_together_they_cover_every_shard(sharded):
    found = []
    for deployment in shard_deployments(sharded):
        env = resolved_env(deployment)
        settings = CronSettings.from_env(env)
        found.append((settings.shards, settings.shard))
        assert deployment["metadata"]["name"] == f"burstflow-cron-shard-{settings.shard}"
        assert settings.namespace == ""  # shards split every namespace; --namespace would refuse --shards
        assert shards.lease_name(settings.lease_name, shards=settings.shards, shard=settings.shard) == (
            f"burstflow-cron-shard-{settings.shard}-of-{settings.shards}")
    count = found[0][0]
    assert sorted(found) == [(count, i) for i in range(count)]
    listed = yaml.safe_load((COMPONENT / "kustomization.yaml").read_text())["resources"]
    assert listed == [f"shard-{i}" for i in range(count)]


def test_no_shards_pods_are_selected_by_another_shards_deployment_budget_or_anti_affinity(sharded):
    deployments = shard_deployments(sharded)
    budgets = {b["metadata"]["name"]: b for b in all_of(sharded, "PodDisruptionBudget")}

    def selects(selector: dict, labels: dict) -> bool:
        return all(labels.get(k) == v for k, v in selector["matchLabels"].items())

    for owner in deployments:
        name = owner["metadata"]["name"]
        term = owner["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"][
            "preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
        for pods in deployments:
            labels = pods["spec"]["template"]["metadata"]["labels"]
            same = pods is owner
            assert selects(owner["spec"]["selector"], labels) == same, (name, pods["metadata"]["name"])
            assert selects(budgets[name]["spec"]["selector"], labels) == same
            assert selects(term["labelSelector"], labels) == same
        # The PodMonitor and dashboards still find every shard's pods by the service's name.
        assert owner["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] == "burstflow-cron"


def without_sharding(deployment: dict) -> dict:
    """A shard's Deployment with what sharding changes taken out again: what is left must be the base's."""
    out = copy.deepcopy(deployment)
    out["metadata"]["name"] = "burstflow-cron"
    spec = out["spec"]
    for labels in (out["metadata"]["labels"], spec["selector"]["matchLabels"], spec["template"]["metadata"]["labels"],
                   spec["template"]["spec"]["affinity"]["podAntiAffinity"][
                       "preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]["labelSelector"][
                       "matchLabels"]):
        labels.pop(SHARD_LABEL)
    [container] = spec["template"]["spec"]["containers"]
    container["env"] = [e for e in container["env"]
                        if e["name"] not in ("BURSTFLOW_CRON_SHARDS", "BURSTFLOW_CRON_SHARD")]
    return out


def test_each_shard_runs_exactly_the_base_cron_deployment_otherwise(sharded, unsharded):
    base = find(unsharded, "Deployment", "burstflow-cron")
    base_budget = find(unsharded, "PodDisruptionBudget", "burstflow-cron")
    for deployment in shard_deployments(sharded):
        assert without_sharding(deployment) == base
        index = deployment["metadata"]["labels"][SHARD_LABEL]
        budget = copy.deepcopy(find(sharded, "PodDisruptionBudget", f"burstflow-cron-shard-{index}"))
        budget["metadata"]["name"] = "burstflow-cron"
        budget["metadata"]["labels"].pop(SHARD_LABEL)
        budget["spec"]["selector"]["matchLabels"].pop(SHARD_LABEL)
        assert budget == base_budget


def test_everything_else_is_the_unsharded_installation(sharded, unsharded):
    def others(objects):
        return {(o["kind"], o["metadata"]["name"]): o for o in objects
                if not (o["kind"] in ("Deployment", "PodDisruptionBudget")
                        and o["metadata"]["name"].startswith("burstflow-cron"))}

    assert others(sharded) == others(unsharded)


def test_the_comparison_catches_a_shard_that_drifted_from_the_base(sharded, unsharded):
    drifted = copy.deepcopy(shard_deployments(sharded)[1])
    drifted["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] = "1Gi"
    assert without_sharding(drifted) != find(unsharded, "Deployment", "burstflow-cron")


# --- the Helm chart's cron.shards ------------------------------------------------------------------------------------

def test_the_chart_with_cron_shards_renders_exactly_the_sharded_overlay(sharded):
    from tests.test_helm import CHART, drift, render

    import helm_python

    chart = helm_python.Chart.load(CHART)
    values = {"cron": {"shards": 3}, "webhook": {"tls": {"certManager": {"enabled": True}}}}
    try:
        objects = render(chart, values)
        two = render(chart, {**values, "cron": {"shards": 2}})
    finally:
        chart.close()
    kustomized = [o for o in sharded if o["kind"] != "CustomResourceDefinition"]
    assert drift(kustomized, objects) == []
    reported = drift(kustomized, two)
    assert "Deployment burstflow-system/burstflow-cron-shard-2: only in kustomize" in reported
    assert any(line.startswith("Deployment burstflow-system/burstflow-cron-shard-0: spec.template.spec.containers[0]"
                               ".env[3].value: kustomize \"3\", chart \"2\"") for line in reported), reported
