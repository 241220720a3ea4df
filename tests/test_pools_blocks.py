"""Slot blocks: a replica reserves spare slots in one guarded status write and hands them to later admissions with
no API call. Checked against the API (local endpoint, or a real cluster via BURSTFLOW_E2E_KUBECONFIG): a block
never takes more than its share of a pool's room, near the cap every slot is one pod's, unused slots go back after
idle, and replicas with blocks never overshoot, also under injected 409s and 500s."""
from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from burstflow import kube as k
from burstflow.clock import FakeClock
from burstflow.webhook.pools.ledger import BlockSettings, Ledger
from burstflow.webhook.pools.metrics import PoolMetrics
from burstflow.webhook.pools.model import POOL_LABEL, RESERVATION_ANNOTATION
from burstflow.webhook.pools.placement import PLACE
from tests.test_pools_counting import (START, cluster, create_policy, crd,  # noqa: F401 - fixtures
                                       patched_pod, policy_status, pools_of, review)

pytestmark = pytest.mark.kube

BLOCKS = BlockSettings()


def pool_and_overflow(pool_max: int) -> list[dict]:
    return [{"name": "pool", "maxReplicas": pool_max,
             "nodeSelectorTerm": [{"key": "type", "operator": "In", "values": ["virtual-kubelet"]}]},
            {"name": "overflow"}]


def reserved_tokens(status: dict, subset: str | None = None) -> set[str]:
    """Every token the status holds as a reservation (in `subset`, or anywhere)."""
    tokens: set[str] = set()
    for item in status.get("subsets") or []:
        if subset is None or item["name"] == subset:
            for value in (item.get("reservations") or {}).values():
                tokens.update(value.split())
    return tokens


def placed(status: dict, subset: str) -> int:
    return {item["name"]: item["placed"] for item in status.get("subsets") or []}.get(subset, 0)


async def listed_status(kube: k.Kube, namespace: str) -> dict:
    """The policy's status read by a list (a path the injected faults do not match)."""
    items = (await kube.list(k.RESOURCEPOLICIES, namespace=namespace)).get("items") or []
    return next(item.get("status") or {} for item in items if item["metadata"]["name"] == "pools")


def writes(metrics: PoolMetrics) -> float:
    return metrics.status_writes.labels(result="ok")._value.get()


async def admit(ledger: Ledger, policy, count: int, prefix: str) -> list[tuple[int, str]]:
    """`count` concurrent admissions straight through the ledger, as the placer makes them: a spare slot when
    there is one, else a reservation. Returns (subset index, token) per pod."""
    async def one(i: int) -> tuple[int, str]:
        spare = ledger.take(policy)
        if spare is not None:
            decision, token = spare
        else:
            token = f"{prefix}{i:04d}"
            decision = await ledger.reserve(policy, token, timeout=10)
        assert decision.action == PLACE
        return decision.subset, token
    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def test_a_block_holds_at_most_a_quarter_of_the_room_and_serves_later_pods_without_writes(kube, namespace, crd):
    clock = FakeClock(START)
    metrics = PoolMetrics(CollectorRegistry())
    policy = await create_policy(kube, namespace, pool_and_overflow(200))
    ledger = Ledger(kube=kube, clock=clock, metrics=metrics, blocks=BLOCKS)
    try:
        first = await admit(ledger, policy, 40, "a")
        status = await policy_status(kube, namespace)
        spare = ledger.spare_slots(policy)
        # The block was written with the pods: counted, but never more than a quarter of the room left after them.
        assert 0 < spare <= (200 - 40) // 4
        assert placed(status, "pool") == 40 + spare <= 200
        assert reserved_tokens(status, "pool") >= {token for _, token in first}
        done = writes(metrics)
        later = await admit(ledger, policy, spare, "b")
        assert writes(metrics) == done, "spare slots are handed out without a status write"
        assert all(subset == 0 for subset, _ in later)
        assert {token for _, token in later} <= reserved_tokens(status, "pool")
        assert len({token for _, token in first + later}) == 40 + spare
        assert ledger.spare_slots(policy) == 0
    finally:
        await ledger.close()


async def test_near_the_cap_every_slot_is_one_pod(kube, namespace, crd):
    clock = FakeClock(START)
    metrics = PoolMetrics(CollectorRegistry())
    policy = await create_policy(kube, namespace, pool_and_overflow(300))
    ledger = Ledger(kube=kube, clock=clock, metrics=metrics, blocks=BLOCKS)
    pods: list[tuple[int, str]] = []
    try:
        for wave in range(10):
            room = 300 - placed(await policy_status(kube, namespace), "pool")
            pool_spare = ledger.spare_slots(policy, "pool")
            pods += await admit(ledger, policy, 50, f"w{wave}-")
            status = await policy_status(kube, namespace)
            in_pool = sum(1 for subset, _ in pods if subset == 0)
            # Exact accounting at every step: the pool counts its pods plus this replica's spare slots, never more
            # than its max, and a pod goes to the overflow only once the pool is full.
            assert placed(status, "pool") == in_pool + ledger.spare_slots(policy, "pool") <= 300
            assert placed(status, "overflow") == len(pods) - in_pool + ledger.spare_slots(policy, "overflow")
            if in_pool < 300:
                assert in_pool == len(pods)
            if room - pool_spare < 4 * BLOCKS.min_slots:
                # Near the cap: no new block in the pool, each of its slots was reserved for one pod.
                assert ledger.spare_slots(policy, "pool") <= pool_spare
        assert sum(1 for subset, _ in pods if subset == 0) == 300
        assert placed(await policy_status(kube, namespace), "pool") == 300
        assert writes(metrics) < 10, "the waves far from the cap were served from blocks"
    finally:
        await ledger.close()


async def test_unused_spare_slots_go_back_after_idle(kube, namespace, crd):
    clock = FakeClock(START)
    policy = await create_policy(kube, namespace, pool_and_overflow(1000))
    ledger = Ledger(kube=kube, clock=clock, blocks=BLOCKS)
    try:
        pods = await admit(ledger, policy, 60, "a")
        spare = ledger.spare_slots(policy)
        assert spare > 0
        assert placed(await policy_status(kube, namespace), "pool") == 60 + spare
        clock.advance(BLOCKS.idle / 2)
        await asyncio.sleep(0.05)
        assert ledger.spare_slots(policy) == spare, "not idle yet"
        clock.advance(BLOCKS.idle)
        for _ in range(200):
            status = await policy_status(kube, namespace)
            if placed(status, "pool") == 60:
                break
            await asyncio.sleep(0.05)
        assert ledger.spare_slots(policy) == 0
        assert reserved_tokens(status) == {token for _, token in pods}
    finally:
        await ledger.close()


async def test_spare_slots_are_not_handed_out_after_the_handout_window(kube, namespace, crd):
    clock = FakeClock(START)
    policy = await create_policy(kube, namespace, pool_and_overflow(1000))
    ledger = Ledger(kube=kube, clock=clock, blocks=BlockSettings(idle=1000))
    try:
        first = await admit(ledger, policy, 60, "a")
        old = ledger.spare_slots(policy)
        assert old > 0
        clock.advance(BLOCKS.handout + 1)
        later = await admit(ledger, policy, 10, "b")
        # The old spare slots were given back in the write that reserved the late pods; none went to a pod.
        status = await policy_status(kube, namespace)
        assert ledger.spare_slots(policy) == 0
        assert reserved_tokens(status) == {token for _, token in first + later}
        assert placed(status, "pool") == 70
        assert {token for _, token in later} == {f"b{i:04d}" for i in range(10)}
    finally:
        await ledger.close()


@pytest.mark.parametrize("faults", [False, True])
async def test_replicas_with_blocks_never_overshoot(kube, namespace, crd, kube_factory, cluster, request,
                                                   faults):
    clock = FakeClock(START)
    policy = await create_policy(kube, namespace, pool_and_overflow(300))
    # Fault injection needs the local endpoint; without faults this runs against a real cluster too.
    sim = request.getfixturevalue("sim") if faults else None
    if faults:
        sim.faults.add(method="PUT", path=r"resourcepolicies/pools/status", status=409, probability=0.15, seed=1)
        sim.faults.add(method="PUT", path=r"resourcepolicies/pools/status", status=500, probability=0.1, seed=2)
        sim.faults.add(method="GET", path=r"resourcepolicies/pools$", status=500, probability=0.1, seed=3)
    cluster.blocks = BLOCKS  # the counting tests' cluster, with slot blocks on
    await cluster.start(kube_factory, [policy], count=2, clock=clock)
    ledgers = [replica.ledger for replica in cluster.replicas]
    pods: list[dict] = []
    held = 0
    for _ in range(3):
        bodies = [review(namespace) for _ in range(400)]
        responses = await cluster.burst(bodies)
        assert all(r["allowed"] for r in responses)
        pods += [patched_pod(b, r) for b, r in zip(bodies, responses)]
        spare = sum(ledger.spare_slots(policy) for ledger in ledgers)
        held = max(held, spare)
        tokens = {p["metadata"]["annotations"][RESERVATION_ANNOTATION] for p in pods}
        assert len(tokens) == len(pods)
        status = await listed_status(kube, namespace)
        pool_spare = sum(ledger.spare_slots(policy, "pool") for ledger in ledgers)
        assert pools_of(pods)["pool"] + pool_spare == placed(status, "pool") <= 300
        # Every pod's token is counted once; the only other tokens are the replicas' spare slots.
        assert tokens <= reserved_tokens(status)
        assert len(reserved_tokens(status)) == len(pods) + spare
    assert held > 0, "the replicas reserved blocks"
    if faults:
        assert all(rule.fired > 0 for rule in sim.faults.rules), [(r.status, r.fired) for r in sim.faults.rules]
        sim.faults.clear()
    clock.advance(BLOCKS.idle + 1)
    for _ in range(200):
        if not any(ledger.spare_slots(policy) for ledger in ledgers):
            status = await listed_status(kube, namespace)
            if len(reserved_tokens(status)) == len(pods):
                break
        await asyncio.sleep(0.05)
    assert reserved_tokens(status) == {p["metadata"]["annotations"][RESERVATION_ANNOTATION] for p in pods}
    assert placed(status, "pool") == pools_of(pods)["pool"] <= 300
    assert placed(status, "overflow") == pools_of(pods)["overflow"]
    assert POOL_LABEL  # the pods carry their pool in this label (pools_of reads it)
