"""The sim's etcd: objects by resource, one global resourceVersion counter, a bounded change history, watchers.

Every method is synchronous, so on one event loop each write is atomic: a resourceVersion check and the write
that follows it cannot interleave with another request, which makes optimistic concurrency exact.
Stored objects are never mutated after being stored; every write stores a new dict, so history entries and
watch queues may share them without copying.
"""
from __future__ import annotations

import asyncio
import bisect
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Callable, Iterable

Key = tuple[str, str]  # (group, plural)
ObjKey = tuple[str, str]  # (namespace or "", name)
# How many list snapshots (one per list started, at its resourceVersion) are kept for their continue tokens.
LIST_SNAPSHOTS = 16


@dataclass(frozen=True)
class Change:
    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    key: Key
    obj: dict
    old: dict | None


class Watcher:
    """One watch stream's queue of (type, object); selector transitions become ADDED/DELETED as the cacher does."""

    def __init__(self, key: Key, namespace: str | None, match: Callable[[dict], bool]) -> None:
        self.key = key
        self.namespace = namespace
        self.match = match
        self.queue: asyncio.Queue[tuple[str, dict]] = asyncio.Queue()

    def _in_scope(self, obj: dict | None) -> bool:
        if obj is None:
            return False
        if self.namespace is not None and obj["metadata"].get("namespace") != self.namespace:
            return False
        return self.match(obj)

    def translate(self, change: Change) -> tuple[str, dict] | None:
        if change.type == "DELETED":
            return ("DELETED", change.obj) if self._in_scope(change.obj) else None
        now, before = self._in_scope(change.obj), self._in_scope(change.old)
        if now and before:
            return ("MODIFIED", change.obj)
        if now:
            return ("ADDED", change.obj)
        if before and change.old is not None:
            old = dict(change.old)
            old["metadata"] = {**change.old["metadata"], "resourceVersion": str(change.rv)}
            return ("DELETED", old)
        return None

    def offer(self, change: Change) -> None:
        event = self.translate(change)
        if event is not None:
            self.queue.put_nowait(event)


class TooOld(Exception):
    def __init__(self, requested: int, compacted: int) -> None:
        super().__init__(f"too old resource version: {requested} ({compacted})")
        self.requested = requested
        self.compacted = compacted


def _okey(obj: dict) -> ObjKey:
    meta = obj["metadata"]
    return (meta.get("namespace") or "", meta["name"])


def list_key(obj: dict, namespace: str | None = None) -> str:
    """An object's etcd key below the prefix a list of `namespace` reads, which orders the list and its continue
    tokens: `name` within one namespace (and for cluster-scoped objects), `namespace/name` across namespaces. So
    across namespaces the order is the string's, not (namespace, name)'s: `a-b/x` sorts before `a/x`."""
    meta = obj["metadata"]
    ns = meta.get("namespace")
    return f"{ns}/{meta['name']}" if ns and namespace is None else meta["name"]


def _owner_uids(obj: dict | None) -> set[str]:
    if not obj:
        return set()
    return {r.get("uid") for r in obj["metadata"].get("ownerReferences") or [] if isinstance(r, dict)} - {None}


class Store:
    def __init__(self, *, history: int) -> None:
        if history < 1:
            raise ValueError("history must keep at least one change")
        self.rv = 0
        self.compacted_rv = 0  # every change with rv <= this has left the history
        self._objects: dict[Key, dict[ObjKey, dict]] = {}
        self._history: deque[Change] = deque(maxlen=history)
        self._watchers: set[Watcher] = set()
        self._dependents: dict[str, set[tuple[Key, ObjKey]]] = {}
        # (resource, namespace, rv) -> the objects at rv in etcd key order: a paged list reads its pages from the
        # one snapshot its first page took, instead of rebuilding the whole state for every page.
        self._lists: OrderedDict[tuple[Key, str | None, int], list[dict]] = OrderedDict()

    def get(self, key: Key, namespace: str, name: str) -> dict | None:
        return self._objects.get(key, {}).get((namespace or "", name))

    def items(self, key: Key, namespace: str | None = None) -> list[dict]:
        """Objects sorted as etcd keys sort (namespace, then name)."""
        objs = self._objects.get(key, {})
        return [objs[k] for k in sorted(objs) if namespace is None or k[0] == namespace]

    def keys(self) -> list[Key]:
        return list(self._objects)

    def dependents(self, uid: str) -> list[tuple[Key, dict]]:
        out = []
        for key, okey in sorted(self._dependents.get(uid, ())):
            obj = self._objects.get(key, {}).get(okey)
            if obj is not None:
                out.append((key, obj))
        return out

    def find_uid(self, uid: str) -> bool:
        return any(o["metadata"].get("uid") == uid for objs in self._objects.values() for o in objs.values())

    def _index(self, key: Key, old: dict | None, new: dict | None) -> None:
        for uid in _owner_uids(old) - _owner_uids(new):
            self._dependents.get(uid, set()).discard((key, _okey(old)))
        for uid in _owner_uids(new):
            self._dependents.setdefault(uid, set()).add((key, _okey(new)))

    def _record(self, change: Change) -> None:
        if len(self._history) == self._history.maxlen:
            self.compacted_rv = self._history[0].rv
        self._history.append(change)
        for w in list(self._watchers):
            if w.key == change.key:
                w.offer(change)

    def write(self, key: Key, obj: dict) -> dict:
        """Store `obj` (ADDED or MODIFIED) at the next resourceVersion; returns the stored object."""
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        objs = self._objects.setdefault(key, {})
        okey = _okey(obj)
        old = objs.get(okey)
        objs[okey] = obj
        self._index(key, old, obj)
        self._record(Change(self.rv, "MODIFIED" if old is not None else "ADDED", key, obj, old))
        return obj

    def remove(self, key: Key, obj: dict) -> dict:
        """Delete the object `obj` names at the next resourceVersion; `obj` is its final state (DELETED event)."""
        self.rv += 1
        final = dict(obj)
        final["metadata"] = {**obj["metadata"], "resourceVersion": str(self.rv)}
        objs = self._objects.get(key, {})
        old = objs.pop(_okey(obj), None)
        self._index(key, old, None)
        self._record(Change(self.rv, "DELETED", key, final, old))
        return final

    def drop_resource(self, key: Key) -> None:
        self._objects.pop(key, None)

    def snapshot(self, key: Key, namespace: str | None, at_rv: int) -> list[dict] | None:
        """The objects as they were at `at_rv`, or None when changes after it have been compacted away."""
        if at_rv < self.compacted_rv:
            return None
        state = {_okey(o): o for o in self.items(key, namespace)}
        for change in reversed(self._history):
            if change.rv <= at_rv:
                break
            if change.key != key:
                continue
            target = change.obj if change.type != "DELETED" else change.old or change.obj
            if namespace is not None and (target["metadata"].get("namespace") or "") != namespace:
                continue
            okey = _okey(target)
            if change.old is None:
                state.pop(okey, None)
            else:
                state[okey] = change.old
        return [state[k] for k in sorted(state)]

    def list_from(self, key: Key, namespace: str | None, at_rv: int, start: str = "", *,
                  keep: bool = True) -> list[dict] | None:
        """The objects of a list at `at_rv` whose etcd key (`list_key`) is `start` or after, in etcd key order; None
        when changes after `at_rv` have been compacted away (the continue token expired: 410).

        The first page of a paged list asks at the current resourceVersion; the snapshot it takes is kept (`keep`,
        up to LIST_SNAPSHOTS lists), so each further page costs a binary search and a slice, not a rebuild of the
        state. A page whose snapshot was dropped rebuilds it from the change history.
        """
        if at_rv < self.compacted_rv:
            return None
        skey = (key, namespace, at_rv)
        objs = self._lists.get(skey)
        if objs is None:
            objs = self.items(key, namespace) if at_rv >= self.rv else self.snapshot(key, namespace, at_rv)
            if objs is None:
                return None
            objs.sort(key=lambda obj: list_key(obj, namespace))
            if at_rv > self.rv or not keep:  # (a version this store never issued: later writes would change it)
                return objs[bisect.bisect_left(objs, start, key=lambda obj: list_key(obj, namespace)):]
            for stale in [k for k in self._lists if k[2] < self.compacted_rv]:
                del self._lists[stale]
            self._lists[skey] = objs
            while len(self._lists) > LIST_SNAPSHOTS:
                self._lists.popitem(last=False)
        else:
            self._lists.move_to_end(skey)
        if not start:
            return list(objs)
        return objs[bisect.bisect_left(objs, start, key=lambda obj: list_key(obj, namespace)):]

    def start_watch(self, key: Key, namespace: str | None, match: Callable[[dict], bool],
                    since: int | None) -> Watcher:
        """A registered watcher whose queue already holds the backlog: every change after `since` (or synthetic
        ADDED events for the current objects when `since` is None). Raises TooOld when `since` was compacted."""
        if since is not None and since < self.compacted_rv:
            raise TooOld(since, self.compacted_rv)
        watcher = Watcher(key, namespace, match)
        if since is None:
            for obj in self.items(key, namespace):
                if match(obj):
                    watcher.queue.put_nowait(("ADDED", obj))
        else:
            for change in self._history:
                if change.rv > since and change.key == key:
                    watcher.offer(change)
        self._watchers.add(watcher)
        return watcher

    def stop_watch(self, watcher: Watcher) -> None:
        self._watchers.discard(watcher)

    def all_objects(self) -> Iterable[tuple[Key, dict]]:
        for key, objs in self._objects.items():
            for obj in objs.values():
                yield key, obj
