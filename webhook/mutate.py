"""The pure mutation core: (admission request, namespace, compiled policies) -> Decision; no IO, no clock, no metrics.

Measurements on the captured Argo pod shaped how: `copy.deepcopy` costs ~185 us, `jsonpatch.make_patch` ~750 us
over the whole pod, against a budget of ~0.3 ms per admission for everything (../shared/measured.md). So:
- Profiles are merged first and written after: each map section (annotations, labels, nodeSelector) gets one dict
  of winning values, and the profile step records what it does as `Edits` (a sparse tree over the pod) instead of
  editing a copy. The patch is written from the edits, op for op what `diff` of the two pods would give (tests hold
  it to the old edit-then-diff path); the edited pod is built (copy-on-write, `PodDraft`) only when something reads
  it: a placement step, or a ResourcePolicy of the namespace (the enforce note).
- When none of the profiles a pod gets has a template, their result depends on the pod only through its shape
  (`_Plan.shape`: which containers and written keys it has, in which order, its tolerations, seccomp): the result,
  patch encoded, is remembered per policy set, profiles and shape, so the pods of one workflow template in a
  namespace, which differ in names and values but not in shape, cost a key and a lookup.
- Anything else a step after the profiles changes is diffed: `diff` is a small generic RFC 6902 differ that skips
  identical subtrees by identity; tests hold it to jsonpatch (apply_patch round trips, make_patch parity).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import is_, methodcaller
from types import MappingProxyType
from typing import Any

from burstflow import cel
from burstflow.webhook import admission
from burstflow.selectors import label_value_error
from burstflow.webhook.policy import SECTIONS, Change, PolicySet, Profile, Template
from burstflow.webhook.pools.placement import bypassed_policies
from burstflow.webhook.providers import VCI_BURST

SKIP_ANNOTATION = "burstflow.io/skip"
APPLIED_ANNOTATION = "burstflow.io/applied"
WORKFLOW_LABEL = "workflows.argoproj.io/workflow"
# Before Kubernetes 1.27 the API server rejects a pod whose seccomp field disagrees with these legacy annotations,
# so a pod carrying one counts as "already has a seccomp profile".
LEGACY_SECCOMP_POD = "seccomp.security.alpha.kubernetes.io/pod"
LEGACY_SECCOMP_CONTAINER = "container.seccomp.security.alpha.kubernetes.io/"

NamespaceLookup = Mapping[str, Mapping[str, Any]] | Callable[[str], Mapping[str, Any] | None]
# Read-only stand-in for a missing or malformed JSON object (shared, so it must never be written to).
_NO_MAP: Mapping[str, Any] = MappingProxyType({})
_ABSENT = object()


def _is_map(value: Any) -> bool:
    """True for a JSON object; checks the exact dict type first because the ABC check costs several times more."""
    return value.__class__ is dict or isinstance(value, Mapping)


def _mapping(value: Any) -> Mapping[str, Any]:
    """`value` when it is a JSON object, else an empty read-only mapping."""
    return value if value.__class__ is dict or isinstance(value, Mapping) else _NO_MAP


# --- copy-on-write editing ----------------------------------------------------------------------------------------

# Where profiles write node affinity (the paths `require_node_affinity` and `prefer_node_affinity` edit).
NODE_AFFINITY = ("spec", "affinity", "nodeAffinity")
REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution"
PREFERRED = "preferredDuringSchedulingIgnoredDuringExecution"


class PodDraft:
    """A copy-on-write edit of a pod: `original` is never modified; `pod` shares every subtree not edited.

    Contract for callers (profiles here, resource-pool placement later): read through `pod`, change only through
    the methods below. Each method returns True when it changed something and is idempotent.

    The profile step does not write into the draft: it records what it does in `edits` (`Edits`), `pod` is built
    from them when first read, and while nothing else has changed the pod `patch()` writes the JSON patch straight
    from the edits instead of diffing two pods (the admission path never needs `pod` unless a placement step or a
    ResourcePolicy of the namespace looks at it).
    """

    def __init__(self, original: Mapping[str, Any]) -> None:
        self.original = original
        self.edits = Edits()
        self._pod: dict[str, Any] | None = None
        self._owned: set[int] = set()
        self._from_edits = True  # pod is original + edits, so edits.ops is the patch
        self.encoded: str | None = None  # that patch, encoded for the response ("": empty), once known

    @property
    def pod(self) -> dict[str, Any]:
        pod = self._pod
        if pod is None:
            pod = self._pod = dict(self.original)
            self._owned.add(id(pod))
            self.edits.write_into(self)
        return pod

    @pod.setter
    def pod(self, pod: dict[str, Any]) -> None:
        if pod is not self._pod:
            self._from_edits = False
        self._pod = pod

    def patch(self) -> list[dict[str, Any]]:
        """The RFC 6902 patch turning `original` into `pod` (new objects: the caller may change them)."""
        if self._from_edits:
            if self.encoded is not None:
                return admission.decode_patch({"patch": self.encoded}) if self.encoded else []
            if self.original.__class__ is dict:
                return self.edits.ops(self.original)
        return diff(self.original, self.pod)

    def encoded_patch(self) -> str:
        """`patch()` as the response carries it (base64 of its JSON; "" when empty)."""
        if self._from_edits and self.encoded is not None:
            return self.encoded
        return admission.encode_patch(self.patch())

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
        self._from_edits = False
        return self._container(path, dict)

    def writable_list(self, *path: str) -> list[Any]:
        """The list at `path`, created when missing, copied on first write."""
        self._from_edits = False
        return self._container(path, list)

    def get(self, *path: str | int) -> Any:
        return _get(self.pod, path)

    def set_entry(self, section: tuple[str, ...], key: str, value: str) -> bool:
        """Set `key` in the string map at `section` (e.g. ("metadata", "annotations")); False when already equal."""
        current = self.get(*section)
        if _is_map(current) and current.get(key) == value:
            return False
        self.writable_dict(*section)[key] = value
        return True

    def toleration_keys(self) -> list[tuple[Any, ...]]:
        """`policy.toleration_key` of each toleration the pod has now (entries that are not objects are left out)."""
        return _toleration_keys(self.get("spec", "tolerations"))

    def require_node_affinity(self, requirements: tuple[Mapping[str, Any], ...] | list[Mapping[str, Any]]) -> bool:
        """AND `requirements` (NodeSelectorRequirement dicts) into every required node-affinity term, creating one
        term when there is none; requirements already present in a term are not repeated."""
        terms = _required_terms(self.get(*NODE_AFFINITY, REQUIRED, "nodeSelectorTerms"), requirements)
        if terms is None:
            return False
        self.writable_dict(*NODE_AFFINITY, REQUIRED)["nodeSelectorTerms"] = terms
        return True

    def prefer_node_affinity(self, terms: tuple[Mapping[str, Any], ...] | list[Mapping[str, Any]]) -> bool:
        """Append `terms` (PreferredSchedulingTerm dicts) to the preferred node affinity; a term whose preference
        the pod already has (at any weight) is not added again."""
        new = _preferred_terms(self.get(*NODE_AFFINITY, PREFERRED), terms)
        if not new:
            return False
        self.writable_list(*NODE_AFFINITY, PREFERRED).extend(new)
        return True


def _get(node: Any, path: tuple[str | int, ...]) -> Any:
    """The value at `path` in a JSON document (None when any step is missing or of another type)."""
    for key in path:
        if node.__class__ is dict or isinstance(node, Mapping):
            node = node.get(key)
        elif isinstance(node, list) and isinstance(key, int) and -len(node) <= key < len(node):
            node = node[key]
        else:
            return None
    return node


def _toleration_keys(existing: Any) -> list[tuple[Any, ...]]:
    """`policy.toleration_key` (inlined: this runs per admission) of each toleration in `existing` (a pod's
    `spec.tolerations`; entries that are not objects are left out)."""
    if not isinstance(existing, list):
        return []
    return [(t.get("key", ""), t.get("operator") or "Equal", t.get("value", ""), t.get("effect", ""),
             t.get("tolerationSeconds")) for t in existing if t.__class__ is dict or isinstance(t, Mapping)]


def _required_terms(terms: Any, requirements: tuple[Mapping[str, Any], ...] | list[Mapping[str, Any]]
                    ) -> list[dict[str, Any]] | None:
    """The required nodeSelectorTerms after ANDing `requirements` into each of `terms` (one new term when there is
    none), or None when that changes nothing."""
    if not requirements:
        return None
    if not terms:  # the common case: no required term yet, so one new term holding copies of `requirements`
        return [{"matchExpressions": [dict(r, values=list(r.get("values") or ())) for r in requirements]}]
    new_terms = []
    changed = False
    for term in terms:
        expressions = list(term.get("matchExpressions") or ())
        for requirement in requirements:
            if not any(_same_requirement(e, requirement) for e in expressions):
                expressions.append(dict(requirement, values=list(requirement.get("values") or ())))
                changed = True
        new_terms.append({**term, "matchExpressions": expressions})
    return new_terms if changed else None


def _preferred_terms(existing: Any, terms: tuple[Mapping[str, Any], ...] | list[Mapping[str, Any]]
                     ) -> list[dict[str, Any]]:
    """Copies of the `terms` (PreferredSchedulingTerms) whose preference `existing` (the pod's preferred list) lacks."""
    if not terms:
        return []
    present = [item.get("preference") for item in existing if _is_map(item)] if isinstance(existing, list) else []
    return [{"weight": t["weight"], "preference": _copy_term(t["preference"])} for t in terms
            if t.get("preference") not in present]


def _copy_term(term: Mapping[str, Any]) -> dict[str, Any]:
    return {kind: [dict(r, values=list(r["values"])) if "values" in r else dict(r) for r in requirements]
            for kind, requirements in term.items()}


def _same_requirement(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return (a.get("key") == b.get("key") and a.get("operator") == b.get("operator")
            and sorted(a.get("values") or ()) == sorted(b.get("values") or ()))


# --- the profile step's edits, and their patch ----------------------------------------------------------------------


class _Set:
    """Edit leaf: the key gets `value`."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class _Append:
    """Edit leaf: `items` are appended to the list at the key (created when missing)."""

    __slots__ = ("items",)

    def __init__(self, items: list[Any]) -> None:
        self.items = items


class _Merge:
    """Edit leaf: the keys of `writes` are set in the string map at the key (created when missing)."""

    __slots__ = ("writes",)

    def __init__(self, writes: dict[str, Any]) -> None:
        self.writes = writes


class Edits:
    """What the profile step does to a pod, as a sparse tree over it: `tree` maps a key to a subtree (a dict) or to
    a leaf (`_Set`, `_Append`, `_Merge`), in the order the keys were first edited.

    Two readers: `write_into` applies the edits to a `PodDraft` (copy-on-write, as the profile step wrote them
    before), and `ops` writes the RFC 6902 patch that `diff(original, <that pod>)` gives, op for op and in the same
    order, but from the few edited places instead of walking two pods (tests hold it to `diff`)."""

    __slots__ = ("tree", "shared")

    def __init__(self) -> None:
        self.tree: dict[str, Any] = {}
        self.shared = False  # remembered for other pods: `write_into` copies the values it puts in a pod

    def __bool__(self) -> bool:
        return bool(self.tree)

    def _node(self, path: tuple[str, ...]) -> dict[str, Any]:
        node = self.tree
        for key in path:
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            node = child
        return node

    def set(self, path: tuple[str, ...], key: str, value: Any) -> None:
        """`key` of the object at `path` becomes `value`."""
        node = self._node(path)
        leaf = node.get(key)
        if leaf is None:
            node[key] = _Set(value)
        else:
            leaf.value = value

    def append(self, path: tuple[str, ...], key: str, items: list[Any]) -> None:
        """`items` are appended to the list `key` of the object at `path`."""
        node = self._node(path)
        leaf = node.get(key)
        if leaf is None:
            node[key] = _Append(list(items))
        else:
            leaf.items.extend(items)

    def merge(self, path: tuple[str, ...], key: str, writes: dict[str, Any]) -> None:
        """The entries of `writes` are set in the string map `key` of the object at `path`."""
        node = self._node(path)
        leaf = node.get(key)
        if leaf is None:
            node[key] = _Merge(dict(writes))
        else:
            leaf.writes.update(writes)

    def write_into(self, draft: PodDraft) -> None:
        """Apply the edits to `draft` (creating and copying containers as its copy-on-write methods do)."""
        _write(draft, self.tree, (), _fresh if self.shared else _same)

    def ops(self, original: dict[str, Any]) -> list[dict[str, Any]]:
        """The patch turning `original` into `original` + these edits: exactly `diff`'s ops for that pair."""
        ops: list[dict[str, Any]] = []
        if self.tree:
            _tree_ops(original, self.tree, "", ops)
        return ops


def _same(value: Any) -> Any:
    return value


def _fresh(value: Any) -> Any:
    """A copy of a JSON value's dicts and lists (the leaves are immutable)."""
    if value.__class__ is dict:
        return {key: _fresh(item) for key, item in value.items()}
    if value.__class__ is list:
        return [_fresh(item) for item in value]
    return value


def _write(draft: PodDraft, tree: dict[str, Any], path: tuple[str, ...], fresh: Callable[[Any], Any]) -> None:
    for key, edit in tree.items():
        kind = edit.__class__
        if kind is dict:
            _write(draft, edit, (*path, key), fresh)
        elif kind is _Merge:
            draft._container((*path, key), dict).update(edit.writes)  # string values
        elif kind is _Append:
            draft._container((*path, key), list).extend(fresh(edit.items))
        else:
            draft._container(path, dict)[key] = fresh(edit.value)


def _built(old: Any, edit: Any) -> Any:
    """The value an edit leaves at a key that held `old` (_ABSENT: missing), old containers copied, not changed."""
    kind = edit.__class__
    if kind is _Set:
        return edit.value
    if kind is _Append:
        return (list(old) if isinstance(old, list) else []) + edit.items
    node = dict(old) if isinstance(old, dict) else {}
    if kind is _Merge:
        node.update(edit.writes)
        return node
    for key, child in edit.items():
        node[key] = _built(node.get(key, _ABSENT), child)
    return node


# Escaped JSON-pointer tokens of the keys profiles write (a bounded set: keys come from the policies).
_TOKENS: dict[str, str] = {}


def _token(key: str) -> str:
    token = _TOKENS.get(key)
    if token is None:
        token = _escape(key)
        if len(_TOKENS) < 4096:
            _TOKENS[key] = token
    return token


def _tree_ops(original: dict[str, Any], tree: dict[str, Any], path: str, ops: list[dict[str, Any]]) -> None:
    """`diff(original, original + tree)` for a dict `original`: the edited keys it has, in its key order (where
    `diff` meets them walking the edited copy), then the new keys in the order they were edited."""
    present = [key for key in tree if key in original]
    if len(present) > 1:
        order = list(original)
        present.sort(key=order.index)
    for key in present:
        old, edit = original[key], tree[key]
        at = f"{path}/{_token(key)}"
        kind = edit.__class__
        if kind is dict and old.__class__ is dict:
            _tree_ops(old, edit, at, ops)
        elif kind is _Merge and old.__class__ is dict:
            writes = edit.writes
            changed = [name for name in writes if name in old]
            if len(changed) > 1:
                order = list(old)
                changed.sort(key=order.index)
            for name in changed:
                _diff(old[name], writes[name], f"{at}/{_token(name)}", ops)
            for name, value in writes.items():
                if name not in old:
                    ops.append({"op": "add", "path": f"{at}/{_token(name)}", "value": value})
        elif kind is _Append and old.__class__ is list:
            start = len(old)
            for index, item in enumerate(edit.items, start):
                ops.append({"op": "add", "path": f"{at}/{index}", "value": item})
        else:  # a leaf set over a value, or a container edited over something of another type: diff decides
            _diff(old, _built(old, edit), at, ops)
    if len(present) < len(tree):
        for key, edit in tree.items():
            if key not in original:
                ops.append({"op": "add", "path": f"{path}/{_token(key)}", "value": _built(_ABSENT, edit)})


def diff(original: Any, mutated: Any) -> list[dict[str, Any]]:
    """The RFC 6902 patch turning `original` into `mutated` ([] when equal as JSON). Generic, never told what
    changed: subtrees that are the very same object on both sides are skipped, dicts are compared key by key, a
    list that only grew gets `add` ops for its new items, any other changed list or value is replaced whole.
    Equality is JSON's, not Python's: true vs 1 and 1 vs 1.0 are changes. Applying the result with jsonpatch gives
    `mutated` (tests check this against `jsonpatch.make_patch` on the same pairs and on random edits)."""
    ops: list[dict[str, Any]] = []
    _diff(original, mutated, "", ops)
    return ops


def _escape(key: str) -> str:
    if "~" in key or "/" in key:
        return key.replace("~", "~0").replace("/", "~1")
    return key


def _diff(a: Any, b: Any, path: str, ops: list[dict[str, Any]]) -> None:
    if a is b:
        return
    if (a.__class__ is dict or isinstance(a, dict)) and (b.__class__ is dict or isinstance(b, dict)):
        first = len(ops)
        shared = 0
        get = a.get
        for key, value in b.items():
            old = get(key, _ABSENT)
            if old is value:
                shared += 1
                continue
            # _escape, inlined: this loop runs for every key of every container on the path to an edit
            at = f"{path}/{key.replace('~', '~0').replace('/', '~1') if '~' in key or '/' in key else key}"
            if old is _ABSENT:
                ops.append({"op": "add", "path": at, "value": value})
            else:
                shared += 1
                _diff(old, value, at, ops)
        if shared < len(a):
            ops[first:first] = [{"op": "remove", "path": f"{path}/{_escape(key)}"} for key in a if key not in b]
        return
    if isinstance(a, list) and isinstance(b, list) and len(b) >= len(a) and (
            all(map(is_, a, b)) or all(map(_json_equal, a, b))):
        for index in range(len(a), len(b)):
            ops.append({"op": "add", "path": f"{path}/{index}", "value": b[index]})
        return
    if not _json_equal(a, b):
        ops.append({"op": "replace", "path": path, "value": b})


def _json_equal(a: Any, b: Any) -> bool:
    """Equal as JSON: like `==`, but true and 1 (or 1.0) differ, at any depth."""
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return len(a) == len(b) and all(key in b and _json_equal(value, b[key]) for key, value in a.items())
    if isinstance(a, list):
        return len(a) == len(b) and all(map(_json_equal, a, b))
    return a == b


# --- deciding -----------------------------------------------------------------------------------------------------


@dataclass
class Decision:
    """The pure verdict on one admission request.

    outcome: what `decide` found: "unchanged" | "skipped" | "error"; `respond()` turns "unchanged" into "mutated"
    when the final draft differs from the request (the diff is only taken there, once). `draft` is None when the request is not a pod CREATE
    we look at; otherwise it holds the edited pod (a placement step may edit it further before `response()`).
    """

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
    def original(self) -> Mapping[str, Any] | None:
        return self.draft.original if self.draft else None

    @property
    def pod(self) -> dict[str, Any] | None:
        return self.draft.pod if self.draft else None

    def patch(self) -> list[dict[str, Any]]:
        return self.draft.patch() if self.draft else []

    def respond(self) -> tuple[dict[str, Any], str]:
        """(the AdmissionReview response, the final outcome). The patch is computed once, here: the outcome is
        "mutated" exactly when it is non-empty (a placement step may have edited the draft after `decide`);
        otherwise the outcome `decide` recorded. The uid is always echoed; no patch keys when nothing changed."""
        if self.outcome == "error":
            return admission.errored(self.uid, self.code or 400, self.reason), self.outcome
        encoded = self.draft.encoded_patch() if self.draft else ""
        response = admission.with_patch(self.uid, encoded, warnings=self.warnings or None)
        return response, ("mutated" if encoded else self.outcome)

    def response(self) -> dict[str, Any]:
        """The AdmissionReview response alone (see `respond`)."""
        return self.respond()[0]


def namespace_view(namespaces: NamespaceLookup | None, name: str) -> tuple[Mapping[str, str], dict[str, Any], bool]:
    """(labels, Namespace object, known) for namespace `name` from a lookup that maps names (or is a function) to
    either a Namespace object or a plain labels dict."""
    found: Any = None
    if callable(namespaces):
        found = namespaces(name)
    elif namespaces is not None:
        found = namespaces.get(name)
    if found is None:
        return {}, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}, False
    if _is_map(found.get("metadata")):
        return found["metadata"].get("labels") or {}, found, True
    labels = dict(found)
    return labels, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}, True


def is_pod_create(request: Mapping[str, Any]) -> str:
    """Why this request is not a pod CREATE we mutate ("" when it is)."""
    kind = request.get("kind") or {}
    if not _is_map(kind) or kind.get("group", "") != "" or kind.get("kind") != "Pod":
        return f"not a Pod (kind {_gvk(kind)})"
    if request.get("subResource"):
        return f"subresource {request['subResource']}"
    if request.get("operation") != "CREATE":
        return f"operation {request.get('operation')}, only CREATE is mutated"
    return ""


def _gvk(kind: Any) -> str:
    if not isinstance(kind, Mapping):
        return repr(kind)
    group = kind.get("group") or "core"
    return f"{group}/{kind.get('version', '?')}/{kind.get('kind', '?')}"


def decide(request: Mapping[str, Any], *, policies: PolicySet, namespaces: NamespaceLookup | None = None) -> Decision:
    """Apply every matching profile of `policies` to the pod in `request` (an AdmissionReview `request`).

    Never raises for bad pods or failing CEL: problems become `warnings` (the admitter logs them). The object is
    never modified.
    """
    uid = str(request.get("uid", ""))
    if policies is None:
        return Decision(uid, "skipped", "policies not loaded")
    why_not = is_pod_create(request)
    if why_not:
        return Decision(uid, "skipped", why_not)
    pod = request.get("object")
    if not _is_map(pod) or (pod.get("kind") not in (None, "Pod")):
        return Decision(uid, "error", "request.object must be a Pod object", code=400)
    metadata = _mapping(pod.get("metadata"))
    annotations = _mapping(metadata.get("annotations"))
    draft = PodDraft(pod)
    if annotations.get(SKIP_ANNOTATION) == "true":
        return Decision(uid, "skipped", f"opted out ({SKIP_ANNOTATION}: \"true\")", draft=draft, opted_out=True)
    namespace = str(request.get("namespace") or metadata.get("namespace") or "")
    decision = apply_profiles(draft, policies=policies, namespaces=namespaces, namespace=namespace, request=request,
                              uid=uid)
    if policies.resource_policies(namespace):  # else no note, and the pod need not be built
        note = enforce_note(draft.pod, namespace=namespace, policies=policies)
        if note:
            decision.warnings.append(note)
    return decision


def enforce_note(pod: Mapping[str, Any], *, namespace: str, policies: PolicySet) -> str:
    """The warning for a pod that ends the profile stage with `vke.volcengine.com/burst-to-vci: enforce` while a
    ResourcePolicy of its namespace selects it ("" otherwise): Volcengine hard-schedules such a pod to VCI and its
    ResourcePolicy does not apply, so the pool step leaves it alone (`webhook.pools.placement.enforce_wins`)."""
    selecting = bypassed_policies(pod, policies.resource_policies(namespace), namespace)
    if not selecting:
        return ""
    names = ", ".join(f"{namespace}/{name}" for name in selecting)
    return (f"burstflow: pod has {VCI_BURST}: enforce, so it goes to VCI and is not placed by ResourcePolic"
            f"{'y' if len(selecting) == 1 else 'ies'} {names} (enforce wins over pools, as on Volcengine); "
            f"remove the annotation or the profile that sets it to let the pool decide")


def apply_profiles(draft: PodDraft, *, policies: PolicySet, namespaces: NamespaceLookup | None, namespace: str,
                   request: Mapping[str, Any] | None = None, uid: str = "") -> Decision:
    """The profile step of `decide`, on a draft (separate so tools can run it on a bare pod).

    Precedence: profiles in `policies.profiles` order; for each annotation, label and nodeSelector key the first
    profile that sets it decides (a template that yields nothing sets nothing), and a key the pod already has keeps
    its value unless that profile has `override`. Each section is then written into the draft once.

    When no profile the pod can get has a template, what they do depends on the pod only through its shape (which
    of the written keys and containers it has, in which order, its tolerations and seccomp): the result is then
    remembered per policy set, applied profiles and shape (`_Plan.shape`), patch already encoded.
    """
    pod = draft.original
    metadata = _mapping(pod.get("metadata"))
    pod_labels = _mapping(metadata.get("labels"))
    ns_labels, ns_object, _ = namespace_view(namespaces if namespaces is not None else policies.namespaces,
                                             namespace)
    tables = _tables(policies)
    candidates, templated, plan = tables.candidates(ns_labels, WORKFLOW_LABEL in pod_labels)
    decision = Decision(uid, "unchanged", draft=draft)
    activation: list[Any] = []

    def activate() -> Any:
        if not activation:
            variables = {"object": pod, "namespaceObject": ns_object,
                         "request": {k: v for k, v in (request or {}).items() if k not in ("object", "oldObject")}}
            activation.append(policies.env.activation(variables))
        return activation[0]

    def warn(message: str) -> None:
        decision.warnings.append(message)

    if templated:
        _merge(draft, decision, candidates, pod_labels, activate, warn, chosen=False)
        return decision
    if plan is not None:  # no object selector, no condition: every candidate applies
        chosen: Sequence[Profile] = candidates
    else:
        # An empty selector matches everything: skip the call (most object selectors are empty).
        chosen = [profile for profile in candidates
                  if (not profile.object_selector.requirements or profile.object_selector.matches(pod_labels))
                  and (not profile.conditions or _conditions_hold(profile, activate, warn))]
        if not chosen:
            decision.outcome = "skipped"
            decision.reason = "no profile matched"
            return decision
        plan = tables.plan(chosen)
    shape = plan.shape(pod)
    if shape is not None:
        found = tables.results.get(shape)
        if found is not None:
            draft.edits, draft.encoded, changes = found
            decision.changes.extend(changes)
            decision.applied = plan.names
            return decision
    _merge(draft, decision, chosen, pod_labels, activate, warn, chosen=True)
    if shape is not None:
        tables.remember(shape, draft, decision.changes)
    return decision


def _merge(draft: PodDraft, decision: Decision, profiles: Sequence[Profile], pod_labels: Mapping[str, Any],
           activate: Callable[[], Any], warn: Callable[[str], None], *, chosen: bool) -> None:
    """Record in `draft.edits` what `profiles` (in order; `chosen`: their selectors and conditions already hold)
    do to the pod, with the Changes, warnings and applied names in `decision`."""
    pod = draft.original
    metadata = _mapping(pod.get("metadata"))
    original_annotations = _mapping(metadata.get("annotations"))
    originals = {"metadata.annotations": original_annotations, "metadata.labels": pod_labels,
                 "spec.nodeSelector": _mapping(_mapping(pod.get("spec")).get("nodeSelector"))}
    changes = decision.changes
    claimed: dict[str, set[str]] = {}
    writes: dict[str, dict[str, str]] = {}
    toleration_keys: list[tuple[Any, ...]] | None = None
    new_tolerations: list[dict[str, Any]] = []
    seccomp_change: Change | None = None
    seccomp_decided: str | None = None
    applied: list[str] = []
    edits = draft.edits
    required: Any = _ABSENT  # the pod's required nodeSelectorTerms, then as edited (read when first needed)
    preferred: Any = _ABSENT  # the same for the preferred node affinity terms
    for profile in profiles:
        if not chosen:
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
                toleration_keys = _toleration_keys(_mapping(pod.get("spec")).get("tolerations"))
            for key, toleration, change in profile.toleration_plan:
                if key not in toleration_keys:
                    toleration_keys.append(key)
                    new_tolerations.append(dict(toleration))
                    changes.append(change)
        if profile.node_affinity:
            if required is _ABSENT:
                required = _get(pod, (*NODE_AFFINITY, REQUIRED, "nodeSelectorTerms"))
            terms = _required_terms(required, profile.node_affinity)
            if terms is not None:
                required = terms
                edits.set((*NODE_AFFINITY, REQUIRED), "nodeSelectorTerms", terms)
                changes.append(Change(profile.name, "spec.affinity.nodeAffinity (required)",
                                      [dict(r) for r in profile.node_affinity], "added"))
        if profile.preferred:
            if preferred is _ABSENT:
                preferred = _get(pod, (*NODE_AFFINITY, PREFERRED))
            new_terms = _preferred_terms(preferred, profile.preferred)
            if new_terms:
                # what the pod's list is now: the copy-on-write edit replaces a non-list with a new list
                preferred = (preferred if isinstance(preferred, list) else []) + new_terms
                edits.append(NODE_AFFINITY, PREFERRED, new_terms)
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
        return
    if seccomp_change is not None and not has_seccomp(pod):
        edits.set(("spec", "securityContext"), "seccompProfile", {"type": "RuntimeDefault"})
        changes.append(seccomp_change)
    recorded = original_annotations.get(APPLIED_ANNOTATION)
    recorded = [name for name in recorded.split(",") if name] if isinstance(recorded, str) else []
    names = ",".join(recorded + [name for name in applied if name not in recorded])
    annotation_writes = writes.setdefault("metadata.annotations", {})
    if annotation_writes.get(APPLIED_ANNOTATION, original_annotations.get(APPLIED_ANNOTATION)) != names:
        annotation_writes[APPLIED_ANNOTATION] = names
    for where, (parent, key) in SECTIONS.items():
        if writes.get(where):
            edits.merge((parent,), key, writes[where])
    if new_tolerations:
        edits.append(("spec",), "tolerations", new_tolerations)
    decision.applied = tuple(applied)


class _Plan:
    """What a combination of template-free profiles can write, so that `shape` can tell which pods they treat
    alike: the keys each map section may get (the applied annotation included), the tolerations they add, whether
    they touch node affinity and seccomp."""

    __slots__ = ("ids", "names", "sections", "tolerations", "toleration_names", "affinity", "seccomp", "spec")

    def __init__(self, ids: tuple[int, ...], profiles: Sequence[Profile]) -> None:
        self.ids = ids
        self.names = tuple(profile.name for profile in profiles)
        keys: dict[str, set[str]] = {"metadata.annotations": {APPLIED_ANNOTATION}}
        tolerations: list[tuple[Any, ...]] = []
        for profile in profiles:
            for where, entries in profile.entries:
                keys.setdefault(where, set()).update(key for key, _, _ in entries)
            tolerations.extend(key for key, _, _ in profile.toleration_plan if key not in tolerations)
        self.sections = tuple((*path, frozenset(keys[where])) for where, path in SECTIONS.items() if where in keys)
        self.tolerations = tuple(tolerations)
        self.toleration_names = frozenset(key[0] for key in tolerations)
        self.affinity = any(profile.node_affinity or profile.preferred for profile in profiles)
        deciding = [profile.seccomp for profile in profiles if profile.seccomp is not None]
        self.seccomp = bool(deciding and deciding[0])
        self.spec = (self.affinity or bool(self.tolerations) or self.seccomp
                     or any(parent == "spec" for parent, _, _ in self.sections))

    def shape(self, pod: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """Everything about `pod` that what these profiles do to it (and the patch's op order) depends on, or None
        when the pod is not in the simple case the key covers (then the profiles are applied the long way):
        plain dicts on the edited paths, none of the keys the profiles write already set, no node affinity when
        the profiles write some, no seccompProfile key (not even null) where seccomp would be written."""
        if pod.__class__ is not dict:
            return None
        metadata = pod.get("metadata")
        spec = pod.get("spec")
        if metadata.__class__ is not dict or (self.spec and spec.__class__ is not dict):
            return None
        for parent, name, keys in self.sections:
            current = (metadata if parent == "metadata" else spec).get(name, _ABSENT)
            if current is not _ABSENT and (current.__class__ is not dict or not keys.isdisjoint(current)):
                return None
        shape: list[Any] = [self.ids, tuple(pod), tuple(metadata)]
        if not self.spec:
            return tuple(shape)
        shape.append(tuple(spec))
        if self.affinity and "affinity" in spec:
            return None
        if self.tolerations:
            current = spec.get("tolerations", _ABSENT)
            if current is not _ABSENT:
                if current.__class__ is not list:
                    return None
                shape.append(len(current))
                try:  # the common case: no toleration of the pod has the key of one these profiles add
                    others = self.toleration_names.isdisjoint(map(_KEY, current))
                except (AttributeError, TypeError):  # an entry that is not an object, an unhashable key
                    others = False
                if not others:
                    present = _toleration_keys(current)
                    shape.append(tuple(key in present for key in self.tolerations))
        if self.seccomp:
            found = has_seccomp(pod)
            shape.append(found)
            if not found:
                context = spec.get("securityContext", _ABSENT)
                if context is not _ABSENT and (context.__class__ is not dict or "seccompProfile" in context):
                    return None
        return tuple(shape)


class _Tables:
    """What admission remembers about one PolicySet (a reload installs a new set, which gets new tables): the
    profiles a namespace's pods can get, the `_Plan` of each combination of profiles, and the result of each
    (plan, pod shape). Each table is bounded (cleared when full)."""

    SIZE = 1024

    def __init__(self, policies: PolicySet) -> None:
        self.policies = policies
        self.namespaces: dict[tuple[bool, frozenset[tuple[str, Any]]],
                              tuple[tuple[Profile, ...], bool, _Plan | None]] = {}
        self.plans: dict[tuple[int, ...], _Plan] = {}
        self.results: dict[tuple[Any, ...], tuple[Edits, str, tuple[Change, ...]]] = {}

    def candidates(self, ns_labels: Mapping[str, Any], is_workflow_pod: bool
                   ) -> tuple[tuple[Profile, ...], bool, _Plan | None]:
        """(profiles, whether any has a template, their `_Plan` when every one applies to every such pod: none has
        an object selector or a condition): see `namespace_candidates`."""
        try:
            key = (is_workflow_pod, frozenset(ns_labels.items()))
        except TypeError:  # an unhashable label value (no valid Namespace has one): decide without the table
            key = None
        else:
            found = self.namespaces.get(key)
            if found is not None:
                return found
        # An empty selector matches everything: skip the call (most selectors are empty).
        profiles = tuple(profile for profile in self.policies.profiles
                         if (is_workflow_pod or not profile.workflow_pods_only)
                         and (not profile.namespace_selector.requirements
                              or profile.namespace_selector.matches(ns_labels)))
        unconditional = profiles and not any(profile.object_selector.requirements or profile.conditions
                                              for profile in profiles)
        found = (profiles, any(profile.templated for profile in profiles),
                 self.plan(profiles) if unconditional else None)
        if key is not None:
            if len(self.namespaces) >= self.SIZE:
                self.namespaces.clear()
            self.namespaces[key] = found
        return found

    def plan(self, profiles: Sequence[Profile]) -> _Plan:
        ids = tuple(map(id, profiles))  # the profiles live as long as the PolicySet, so their ids are theirs
        plan = self.plans.get(ids)
        if plan is None:
            if len(self.plans) >= self.SIZE:
                self.plans.clear()
            plan = self.plans[ids] = _Plan(ids, profiles)
        return plan

    def remember(self, shape: tuple[Any, ...], draft: PodDraft, changes: list[Change]) -> None:
        """Keep the result of the profiles for pods of `shape`: the edits (shared from now on, so building a pod
        from them copies their values), the encoded patch, the Changes."""
        draft.edits.shared = True
        draft.encoded = admission.encode_patch(draft.patch())
        if len(self.results) >= self.SIZE:
            self.results.clear()
        self.results[shape] = (draft.edits, draft.encoded, tuple(changes))


def _tables(policies: PolicySet) -> _Tables:
    """The tables of `policies`, kept in the set's own memo."""
    tables = policies.memo.get("mutate")
    if tables is None:
        tables = policies.memo["mutate"] = _Tables(policies)
    return tables


def namespace_candidates(policies: PolicySet, ns_labels: Mapping[str, Any], is_workflow_pod: bool
                         ) -> tuple[Profile, ...]:
    """The profiles of `policies`, in order, that a pod in a namespace labelled `ns_labels` can get: their
    namespace selector matches and, for `workflowPodsOnly` profiles, the pod is a workflow pod (remembered per
    policy set; the object selector and CEL conditions are checked per pod)."""
    return _tables(policies).candidates(ns_labels, is_workflow_pod)[0]


# What `_evaluate` returns for an expression that failed (None is a legitimate CEL result).
_FAILED = object()


def _evaluate(program: Any, activate: Callable[[], Any], warn: Callable[[str], None], what: str,
              consequence: str) -> Any:
    """`program`'s result, or `_FAILED` once `warn` has said "burstflow: <what> failed (<error>); <consequence>"."""
    try:
        return program.evaluate(activate())
    except cel.CelError as exc:
        warn(f"burstflow: {what} failed ({exc}); {consequence}")
        return _FAILED


def _conditions_hold(profile: Profile, activate: Callable[[], Any], warn: Callable[[str], None]) -> bool:
    for condition in profile.conditions:
        result = _evaluate(condition.program, activate, warn,
                           f"profile {profile.name}: matchConditions[{condition.name}]", "profile skipped")
        if result is _FAILED:
            return False
        if not isinstance(result, bool):
            warn(f"burstflow: profile {profile.name}: matchConditions[{condition.name}] returned "
                 f"{type(result).__name__}, not bool; profile skipped")
            return False
        if not result:
            return False
    return True


def _render(profile: Profile, section: str, key: str, template: Template, activate: Callable[[], Any],
            warn: Callable[[str], None]) -> str | None:
    result = _evaluate(template.program, activate, warn,
                       f"profile {profile.name}: {section}[{key}] {template.text.strip()}", "value skipped")
    if result is None or result is _FAILED:
        return None
    if isinstance(result, bool):
        result = "true" if result else "false"
    elif isinstance(result, (int, float)):
        result = str(result)
    elif not isinstance(result, str):
        warn(f"burstflow: profile {profile.name}: {section}[{key}] returned {type(result).__name__}, "
             "not a string; value skipped")
        return None
    if section == "labels":
        problem = label_value_error(result)
        if problem:
            warn(f"burstflow: profile {profile.name}: labels[{key}]: {problem}; value skipped")
            return None
    return result


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
            try:  # the common case, no container with a securityContext, in C
                if not any(map(_SECURITY_CONTEXT, containers)):
                    continue
            except AttributeError:  # an entry that is not an object: the loop below skips it
                pass
            for container in containers:
                if ((container.__class__ is dict or isinstance(container, Mapping))
                        and (value := container.get("securityContext")) and _mapping(value).get("seccompProfile")):
                    return True
    annotations = _mapping(_mapping(pod.get("metadata")).get("annotations"))
    return LEGACY_SECCOMP_POD in annotations or any(map(_LEGACY_CONTAINER_KEY, annotations))


_LEGACY_CONTAINER_KEY = methodcaller("startswith", LEGACY_SECCOMP_CONTAINER)
_KEY = methodcaller("get", "key", "")
_SECURITY_CONTEXT = methodcaller("get", "securityContext")
