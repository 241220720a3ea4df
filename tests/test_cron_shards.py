"""The cron service sharded by namespace: which shard owns a namespace (a pinned table), the settings that choose a
shard, each shard's Lease, and shard runners against a real API endpoint (the local ApiSim, or a cluster via
BURSTFLOW_E2E_KUBECONFIG) over several namespaces, driven on a FakeClock."""
from __future__ import annotations

import asyncio
import itertools
import uuid
import zlib
from datetime import timedelta

import pytest
from prometheus_client import CollectorRegistry

from burstflow.cli import build_parser
from burstflow.clock import FakeClock
from burstflow.kube import CRON_WORKFLOWS, LEASES, NAMESPACES, WORKFLOWS, Kube, NotFound, Reflector
from burstflow.cron import shards
from burstflow.cron.leader import elector_from_settings
from burstflow.cron.metrics import CronMetrics
from burstflow.cron.runner import CronRunner
from burstflow.cron.settings import CronSettings, SettingsError
from burstflow.cron.workflow import CRON_LABEL
from tests.kubefixtures import ScopedKube, apply_crds
from tests.test_cron_runner import CRON_CRD, LEASE, SHARED_CRDS, WORKFLOW_SPEC, start_time, wf_name

# --- which shard owns a namespace -----------------------------------------------------------------------------------

# Pinned for good: a change here moves namespaces between the shards of every running installation on upgrade.
# (crc32 of the UTF-8 name, mod 3; e.g. zlib.crc32(b"default") == 0xE35E00DF == 3814588639, 3814588639 % 3 == 1.)
OWNERS_OF_3 = {
    "default": 1,
    "kube-system": 1,
    "argo": 1,
    "team-a": 1,
    "team-b": 2,
    "team-c": 1,
    "ml-training": 2,
    "data-eng": 1,
    "prod": 1,
    "staging": 1,
    "burstflow-system": 0,
    "a": 0,
    "tenant-00042": 2,
}


@pytest.mark.parametrize("name, owner", OWNERS_OF_3.items(), ids=list(OWNERS_OF_3))
def test_a_namespace_belongs_to_the_shard_its_crc32_gives(name, owner):
    assert shards.shard_of(name, 3) == owner
    keeps = [shards.key_filter(shards=3, shard=i) for i in range(3)]
    assert [keep((name, "any")) for keep in keeps] == [i == owner for i in range(3)]


def test_the_table_is_crc32_of_the_utf8_name_which_other_languages_compute_the_same():
    # The IEEE CRC-32 check value: crc32(b"123456789") == 0xCBF43926 in every implementation (Go's ChecksumIEEE too).
    assert zlib.crc32(b"123456789") == 0xCBF43926
    assert shards.shard_of("123456789", 1000) == 0xCBF43926 % 1000
    assert zlib.crc32(b"default") == 0xE35E00DF


def test_one_shard_owns_everything_and_keeps_its_lease_name():
    assert shards.key_filter(shards=1, shard=0) is None
    assert all(shards.shard_of(name, 1) == 0 for name in OWNERS_OF_3)
    assert shards.lease_name("burstflow-cron", shards=1, shard=0) == "burstflow-cron"


def test_every_namespace_has_exactly_one_owner_and_shards_share_the_load():
    names = [f"tenant-{i:05d}" for i in range(3000)]
    for count in (2, 3, 5):
        keeps = [shards.key_filter(shards=count, shard=i) for i in range(count)]
        owners = [[i for i, keep in enumerate(keeps) if keep((name, "x"))] for name in names]
        assert all(len(found) == 1 for found in owners)
        sizes = [sum(1 for found in owners if found == [i]) for i in range(count)]
        assert min(sizes) > 0.8 * len(names) / count, sizes


def test_each_shard_has_its_own_lease_and_a_change_of_count_never_shares_one():
    assert shards.lease_name("burstflow-cron", shards=3, shard=2) == "burstflow-cron-shard-2-of-3"
    names = {shards.lease_name("bf", shards=n, shard=i) for n in (1, 2, 3, 4) for i in range(n)}
    assert len(names) == 1 + 2 + 3 + 4


def test_shard_of_refuses_zero_shards():
    with pytest.raises(ValueError, match="at least 1"):
        shards.shard_of("default", 0)


# --- settings -------------------------------------------------------------------------------------------------------

def test_shards_are_read_from_flags_and_variables():
    assert (CronSettings.from_env({}).shards, CronSettings.from_env({}).shard) == (1, 0)
    settings = CronSettings.from_env({"BURSTFLOW_CRON_SHARDS": "4", "BURSTFLOW_CRON_SHARD": "3"})
    assert (settings.shards, settings.shard) == (4, 3)
    args = build_parser().parse_args(["cron", "run", "--shards", "3", "--shard", "1"])
    settings = CronSettings.from_args(args, {"BURSTFLOW_CRON_SHARDS": "5", "BURSTFLOW_CRON_SHARD": "4"})
    assert (settings.shards, settings.shard) == (3, 1)


@pytest.mark.parametrize("environ, message", [
    ({"BURSTFLOW_CRON_SHARDS": "0"}, "--shards/BURSTFLOW_CRON_SHARDS: must be at least 1, not 0"),
    ({"BURSTFLOW_CRON_SHARDS": "3", "BURSTFLOW_CRON_SHARD": "3"},
     "--shard/BURSTFLOW_CRON_SHARD: must be between 0 and 2 (--shards/BURSTFLOW_CRON_SHARDS is 3), not 3"),
    ({"BURSTFLOW_CRON_SHARD": "1"},
     "--shard/BURSTFLOW_CRON_SHARD: must be between 0 and 0 (--shards/BURSTFLOW_CRON_SHARDS is 1), not 1"),
    ({"BURSTFLOW_CRON_SHARDS": "2", "BURSTFLOW_CRON_SHARD": "-1"},
     "--shard/BURSTFLOW_CRON_SHARD: must be between 0 and 1 (--shards/BURSTFLOW_CRON_SHARDS is 2), not -1"),
    ({"BURSTFLOW_CRON_SHARDS": "two"}, "--shards/BURSTFLOW_CRON_SHARDS: expected a whole number, not 'two'"),
    ({"BURSTFLOW_CRON_SHARDS": "2", "BURSTFLOW_CRON_NAMESPACE": "team-a"},
     "--shards/BURSTFLOW_CRON_SHARDS: shards split namespaces, but --namespace/BURSTFLOW_CRON_NAMESPACE watches only "
     "'team-a'; set one or the other"),
], ids=["no shards", "shard past the last", "shard without shards", "negative shard", "not a number",
        "shards of one namespace"])
def test_a_shard_setting_the_service_cannot_use_names_the_flag_and_the_variable(environ, message):
    with pytest.raises(SettingsError) as error:
        CronSettings.from_env(environ)
    assert str(error.value) == message


def test_cron_run_exits_2_naming_the_shard_flag(capsys):
    from burstflow.cron.app import run_command

    args = build_parser().parse_args(["cron", "run", "--shards", "2", "--shard", "2"])
    assert run_command(args) == 2
    assert "--shard/BURSTFLOW_CRON_SHARD: must be between 0 and 1" in capsys.readouterr().err


def test_the_elector_campaigns_for_its_shards_lease():
    settings = CronSettings(identity="cron-0", lease_namespace="burstflow-system", shards=3, shard=1)
    elector = elector_from_settings(object(), settings, clock=FakeClock(start_time()))  # type: ignore[arg-type]
    assert (elector.namespace, elector.name) == ("burstflow-system", "burstflow-cron-shard-1-of-3")
    single = elector_from_settings(object(), CronSettings(identity="cron-0", lease_namespace="ns"),  # type: ignore[arg-type]
                                   clock=FakeClock(start_time()))
    assert single.name == "burstflow-cron"


# --- shard runners against an API endpoint ----------------------------------------------------------------------------


def names_by_shard(count: int, per_shard: int) -> list[list[str]]:
    """Fresh namespace names, `per_shard` of them owned by each of `count` shards."""
    found: list[list[str]] = [[] for _ in range(count)]
    for _ in itertools.count():
        name = f"bf-test-{uuid.uuid4().hex[:8]}"
        owner = found[shards.shard_of(name, count)]
        if len(owner) < per_shard:
            owner.append(name)
        if all(len(names) == per_shard for names in found):
            return found
    raise AssertionError("unreachable")


class Replica:
    """One process of the cron service: a CronRunner on its own connection, with the elector the app would build."""

    def __init__(self, runner: CronRunner, kube: Kube) -> None:
        self.runner, self.kube = runner, kube
        self.task = asyncio.get_running_loop().create_task(runner.run())

    async def stop(self, *, release: bool = True) -> None:
        """Stop; `release=False` is a crash (the Lease stays until it expires)."""
        if self.runner.elector is not None:
            await self.runner.elector.stop(release=release)
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)

    def created(self, namespace: str) -> float:
        return self.runner.metrics.value("burstflow_cron_runs_created_total", {"namespace": namespace})


class Cluster:
    """Several test namespaces (owned per shard), a FakeClock, and the replicas started against them."""

    def __init__(self, kube: Kube, kubeconfig: str, clock: FakeClock, namespaces: list[str]) -> None:
        self.kube, self.kubeconfig, self.clock, self.namespaces = kube, kubeconfig, clock, namespaces
        self.replicas: list[Replica] = []
        self.kubes: list[Kube] = []

    @property
    def lease_namespace(self) -> str:
        return self.namespaces[0]

    async def replica(self, *, shards_: int, shard: int, identity: str, elector: bool = True) -> Replica:
        kube = await ScopedKube.connect(self.kubeconfig, clock=self.clock)
        kube.scope = frozenset(self.namespaces)
        self.kubes.append(kube)
        settings = CronSettings(identity=identity, workers=4, leader_election=elector, shards=shards_, shard=shard,
                                lease_namespace=self.lease_namespace, **LEASE)
        runner = CronRunner(kube=kube, clock=self.clock, settings=settings,
                            metrics=CronMetrics(CollectorRegistry()),
                            elector=elector_from_settings(kube, settings, clock=self.clock))
        replica = Replica(runner, kube)
        self.replicas.append(replica)
        await self.settle()
        return replica

    def idle(self) -> bool:
        return all(r.runner.idle() for r in self.replicas if not r.task.done())

    async def settle(self) -> None:
        await self.clock.settle(idle=self.idle)

    async def run_until(self, when) -> None:
        await self.clock.run_until(when, idle=self.idle)

    async def create_cron(self, namespace: str, name: str, schedule: str) -> None:
        await self.kube.create(CRON_WORKFLOWS, {
            "apiVersion": "burstflow.io/v1alpha1", "kind": "CronWorkflow",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"schedules": [schedule], "workflowSpec": WORKFLOW_SPEC}})

    async def workflows(self, namespace: str) -> list[str]:
        listing = await self.kube.list(WORKFLOWS, namespace=namespace, label_selector=CRON_LABEL)
        return sorted(w["metadata"]["name"] for w in listing["items"])

    async def holder(self, lease: str) -> str | None:
        try:
            got = await self.kube.get(LEASES, lease, namespace=self.lease_namespace)
        except NotFound:
            return None
        return (got.get("spec") or {}).get("holderIdentity")


@pytest.fixture
async def cluster(kube, kubeconfig, request):
    await apply_crds(kube, SHARED_CRDS / "workflows.yaml", CRON_CRD)
    by_shard = names_by_shard(2, 2)
    namespaces = [name for names in by_shard for name in names]
    for name in namespaces:
        await kube.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace",
                                       "metadata": {"name": name, "labels": {"burstflow.io/test": "true"}}})
    environment = Cluster(kube, kubeconfig, FakeClock(start_time()), namespaces)
    environment.by_shard = by_shard
    try:
        yield environment
    finally:
        for replica in environment.replicas:
            await replica.stop()
        for client in environment.kubes:
            await client.close()
        for name in namespaces:
            try:
                await kube.delete(NAMESPACES, name, propagation="Background")
            except NotFound:
                pass


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)


async def test_two_shards_each_create_their_namespaces_runs_once_and_hold_only_their_lease(cluster):
    t0 = cluster.clock.now()
    for namespace in cluster.namespaces:
        await cluster.create_cron(namespace, "every-5", "*/5 * * * *")
    first = await cluster.replica(shards_=2, shard=0, identity="shard-0-a")
    second = await cluster.replica(shards_=2, shard=1, identity="shard-1-a")
    await cluster.run_until(t0 + minutes(10) + timedelta(seconds=1))
    assert first.runner.leading and second.runner.leading
    for namespace in cluster.namespaces:
        assert await cluster.workflows(namespace) == [wf_name("every-5", t0 + minutes(m)) for m in (0, 5, 10)]
    for shard, replica in enumerate((first, second)):
        mine = cluster.by_shard[shard]
        assert {key[0] for key in replica.runner.crons.cache} == set(mine)
        assert {key[0] for key in replica.runner.workflows.cache} == set(mine)
        assert [replica.created(ns) for ns in cluster.namespaces] == [3.0 if ns in mine else 0.0
                                                                     for ns in cluster.namespaces]
    assert await cluster.holder("burstflow-cron-shard-0-of-2") == "shard-0-a"
    assert await cluster.holder("burstflow-cron-shard-1-of-2") == "shard-1-a"
    assert await cluster.holder("burstflow-cron") is None


async def test_a_shards_standby_takes_over_its_lease_and_its_namespaces_only(cluster):
    t0 = cluster.clock.now()
    for namespace in cluster.namespaces:
        await cluster.create_cron(namespace, "minutely", "* * * * *")
    leader = await cluster.replica(shards_=2, shard=0, identity="shard-0-a")
    standby = await cluster.replica(shards_=2, shard=0, identity="shard-0-b")
    other = await cluster.replica(shards_=2, shard=1, identity="shard-1-a")
    await cluster.run_until(t0 + minutes(1) + timedelta(seconds=30))
    assert leader.runner.leading and not standby.runner.leading and other.runner.leading
    await leader.stop(release=False)  # crashed: its Lease stays until it expires, across the 2-minute tick
    await cluster.run_until(t0 + minutes(3) + timedelta(seconds=30))
    assert standby.runner.leading
    assert await cluster.holder("burstflow-cron-shard-0-of-2") == "shard-0-b"
    assert await cluster.holder("burstflow-cron-shard-1-of-2") == "shard-1-a"
    for namespace in cluster.namespaces:
        assert await cluster.workflows(namespace) == [wf_name("minutely", t0 + minutes(m)) for m in range(4)]
    for namespace in cluster.by_shard[0]:
        assert standby.created(namespace) >= 1 and other.created(namespace) == 0
    for namespace in cluster.by_shard[1]:
        assert standby.created(namespace) == 0 and other.created(namespace) == 4


async def test_two_shard_counts_owning_one_namespace_create_each_run_once(cluster):
    """A rollout from 1 to 3 shards: the old process and the new shard both own a namespace for a while. The
    Workflow's name is the lock: the second create answers 409 AlreadyExists and is adopted, not run again."""
    t0 = cluster.clock.now()
    namespace = cluster.namespaces[0]
    await cluster.create_cron(namespace, "every-5", "*/5 * * * *")
    old = await cluster.replica(shards_=1, shard=0, identity="old")
    new = await cluster.replica(shards_=3, shard=shards.shard_of(namespace, 3), identity="new")
    await cluster.run_until(t0 + minutes(15) + timedelta(seconds=1))
    assert old.runner.leading and new.runner.leading
    assert (namespace, "every-5") in old.runner.crons.cache and (namespace, "every-5") in new.runner.crons.cache
    assert await cluster.workflows(namespace) == [wf_name("every-5", t0 + minutes(m)) for m in (0, 5, 10, 15)]
    assert old.created(namespace) + new.created(namespace) == 4
    status = (await cluster.kube.get(CRON_WORKFLOWS, "every-5", namespace=namespace))["status"]
    assert status["lastScheduledTime"] == (t0 + minutes(15)).strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_a_reflector_keeps_only_the_namespaces_it_is_told_to(cluster):
    mine, theirs = cluster.by_shard[0][0], cluster.by_shard[1][0]
    await cluster.create_cron(mine, "listed", "0 * * * *")
    await cluster.create_cron(theirs, "listed", "0 * * * *")
    kube = await ScopedKube.connect(cluster.kubeconfig, clock=cluster.clock)
    kube.scope = frozenset(cluster.namespaces)
    cluster.kubes.append(kube)
    seen: list[tuple[str, tuple[str, str]]] = []

    async def on_event(event):
        seen.append((event.type, (event.object["metadata"]["namespace"], event.object["metadata"]["name"])))

    reflector = Reflector(kube, CRON_WORKFLOWS, on_event=on_event, clock=cluster.clock, page_size=1,
                          keep=shards.key_filter(shards=2, shard=0))
    async with reflector:
        await reflector.wait_synced()
        await cluster.create_cron(mine, "watched", "0 * * * *")
        await cluster.create_cron(theirs, "watched", "0 * * * *")
        await cluster.kube.delete(CRON_WORKFLOWS, "listed", namespace=theirs)
        await cluster.kube.delete(CRON_WORKFLOWS, "listed", namespace=mine)
        for _ in range(500):
            if ("DELETED", (mine, "listed")) in seen:
                break
            await asyncio.sleep(0.01)
    assert set(reflector.cache) == {(mine, "watched")}
    assert seen == [("ADDED", (mine, "listed")), ("ADDED", (mine, "watched")), ("DELETED", (mine, "listed"))]
