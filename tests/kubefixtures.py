"""Pytest fixtures for every Kubernetes-facing test: a local ApiSim by default, a real cluster when BURSTFLOW_E2E_KUBECONFIG names a kubeconfig.

Fixtures:
- `kube_target` (session): which API the run talks to (`.real`, `.kubeconfig`).
- `sim`: the local ApiSim of this test, or a skip ("needs the local endpoint (fault injection)") on a real cluster.
- `kubeconfig`: path of a kubeconfig for the target (written by the sim, or the real one).
- `kube`: a connected `burstflow.kube.Kube`, closed after the test; `kube_factory()` opens more (one per replica).
- `make_sim(**ApiSim kwargs)`: an extra ApiSim built with its own settings (small `history`, a FakeClock) and a
  Kube connected to it; skips on a real cluster.
- `namespace`: a fresh namespace `bf-test-<random>`, deleted after the test.
- `install_crds`: `await install_crds(path, ...)` applies CustomResourceDefinitions from YAML files (create, or
  replace when present) and returns their Resources once the API serves them.
- `argo_crds` / `argo_crds_minimal`: Argo's Workflow and CronWorkflow CRDs (full schema / minimal) installed.

Tests marked `e2e` need a real cluster and are skipped with a reason when BURSTFLOW_E2E_KUBECONFIG is unset.
The sim is started per test (an aiohttp server on 127.0.0.1:0 starts in milliseconds) because pytest-asyncio
gives each test its own event loop and a server cannot outlive the loop it was started on.
"""
from __future__ import annotations

import asyncio
import copy
import functools
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from burstflow.kube import CRDS, NAMESPACES, AlreadyExists, Kube, KubeError, NotFound, Resource, resource_for_crd

E2E_ENV = "BURSTFLOW_E2E_KUBECONFIG"
SHARED = Path(os.environ.get("BURSTFLOW_SHARED", Path(__file__).resolve().parent.parent.parent / "shared"))
ARGO_CRDS = SHARED / "fixtures" / "argo-crds"
# A real API server needs a moment to establish a CRD and start serving it; the sim needs none.
CRD_READY_TIMEOUT = 60.0


@dataclass(frozen=True)
class KubeTarget:
    """Where Kubernetes-facing tests send their requests: `kubeconfig` of a real cluster, or None for a sim."""

    kubeconfig: str | None

    @property
    def real(self) -> bool:
        return self.kubeconfig is not None


KUBE_FIXTURES = {"kube", "kube_target", "namespace", "sim", "make_sim", "kube_factory"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Every test that reaches an API endpoint is marked `kube`, so `-m kube` selects exactly what
    # BURSTFLOW_E2E_KUBECONFIG redirects to a real cluster.
    for item in items:
        if KUBE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.kube)
    if os.environ.get(E2E_ENV):
        return
    skip = pytest.mark.skip(reason=f"needs a real cluster: set {E2E_ENV} to a kubeconfig")
    for item in items:
        if item.get_closest_marker("e2e") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def kube_target() -> KubeTarget:
    path = os.environ.get(E2E_ENV)
    if path and not Path(path).is_file():
        pytest.fail(f"{E2E_ENV}={path!r} is not a file")
    return KubeTarget(kubeconfig=path or None)


@pytest.fixture
async def _local_sim(kube_target: KubeTarget):
    if kube_target.real:
        yield None
        return
    from burstflow.apisim import ApiSim

    sim = ApiSim()
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


@pytest.fixture
async def make_sim(kube_target: KubeTarget, tmp_path: Path):
    """`sim, kube = await make_sim(history=5, clock=fake, ...)`: one more ApiSim built with these arguments and a
    Kube connected to it, both closed after the test; skips on a real cluster."""
    if kube_target.real:
        pytest.skip("needs the local endpoint (fault injection)")
    from burstflow.apisim import ApiSim

    opened: list[tuple[object, Kube]] = []

    async def make(*, kube_clock=None, **kwargs):
        sim = ApiSim(**kwargs)
        await sim.start()
        path = sim.write_kubeconfig(tmp_path / f"sim-{len(opened)}.yaml")
        client = await Kube.connect(str(path), clock=kube_clock or kwargs.get("clock"))
        opened.append((sim, client))
        return sim, client

    try:
        yield make
    finally:
        for sim, client in reversed(opened):
            await client.close()
            await sim.stop()


@pytest.fixture
def sim(_local_sim):
    """The ApiSim behind this test's `kube` (same instance), for fault injection and direct store access."""
    if _local_sim is None:
        pytest.skip("needs the local endpoint (fault injection)")
    return _local_sim


@pytest.fixture
def kubeconfig(kube_target: KubeTarget, _local_sim, tmp_path: Path) -> str:
    if kube_target.real:
        assert kube_target.kubeconfig is not None
        return kube_target.kubeconfig
    path = tmp_path / "kubeconfig.yaml"
    _local_sim.write_kubeconfig(path)
    return str(path)


@pytest.fixture
async def kube(kubeconfig: str) -> AsyncIterator[Kube]:
    client = await Kube.connect(kubeconfig)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def kube_factory(kubeconfig: str) -> AsyncIterator[Callable[..., Awaitable[Kube]]]:
    """`await kube_factory(**connect_kwargs)` opens one more connection to the same target (closed after the
    test), e.g. one per simulated replica."""
    opened: list[Kube] = []

    async def connect(**kwargs) -> Kube:
        client = await Kube.connect(kubeconfig, **kwargs)
        opened.append(client)
        return client

    try:
        yield connect
    finally:
        for client in opened:
            await client.close()


@pytest.fixture
async def namespace(kube: Kube, kube_target: KubeTarget) -> AsyncIterator[str]:
    name = f"bf-test-{uuid.uuid4().hex[:8]}"
    await kube.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace",
                                   "metadata": {"name": name, "labels": {"burstflow.io/test": "true"}}})
    try:
        yield name
    finally:
        try:
            await kube.delete(NAMESPACES, name, propagation="Background")
        except NotFound:
            pass


@functools.lru_cache(maxsize=32)
def _parse_yaml(path: Path, mtime: float) -> tuple[dict, ...]:
    # Argo's full CRDs are ~3 MB each: libyaml parses one in ~1.5 s, pure Python in ~10 s; parse once a session.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return tuple(yaml.load_all(path.read_text(), Loader=loader))


def load_crds(*paths: str | Path) -> list[dict]:
    """Every CustomResourceDefinition document in the YAML files (a file may hold several), as fresh copies."""
    crds: list[dict] = []
    for path in map(Path, paths):
        for doc in copy.deepcopy(_parse_yaml(path, path.stat().st_mtime)):
            if not doc:
                continue
            if doc.get("kind") != "CustomResourceDefinition":
                raise ValueError(f"{path}: expected CustomResourceDefinition documents, found {doc.get('kind')!r}")
            crds.append(doc)
    if not crds:
        raise ValueError(f"no CustomResourceDefinition in {', '.join(map(str, paths))}")
    return crds


async def apply_crds(kube: Kube, *paths: str | Path, timeout: float = CRD_READY_TIMEOUT) -> list[Resource]:
    """Create each CRD (replace it when it exists), then wait until its resource is served; returns the
    Resources in file order. Raises TimeoutError naming the CRD that never became served."""
    resources: list[Resource] = []
    for crd in load_crds(*paths):
        try:
            await kube.create(CRDS, crd)
        except AlreadyExists:
            current = await kube.get(CRDS, crd["metadata"]["name"])
            await kube.replace(CRDS, dict(crd, metadata=dict(crd["metadata"],
                                                              resourceVersion=current["metadata"]["resourceVersion"])))
        resources.append(resource_for_crd(crd))
    await until_served(kube, resources, timeout=timeout)
    return resources


async def create_missing_crds(kube: Kube, *paths: str | Path, timeout: float = CRD_READY_TIMEOUT) -> list[str]:
    """Create the CRDs the cluster lacks, leaving existing ones as they are (a benchmark on a real cluster must not
    replace its Argo CRDs), then wait until every one is served; returns the names it created."""
    created: list[str] = []
    crds = load_crds(*paths)
    for crd in crds:
        try:
            await kube.create(CRDS, crd)
            created.append(crd["metadata"]["name"])
        except AlreadyExists:
            pass
    await until_served(kube, [resource_for_crd(crd) for crd in crds], timeout=timeout)
    return created


async def until_served(kube: Kube, resources: list[Resource], *, timeout: float = CRD_READY_TIMEOUT) -> None:
    """Wait until each resource answers a list: a just-created CRD's resource answers 404 for a while, even once
    the CRD is Established. Raises TimeoutError naming the one that never became served."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    for resource in resources:
        while True:
            try:
                await kube.list(resource, page_size=1)
                break
            except KubeError as exc:
                if loop.time() > deadline:
                    raise TimeoutError(f"CRD {resource.plural}.{resource.group} not served after {timeout}s: "
                                       f"{exc}") from exc
                await asyncio.sleep(0.2)


@pytest.fixture
def install_crds(kube: Kube) -> Callable[..., Awaitable[list[Resource]]]:
    """`await install_crds(path, ...)`: apply CRDs from YAML files and wait until served. CRDs are left in place
    afterwards (on a real cluster, deleting a CRD deletes every object of that kind)."""

    async def install(*paths: str | Path) -> list[Resource]:
        return await apply_crds(kube, *paths)

    return install


@pytest.fixture
async def argo_crds(install_crds) -> list[Resource]:
    """Argo's Workflow and CronWorkflow CRDs with their complete OpenAPI v3 schemas."""
    return await install_crds(ARGO_CRDS / "full" / "workflows.yaml", ARGO_CRDS / "full" / "cronworkflows.yaml")


@pytest.fixture
async def argo_crds_minimal(install_crds) -> list[Resource]:
    """Argo's four CRDs as clusters usually install them (no schema)."""
    return await install_crds(*sorted((ARGO_CRDS / "minimal").glob("*.yaml")))


class ScopedKube(Kube):
    """A gateway that sees, when it lists or watches every namespace, only the namespaces in `scope` (all when it is
    empty): as if the cluster held nothing else. On a shared real cluster, a test's or benchmark's cluster-wide
    cron service must not schedule other tenants' CronWorkflows."""

    scope: frozenset[str] = frozenset()

    async def list(self, resource, *, namespace=None, transform=None, **kwargs):
        if namespace is not None or not self.scope:
            return await super().list(resource, namespace=namespace, transform=transform, **kwargs)
        scope = self.scope

        def inside(obj):
            if ((obj.get("metadata") or {}).get("namespace")) not in scope:
                return None
            return transform(obj) if transform else obj

        listing = await super().list(resource, namespace=namespace, transform=inside, **kwargs)
        listing["items"] = [item for item in listing["items"] if item is not None]
        return listing

    async def watch(self, resource, *, namespace=None, **kwargs):
        async for event in super().watch(resource, namespace=namespace, **kwargs):
            if (namespace is None and self.scope and event.type != "BOOKMARK"
                    and (event.object.get("metadata") or {}).get("namespace") not in self.scope):
                continue
            yield event
