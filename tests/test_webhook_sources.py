"""ClusterPolicySource on the local API endpoint (or a real cluster): policies picked up by watch, a bad update keeps
the last good version and warns on the object, the Namespace cache replaces per-request GETs, 410 re-lists stay
exact, readiness waits for the first full sync."""
from __future__ import annotations

import asyncio
import base64
import copy
import json
import logging
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from burstflow import kube as k
from burstflow.clock import FakeClock
from burstflow.logs import JsonFormatter
from tests.conftest import ROOT, load_admission
from tests.kubefixtures import apply_crds
from burstflow.webhook.admitter import PodAdmitter, PolicyStore
from burstflow.webhook.metrics import WebhookMetrics
from burstflow.webhook.sources import SYNC_WARNING_SECONDS, ClusterPolicySource
from tests.waiting import until

CRDS = ROOT / "manifests" / "base" / "crds"
TEAM = "burstflow.io/test-team"


def pod_request(namespace: str, *, uid: str | None = None) -> dict:
    """The captured Argo workflow pod CREATE, moved into `namespace`."""
    request = copy.deepcopy(load_admission("pod-create-argo-workflow-pod.json")["body"]["request"])
    request["uid"] = uid or str(uuid.uuid4())
    request["namespace"] = namespace
    request["object"]["metadata"]["namespace"] = namespace
    return request


def profile(name: str, selector_label: str, team: str, *, expression: str | None = None) -> dict:
    """A BurstProfile that gives pods in namespaces labelled `selector_label: "yes"` the annotation TEAM=team."""
    match: dict = {"namespaceSelector": {"matchLabels": {selector_label: "yes"}}}
    if expression is not None:
        match["matchConditions"] = [{"name": "check", "expression": expression}]
    return {"apiVersion": "burstflow.io/v1alpha1", "kind": "BurstProfile", "metadata": {"name": name},
            "spec": {"match": match, "annotations": {TEAM: team}}}


async def admitted_team(admitter: PodAdmitter, namespace: str) -> str | None:
    """The TEAM annotation an admitted pod in `namespace` ends up with (None: no profile gave one)."""
    outcome = await admitter.admit(pod_request(namespace))
    patch = outcome.response.get("patch")
    for op in json.loads(_decoded(patch)) if patch else []:
        if op["path"] == "/metadata/annotations/" + TEAM.replace("/", "~1"):
            return op["value"]
        if op["path"] == "/metadata/annotations" and TEAM in op["value"]:
            return op["value"][TEAM]
    return None


def _decoded(patch: str) -> str:
    return base64.b64decode(patch).decode()


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


@pytest.fixture
async def crds(kube):
    return await apply_crds(kube, CRDS / "burstprofiles.burstflow.io.yaml", CRDS / "resourcepolicies.burstflow.io.yaml")


@pytest.fixture
async def marked(kube, namespace) -> str:
    """A label key unique to this test, set to "yes" on the test namespace (profiles select on it, so on a real
    cluster no other namespace's pods are affected)."""
    key = f"bf-test-{uuid.uuid4().hex[:8]}"
    await kube.patch(k.NAMESPACES, namespace, {"metadata": {"labels": {key: "yes"}}})
    return key


@pytest.fixture
async def cleanup(kube):
    """`cleanup(resource, name, namespace=None)` deletes the object after the test (BurstProfiles are
    cluster-scoped, so a real cluster keeps them otherwise)."""
    created: list[tuple[k.Resource, str, str | None]] = []

    def register(resource: k.Resource, name: str, namespace: str | None = None) -> None:
        created.append((resource, name, namespace))

    yield register
    for resource, name, ns in reversed(created):
        try:
            await kube.delete(resource, name, namespace=ns)
        except k.NotFound:
            pass


@pytest.fixture
async def running(kube, crds):
    """`source, admitter, registry = await running(**kwargs)`: a started ClusterPolicySource feeding an admitter,
    stopped after the test."""
    started: list[ClusterPolicySource] = []

    async def start(client: k.Kube | None = None, *, wait: bool = True, **kwargs):
        registry = CollectorRegistry()
        store = PolicyStore()
        source = ClusterPolicySource(kube=client or kube, store=store, metrics=WebhookMetrics(registry), **kwargs)
        await source.start()
        started.append(source)
        if wait:
            await asyncio.wait_for(source.wait_ready(), 10)
        return source, PodAdmitter(store=store, namespaces=source.lookup_namespace), registry

    yield start
    for source in started:
        await source.stop()


async def events_about(kube: k.Kube, name: str, namespace: str = "default") -> list[dict]:
    listing = await kube.list(k.EVENTS, namespace=namespace, field_selector=f"involvedObject.name={name}")
    return sorted(listing["items"], key=lambda e: e["metadata"].get("resourceVersion", ""))


# ------------------------------------------------------------------------------------------------------ profiles


async def test_created_then_updated_profile_is_picked_up_without_restart(kube, namespace, marked, running, cleanup):
    source, admitter, registry = await running()
    name = f"{marked}-team"
    assert await admitted_team(admitter, namespace) is None

    await kube.create(k.BURSTPROFILES, profile(name, marked, "red"))
    cleanup(k.BURSTPROFILES, name)
    await until(lambda: _is(admitted_team(admitter, namespace), "red"), what="the new profile")

    current = await kube.get(k.BURSTPROFILES, name)
    current["spec"]["annotations"][TEAM] = "blue"
    await kube.replace(k.BURSTPROFILES, current)
    await until(lambda: _is(admitted_team(admitter, namespace), "blue"), what="the updated profile")
    assert sample(registry, "burstflow_webhook_policies_loaded", kind="BurstProfile") >= 1

    await kube.delete(k.BURSTPROFILES, name)
    await until(lambda: _is(admitted_team(admitter, namespace), None), what="the deleted profile to go")


async def _is(awaitable, expected) -> bool:
    return (await awaitable) == expected


async def test_invalid_update_keeps_last_good_version_and_warns_on_the_object(kube, namespace, marked, running,
                                                                              cleanup):
    source, admitter, registry = await running()
    name = f"{marked}-team"
    await kube.create(k.BURSTPROFILES, profile(name, marked, "red"))
    cleanup(k.BURSTPROFILES, name)
    await until(lambda: _is(admitted_team(admitter, namespace), "red"), what="the valid profile")
    good_version = (await kube.get(k.BURSTPROFILES, name))["metadata"]["resourceVersion"]

    broken = profile(name, marked, "green", expression="object.metadata.labels[")
    broken["metadata"]["resourceVersion"] = good_version
    await kube.replace(k.BURSTPROFILES, broken)
    [event] = await until(lambda: events_about(kube, name), what="the Warning Event")
    assert (event["type"], event["reason"]) == ("Warning", "InvalidPolicy")
    assert event["involvedObject"]["kind"] == "BurstProfile" and event["involvedObject"]["name"] == name
    assert "spec.match.matchConditions[0].expression" in event["message"]
    assert event["message"].endswith(f"the last valid version (resourceVersion {good_version}) stays in effect")
    assert await admitted_team(admitter, namespace) == "red", "a bad update must keep the last good version"
    assert sample(registry, "burstflow_webhook_policy_load_errors_total", source="cluster") == 1

    fixed = await kube.get(k.BURSTPROFILES, name)
    fixed["spec"] = profile(name, marked, "green")["spec"]
    await kube.replace(k.BURSTPROFILES, fixed)
    await until(lambda: _is(admitted_team(admitter, namespace), "green"), what="the fixed profile")
    events = await until(lambda: _at_least(events_about(kube, name), 2), what="the recovery Event")
    assert (events[-1]["type"], events[-1]["reason"]) == ("Normal", "PolicyValid")
    assert sample(registry, "burstflow_webhook_policy_load_errors_total", source="cluster") == 1


async def _at_least(awaitable, count: int):
    items = await awaitable
    return items if len(items) >= count else None


async def test_new_invalid_object_is_left_out_and_valid_ones_stay(kube, namespace, marked, running, cleanup, caplog):
    caplog.set_level(logging.INFO, logger="burstflow.webhook.sources")
    source, admitter, _ = await running()
    good, bad = f"{marked}-good", f"{marked}-bad"
    await kube.create(k.BURSTPROFILES, profile(good, marked, "red"))
    cleanup(k.BURSTPROFILES, good)
    await kube.create(k.BURSTPROFILES, profile(bad, marked, "zzz", expression="1 +"))
    cleanup(k.BURSTPROFILES, bad)
    [event] = await until(lambda: events_about(kube, bad), what="the Warning Event")
    assert event["message"].endswith("it is not in effect until it is fixed")
    assert await admitted_team(admitter, namespace) == "red"
    names = {p.name for p in source.store.policies.profiles}
    assert good in names and bad not in names
    [rejected] = [r for r in caplog.records if r.levelno == logging.ERROR and "is invalid" in r.getMessage()]
    assert json.loads(JsonFormatter().format(rejected))["name"] == bad
    assert json.loads(JsonFormatter().format(rejected))["kind"] == "BurstProfile"


async def test_resource_policy_status_writes_do_not_recompile(kube, namespace, running, cleanup):
    source, _, registry = await running()
    policy = yaml.safe_load((ROOT / "policies" / "resourcepolicy-pools.yaml").read_text())
    policy["metadata"] = {"name": "pools", "namespace": namespace}
    await kube.create(k.RESOURCEPOLICIES, policy)
    await until(lambda: any(p.namespace == namespace for p in source.store.policies.compiled.get("ResourcePolicy", ())),
                what="the ResourcePolicy")
    assert sample(registry, "burstflow_webhook_policies_loaded", kind="ResourcePolicy") >= 1

    def mine():
        [compiled] = [p for p in source.store.policies.compiled.get("ResourcePolicy", ()) if p.namespace == namespace]
        return compiled

    # The compiled object itself, not the set's revision: on a shared cluster other objects (other tests'
    # namespaces being deleted) change the set at any time.
    before = mine()
    written = await kube.patch(k.RESOURCEPOLICIES, "pools", {"status": {"placed": 3, "managed": 3}},
                               namespace=namespace, subresource="status")
    reflector = source.reflectors[1]
    await until(lambda: reflector.cache.get((namespace, "pools"), {}).get("metadata", {}).get("resourceVersion")
                == written["metadata"]["resourceVersion"], what="the status write to arrive")
    assert mine() is before, "a status-only write must not recompile the ResourcePolicy"

    await kube.delete(k.RESOURCEPOLICIES, "pools", namespace=namespace)
    await until(lambda: not any(p.namespace == namespace
                                for p in source.store.policies.compiled.get("ResourcePolicy", ())),
                what="the deleted ResourcePolicy to go")


# ----------------------------------------------------------------------------------------------- namespaces


async def test_namespace_label_added_later_is_seen_through_the_watch(kube, kube_target, namespace, running, cleanup,
                                                                     request):
    source, admitter, _ = await running()
    key = f"bf-test-{uuid.uuid4().hex[:8]}"
    name = f"{key}-team"
    await kube.create(k.BURSTPROFILES, profile(name, key, "red"))
    cleanup(k.BURSTPROFILES, name)
    await until(lambda: any(p.name == name for p in source.store.policies.profiles), what="the profile")
    sim = None if kube_target.real else request.getfixturevalue("sim")
    assert await admitted_team(admitter, namespace) is None

    await kube.patch(k.NAMESPACES, namespace, {"metadata": {"labels": {key: "yes"}}})
    await until(lambda: source.namespace(namespace)["metadata"].get("labels", {}).get(key) == "yes",
                what="the label via the watch")
    assert await admitted_team(admitter, namespace) == "red"
    reads, gets_before = source.namespace_reads, sim.requests[("get", "namespaces")] if sim else 0
    assert reads <= 2  # at most once per version seen right after the namespace's creation (see the next tests)
    for _ in range(20):
        assert await admitted_team(admitter, namespace) == "red"
    assert source.namespace_reads == reads, "admissions must not GET a namespace the watch keeps current"
    if sim is not None:
        assert sim.requests[("get", "namespaces")] == gets_before


class HeldNamespaceWatch(k.Kube):
    """Our gateway, with Namespace watch events held while `released` is clear: a watch that has not delivered
    yet, on the local endpoint and on a real server alike (the events stay queued, in order)."""

    released: asyncio.Event

    async def watch(self, resource, **kwargs):
        async for event in super().watch(resource, **kwargs):
            if resource.plural == "namespaces":
                await self.released.wait()
            yield event


@pytest.fixture
async def held(kubeconfig):
    client = await HeldNamespaceWatch.connect(kubeconfig)
    client.released = asyncio.Event()
    client.released.set()
    yield client
    client.released.set()
    await client.close()


async def _labelled_profile(kube, source, cleanup) -> str:
    key = f"bf-test-{uuid.uuid4().hex[:8]}"
    await kube.create(k.BURSTPROFILES, profile(f"{key}-team", key, "red"))
    cleanup(k.BURSTPROFILES, f"{key}-team")
    await until(lambda: any(p.name == f"{key}-team" for p in source.store.policies.profiles), what="the profile")
    return key


async def _new_namespace(kube, cleanup, labels: dict) -> str:
    name = f"bf-test-{uuid.uuid4().hex[:8]}"
    await kube.create(k.NAMESPACES, {"apiVersion": "v1", "kind": "Namespace",
                                     "metadata": {"name": name, "labels": {"burstflow.io/test": "true", **labels}}})
    cleanup(k.NAMESPACES, name)
    return name


async def test_a_namespace_created_with_the_label_just_before_its_pod_is_read_once(kube, held, running, cleanup):
    source, admitter, _ = await running(held)
    key = await _labelled_profile(kube, source, cleanup)
    held.released.clear()  # the Namespace watch delivers nothing from here on
    name = await _new_namespace(kube, cleanup, {key: "yes"})

    teams = await asyncio.gather(*(admitted_team(admitter, name) for _ in range(10)))
    assert source.namespace(name) is None, "the watch delivered the namespace: this test proves nothing"
    assert teams == ["red"] * 10
    assert source.namespace_reads == 1, "concurrent admissions share one read"
    assert await admitted_team(admitter, name) == "red" and source.namespace_reads == 1  # the read is cached

    held.released.set()
    await until(lambda: source.namespace(name) is not None, what="the watch to deliver the namespace")
    assert await admitted_team(admitter, name) == "red" and source.namespace_reads == 1


async def test_a_namespace_labelled_right_after_its_creation_is_read_once(kube, held, running, cleanup):
    source, admitter, _ = await running(held)
    key = await _labelled_profile(kube, source, cleanup)
    name = await _new_namespace(kube, cleanup, {})
    await until(lambda: source.namespace(name) is not None, what="the watch to deliver the new namespace")
    held.released.clear()
    await kube.patch(k.NAMESPACES, name, {"metadata": {"labels": {key: "yes"}}})

    assert await admitted_team(admitter, name) == "red"
    assert key not in source.namespace(name)["metadata"]["labels"], "the watch delivered the label: proves nothing"
    assert source.namespace_reads == 1
    assert await admitted_team(admitter, name) == "red" and source.namespace_reads == 1


async def test_a_namespace_read_that_fails_falls_back_to_the_cache(sim, running):
    source, admitter, _ = await running()
    sim.faults.add(method="GET", path=r"^/api/v1/namespaces/bf-test-[0-9a-f]+$", status=503)
    assert await admitted_team(admitter, "bf-test-00000000") is None  # no such namespace: unlabelled, no error
    assert source.namespace_reads == 1


# ----------------------------------------------------------------------------------------------- ConfigMaps


async def test_vci_profile_configmap_in_kube_system_is_applied(kube, kube_target, namespace, marked, running):
    if kube_target.real:
        try:
            await kube.get(k.CONFIGMAPS, "vci-profile", namespace="kube-system")
            pytest.skip("this cluster has its own kube-system/vci-profile; not touching it")
        except k.NotFound:
            pass
    source, admitter, registry = await running()
    configmap = yaml.safe_load((ROOT / "policies" / "configmap-vci-profile.yaml").read_text())
    configmap["data"]["selectors"] = (
        f'[{{"name": "test", "namespaceSelector": {{"matchLabels": {{"{marked}": "yes"}}}}, '
        f'"effect": {{"annotations": {{"{TEAM}": "from-vci-profile"}}}}}}]')
    await kube.create(k.CONFIGMAPS, configmap)
    try:
        await until(lambda: _is(admitted_team(admitter, namespace), "from-vci-profile"),
                          what="the vci-profile ConfigMap")
        outcome = await admitter.admit(pod_request(namespace))
        assert "vci.vke.volcengine.com/node-type" in str(outcome.response.get("patch") and
                                                         _decoded(outcome.response["patch"]))
        assert sample(registry, "burstflow_webhook_policies_loaded", kind="ConfigMapProfile") == 1
        await kube.create(k.CONFIGMAPS, {"apiVersion": "v1", "kind": "ConfigMap",
                                         "metadata": {"name": "unrelated", "namespace": "kube-system"}})
        await kube.delete(k.CONFIGMAPS, "unrelated", namespace="kube-system")
        assert all(("kube-system", "unrelated") not in r.cache for r in source.reflectors)
    finally:
        await kube.delete(k.CONFIGMAPS, "vci-profile", namespace="kube-system")
    await until(lambda: _is(admitted_team(admitter, namespace), None), what="the deleted ConfigMap to go")
    assert sample(registry, "burstflow_webhook_policies_loaded", kind="ConfigMapProfile") == 0


# ---------------------------------------------------------------------------------------------- files + cluster


async def test_files_and_cluster_combine_and_a_file_wins_a_name_clash(kube, namespace, marked, running, cleanup,
                                                                      tmp_path: Path):
    from_file = f"{marked}-file"
    (tmp_path / "profiles.yaml").write_text(yaml.safe_dump_all([
        profile(from_file, marked, "from-file"),
        {"apiVersion": "burstflow.io/v1alpha1", "kind": "BurstProfile", "metadata": {"name": f"{marked}-bad"},
         "spec": {"priority": "high"}},
    ]))
    source, admitter, registry = await running(paths=[str(tmp_path)])
    assert sample(registry, "burstflow_webhook_policy_load_errors_total", source="files") == 1
    assert await admitted_team(admitter, namespace) == "from-file"

    clash = profile(from_file, marked, "from-cluster")
    clash["spec"]["priority"] = 500
    await kube.create(k.BURSTPROFILES, clash)
    cleanup(k.BURSTPROFILES, from_file)
    [event] = await until(lambda: events_about(kube, from_file), what="the shadowed Event")
    assert event["reason"] == "PolicyShadowed" and str(tmp_path / "profiles.yaml") in event["message"]
    assert await admitted_team(admitter, namespace) == "from-file"

    other = f"{marked}-cluster"
    await kube.create(k.BURSTPROFILES, dict(profile(other, marked, "x"), spec={
        "priority": 900, "match": {"namespaceSelector": {"matchLabels": {marked: "yes"}}},
        "labels": {"burstflow.io/test-from": "cluster"}}))
    cleanup(k.BURSTPROFILES, other)
    await until(lambda: any(p.name == other for p in source.store.policies.profiles), what="the cluster profile")
    outcome = await admitter.admit(pod_request(namespace))
    assert list(outcome.profiles) == [other, from_file], "both sources apply, in priority order"


# --------------------------------------------------------------------------------------- watch 410, readiness


async def test_watch_gone_relists_and_the_set_stays_exact(make_sim):
    clock = FakeClock(datetime(2026, 11, 23, tzinfo=timezone.utc))
    sim, kube = await make_sim(history=3, clock=clock, bookmark_interval=10_000)
    await apply_crds(kube, CRDS / "burstprofiles.burstflow.io.yaml", CRDS / "resourcepolicies.burstflow.io.yaml")
    await kube.create(k.NAMESPACES, {"apiVersion": "v1", "kind": "Namespace",
                                     "metadata": {"name": "jobs", "labels": {"burst": "yes"}}})
    def own(name: str, value: str) -> dict:
        """A profile writing its own annotation key, so every profile's value shows in the patch."""
        obj = profile(name, "burst", value)
        obj["spec"]["annotations"] = {f"{TEAM}-{name}": value}
        return obj

    for name in ("keep", "change"):
        await kube.create(k.BURSTPROFILES, own(name, name))
    store = PolicyStore()
    source = ClusterPolicySource(kube=kube, store=store, clock=clock, watch_timeout_seconds=60)
    await source.start()
    try:
        await asyncio.wait_for(source.wait_ready(), 5)
        profiles = source.reflectors[0]
        # An object arriving through the watch proves the server's watch loop runs (its timeout clock started).
        await kube.create(k.BURSTPROFILES, own("remove", "remove"))
        await until(lambda: ("", "remove") in profiles.cache, what="the first watch")
        sim.faults.add(method="GET", path=r"/burstprofiles$", status=503, times=1)
        clock.advance(60)  # the server ends every watch at its timeout; the profiles' re-watch fails once
        await until(lambda: profiles.errors == 1, what="the failed re-watch")
        await kube.create(k.BURSTPROFILES, own("added", "added"))
        changed = await kube.get(k.BURSTPROFILES, "change")
        changed["spec"]["annotations"][f"{TEAM}-change"] = "changed"
        await kube.replace(k.BURSTPROFILES, changed)
        await kube.delete(k.BURSTPROFILES, "remove")
        await kube.create(k.BURSTPROFILES, own("added2", "added2"))  # 4 changes > history of 3
        clock.advance(profiles.backoff_initial)
        await until(lambda: profiles.relists == 1, what="the re-list after 410 Gone")
        await until(lambda: {p.name for p in store.policies.profiles} == {"keep", "change", "added", "added2"},
                    what="the resynced set")
        admitter = PodAdmitter(store=store, namespaces=source.namespace)
        outcome = await admitter.admit(pod_request("jobs"))
        assert set(outcome.profiles) == {"keep", "change", "added", "added2"}
        annotations = {op["path"].rsplit("-", 1)[1]: op["value"] for op in json.loads(_decoded(
            outcome.response["patch"])) if op["path"].startswith("/metadata/annotations/burstflow.io~1test-team-")}
        assert annotations == {"keep": "keep", "change": "changed", "added": "added", "added2": "added2"}
        server = {item["metadata"]["name"] for item in (await kube.list(k.BURSTPROFILES))["items"]}
        assert server == {p.name for p in store.policies.profiles}
    finally:
        await source.stop()


async def test_not_ready_until_every_cache_has_listed_and_says_what_it_waits_for(make_sim, caplog):
    clock = FakeClock(datetime(2026, 11, 23, tzinfo=timezone.utc))
    sim, kube = await make_sim()
    await apply_crds(kube, CRDS / "burstprofiles.burstflow.io.yaml", CRDS / "resourcepolicies.burstflow.io.yaml")
    await kube.create(k.BURSTPROFILES, profile("listed-early", "burst", "x"))
    sim.faults.add(method="GET", path=r"^/api/v1/namespaces$", status=503)
    store = PolicyStore()
    source = ClusterPolicySource(kube=kube, store=store, clock=clock)
    admitter = PodAdmitter(store=store, namespaces=source.namespace)
    await source.start()
    try:
        await until(lambda: source.namespaces.errors == 1, what="the failed Namespace list")
        await until(lambda: all(r.has_synced for r in source.reflectors), what="the policy caches")
        assert not admitter.ready and not source.ready.is_set()
        outcome = await admitter.admit(pod_request("default"))
        assert outcome.outcome == "skipped" and "not loaded yet" in outcome.response["warnings"][0]

        clock.advance(SYNC_WARNING_SECONDS)
        await until(lambda: "not ready yet" in caplog.text, what="the warning")
        [warning] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("not ready yet")]
        assert warning.startswith("not ready yet: still waiting for the first list of namespaces (")
        assert "burstprofiles" not in warning and "configmaps" not in warning
        assert not admitter.ready

        sim.faults.clear()
        clock.advance(source.namespaces.backoff_max)
        await asyncio.wait_for(source.wait_ready(), 5)
        assert admitter.ready and source.revision == 1
    finally:
        await source.stop()
