"""ResourcePolicy objects (the Volcengine shape under `burstflow.io/v1alpha1`) parsed and compiled once, with field paths in every error."""
from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import yaml

from burstflow import crdschema, data
from burstflow.selectors import EVERYTHING, Selector, SelectorError, compile_selector, label_value_error
from burstflow.webhook.policy import PolicyError
from burstflow.webhook.providers import Effect, PresetError, preset

GROUP = "burstflow.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ResourcePolicy"
# Package data (burstflow/crds/, from manifests/base/crds/).
CRD_FILE = "resourcepolicies.burstflow.io.yaml"

# What Burstflow writes into a placed pod.
POOL_LABEL = "burstflow.io/pool"
RESERVATION_ANNOTATION = "burstflow.io/reservation"
POLICY_ANNOTATION = "burstflow.io/resource-policy"

SCHEDULE_ANYWAY = "ScheduleAnyWay"
DO_NOT_SCHEDULE = "DoNotSchedule"
WHEN_NOT_REACH_MAX = (SCHEDULE_ANYWAY, DO_NOT_SCHEDULE)

LAST_POOL = "LastPool"
UNPLACED = "Unplaced"
DENY = "Deny"
WHEN_ALL_FULL = (LAST_POOL, UNPLACED, DENY)
WHEN_UNAVAILABLE = (LAST_POOL, DENY)

NODE_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt")
TOLERATION_OPERATORS = ("Equal", "Exists")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


class ResourcePolicyError(PolicyError):
    """A ResourcePolicy that cannot be compiled: a `PolicyError` carrying every problem found at once, `errors`
    holding one "field.path: message" per problem."""

    def __init__(self, source: str, errors: Sequence[str]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(self.errors), source=source)

    def __str__(self) -> str:
        prefix = f"{self.source}: " if self.source else ""
        return "; ".join(prefix + error for error in self.errors)


@dataclass(frozen=True)
class Subset:
    """One pool, in priority order. `max_replicas`/`ratio` of None mean "no limit of that kind"."""

    name: str
    max_replicas: int | None
    ratio: Fraction | None
    when_not_reach_max: str
    node_selector_term: dict[str, Any] | None
    tolerations: tuple[dict[str, Any], ...] = ()
    annotations: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    provider: Effect | None = None

    def effective_max(self, managed: int) -> int | None:
        """How many pods this pool may hold once the next pod is placed; None when unlimited.

        `managed` counts every pod of the policy including the one being placed. `maxReplicasRatio` follows the
        Volcengine definition: the pool takes the next pod while its share of the policy's pods, counted
        *before* that pod, has not exceeded the ratio, i.e. while `placed <= ratio x (managed - 1)`, which makes
        the limit `floor(ratio x (managed - 1)) + 1`. So with `"0.1"` the 1st pod may go there, then the 11th,
        the 21st, ... A ratio of 0 means the pool takes no pod at all. `maxReplicas` stays a hard cap.
        """
        limits = []
        if self.max_replicas is not None:
            limits.append(self.max_replicas)
        if self.ratio is not None:
            limits.append(0 if self.ratio == 0 else math.floor(self.ratio * max(0, managed - 1)) + 1)
        return min(limits) if limits else None

    def matches_node(self, labels: Mapping[str, str] | None, name: str = "") -> bool | None:
        """Whether a node with `labels` (and `name`, for matchFields) is one of this pool's nodes; None when the
        pool has no nodeSelectorTerm (its pods may run anywhere, so a node says nothing about it)."""
        if self.node_selector_term is None:
            return None
        return node_term_matches(self.node_selector_term, labels or {}, name)


def node_term_matches(term: Mapping[str, Any], labels: Mapping[str, str], name: str = "") -> bool:
    """A NodeSelectorTerm evaluated the way kube-scheduler does: every requirement must hold (ANDed);
    matchFields supports `metadata.name`, the only field Kubernetes allows there."""
    for requirement in term.get("matchExpressions") or []:
        if not _requirement_holds(requirement, labels.get(requirement["key"])):
            return False
    for requirement in term.get("matchFields") or []:
        value = name if requirement["key"] == "metadata.name" else None
        if not _requirement_holds(requirement, value):
            return False
    return True


def _requirement_holds(requirement: Mapping[str, Any], value: str | None) -> bool:
    operator, values = requirement["operator"], requirement.get("values") or []
    if operator == "In":
        return value is not None and value in values
    if operator == "NotIn":
        return value is None or value not in values
    if operator == "Exists":
        return value is not None
    if operator == "DoesNotExist":
        return value is None
    # Gt / Lt: both sides parsed as integers; a missing or non-integer label does not match (as in Kubernetes).
    try:
        number, bound = int(value or ""), int(values[0])
    except ValueError:
        return False
    return number > bound if operator == "Gt" else number < bound


@dataclass(frozen=True)
class ResourcePolicy:
    """A compiled ResourcePolicy; `subsets` are in priority order (first = fill first)."""

    namespace: str
    name: str
    selector: Selector
    subsets: tuple[Subset, ...]
    when_all_full: str = UNPLACED
    when_unavailable: str = DENY
    generation: int | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    def matches(self, pod: Mapping[str, Any]) -> bool:
        """True for a pod in this policy's namespace whose labels the selector matches."""
        metadata = pod.get("metadata") or {}
        return self.selector.matches(metadata.get("labels"))

    def subset_index(self, name: str) -> int | None:
        for index, subset in enumerate(self.subsets):
            if subset.name == name:
                return index
        return None


@functools.lru_cache(maxsize=1)
def _spec_schema() -> crdschema.CrdSchema:
    return crdschema.of_crd(yaml.safe_load(data.crd_text(CRD_FILE)), VERSION).child("spec")


def compile_resource_policy(obj: Any, *, source: str = "") -> ResourcePolicy:
    """Compile a ResourcePolicy dict; raises ResourcePolicyError listing every problem with its field path.

    Accepts `apiVersion: burstflow.io/v1alpha1` only: a Volcengine policy converts by changing `apiVersion`.
    """
    if not isinstance(obj, Mapping):
        raise ResourcePolicyError(source, [f"expected a ResourcePolicy object, got {type(obj).__name__}"])
    # The spec's CRD schema prunes nulls as the API server does and names fields it does not declare (typos such as
    # `maxReplica`, which the server would drop silently); the checks below give each field's own message. The
    # status is Burstflow's own bookkeeping, left unchecked (the reconciler compiles every policy every pass).
    schema = _spec_schema()
    spec = schema.prune(obj.get("spec"))
    errors = [f"{crdschema.field_path(v.path)}: {v.message}" for v in schema.unknown_fields(spec, ["spec"])]
    if obj.get("apiVersion") != API_VERSION:
        errors.append(f"apiVersion: expected {API_VERSION!r}, got {obj.get('apiVersion')!r}")
    if obj.get("kind") != KIND:
        errors.append(f"kind: expected {KIND!r}, got {obj.get('kind')!r}")
    metadata = obj.get("metadata")
    name = namespace = ""
    generation = None
    if not isinstance(metadata, Mapping):
        errors.append("metadata: required")
    else:
        name = metadata.get("name") or ""
        namespace = metadata.get("namespace") or ""
        if not isinstance(name, str) or not name:
            errors.append("metadata.name: required")
        if not isinstance(namespace, str) or not namespace:
            errors.append("metadata.namespace: required (a ResourcePolicy is namespaced, like the pods it places)")
        generation = metadata.get("generation") if isinstance(metadata.get("generation"), int) else None
    if not source:
        source = f"ResourcePolicy {namespace}/{name}"
    if not isinstance(spec, Mapping):
        raise ResourcePolicyError(source, errors + ["spec: required"])

    selector = _selector(spec.get("selector"), "spec.selector", errors)
    subsets: list[Subset] = []
    raw_subsets = spec.get("subsets")
    if not isinstance(raw_subsets, list) or not raw_subsets:
        errors.append("spec.subsets: required, a non-empty list of pools in priority order")
        raw_subsets = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_subsets):
        subset = _subset(raw, f"spec.subsets[{index}]", errors)
        if subset is None:
            continue
        if subset.name in seen:
            errors.append(f"spec.subsets[{index}].name: duplicate subset name {subset.name!r}")
        seen.add(subset.name)
        subsets.append(subset)
    # Unplaced by default: what a Volcengine ResourcePolicy does once every subset is at its max.
    when_all_full = _choice(spec, "whenAllFull", WHEN_ALL_FULL, UNPLACED, "spec", errors)
    when_unavailable = _choice(spec, "whenUnavailable", WHEN_UNAVAILABLE, DENY, "spec", errors)
    if errors:
        raise ResourcePolicyError(source, errors)
    return ResourcePolicy(namespace=namespace, name=name, selector=selector, subsets=tuple(subsets),
                          when_all_full=when_all_full, when_unavailable=when_unavailable, generation=generation)


def _choice(obj: Mapping[str, Any], key: str, allowed: Sequence[str], default: str, path: str,
            errors: list[str]) -> str:
    value = obj.get(key, default)
    if value is None:
        return default
    if value not in allowed:
        errors.append(f"{path}.{key}: must be one of {', '.join(allowed)}, got {value!r}")
        return default
    return value


def _selector(raw: Any, path: str, errors: list[str]) -> Selector:
    """Either a plain label map (the Volcengine `selector: {resource: vci}`) or a matchLabels/matchExpressions selector."""
    if raw is None:
        errors.append(f"{path}: required (the pod labels this policy manages)")
        return EVERYTHING
    if not isinstance(raw, Mapping):
        errors.append(f"{path}: expected a map of labels or a label selector, got {type(raw).__name__}")
        return EVERYTHING
    is_selector = bool(raw) and set(raw) <= {"matchLabels", "matchExpressions"} and all(
        isinstance(value, (Mapping, list)) for value in raw.values())
    try:
        selector = compile_selector(raw if is_selector else {"matchLabels": dict(raw)})
    except SelectorError as error:
        where = error.path if is_selector else error.path.removeprefix("matchLabels.")
        errors.append(f"{path}.{where}: {error.message}")
        return EVERYTHING
    if selector.empty:
        errors.append(f"{path}: must select something (an empty selector would manage every pod)")
    return selector


def _subset(raw: Any, path: str, errors: list[str]) -> Subset | None:
    if not isinstance(raw, Mapping):
        errors.append(f"{path}: expected an object")
        return None
    before = len(errors)
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        errors.append(f"{path}.name: required")
    elif label_value_error(name):
        errors.append(f"{path}.name: {name!r} must be a valid label value (it becomes the {POOL_LABEL} label)")
    max_replicas = raw.get("maxReplicas")
    if max_replicas is not None and (isinstance(max_replicas, bool) or not isinstance(max_replicas, int)
                                     or max_replicas < 0):
        errors.append(f"{path}.maxReplicas: must be an integer >= 0, got {max_replicas!r}")
    ratio = _ratio(raw.get("maxReplicasRatio"), f"{path}.maxReplicasRatio", errors)
    when = _choice(raw, "whenNotReachMax", WHEN_NOT_REACH_MAX, DO_NOT_SCHEDULE, path, errors)
    term = _node_selector_term(raw.get("nodeSelectorTerm"), f"{path}.nodeSelectorTerm", errors)
    tolerations = _tolerations(raw.get("tolerations"), f"{path}.tolerations", errors)
    annotations = _string_map(raw.get("annotations"), f"{path}.annotations", errors)
    labels = _string_map(raw.get("labels"), f"{path}.labels", errors)
    if POOL_LABEL in labels:
        errors.append(f"{path}.labels.{POOL_LABEL}: reserved, Burstflow sets it to the subset name")
    provider = _provider(raw.get("provider"), f"{path}.provider", errors)
    if len(errors) > before:
        return None
    return Subset(name=name, max_replicas=max_replicas, ratio=ratio, when_not_reach_max=when,
                  node_selector_term=term, tolerations=tolerations, annotations=annotations, labels=labels,
                  provider=provider)


def _provider(raw: Any, path: str, errors: list[str]) -> Effect | None:
    """A provider preset in the BurstProfile shape, `{volcengine-vci: {mode: auto}}`, or just its name."""
    if raw is None:
        return None
    if isinstance(raw, str):
        raw = {raw: None}
    if not isinstance(raw, Mapping) or len(raw) != 1:
        errors.append(f"{path}: expected one preset, as {{<preset name>: {{settings}}}}")
        return None
    [(name, settings)] = raw.items()
    try:
        return preset(str(name), settings)
    except PresetError as error:
        errors.append(f"{path}.{name}{'.' + error.path if error.path else ''}: {error.message}")
        return None


def _ratio(raw: Any, path: str, errors: list[str]) -> Fraction | None:
    """Volcengine's string form, e.g. `"0.1"`: a decimal in [0, 1], kept exact (Fraction) so floors are exact."""
    if raw is None:
        return None
    if not isinstance(raw, str):
        errors.append(f"{path}: must be a string such as \"0.1\" (quote it), got {raw!r}")
        return None
    try:
        if not raw.strip().replace(".", "", 1).isdigit():
            raise ValueError
        value = Fraction(raw.strip())
    except ValueError:
        errors.append(f"{path}: expected a decimal between 0 and 1 such as \"0.1\", got {raw!r}")
        return None
    if not 0 <= value <= 1:
        errors.append(f"{path}: must be within [0, 1], got {raw!r}")
        return None
    return value


def _node_selector_term(raw: Any, path: str, errors: list[str]) -> dict[str, Any] | None:
    """A list of node selector requirements (Volcengine) or a NodeSelectorTerm object; None when absent or empty."""
    if raw is None:
        return None
    if isinstance(raw, list):
        term = {"matchExpressions": raw}
    elif isinstance(raw, Mapping) and set(raw) <= {"matchExpressions", "matchFields"}:
        term = dict(raw)
    else:
        errors.append(f"{path}: expected a list of node selector requirements")
        return None
    result: dict[str, Any] = {}
    for kind in ("matchExpressions", "matchFields"):
        requirements = term.get(kind) or []
        where = path if isinstance(raw, list) else f"{path}.{kind}"
        if not isinstance(requirements, list):
            errors.append(f"{where}: expected a list")
            continue
        checked = [_requirement(r, f"{where}[{i}]", errors) for i, r in enumerate(requirements)]
        if requirements:
            result[kind] = [r for r in checked if r is not None]
    return result or None


def _requirement(raw: Any, path: str, errors: list[str]) -> dict[str, Any] | None:
    if not isinstance(raw, Mapping):
        errors.append(f"{path}: expected {{key, operator, values}}")
        return None
    key, operator, values = raw.get("key"), raw.get("operator"), raw.get("values")
    if not isinstance(key, str) or not key:
        errors.append(f"{path}.key: required")
        return None
    if operator not in NODE_OPERATORS:
        errors.append(f"{path}.operator: must be one of {', '.join(NODE_OPERATORS)}, got {operator!r}")
        return None
    if values is not None and (not isinstance(values, list) or not all(isinstance(v, str) for v in values)):
        errors.append(f"{path}.values: expected a list of strings")
        return None
    values = values or []
    if operator in ("In", "NotIn") and not values:
        errors.append(f"{path}.values: required and non-empty for operator {operator}")
        return None
    if operator in ("Exists", "DoesNotExist") and values:
        errors.append(f"{path}.values: must be empty for operator {operator}")
        return None
    if operator in ("Gt", "Lt") and (len(values) != 1 or not values[0].lstrip("-").isdigit()):
        errors.append(f"{path}.values: operator {operator} needs exactly one integer value")
        return None
    requirement: dict[str, Any] = {"key": key, "operator": operator}
    if values:
        requirement["values"] = list(values)
    return requirement


def _tolerations(raw: Any, path: str, errors: list[str]) -> tuple[dict[str, Any], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        errors.append(f"{path}: expected a list")
        return ()
    result = []
    for index, toleration in enumerate(raw):
        where = f"{path}[{index}]"
        if not isinstance(toleration, Mapping):
            errors.append(f"{where}: expected an object")
            continue
        unknown = set(toleration) - {"key", "operator", "value", "effect", "tolerationSeconds"}
        if unknown:
            errors.append(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
            continue
        operator = toleration.get("operator", "Equal")
        if operator not in TOLERATION_OPERATORS:
            errors.append(f"{where}.operator: must be Equal or Exists, got {operator!r}")
            continue
        effect = toleration.get("effect")
        if effect not in (None, "", *TAINT_EFFECTS):
            errors.append(f"{where}.effect: must be one of {', '.join(TAINT_EFFECTS)}, got {effect!r}")
            continue
        if operator == "Exists" and toleration.get("value"):
            errors.append(f"{where}.value: must be empty for operator Exists")
            continue
        seconds = toleration.get("tolerationSeconds")
        if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, int)):
            errors.append(f"{where}.tolerationSeconds: expected an integer")
            continue
        for key in ("key", "value"):
            if key in toleration and not isinstance(toleration[key], str):
                errors.append(f"{where}.{key}: expected a string")
                break
        else:
            result.append(dict(toleration))
    return tuple(result)


def _string_map(raw: Any, path: str, errors: list[str]) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        errors.append(f"{path}: expected a map of strings")
        return {}
    bad = [key for key, value in raw.items() if not isinstance(value, str)]
    for key in bad:
        errors.append(f"{path}.{key}: values are strings, got {type(raw[key]).__name__} (quote it)")
    return {str(key): value for key, value in raw.items() if isinstance(value, str)}
