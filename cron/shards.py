"""Static sharding of the cron service by namespace: which shard owns a namespace, and each shard's Lease name.

A namespace belongs to shard `crc32(namespace as UTF-8) % shards` (zlib's CRC-32, the IEEE polynomial: the same
number as Go's `hash/crc32.ChecksumIEEE`, `cksum -a crc32b` or any other CRC-32 implementation, and stable across
Python versions and processes, unlike the salted `hash()`). Every replica of every shard computes the same owner
without talking to the others, so N shards split the CronWorkflows between them with no coordination beyond one
Lease per shard (`lease_name`): two replicas of one shard give it an active and a standby, two shards never
contend. All of a namespace's CronWorkflows (and their Workflows) go to one shard, so one shard's burst is one
namespace's burst: namespaces, not CronWorkflows, are what a shard holds.

Changing the number of shards moves namespaces between shards. While old and new shards overlap (a rollout), a
namespace can be owned twice; that costs no duplicate run, because a Workflow's name is derived from its
CronWorkflow and scheduled time (the name is the lock): the second create answers 409 AlreadyExists and is adopted.
"""
from __future__ import annotations

import zlib
from collections.abc import Callable

ObjectKey = tuple[str, str]  # (namespace, name), as burstflow.kube.object_key returns it


def shard_of(namespace: str, shards: int) -> int:
    """The shard (0..shards-1) that owns `namespace`: `zlib.crc32(namespace.encode("utf-8")) % shards`.

    Fixed for good: a test pins a table of namespaces to their shards, because changing it would move namespaces
    between running shards on an upgrade."""
    if shards < 1:
        raise ValueError(f"shards must be at least 1, not {shards}")
    return zlib.crc32(namespace.encode("utf-8")) % shards


def key_filter(*, shards: int, shard: int) -> Callable[[ObjectKey], bool] | None:
    """The predicate a Reflector keeps objects by (`keep((namespace, name))`), or None with one shard (keep all)."""
    if shards == 1:
        return None

    def keep(key: ObjectKey) -> bool:
        return shard_of(key[0], shards) == shard

    return keep


def lease_name(base: str, *, shards: int, shard: int) -> str:
    """The Lease of shard `shard` of `shards`: `<base>-shard-<shard>-of-<shards>`, or `base` itself with one shard
    (an unsharded installation keeps its Lease). The count is in the name so that during a change of `shards`
    the old and the new shard I never share a Lease: each set elects its own leaders."""
    if shards == 1:
        return base
    return f"{base}-shard-{shard}-of-{shards}"
