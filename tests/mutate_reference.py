"""The profile step as it was before patches were written from recorded edits (commit 7303366): the pod is edited
through a copy-on-write draft, then `diff(original, edited)` gives the patch. Kept here, not in the product, as the
reference that tests/test_webhook_patch_equivalence.py holds `webhook.mutate.decide` to."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from burstflow.webhook.mutate import (APPLIED_ANNOTATION, LEGACY_SECCOMP_CONTAINER, LEGACY_SECCOMP_POD,
                                      SKIP_ANNOTATION, WORKFLOW_LABEL, NamespaceLookup, _conditions_hold, _is_map,
                                      _mapping, _render, diff, enforce_note, is_pod_create, namespace_candidates,
                                      namespace_view)
from burstflow.webhook.policy import SECTIONS, Change, PolicySet


@dataclass
class Reference:
    """What the old path decided (the fields of `Decision` it had): the edited pod in `draft`, the patch its diff."""

    uid: str
    outcome: str
    reason: str = ""
    draft: PodDraft | None = None
    applied: tuple[str, ...] = ()
    changes: list[Change] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    code: int = 0
    opted_out: bool = False

    @property
    def pod(self) -> dict[str, Any] | None:
        return self.draft.pod if self.draft else None

    def patch(self) -> list[dict[str, Any]]:
        return diff(self.draft.original, self.draft.pod) if self.draft else []


class PodDraft:
    """A copy-on-write edit of a pod: `original` is never modified; `pod` shares every subtree not edited.

    Contract for callers (profiles here, resource-pool placement later): read through `pod`, change only through
    the methods below. Each method returns True when it changed something and is idempotent.
    """

    def __init__(self, original: Mapping[str, Any]) -> None:
        self.original = original
        self.pod: dict[str, Any] = dict(original)
        self._owned: set[int] = {id(self.pod)}

    def _container(self, path: tuple[str, ...], factory: type) -> Any:
        node = self.pod
        owned = self._owned
        *parents, last = path
        for key in parents:
            child = node.get(key)
            if id(child) not in owned:
                child = dict(child) if isinstance(child, dict) else {}
                node[key] = child
                owned.add(id(child))
            node = child
        child = node.get(last)
        if id(child) not in owned:
            child = factory(child) if isinstance(child, factory) else factory()
            node[last] = child
            owned.add(id(child))
        return child

    def writable_dict(self, *path: str) -> dict[str, Any]:
        """The dict at `path`, created when missing, copied on first write."""
        return self._container(path, dict)

    def writable_list(self, *path: str) -> list[Any]:
        """The list at `path`, created when missing, copied on first write."""
        return self._container(path, list)

    def get(self, *path: str | int) -> Any:
        node: Any = self.pod
        for key in path:
            if node.__class__ is dict or isinstance(node, Mapping):
                node = node.get(key)
            elif isinstance(node, list) and isinstance(key, int) and -len(node) <= key < len(node):
                node = node[key]
            else:
                return None
        return node

    def set_entry(self, section: tuple[str, ...], key: str, value: str) -> bool:
        """Set `key` in the string map at `section` (e.g. ("metadata", "annotations")); False when already equal."""
        current = self.get(*section)
        if _is_map(current) and current.get(key) == value:
            return False
        self.writable_dict(*section)[key] = value
        return True

    def toleration_keys(self) -> list[tuple[Any, ...]]:
        """`policy.toleration_key` (inlined: this runs per admission) of each toleration the pod has now (entries
        that are not objects are left out)."""
        existing = self.get("spec", "tolerations")
        if not isinstance(existing, list):
            return []
        return [(t.get("key", ""), t.get("operator") or "Equal", t.get("value", ""), t.get("effect", ""),
                 t.get("tolerationSeconds")) for t in existing if t.__class__ is dict or isinstance(t, Mapping)]

    def require_node_affinity(self, requirements: tuple[Mapping[str, Any], ...] | list[Mapping[str, Any]]) -> bool:
        """AND `requirements` (NodeSelectorRequirement dicts) into every required node-affinity term, creating one
        term when there is none; requirements already present in a term are not repeated."""
        if not requirements:
            return False
        terms = self.get("spec", "affinity", "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution",
                         "nodeSelectorTerms") or []
        if not terms:  # the common case: no required term yet, so one new term holding copies of `requirements`
            self.writable_dict("spec", "affinity", "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution"
                               )["nodeSelectorTerms"] = [{"matchExpressions": [
                                   dict(r, values=list(r.get("values") or ())) for r in requirements]}]
            return True
        new_terms = []
        changed = False
        for term in terms:
            expressions = list(term.get("matchExpressions") or ())
            for requirement in requirements:
                if not any(_same_requirement(e, requirement) for e in expressions):
                    expressions.append(dict(requirement, values=list(requirement.get("values") or ())))
                    changed = True
            new_terms.append({**term, "matchExpressions": expressions})
        if changed:
            required = self.writable_dict("spec", "affinity", "nodeAffinity",
                                          "requiredDuringSchedulingIgnoredDuringExecution")
            required["nodeSelectorTerms"] = new_terms
        return changed


    def prefer_node_affinity(self, terms: tuple[Mapping[str, Any], ...] | list[Mapping[str, Any]]) -> bool:
        """Append `terms` (PreferredSchedulingTerm dicts) to the preferred node affinity; a term whose preference
        the pod already has (at any weight) is not added again."""
        if not terms:
            return False
        existing = self.get("spec", "affinity", "nodeAffinity", "preferredDuringSchedulingIgnoredDuringExecution")
        present = [item.get("preference") for item in existing if _is_map(item)] if isinstance(existing, list) else []
        new = [term for term in terms if term.get("preference") not in present]
        if not new:
            return False
        self.writable_list("spec", "affinity", "nodeAffinity", "preferredDuringSchedulingIgnoredDuringExecution"
                           ).extend({"weight": t["weight"], "preference": _copy_term(t["preference"])} for t in new)
        return True


def _copy_term(term: Mapping[str, Any]) -> dict[str, Any]:
    return {kind: [dict(r, values=list(r["values"])) if "values" in r else dict(r) for r in requirements]
            for kind, requirements in term.items()}


def _same_requirement(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return (a.get("key") == b.get("key") and a.get("operator") == b.get("operator")
            and sorted(a.get("values") or ()) == sorted(b.get("values") or ()))


def apply_profiles(draft: PodDraft, *, policies: PolicySet, namespaces: NamespaceLookup | None, namespace: str,
                   request: Mapping[str, Any] | None = None, uid: str = "") -> Reference:
    """The profile step of `decide`, on a draft (separate so tools can run it on a bare pod).

    Precedence: profiles in `policies.profiles` order; for each annotation, label and nodeSelector key the first
    profile that sets it decides (a template that yields nothing sets nothing), and a key the pod already has keeps
    its value unless that profile has `override`. Each section is then written into the draft once.
    """
    pod = draft.original
    metadata = _mapping(pod.get("metadata"))
    pod_labels = _mapping(metadata.get("labels"))
    original_annotations = _mapping(metadata.get("annotations"))
    originals = {"metadata.annotations": original_annotations, "metadata.labels": pod_labels,
                 "spec.nodeSelector": _mapping(_mapping(pod.get("spec")).get("nodeSelector"))}
    ns_labels, ns_object, _ = namespace_view(namespaces if namespaces is not None else policies.namespaces,
                                             namespace)
    is_workflow_pod = WORKFLOW_LABEL in pod_labels
    decision = Reference(uid, "unchanged", draft=draft)
    changes = decision.changes
    activation: list[Any] = []

    def activate() -> Any:
        if not activation:
            variables = {"object": pod, "namespaceObject": ns_object,
                         "request": {k: v for k, v in (request or {}).items() if k not in ("object", "oldObject")}}
            activation.append(policies.env.activation(variables))
        return activation[0]

    def warn(message: str) -> None:
        decision.warnings.append(message)

    claimed: dict[str, set[str]] = {}
    writes: dict[str, dict[str, str]] = {}
    toleration_keys: list[tuple[Any, ...]] | None = None
    new_tolerations: list[dict[str, Any]] = []
    seccomp_change: Change | None = None
    seccomp_decided: str | None = None
    applied: list[str] = []
    for profile in namespace_candidates(policies, ns_labels, is_workflow_pod):
        # An empty selector matches everything: skip the call (most object selectors are empty).
        selector = profile.object_selector
        if selector.requirements and not selector.matches(pod_labels):
            continue
        if profile.conditions and not _conditions_hold(profile, activate, warn):
            continue
        applied.append(profile.name)
        for where, entries in profile.entries:
            taken = claimed.get(where)
            if taken is None:
                taken = claimed[where] = set()
                writes[where] = {}
            original, written = originals[where], writes[where]
            for key, value, change in entries:
                if key in taken:
                    continue
                if change is None:
                    value = _render(profile, where.rpartition(".")[2], key, value, activate, warn)
                    if value is None:
                        continue
                    change = Change(profile.name, f"{where}[{key}]", value, "set")
                taken.add(key)
                if key in original:
                    current = original[key]
                    if current == value:
                        continue
                    if not profile.override:
                        changes.append(Change(profile.name, f"{where}[{key}]", current, "kept pod value"))
                        continue
                written[key] = value
                changes.append(change)
        if profile.toleration_plan:
            if toleration_keys is None:
                toleration_keys = draft.toleration_keys()
            for key, toleration, change in profile.toleration_plan:
                if key not in toleration_keys:
                    toleration_keys.append(key)
                    new_tolerations.append(dict(toleration))
                    changes.append(change)
        if profile.node_affinity and draft.require_node_affinity(profile.node_affinity):
            changes.append(Change(profile.name, "spec.affinity.nodeAffinity (required)",
                                  [dict(r) for r in profile.node_affinity], "added"))
        if profile.preferred and draft.prefer_node_affinity(profile.preferred):
            changes.append(Change(profile.name, "spec.affinity.nodeAffinity (preferred)",
                                  [dict(t) for t in profile.preferred], "added"))
        # The first profile with an opinion decides seccomp, like every other field: so a higher-priority profile
        # with `seccomp: Disabled` opts its pods out of a lower-priority RuntimeDefault (ConfigMap profiles have
        # no opinion).
        if seccomp_decided is None and profile.seccomp is not None:
            seccomp_decided = profile.name
            if profile.seccomp:
                seccomp_change = profile.seccomp_change
            else:
                changes.append(Change(profile.name, "spec.securityContext.seccompProfile", None,
                                      "left alone (seccomp: Disabled)"))
    if not applied:
        decision.outcome = "skipped"
        decision.reason = "no profile matched"
        return decision
    if seccomp_change is not None and not has_seccomp(pod):
        draft.writable_dict("spec", "securityContext")["seccompProfile"] = {"type": "RuntimeDefault"}
        changes.append(seccomp_change)
    recorded = original_annotations.get(APPLIED_ANNOTATION)
    recorded = [name for name in recorded.split(",") if name] if isinstance(recorded, str) else []
    names = ",".join(recorded + [name for name in applied if name not in recorded])
    annotation_writes = writes.setdefault("metadata.annotations", {})
    if annotation_writes.get(APPLIED_ANNOTATION, original_annotations.get(APPLIED_ANNOTATION)) != names:
        annotation_writes[APPLIED_ANNOTATION] = names
    for where, path in SECTIONS.items():
        if writes.get(where):
            draft.writable_dict(*path).update(writes[where])
    if new_tolerations:
        draft.writable_list("spec", "tolerations").extend(new_tolerations)
    decision.applied = tuple(applied)
    return decision


def reference_decide(request: Mapping[str, Any], *, policies: PolicySet, namespaces: NamespaceLookup | None = None) -> Reference:
    """Apply every matching profile of `policies` to the pod in `request` (an AdmissionReview `request`).

    Never raises for bad pods or failing CEL: problems become `warnings` (the admitter logs them). The object is
    never modified.
    """
    uid = str(request.get("uid", ""))
    if policies is None:
        return Reference(uid, "skipped", "policies not loaded")
    why_not = is_pod_create(request)
    if why_not:
        return Reference(uid, "skipped", why_not)
    pod = request.get("object")
    if not _is_map(pod) or (pod.get("kind") not in (None, "Pod")):
        return Reference(uid, "error", "request.object must be a Pod object", code=400)
    metadata = _mapping(pod.get("metadata"))
    annotations = _mapping(metadata.get("annotations"))
    draft = PodDraft(pod)
    if annotations.get(SKIP_ANNOTATION) == "true":
        return Reference(uid, "skipped", f"opted out ({SKIP_ANNOTATION}: \"true\")", draft=draft, opted_out=True)
    namespace = str(request.get("namespace") or metadata.get("namespace") or "")
    decision = apply_profiles(draft, policies=policies, namespaces=namespaces, namespace=namespace, request=request,
                              uid=uid)
    note = enforce_note(draft.pod, namespace=namespace, policies=policies)
    if note:
        decision.warnings.append(note)
    return decision


def has_seccomp(pod: Mapping[str, Any]) -> bool:
    """True when the pod must be left alone: it (or any container, init or ephemeral container) already has a
    seccomp profile, carries a legacy seccomp annotation, or is a Windows pod (`spec.os.name: windows`)."""
    spec = _mapping(pod.get("spec"))
    if (value := spec.get("os")) and _mapping(value).get("name") == "windows":
        return True
    if (value := spec.get("securityContext")) and _mapping(value).get("seccompProfile") is not None:
        return True
    for key in ("initContainers", "containers", "ephemeralContainers"):
        containers = spec.get(key)
        if isinstance(containers, list):
            for container in containers:
                if (_is_map(container) and (value := container.get("securityContext"))
                        and _mapping(value).get("seccompProfile")):
                    return True
    for key in _mapping(_mapping(pod.get("metadata")).get("annotations")):
        if key == LEGACY_SECCOMP_POD or key.startswith(LEGACY_SECCOMP_CONTAINER):
            return True
    return False
