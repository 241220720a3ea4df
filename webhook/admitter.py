"""`PodAdmitter`: the webhook's `Admitter` for pods — current policies from a `PolicyStore`, namespace labels from a
lookup, the pure mutation core, then an optional placement step (resource pools) before the patch is diffed."""
from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from webhook import admission
from webhook.admission import Outcome
from webhook.mutate import NamespaceLookup, decide
from webhook.policy import PolicyError, PolicySet

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
    object (a dict, or a callable such as a watched cache's getter); None uses Namespace objects from the policy
    files."""

    def __init__(self, *, store: PolicyStore, namespaces: NamespaceLookup | None = None,
                 placer: Placer | None = None, logger: logging.Logger | None = None) -> None:
        self.store = store
        self.namespaces = namespaces
        self.placer = placer
        self.log = logger or log

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
        namespaces = self.namespaces if self.namespaces is not None else policies.namespaces
        decision = decide(request, policies=policies, namespaces=namespaces)
        for warning in decision.warnings:
            self.log.warning("%s (request %s, namespace %s)", warning, uid, request.get("namespace", ""))
        profiles = decision.applied
        if self.placer is not None and decision.draft is not None and not decision.opted_out:
            placement = self.placer.place(decision.draft.pod, namespace=str(request.get("namespace") or ""),
                                          policies=policies.compiled.get(RESOURCE_POLICY, ()),
                                          dry_run=bool(request.get("dryRun")))
            if inspect.isawaitable(placement):
                placement = await placement
            if placement is not None:
                decision.warnings.extend(placement.warnings)
                for warning in placement.warnings:
                    self.log.warning("%s (request %s)", warning, uid)
                if placement.denied is not None:
                    code, message = placement.denied
                    return Outcome(admission.denied(uid, message, code=code, warnings=decision.warnings or None),
                                   "denied", profiles)
                if placement.pod is not None:
                    decision.draft.pod = placement.pod
        response = decision.response()
        return Outcome(response, decision.outcome, profiles)


def from_settings(settings: Any, *, metrics: Any = None, clock: Any = None) -> PodAdmitter:
    """The production admitter for `burstflow webhook serve`: policies from `settings.policy_paths`, their load
    errors and counts reported through `metrics` (webhook.metrics.WebhookMetrics)."""
    if not settings.policy_paths:
        raise ValueError("no policy files given (--policy-paths / BURSTFLOW_WEBHOOK_POLICY_PATHS); loading policies "
                         "from the cluster is not available in this build")
    from webhook.loader import load

    policies, errors = load(settings.policy_paths)
    store = PolicyStore()
    store.update(policies, errors)
    for warning in policies.warnings:
        log.warning("%s", warning)
    if metrics is not None:
        for error in errors:
            metrics.policy_load_errors.labels(source=error.source or "files").inc()
        for kind, count in store.policies.counts().items():
            metrics.policies_loaded.labels(kind=kind).set(count)
    return PodAdmitter(store=store)


def store_from_paths(paths: Iterable[str], *, loader: Callable[..., tuple[PolicySet, list[PolicyError]]] | None = None
                     ) -> PolicyStore:
    """A store loaded from policy files/directories (errors logged; valid profiles installed)."""
    from webhook.loader import load

    policies, errors = (loader or load)(list(paths))
    store = PolicyStore()
    store.update(policies, errors)
    return store
