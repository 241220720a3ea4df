"""ApiSim against the real kubernetes-asyncio client (wire compatibility) and raw HTTP (bodies vs fixtures)."""
from __future__ import annotations

import asyncio
import base64
import json
import sys
from datetime import datetime, timezone

import aiohttp
import pytest
import yaml
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from burstflow.apisim import ApiSim
from burstflow.clock import FakeClock
from tests.conftest import FIXTURES, load_api

pytestmark = pytest.mark.kube

CRD_DIR = FIXTURES / "argo-crds"
POD = {"metadata": {"generateName": "wf-step-", "labels": {"burstflow.io/pool": "vci-pool",
                                                         "workflows.argoproj.io/workflow": "wf"}},
       "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "alpine:3.20"}]}}


def crd(name: str, flavour: str = "minimal") -> dict:
    return yaml.load((CRD_DIR / flavour / f"{name}.yaml").read_text(), Loader=yaml.CSafeLoader)


def keys(d: dict, *, drop=("managedFields",)) -> set[str]:
    return set(d) - set(drop)


def decode_continue(token: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))


@pytest.fixture
async def sim():
    async with ApiSim(history=1000, namespaces=("capture",)) as s:
        yield s


@pytest.fixture
async def http(sim):
    async with aiohttp.ClientSession(base_url=sim.url) as session:
        yield session


@pytest.fixture
async def api(sim, tmp_path):
    cfg = client.Configuration()
    await config.load_kube_config(config_file=str(sim.write_kubeconfig(tmp_path / "kubeconfig.yaml")),
                                  client_configuration=cfg)
    async with client.ApiClient(cfg) as api_client:
        yield api_client


async def call(http: aiohttp.ClientSession, method: str, path: str, body=None, *,
               content_type: str = "application/json"):
    data = json.dumps(body) if body is not None else None
    async with http.request(method, path, data=data, headers={"Content-Type": content_type}) as resp:
        return resp.status, await resp.json()


# ----- kubernetes-asyncio: the real client cannot tell ---------------------------------------------------------

async def test_core_v1_pod_lifecycle_through_kubernetes_asyncio(api, sim):
    v1 = client.CoreV1Api(api)
    created = await v1.create_namespaced_pod("capture", POD)
    name = created.metadata.name
    assert name.startswith("wf-step-") and len(name) == len("wf-step-") + 5
    assert created.status.phase == "Pending" and created.status.qos_class == "BestEffort"
    assert created.spec.dns_policy == "ClusterFirst" and created.spec.service_account_name == "default"
    got = await v1.read_namespaced_pod(name, "capture")
    assert got.metadata.uid == created.metadata.uid
    patched = await v1.patch_namespaced_pod(name, "capture", {"metadata": {"labels": {"extra": "1"}}})
    assert patched.metadata.labels["extra"] == "1"
    assert int(patched.metadata.resource_version) > int(created.metadata.resource_version)
    patched.status.phase = "Running"
    running = await v1.replace_namespaced_pod_status(name, "capture", patched)
    assert running.status.phase == "Running"
    listed = await v1.list_namespaced_pod("capture", field_selector="status.phase=Running")
    assert [p.metadata.name for p in listed.items] == [name]
    deleted = await v1.delete_namespaced_pod(name, "capture")
    assert deleted.metadata.deletion_timestamp is not None
    with pytest.raises(ApiException) as gone:
        await v1.read_namespaced_pod(name, "capture")
    assert gone.value.status == 404


async def test_library_watch_streams_added_modified_deleted_then_bookmark_at_timeout(api, sim):
    v1 = client.CoreV1Api(api)
    start = (await v1.list_namespaced_pod("capture")).metadata.resource_version
    name = (await v1.create_namespaced_pod("capture", POD)).metadata.name
    seen = []
    async for event in watch.Watch().stream(v1.list_namespaced_pod, "capture", resource_version=start,
                                            allow_watch_bookmarks=True, timeout_seconds=1):
        seen.append((event["type"], event["raw_object"]["metadata"].get("name")))
        if event["type"] == "ADDED":
            assert event["object"].status.phase == "Pending"
            await v1.delete_namespaced_pod(name, "capture")
        if event["type"] == "BOOKMARK":
            assert event["raw_object"]["metadata"]["resourceVersion"] == str(sim.store.rv)
    # A pod deleted before it was scheduled: MODIFIED (deletionTimestamp) then DELETED, as pod-watch-phases shows.
    assert seen == [("ADDED", name), ("MODIFIED", name), ("DELETED", name), ("BOOKMARK", None)]


async def test_custom_objects_through_crd_created_at_run_time(api, sim):
    ext = client.ApiextensionsV1Api(api)
    await ext.create_custom_resource_definition(crd("workflows"))
    custom = client.CustomObjectsApi(api)
    body = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
            "metadata": {"name": "cron-example-1700000000",
                         "labels": {"workflows.argoproj.io/cron-workflow": "cron-example"}},
            "spec": {"entrypoint": "main", "templates": [{"name": "main", "container": {"image": "alpine:3.20",
                                                                                         "command": ["date"]}}]}}
    created = await custom.create_namespaced_custom_object("argoproj.io", "v1alpha1", "capture", "workflows", body)
    assert created["metadata"]["generation"] == 1
    with pytest.raises(ApiException) as dup:
        await custom.create_namespaced_custom_object("argoproj.io", "v1alpha1", "capture", "workflows", body)
    assert dup.value.status == 409
    assert json.loads(dup.value.body) == {**load_api("workflow-create-409-already-exists.json")["body"]}
    listed = await custom.list_namespaced_custom_object(
        "argoproj.io", "v1alpha1", "capture", "workflows",
        label_selector="workflows.argoproj.io/cron-workflow=cron-example")
    expected = load_api("workflow-list-by-cron.json")
    assert keys(listed) == keys(expected) and keys(listed["metadata"]) == keys(expected["metadata"])
    assert keys(listed["items"][0]["metadata"]) == keys(expected["items"][0]["metadata"])
    assert listed["items"][0]["spec"] == expected["items"][0]["spec"]


async def test_two_lease_candidates_with_the_same_resource_version_one_gets_409(api, sim):
    coord = client.CoordinationV1Api(api)
    lease = {"metadata": {"name": "burstflow-cron"},
             "spec": {"holderIdentity": "cron-0", "leaseDurationSeconds": 15, "leaseTransitions": 0}}
    created = await coord.create_namespaced_lease("capture", lease)
    created.spec.holder_identity = "cron-1"
    await coord.replace_namespaced_lease("burstflow-cron", "capture", created)
    created.spec.holder_identity = "cron-2"
    with pytest.raises(ApiException) as stale:
        await coord.replace_namespaced_lease("burstflow-cron", "capture", created)
    assert stale.value.status == 409
    assert json.loads(stale.value.body) == load_api("lease-update-stale-409.json")["body"]


async def test_many_concurrent_guarded_writes_exactly_one_wins(http, sim):
    status, lease = await call(http, "POST", "/apis/coordination.k8s.io/v1/namespaces/capture/leases",
                               {"metadata": {"name": "pool"}, "spec": {"holderIdentity": "a"}})
    assert status == 201

    async def attempt(i: int) -> int:
        body = {**lease, "spec": {"holderIdentity": f"w{i}"}}
        return (await call(http, "PUT", "/apis/coordination.k8s.io/v1/namespaces/capture/leases/pool", body))[0]

    results = await asyncio.gather(*(attempt(i) for i in range(20)))
    assert sorted(results) == [200] + [409] * 19


async def test_library_watch_from_compacted_resource_version_raises_410(api):
    async with ApiSim(history=3) as small:
        for i in range(6):
            small.put_object("configmaps", {"metadata": {"name": f"c{i}", "namespace": "default"}})
        v1 = client.CoreV1Api(api)
        api.configuration.host = small.url
        with pytest.raises(ApiException) as gone:
            async for _ in watch.Watch().stream(v1.list_namespaced_config_map, "default", resource_version="2",
                                                timeout_seconds=1):
                pass
        assert gone.value.status == 410


# ----- raw HTTP: bodies shaped like the captures ---------------------------------------------------------------

async def test_discovery_documents_match_the_captures(http, sim):
    assert (await call(http, "GET", "/version"))[1] == load_api("discovery-version.json")
    assert (await call(http, "GET", "/apis/coordination.k8s.io/v1"))[1] == load_api("discovery-coordination-v1.json")
    api_doc = (await call(http, "GET", "/api"))[1]
    assert keys(api_doc) == keys(load_api("discovery-api.json")) and api_doc["versions"] == ["v1"]
    groups = (await call(http, "GET", "/apis"))[1]
    assert "argoproj.io" not in [g["name"] for g in groups["groups"]]
    assert (await call(http, "GET", "/apis/argoproj.io/v1alpha1"))[0] == 404
    for name in ("workflowtemplates", "clusterworkflowtemplates", "workflows", "cronworkflows"):
        status, _ = await call(http, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd(name))
        assert status == 201
    assert (await call(http, "GET", "/apis/argoproj.io/v1alpha1"))[1] == load_api("discovery-argoproj-v1alpha1.json")
    groups = (await call(http, "GET", "/apis"))[1]
    assert groups == load_api("discovery-apis.json")
    core = (await call(http, "GET", "/api/v1"))[1]
    assert {r["name"] for r in core["resources"]} >= {"pods", "pods/status", "namespaces", "configmaps", "events"}


async def test_deleting_a_crd_deletes_its_objects_and_stops_serving_it(http, sim):
    await call(http, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd("workflows"))
    path = "/apis/argoproj.io/v1alpha1/namespaces/capture/workflows"
    assert (await call(http, "POST", path, {"metadata": {"name": "w"}, "spec": {}}))[0] == 201
    status, _ = await call(http, "DELETE", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
                                           "workflows.argoproj.io")
    assert status == 200
    status, body = await call(http, "GET", path)
    assert status == 404 and body["reason"] == "NotFound"
    assert sim.store.items(("argoproj.io", "workflows")) == []


async def test_not_found_body_matches_fixture(http, sim):
    await call(http, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd("workflows"))
    status, body = await call(http, "GET", "/apis/argoproj.io/v1alpha1/namespaces/capture/workflows/nope")
    assert (status, body) == (404, load_api("status-404.json"))


async def test_schema_violation_is_422_exactly_like_argos_crd_answer(http, sim):
    assert (await call(http, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                       crd("workflows", "full")))[0] == 201
    bad = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": {"name": "bad-wf"},
           "spec": {"entrypoint": 5, "templates": [{"name": "main", "container": {"image": "alpine:3.20"}}]}}
    status, body = await call(http, "POST", "/apis/argoproj.io/v1alpha1/namespaces/capture/workflows", bad)
    expected = load_api("workflow-create-422-schema.json")
    assert (status, body) == (expected["status"], expected["body"])
    bad["spec"]["entrypoint"] = "main"
    assert (await call(http, "POST", "/apis/argoproj.io/v1alpha1/namespaces/capture/workflows", bad))[0] == 201


async def test_pod_name_and_containers_validation_is_422_like_fixture(http):
    status, body = await call(http, "POST", "/api/v1/namespaces/capture/pods",
                              {"metadata": {"name": "Bad_Name"}, "spec": {}})
    assert (status, body) == (422, load_api("status-422-invalid.json"))


async def test_events_api_rejects_a_dotted_generate_name_but_core_events_accept_it(http, sim):
    event = {"metadata": {"generateName": "cron-example."}, "reason": "WorkflowCreated", "type": "Normal",
             "message": "created workflow cron-example-1700000000", "count": 1,
             "involvedObject": {"kind": "CronWorkflow", "namespace": "capture", "name": "cron-example"}}
    status, body = await call(http, "POST", "/api/v1/namespaces/capture/events", event)
    expected = load_api("event-core-v1-create-201.json")["body"]
    assert status == 201 and keys(body) == keys(expected) and body["eventTime"] is None
    status, body = await call(http, "POST", "/apis/events.k8s.io/v1/namespaces/capture/events",
                              {"metadata": {"generateName": "cron-example."}, "eventTime": None})
    expected = load_api("event-events-v1-create-201.json")
    assert status == 422
    name = body["details"]["name"]
    assert name.startswith("cron-example.")
    assert body == json.loads(json.dumps(expected["body"]).replace("cron-example.rp6pk", name))


async def test_generate_name_create_has_the_fields_a_real_server_fills(http, sim):
    status, body = await call(http, "POST", "/api/v1/namespaces/capture/pods", POD)
    expected = load_api("pod-create-generatename-201.json")
    assert status == expected["status"]
    want = expected["body"]
    assert keys(body) == keys(want)
    assert keys(body["metadata"]) == keys(want["metadata"])
    assert keys(body["spec"]) == keys(want["spec"]) and body["status"] == want["status"]
    assert keys(body["spec"]["containers"][0]) == keys(want["spec"]["containers"][0])
    assert body["spec"]["tolerations"] == want["spec"]["tolerations"]


async def test_already_exists_and_dry_run(http, sim):
    cm = {"metadata": {"name": "profile"}, "data": {"a": "1"}}
    status, dry = await call(http, "POST", "/api/v1/namespaces/capture/configmaps?dryRun=All", cm)
    assert status == 201 and "resourceVersion" not in dry["metadata"] and dry["metadata"]["uid"]
    assert sim.objects("configmaps", "capture") == []
    assert (await call(http, "POST", "/api/v1/namespaces/capture/configmaps", cm))[0] == 201
    status, body = await call(http, "POST", "/api/v1/namespaces/capture/configmaps", cm)
    assert status == 409 and body["reason"] == "AlreadyExists"
    assert keys(body) == keys(load_api("status-409-already-exists.json"))
    assert body["message"] == 'configmaps "profile" already exists'


async def test_create_in_a_missing_namespace_is_404_and_resource_version_on_create_is_rejected(http):
    status, body = await call(http, "POST", "/api/v1/namespaces/nowhere/configmaps", {"metadata": {"name": "x"}})
    assert (status, body["message"]) == (404, 'namespaces "nowhere" not found')
    status, body = await call(http, "POST", "/api/v1/namespaces/capture/configmaps",
                              {"metadata": {"name": "x", "resourceVersion": "5"}})
    assert status == 500 and body["message"] == "resourceVersion should not be set on objects to be created"


async def test_pagination_limit_continue_and_remaining_item_count(http, sim):
    names = []
    for _ in range(5):
        names.append((await call(http, "POST", "/api/v1/namespaces/capture/pods", POD))[1]["metadata"]["name"])
    names.sort()
    status, page1 = await call(http, "GET", "/api/v1/namespaces/capture/pods?limit=2")
    want1 = load_api("pod-list-page1-limit2.json")
    assert keys(page1) == keys(want1) and keys(page1["metadata"]) == keys(want1["metadata"])
    assert "kind" not in page1["items"][0] and page1["metadata"]["remainingItemCount"] == 3
    token = decode_continue(page1["metadata"]["continue"])
    assert token == {"v": "meta.k8s.io/v1", "rv": int(page1["metadata"]["resourceVersion"]),
                     "start": names[1] + "\u0000"}
    # A write between pages does not show up: the continued list is a snapshot at the first page's version.
    await call(http, "POST", "/api/v1/namespaces/capture/pods", {**POD, "metadata": {"name": "zzz-late"}})
    pods = "/api/v1/namespaces/capture/pods?limit=2&continue="
    _, page2 = await call(http, "GET", pods + page1["metadata"]["continue"])
    assert page2["metadata"]["remainingItemCount"] == 1
    assert page2["metadata"]["resourceVersion"] == page1["metadata"]["resourceVersion"]
    _, page3 = await call(http, "GET", pods + page2["metadata"]["continue"])
    assert "continue" not in page3["metadata"]
    assert [p["metadata"]["name"] for p in page1["items"] + page2["items"] + page3["items"]] == names


async def test_label_selected_page_has_continue_but_no_remaining_count(http, sim):
    for _ in range(3):
        await call(http, "POST", "/api/v1/namespaces/capture/pods", POD)
    _, page = await call(http, "GET", "/api/v1/namespaces/capture/pods?labelSelector=burstflow.io/pool%3Dvci-pool"
                                      "&limit=1")
    want = load_api("pod-list-labelselector.json")
    assert keys(page["metadata"]) == keys(want["metadata"]) and len(page["items"]) == 1


async def test_continue_token_older_than_the_history_is_410_expired():
    async with ApiSim(history=4) as small, aiohttp.ClientSession(base_url=small.url) as http:
        for i in range(3):
            small.put_object("configmaps", {"metadata": {"name": f"c{i}", "namespace": "default"}})
        _, page = await call(http, "GET", "/api/v1/namespaces/default/configmaps?limit=1")
        for i in range(5):
            small.put_object("configmaps", {"metadata": {"name": f"d{i}", "namespace": "default"}})
        status, body = await call(http, "GET", f"/api/v1/namespaces/default/configmaps?limit=1"
                                               f"&continue={page['metadata']['continue']}")
        want = load_api("pod-list-continue-410.json")
        assert status == 410
        assert {**body, "metadata": {}} == {**want["body"], "metadata": {}}
        assert decode_continue(body["metadata"]["continue"]) == {"v": "meta.k8s.io/v1", "rv": -1,
                                                                 "start": "c0\u0000"}


async def test_watch_from_a_compacted_version_is_one_error_line_like_the_capture():
    async with ApiSim(history=3) as small, aiohttp.ClientSession(base_url=small.url) as http:
        for i in range(6):
            small.put_object("configmaps", {"metadata": {"name": f"c{i}", "namespace": "default"}})
        async with http.get("/api/v1/namespaces/default/configmaps?watch=1&resourceVersion=2") as resp:
            assert resp.status == 200
            lines = (await resp.read()).decode().splitlines()
        floor = small.store.compacted_rv
        want = (FIXTURES / "api" / "pod-watch-410-gone.jsonl").read_text().strip()
        assert lines == [want.replace("too old resource version: 2 (255)", f"too old resource version: 2 ({floor})")]


async def test_watch_selector_transitions_and_bookmark_shape_with_a_fake_clock():
    clock = FakeClock(datetime(2026, 11, 23, tzinfo=timezone.utc))
    async with ApiSim(clock=clock, bookmark_interval=10, namespaces=("capture",)) as sim, \
            aiohttp.ClientSession(base_url=sim.url) as http:
        sim.put_object("pods", {**POD, "metadata": {"name": "a", "namespace": "capture", "labels": {"x": "1"}}})
        rv = sim.store.rv
        async with http.get(f"/api/v1/namespaces/capture/pods?watch=1&resourceVersion={rv}&labelSelector=x%3D1"
                            f"&allowWatchBookmarks=true&timeoutSeconds=25") as resp:
            sim.set_pod_phase("capture", "a", "Running")
            pod = sim.get_object("pods", "capture", "a")
            pod["metadata"]["labels"] = {"x": "2"}
            sim.put_object("pods", pod)
            events = [json.loads(await resp.content.readline()) for _ in range(2)]
            clock.advance(10)
            events.append(json.loads(await resp.content.readline()))
            clock.advance(20)
            rest = [json.loads(line) for line in (await resp.read()).splitlines()]
        assert [e["type"] for e in events + rest] == ["MODIFIED", "DELETED", "BOOKMARK", "BOOKMARK"]
        assert events[0]["object"]["status"]["phase"] == "Running"
        want = load_api("pod-watch-phases.jsonl")[-1]
        assert rest[0] == json.loads(json.dumps(want).replace('"242"', f'"{sim.store.rv}"'))


async def test_json_patch_failed_test_is_422_like_fixture_and_merge_patch_applies(http, sim):
    _, pod = await call(http, "POST", "/api/v1/namespaces/capture/pods", POD)
    path = f"/api/v1/namespaces/capture/pods/{pod['metadata']['name']}"
    status, body = await call(http, "PATCH", path, [{"op": "test", "path": "/metadata/labels/app", "value": "x"}],
                              content_type="application/json-patch+json")
    assert (status, body) == (422, load_api("pod-patch-json-test-failed.json")["body"])
    status, body = await call(http, "PATCH", path, {"metadata": {"labels": {"extra": "1", "burstflow.io/pool": None}}},
                              content_type="application/merge-patch+json")
    assert status == 200 and body["metadata"]["labels"] == {"extra": "1", "workflows.argoproj.io/workflow": "wf"}
    status, body = await call(http, "PATCH", path, {"spec": {"containers": [{"name": "main", "image": "alpine:3.21"}]}},
                              content_type="application/strategic-merge-patch+json")
    assert status == 200
    assert body["spec"]["containers"][0]["image"] == "alpine:3.21"
    assert body["spec"]["containers"][0]["terminationMessagePath"] == "/dev/termination-log"
    status, body = await call(http, "PATCH", path, {"metadata": {"resourceVersion": "1", "labels": {"y": "1"}}},
                              content_type="application/merge-patch+json")
    assert status == 409 and body["reason"] == "Conflict"
    status, body = await call(http, "PATCH", path, {}, content_type="application/apply-patch+yaml")
    assert status == 415


async def test_status_subresource_rules_and_stale_status_update_conflict(http, sim):
    _, pod = await call(http, "POST", "/api/v1/namespaces/capture/pods", {**POD, "metadata": {"name": "wf-step-ft925"}})
    path = "/api/v1/namespaces/capture/pods/wf-step-ft925"
    main = {**pod, "status": {"phase": "Running"}, "metadata": {**pod["metadata"], "labels": {"l": "1"}}}
    status, body = await call(http, "PUT", path, main)
    assert status == 200 and body["status"]["phase"] == "Pending" and body["metadata"]["labels"] == {"l": "1"}
    # A pods/status write keeps the spec and ownerReferences but takes the rest of metadata, as kube-apiserver does.
    status_update = {**body, "status": {"phase": "Running"}, "spec": {**body["spec"], "activeDeadlineSeconds": 5},
                     "metadata": {**body["metadata"], "labels": {}, "ownerReferences": [
                         {"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "1"}]}}
    status, body = await call(http, "PUT", path + "/status", status_update)
    assert status == 200 and body["status"]["phase"] == "Running" and body["metadata"]["labels"] == {}
    assert "activeDeadlineSeconds" not in body["spec"] and "ownerReferences" not in body["metadata"]
    status, body = await call(http, "PUT", path + "/status", status_update)
    assert (status, body) == (409, load_api("pod-status-409-conflict.json")["body"])
    assert (await call(http, "GET", "/api/v1/namespaces/capture/configmaps/x/status"))[0] == 404


async def test_custom_resource_status_subresource_and_generation(http, sim):
    wf_crd = crd("workflows")
    wf_crd["spec"]["versions"][0]["subresources"] = {"status": {}}
    await call(http, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", wf_crd)
    base = "/apis/argoproj.io/v1alpha1/namespaces/capture/workflows"
    _, wf = await call(http, "POST", base, {"metadata": {"name": "w"}, "spec": {"a": 1}, "status": {"phase": "x"}})
    assert "status" not in wf and wf["metadata"]["generation"] == 1
    _, wf2 = await call(http, "PUT", f"{base}/w", {**wf, "status": {"phase": "Running"}})
    assert "status" not in wf2 and wf2["metadata"]["resourceVersion"] == wf["metadata"]["resourceVersion"]
    _, wf3 = await call(http, "PUT", f"{base}/w/status", {**wf, "status": {"phase": "Running"}})
    assert wf3["status"] == {"phase": "Running"} and wf3["metadata"]["generation"] == 1
    _, wf4 = await call(http, "PUT", f"{base}/w", {**wf3, "spec": {"a": 2}})
    assert wf4["metadata"]["generation"] == 2 and wf4["status"] == {"phase": "Running"}
    status, body = await call(http, "PUT", f"{base}/w", {**wf4, "metadata": {"name": "w"}})
    assert status == 422 and "must be specified for an update" in body["message"]


async def test_delete_precondition_and_owner_reference_garbage_collection(http, sim):
    _, owner = await call(http, "POST", "/api/v1/namespaces/capture/configmaps", {"metadata": {"name": "owner"}})
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
    for name in ("dep-1", "dep-2"):
        await call(http, "POST", "/api/v1/namespaces/capture/pods",
                   {**POD, "metadata": {"name": name, "ownerReferences": [ref]}})
    status, body = await call(http, "DELETE", "/api/v1/namespaces/capture/configmaps/owner",
                              {"preconditions": {"resourceVersion": "1"}})
    assert status == 409 and "Precondition failed: ResourceVersion in precondition: 1" in body["message"]
    status, body = await call(http, "DELETE", "/api/v1/namespaces/capture/configmaps/owner")
    assert status == 200 and body["status"] == "Success" and body["details"]["uid"] == owner["metadata"]["uid"]
    assert sim.objects("pods", "capture") == []


async def test_orphan_propagation_keeps_dependents_without_the_reference(http, sim):
    _, owner = await call(http, "POST", "/api/v1/namespaces/capture/configmaps", {"metadata": {"name": "owner"}})
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
    await call(http, "POST", "/api/v1/namespaces/capture/configmaps", {"metadata": {"name": "dep",
                                                                                    "ownerReferences": [ref]}})
    await call(http, "DELETE", "/api/v1/namespaces/capture/configmaps/owner?propagationPolicy=Orphan")
    dep = sim.get_object("configmaps", "capture", "dep")
    assert dep is not None and "ownerReferences" not in dep["metadata"]


async def test_deleting_a_namespace_deletes_everything_in_it(http, sim):
    await call(http, "POST", "/api/v1/namespaces", {"metadata": {"name": "doomed"}})
    await call(http, "POST", "/api/v1/namespaces/doomed/pods", POD)
    await call(http, "POST", "/apis/coordination.k8s.io/v1/namespaces/doomed/leases", {"metadata": {"name": "l"}})
    status, body = await call(http, "DELETE", "/api/v1/namespaces/doomed")
    assert status == 200 and body["status"]["phase"] == "Terminating"
    assert sim.objects("pods", "doomed") == [] and sim.objects("leases", "doomed") == []
    assert sim.get_object("namespaces", None, "doomed") is None


async def test_finalizers_hold_deletion_until_removed(http, sim):
    await call(http, "POST", "/api/v1/namespaces/capture/configmaps",
               {"metadata": {"name": "held", "finalizers": ["burstflow.io/x"]}})
    await call(http, "DELETE", "/api/v1/namespaces/capture/configmaps/held")
    held = sim.get_object("configmaps", "capture", "held")
    assert held["metadata"]["deletionTimestamp"]
    status, _ = await call(http, "PATCH", "/api/v1/namespaces/capture/configmaps/held",
                           {"metadata": {"finalizers": None}}, content_type="application/merge-patch+json")
    assert status == 200 and sim.get_object("configmaps", "capture", "held") is None


async def test_nonsense_requests_get_status_bodies(http):
    assert (await call(http, "PUT", "/api/v1/namespaces/capture/pods", {}))[0] == 405
    assert (await call(http, "GET", "/api/v1/namespaces/capture/widgets"))[0] == 404
    async with http.post("/api/v1/namespaces/capture/pods", data=b"{not json",
                         headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 400 and (await resp.json())["reason"] == "BadRequest"
    status, body = await call(http, "GET", "/api/v1/namespaces/capture/pods?labelSelector=a%20b")
    assert status == 400 and body["kind"] == "Status"
    status, body = await call(http, "PUT", "/api/v1/namespaces/capture/configmaps/x", {"metadata": {"name": "y"}})
    assert status == 400 and "does not match the name on the URL" in body["message"]


async def test_fault_injection_answers_status_bodies_then_recovers(http, sim):
    sim.faults.add(method="POST", path=r"/configmaps$", status=409, times=1)
    sim.faults.add(method="GET", path=r"/configmaps", status=429, times=1)
    status, body = await call(http, "POST", "/api/v1/namespaces/capture/configmaps", {"metadata": {"name": "a"}})
    assert status == 409 and body["reason"] == "Conflict"
    assert (await call(http, "POST", "/api/v1/namespaces/capture/configmaps", {"metadata": {"name": "a"}}))[0] == 201
    async with http.get("/api/v1/namespaces/capture/configmaps") as resp:
        assert resp.status == 429 and resp.headers["Retry-After"] == "1"
        assert (await resp.json())["reason"] == "TooManyRequests"
    assert (await call(http, "GET", "/api/v1/namespaces/capture/configmaps"))[0] == 200
    assert sim.requests[("create", "configmaps")] == 2 and sim.requests[("list", "configmaps")] == 2


async def test_probabilistic_faults_are_reproducible_with_a_seed(http, sim):
    async def run() -> list[int]:
        sim.faults.clear()
        sim.faults.add(path=r"/configmaps", status=503, probability=0.5, seed=7)
        return [(await call(http, "GET", "/api/v1/namespaces/capture/configmaps"))[0] for _ in range(12)]

    first, second = await run(), await run()
    assert first == second and set(first) == {200, 503}


async def test_latency_injection_waits_on_the_sims_clock():
    clock = FakeClock(datetime(2026, 11, 23, tzinfo=timezone.utc))
    async with ApiSim(clock=clock) as sim, aiohttp.ClientSession(base_url=sim.url) as http:
        sim.faults.add_latency(5.0, method="GET", path=r"/configmaps")
        request = asyncio.ensure_future(call(http, "GET", "/api/v1/namespaces/default/configmaps"))
        await asyncio.sleep(0.1)
        assert not request.done()
        clock.advance(5)
        assert (await request)[0] == 200


async def test_set_pod_phase_bumps_resource_version_like_a_kubelet(sim):
    sim.put_object("pods", {**POD, "metadata": {"name": "p", "namespace": "capture"}})
    before = sim.store.rv
    pod = sim.set_pod_phase("capture", "p", "Running")
    assert pod["metadata"]["resourceVersion"] == str(before + 1)
    assert pod["status"]["phase"] == "Running" and pod["status"]["conditions"][0]["type"] == "Ready"


async def test_command_line_entry_point_writes_a_working_kubeconfig(tmp_path):
    kubeconfig = tmp_path / "out.yaml"
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "burstflow.apisim", "--port", "0",
                                                "--kubeconfig", str(kubeconfig), stdout=asyncio.subprocess.PIPE)
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        assert b"apisim listening on http://127.0.0.1:" in line
        server = yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
        async with aiohttp.ClientSession() as session, session.get(f"{server}/version") as resp:
            assert (await resp.json())["gitVersion"] == "v1.24.0+0"
    finally:
        proc.terminate()
        await proc.wait()


async def test_all_namespaces_pages_key_by_namespace_and_cluster_scoped_custom_resources(http, sim):
    for ns in ("capture", "default"):
        await call(http, "POST", f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": "same"}})
    _, page = await call(http, "GET", "/api/v1/configmaps?limit=1")
    assert page["items"][0]["metadata"]["namespace"] == "capture"
    assert decode_continue(page["metadata"]["continue"])["start"] == "capture/same\u0000"
    _, rest = await call(http, "GET", f"/api/v1/configmaps?limit=1&continue={page['metadata']['continue']}")
    assert rest["items"][0]["metadata"]["namespace"] == "default" and "continue" not in rest["metadata"]
    await call(http, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
               crd("clusterworkflowtemplates"))
    status, body = await call(http, "POST", "/apis/argoproj.io/v1alpha1/clusterworkflowtemplates",
                              {"metadata": {"name": "shared", "namespace": "ignored"}, "spec": {}})
    assert status == 201 and "namespace" not in body["metadata"]
    assert (await call(http, "GET", "/apis/argoproj.io/v1alpha1/namespaces/capture/clusterworkflowtemplates"))[0] == 404


async def test_delete_collection_honours_the_label_selector(http, sim):
    for name, pool in (("a", "vci"), ("b", "vci"), ("c", "ecs")):
        await call(http, "POST", "/api/v1/namespaces/capture/configmaps",
                   {"metadata": {"name": name, "labels": {"pool": pool}}})
    status, body = await call(http, "DELETE", "/api/v1/namespaces/capture/configmaps?labelSelector=pool%3Dvci")
    assert status == 200 and body["kind"] == "ConfigMapList"
    assert sorted(i["metadata"]["name"] for i in body["items"]) == ["a", "b"]
    assert [o["metadata"]["name"] for o in sim.objects("configmaps", "capture")] == ["c"]


@pytest.mark.parametrize("body", [
    [1, 2],
    {"metadata": []},
    {"metadata": {"name": 5}, "spec": {"containers": [{"name": "m", "image": "i"}]}},
    {"metadata": {"name": "ok", "labels": ["x"]}, "spec": {"containers": {"name": "m"}}},
    {"metadata": {"generateName": 7}, "spec": {"containers": [None]}},
    {"kind": "Service", "metadata": {"name": "svc"}},
    {"apiVersion": "v2", "metadata": {"name": "x"}},
], ids=["array", "metadata-list", "name-int", "labels-list", "generate-name-int", "wrong-kind", "wrong-version"])
async def test_garbage_bodies_get_a_4xx_status_and_never_crash_the_server(http, body):
    status, answer = await call(http, "POST", "/api/v1/namespaces/capture/pods", body)
    assert 400 <= status < 500 and answer["kind"] == "Status" and answer["message"]
    assert (await call(http, "GET", "/version"))[0] == 200


async def test_watch_without_resource_version_starts_with_the_current_objects_then_every_change_in_order(http, sim):
    for name in ("b", "a"):
        sim.put_object("configmaps", {"metadata": {"name": name, "namespace": "capture"}})
    async with http.get("/api/v1/namespaces/capture/configmaps?watch=true&timeoutSeconds=5") as resp:
        first = [json.loads(await resp.content.readline()) for _ in range(2)]
        for i in range(5):
            sim.put_object("configmaps", {"metadata": {"name": "a", "namespace": "capture"}, "data": {"i": str(i)}})
        later = [json.loads(await resp.content.readline()) for _ in range(5)]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in first] == [("ADDED", "a"), ("ADDED", "b")]
    assert [e["object"]["data"]["i"] for e in later] == ["0", "1", "2", "3", "4"]
    versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in later]
    assert versions == sorted(versions) and versions[-1] == sim.store.rv


async def test_secrets_fold_string_data_into_base64_data_and_reject_bad_base64(http, sim):
    status, secret = await call(http, "POST", "/api/v1/namespaces/capture/secrets",
                                {"metadata": {"name": "tls"}, "stringData": {"ca.crt": "PEM"},
                                 "data": {"tls.key": base64.b64encode(b"KEY").decode()}})
    assert status == 201 and secret["type"] == "Opaque" and "stringData" not in secret
    assert secret["data"] == {"tls.key": "S0VZ", "ca.crt": "UEVN"}
    status, body = await call(http, "POST", "/api/v1/namespaces/capture/secrets",
                              {"metadata": {"name": "bad"}, "data": {"k": "not base64!"}})
    assert status == 400 and body["reason"] == "BadRequest"
