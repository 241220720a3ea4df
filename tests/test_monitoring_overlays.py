"""The monitoring overlays for managed Prometheus services render with `kubectl kustomize`, validate, and differ from
manifests/monitoring only by what the service needs to discover the PodMonitors."""
from __future__ import annotations

import copy
import shutil

import pytest

from tests.conftest import ROOT
from tests.test_manifests import KUBE_VERSIONS, MANIFESTS, all_of, crd_schemas, kustomize_build, validate_object
from burstflow.webhook.policy import label_key_error, label_value_error

NAMESPACE = "burstflow-system"


@pytest.fixture(scope="module")
def base() -> list[dict]:
    return kustomize_build(MANIFESTS / "monitoring")


def without(obj: dict, *, labels=(), annotations=(), namespace: str | None = None, namespace_selector=False) -> dict:
    """`obj` with what an overlay added taken out again."""
    obj = copy.deepcopy(obj)
    metadata = obj["metadata"]
    for key in labels:
        del metadata["labels"][key]
    for key in annotations:
        del metadata["annotations"][key]
    if not metadata.get("annotations"):
        metadata.pop("annotations", None)
    if namespace is not None:
        assert metadata["namespace"] == namespace
        metadata["namespace"] = NAMESPACE
    if namespace_selector:
        assert obj["spec"].pop("namespaceSelector") == {"matchNames": [NAMESPACE]}
    return obj


# overlay, what it adds to each PodMonitor (labels, annotations), the namespace the PodMonitors end up in.
OVERLAYS = [
    ("monitoring-volcengine-vmp", {"volcengine.vmp": "true"}, {}, NAMESPACE),
    ("monitoring-alibaba-arms", {}, {"arms.prometheus.io/discovery": "true"}, "arms-prom"),
]


@pytest.mark.parametrize("overlay, labels, annotations, namespace", OVERLAYS,
                         ids=["Volcengine VMP: label", "Alibaba ARMS: annotation, arms-prom namespace"])
def test_overlay_adds_only_what_the_managed_prometheus_discovers(base, overlay, labels, annotations, namespace):
    rendered = kustomize_build(MANIFESTS / "overlays" / overlay)
    monitors = all_of(rendered, "PodMonitor")
    assert sorted(m["metadata"]["name"] for m in monitors) == ["burstflow-cron", "burstflow-webhook"]
    for monitor in monitors:
        metadata = monitor["metadata"]
        assert {k: metadata["labels"].get(k) for k in labels} == labels
        assert {k: (metadata.get("annotations") or {}).get(k) for k in annotations} == annotations
        for key in {**labels, **annotations}:
            assert not label_key_error(key)
        for value in labels.values():
            assert not label_value_error(value)
        assert metadata["namespace"] == namespace
        # Scraping Burstflow's own namespace from elsewhere needs a namespaceSelector.
        moved = namespace != NAMESPACE
        assert (monitor["spec"].get("namespaceSelector") == {"matchNames": [NAMESPACE]}) is moved
    restored = [without(o, labels=labels, annotations=annotations, namespace=namespace,
                        namespace_selector=namespace != NAMESPACE) if o["kind"] == "PodMonitor" else o
                for o in rendered]
    key = lambda o: (o["kind"], o["metadata"]["name"])  # noqa: E731
    assert sorted(restored, key=key) == sorted(base, key=key)


@pytest.fixture(scope="module")
def crds() -> dict:
    return crd_schemas(kustomize_build(MANIFESTS / "base"))


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("overlay", [o[0] for o in OVERLAYS])
def test_overlay_objects_validate(overlay, version, crds):
    for obj in kustomize_build(MANIFESTS / "overlays" / overlay):
        validate_object(obj, version=version, crds=crds)


def test_readme_example_overlay_labels_every_podmonitor(base, tmp_path):
    """The copy-pasteable overlay in docs/operations/monitoring.md renders, and only adds its label to the PodMonitors."""
    readme = (ROOT / "docs" / "operations" / "monitoring.md").read_text()
    marker = "# my-monitoring/kustomization.yaml"
    start = readme.index(marker)
    block = readme[start:readme.index("```", start)]
    shutil.copytree(MANIFESTS / "monitoring", tmp_path / "manifests" / "monitoring")
    (tmp_path / "my-monitoring").mkdir()
    (tmp_path / "my-monitoring" / "kustomization.yaml").write_text(block)
    rendered = kustomize_build(tmp_path / "my-monitoring")
    for monitor in all_of(rendered, "PodMonitor"):
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    restored = [without(o, labels=["release"]) if o["kind"] == "PodMonitor" else o for o in rendered]
    key = lambda o: (o["kind"], o["metadata"]["name"])  # noqa: E731
    assert sorted(restored, key=key) == sorted(base, key=key)
