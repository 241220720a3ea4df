"""`PodAdmitter`: the webhook's per-request `Admitter` for pods — current policies from a `PolicyStore`, namespace
labels from a lookup, the pure mutation core, then an optional placement step (resource pools) before the patch is
written. Its production wiring is in webhook.app."""
from __future__ import annotations

import contextlib
import inspect
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from burstflow.logs import fields
from burstflow.webhook import admission
from burstflow.webhook.admission import Outcome
from burstflow.webhook.loader import load
from burstflow.webhook.mutate import NamespaceLookup, decide
from burstflow.webhook.policy import PolicyError, PolicySet

log = logging.getLogger("burstflow.webhook")
RESOURCE_POLICY = "ResourcePolicy"


class PolicyStore:
    """Holds the compiled PolicySet in use; `update` swaps it in one assignment, so a request sees either the old
    set or the new one, never a mix. Not ready until a set has been installed."""

    def __init__(self, policies: PolicySet | None = None) -> None:
        self._policies = policies
        self._lock = threading.Lock()
        self.errors: tuple[PolicyError, ...] = ()

    @property
    def policies(self) -> PolicySet | None:
        return self._policies

    @property
    def ready(self) -> bool:
        return self._policies is not None

    def update(self, policies: PolicySet, errors: Iterable[PolicyError] = ()) -> bool:
        """Install `policies` unless the load had errors and a good set is already in use (then keep it: a bad
        update must not take working profiles away). The first load installs whatever compiled, so valid profiles
        work even when a sibling file is broken. Returns True when the new set was installed without errors."""
        errors = tuple(errors)
        with self._lock:
            self.errors = errors
            if errors and self._policies is not None:
                for error in errors:
                    log.error("policy reload rejected, keeping the last good set: %s", error)
                return False
            for error in errors:
                log.error("invalid policy left out: %s", error)
            self._policies = policies
            return not errors

    def install(self, policies: PolicySet, errors: Iterable[PolicyError] = ()) -> None:
        """Install `policies` unconditionally; for a source that already kept each object's last good version
        (webhook.sources.ClusterPolicySource), so `policies` is the complete good set. `errors` is informational."""
        with self._lock:
            self.errors = tuple(errors)
            self._policies = policies


def _context(request: Mapping[str, Any]) -> dict[str, Any]:
    """The log context fields of one admission (built only when a line is logged: admission is the hot path)."""
    return fields(uid=request.get("uid"), namespace=request.get("namespace"), name=request.get("name"))


class Placer(Protocol):
    """A step after the profiles (the resource pools' `webhook.pools.placer.PoolPlacer`).

    `place` gets the profile-mutated pod (read-only: return a changed copy, never edit it in place; PodDraft's
    copy-on-write methods keep the diff cheap), the ResourcePolicies compiled into the PolicySet, and `dry_run`
    (no side effects then). It returns an object with `pod` (the pod to continue with), `denied` ((code, message) or
    None) and `warnings`. May be sync or async.
    """

    def place(self, pod: Mapping[str, Any], *, namespace: str, policies: Sequence[Any], dry_run: bool = False) -> Any:
        ...


class PodAdmitter:
    """Implements `webhook.admission.Admitter`. `namespaces` maps a namespace name to its labels or its Namespace
    object (a dict, a callable such as a watched cache's getter, or an async callable, awaited once per request,
    such as `ClusterPolicySource.lookup_namespace`); None uses Namespace objects from the policy files. `services`,
    when given, is an async context manager run for the admitter's lifetime."""

    def __init__(self, *, store: PolicyStore, namespaces: NamespaceLookup | None = None,
                 placer: Placer | None = None, logger: logging.Logger | None = None,
                 services: contextlib.AbstractAsyncContextManager[Any] | None = None) -> None:
        self.store = store
        self.namespaces = namespaces
        self.placer = placer
        self.log = logger or log
        self.services = services

    async def __aenter__(self) -> PodAdmitter:
        """Start `services` (the cluster watches and pools of `ClusterServices`); the server enters the admitter
        while it starts and exits it after the last request has drained."""
        if self.services is not None:
            await self.services.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        if self.services is not None:
            await self.services.__aexit__(*exc_info)

    @property
    def namespaces(self) -> NamespaceLookup | None:
        return self._namespaces

    @namespaces.setter
    def namespaces(self, lookup: NamespaceLookup | None) -> None:
        # Told apart once here, not per admission: an async lookup may read the API.
        self._namespaces = lookup
        self._namespaces_async = inspect.iscoroutinefunction(lookup)

    @property
    def ready(self) -> bool:
        return self.store.ready

    async def admit(self, request: dict[str, Any]) -> Outcome:
        """Decide on one well-formed request; never raises for bad pods or failing CEL (warnings instead)."""
        uid = str(request.get("uid", ""))
        policies = self.store.policies
        if policies is None:
            return Outcome(admission.allowed(uid, warnings=["burstflow: policies are not loaded yet; pod admitted "
                                                            "unchanged"]), "skipped")
        namespaces: Any = self._namespaces if self._namespaces is not None else policies.namespaces
        if self._namespaces_async:  # may read the API (ClusterPolicySource.lookup_namespace)
            name = str(request.get("namespace") or "")
            found = await self._namespaces(name)
            namespaces = {name: found} if found is not None else {}
        decision = decide(request, policies=policies, namespaces=namespaces)
        for warning in decision.warnings:
            self.log.warning("%s (request %s, namespace %s)", warning, uid, request.get("namespace", ""),
                             extra=_context(request))
        profiles = decision.applied
        if self.placer is not None and decision.draft is not None and not decision.opted_out:
            namespace = str(request.get("namespace") or "")
            placement = self.placer.place(decision.draft.pod, namespace=namespace,
                                          policies=policies.resource_policies(namespace),
                                          dry_run=bool(request.get("dryRun")))
            if inspect.isawaitable(placement):
                placement = await placement
            if placement is not None:
                decision.warnings.extend(placement.warnings)
                for warning in placement.warnings:
                    self.log.warning("%s (request %s)", warning, uid, extra=_context(request))
                if placement.denied is not None:
                    code, message = placement.denied
                    return Outcome(admission.denied(uid, message, code=code, warnings=decision.warnings or None),
                                   "denied", profiles)
                if placement.pod is not None and not _shallow_copy(placement.pod, decision.draft.pod):
                    decision.draft.pod = placement.pod  # changed: the patch is then a diff of the two pods
        response, outcome = decision.respond()
        return Outcome(response, outcome, profiles)


def _shallow_copy(placed: Mapping[str, Any], pod: Mapping[str, Any]) -> bool:
    """True when `placed` is `pod` or a copy holding the very same top-level values (a placer returns that for a
    pod no ResourcePolicy selects; it never edits in place), so the patch the profile step wrote still holds."""
    if placed is pod:
        return True
    if len(placed) != len(pod) or list(placed) != list(pod):
        return False
    get = placed.get
    return all(get(key) is value for key, value in pod.items())


def store_from_paths(paths: Iterable[str], *, loader: Callable[..., tuple[PolicySet, list[PolicyError]]] | None = None
                     ) -> PolicyStore:
    """A store loaded from policy files/directories (errors logged; valid profiles installed)."""
    policies, errors = (loader or load)(list(paths))
    store = PolicyStore()
    store.update(policies, errors)
    return store
