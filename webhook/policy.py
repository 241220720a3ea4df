"""The BurstProfile model: validates objects against the CRD's own schema, then compiles them into `Profile`s.

Compiling happens once, when policies are loaded: selectors, provider presets and every CEL expression
(matchConditions and `{{ ... }}` values) are checked and compiled here, so the request path only evaluates.
Errors are `PolicyError`s naming where the object came from, the object and the field path.
"""
from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import yaml

from burstflow import cel, crdschema, data
from burstflow.webhook.providers import Effect, PresetError, preset
from burstflow.selectors import (DNS_SUBDOMAIN, EVERYTHING, Selector, SelectorError, compile_selector, label_key_error,
                                 label_value_error)

GROUP = "burstflow.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "BurstProfile"
# Package data (burstflow/crds/, from manifests/base/crds/): the installed package reads its own copy.
CRD_FILE = "burstprofiles.burstflow.io.yaml"

CEL_VARIABLES = ("object", "namespaceObject", "request")
TEMPLATE = re.compile(r"^\s*\{\{(.*)\}\}\s*$", re.DOTALL)

class PolicyError(ValueError):
    """An invalid policy: `source` (file or cluster), `obj` ("BurstProfile/name"), `path` (field path), `message`."""

    def __init__(self, message: str, *, path: str = "", obj: str = "", source: str = "") -> None:
        self.message = message
        self.path = path
        self.obj = obj
        self.source = source
        super().__init__(str(self))

    def __str__(self) -> str:
        parts = [part for part in (self.source, self.obj, self.path) if part]
        return ": ".join(parts + [self.message])

    @classmethod
    def of(cls, error: crdschema.FieldError, prefix: str) -> PolicyError:
        """A PolicyError for `error` (a selector or preset problem) found in the value at field path `prefix`."""
        return cls(error.message, path=f"{prefix}.{error.path}" if error.path else prefix)

    def located(self, *, obj: str | None = None, source: str | None = None, prefix: str = "") -> PolicyError:
        """A copy with the object/source filled in and `prefix` put in front of the field path."""
        path = f"{prefix}.{self.path}" if prefix and self.path else (prefix or self.path)
        return PolicyError(self.message, path=path, obj=self.obj or (obj or ""), source=self.source or (source or ""))


def toleration_key(toleration: Mapping[str, Any]) -> tuple[Any, ...]:
    """What makes two tolerations the same one: key, operator (default Equal), value, effect, tolerationSeconds."""
    return (toleration.get("key", ""), toleration.get("operator") or "Equal", toleration.get("value", ""),
            toleration.get("effect", ""), toleration.get("tolerationSeconds"))


class Change(NamedTuple):
    """One thing a profile did (or decided not to do) to a pod, for `burstflow mutate` and logs.

    A NamedTuple: several are recorded per admission, and a frozen dataclass costs several times more to build.
    Records made at compile time are shared between admissions: treat `value` as read-only.
    """

    profile: str
    field: str
    value: Any
    action: str  # "set" | "kept pod value" | "added"

    def __str__(self) -> str:
        return f"{self.profile}: {self.action} {self.field}" + ("" if self.value is None else f" = {self.value!r}")


# The string maps of a pod that profiles write, by the name Change records use, in the order they are written.
SECTIONS = {"metadata.annotations": ("metadata", "annotations"), "metadata.labels": ("metadata", "labels"),
            "spec.nodeSelector": ("spec", "nodeSelector")}


@dataclass(frozen=True)
class Template:
    """A `{{ <CEL> }}` value, computed from the request at admission time."""

    text: str
    program: cel.Program


Value = str | Template


@dataclass(frozen=True)
class Condition:
    name: str
    program: cel.Program


@dataclass(frozen=True)
class Profile:
    """One compiled profile (from a BurstProfile or a vci-profile / eci-profile selector).

    Application order across profiles is `order_key`: higher `priority` first, then BurstProfiles before ConfigMap
    profiles, then by name (ConfigMap selectors keep their list order).
    """

    name: str
    source: str = ""
    priority: int = 0
    origin_rank: int = 0
    namespace_selector: Selector = EVERYTHING
    object_selector: Selector = EVERYTHING
    workflow_pods_only: bool = True
    conditions: tuple[Condition, ...] = ()
    annotations: tuple[tuple[str, Value], ...] = ()
    labels: tuple[tuple[str, Value], ...] = ()
    node_selector: tuple[tuple[str, str], ...] = ()
    tolerations: tuple[Mapping[str, Any], ...] = ()
    node_affinity: tuple[Mapping[str, Any], ...] = ()
    preferred: tuple[Mapping[str, Any], ...] = ()
    # True: RuntimeDefault; False: `seccomp: Disabled` (this profile opts its pods out); None: no opinion.
    seccomp: bool | None = True
    override: bool = False
    provider: str = ""
    order: tuple[Any, ...] = field(default=(), compare=False)
    # Derived once here so that admitting a pod only looks things up (see `__post_init__`).
    entries: tuple[tuple[str, tuple[tuple[str, Value, Change | None], ...]], ...] = field(
        init=False, repr=False, compare=False)
    toleration_plan: tuple[tuple[tuple[Any, ...], Mapping[str, Any], Change], ...] = field(
        init=False, repr=False, compare=False)
    seccomp_change: Change = field(init=False, repr=False, compare=False)
    templated: bool = field(init=False, repr=False, compare=False)  # some value is a `{{ <CEL> }}` template

    def __post_init__(self) -> None:
        """Precompute what does not depend on the pod: per map section (its SECTIONS name), (key, value, the Change
        recorded when the value is set) with no Change for templates; each toleration's identity key and Change."""
        entries = []
        for where, items in (("metadata.annotations", self.annotations), ("metadata.labels", self.labels),
                             ("spec.nodeSelector", self.node_selector)):
            if items:
                entries.append((where, tuple(
                    (key, value, None if isinstance(value, Template) else
                     Change(self.name, f"{where}[{key}]", value, "set")) for key, value in items)))
        object.__setattr__(self, "entries", tuple(entries))
        object.__setattr__(self, "templated", any(change is None for _, items in entries for _, _, change in items))
        object.__setattr__(self, "toleration_plan", tuple(
            (toleration_key(t), t, Change(self.name, "spec.tolerations", dict(t), "added")) for t in self.tolerations))
        object.__setattr__(self, "seccomp_change", Change(self.name, "spec.securityContext.seccompProfile.type",
                                                          "RuntimeDefault", "set"))

    @property
    def order_key(self) -> tuple[Any, ...]:
        return (-self.priority, self.origin_rank, self.order or (self.name,))

    @property
    def uses_cel(self) -> bool:
        return bool(self.conditions) or any(isinstance(v, Template) for _, v in self.annotations + self.labels)


@dataclass(frozen=True)
class PolicySet:
    """Everything the admission path needs, compiled: profiles in application order, namespace labels known from
    Namespace documents (offline use), other kinds compiled by registered compilers (e.g. "ResourcePolicy")."""

    profiles: tuple[Profile, ...] = ()
    namespaces: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    compiled: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    env: cel.Environment | None = None
    warnings: tuple[str, ...] = ()

    def counts(self) -> dict[str, int]:
        """Objects per kind, for the `burstflow_webhook_policies_loaded` gauge."""
        counts = {"BurstProfile": sum(1 for p in self.profiles if p.origin_rank == 0),
                  "ConfigMapProfile": sum(1 for p in self.profiles if p.origin_rank == 1)}
        for kind, items in self.compiled.items():
            counts[kind] = len(items)
        return counts

    def resource_policies(self, namespace: str) -> tuple[Any, ...]:
        """The compiled ResourcePolicies of `namespace` (grouped once per set: admission asks for every pod)."""
        return self._resource_policies.get(namespace, ())

    @functools.cached_property
    def _resource_policies(self) -> dict[str, tuple[Any, ...]]:
        grouped: dict[str, list[Any]] = {}
        for policy in self.compiled.get("ResourcePolicy", ()):
            grouped.setdefault(policy.namespace, []).append(policy)
        return {namespace: tuple(items) for namespace, items in grouped.items()}

    @functools.cached_property
    def memo(self) -> dict[str, Any]:
        """Scratch space for what admission derives from this set (webhook.mutate keeps its tables here), so it
        lives and dies with the set: a reload installs a new set, which starts empty."""
        return {}


def new_environment() -> cel.Environment:
    """The CEL environment every policy expression compiles in (variables object, namespaceObject, request)."""
    return cel.Environment(CEL_VARIABLES)


def sort_profiles(profiles: Iterable[Profile]) -> tuple[Profile, ...]:
    return tuple(sorted(profiles, key=lambda p: p.order_key))


# --- CRD schema -------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def crd() -> dict[str, Any]:
    """The BurstProfile CustomResourceDefinition as shipped in the package (manifests/base/crds/ is its source)."""
    return yaml.safe_load(data.crd_text(CRD_FILE))


@functools.lru_cache(maxsize=1)
def _schema() -> crdschema.CrdSchema:
    return crdschema.of_crd(crd(), VERSION)


def schema_errors(obj: Mapping[str, Any]) -> list[PolicyError]:
    """Check `obj` against the CRD's openAPIV3Schema as the API server would with strict field validation:
    types/enums/required/patterns (after dropping the nulls the server prunes), unknown fields, then the schema's
    `x-kubernetes-validations` CEL rules."""
    schema = _schema()
    errors = [PolicyError(v.message, path=crdschema.field_path(v.path))
              for v in schema.violations(obj) or schema.unknown_fields(obj)]
    return errors or _rule_errors(obj, schema.schema)


def _rule_errors(obj: Mapping[str, Any], schema: Mapping[str, Any]) -> list[PolicyError]:
    """The schema's CEL rules that fail on `obj`, at the rule's node (and its `fieldPath`, when it names one)."""
    errors = []
    for failure in crdschema.rule_failures(schema, obj):
        field_path = list(filter(None, [failure.rule.get("fieldPath", "").lstrip(".")]))
        detail = f" ({failure.error})" if failure.error is not None else ""
        errors.append(PolicyError(failure.message + detail,
                                  path=crdschema.field_path(list(failure.path) + field_path)))
    return errors


# --- compile ----------------------------------------------------------------------------------------------------


def compile_selectors(raw: Mapping[str, Any], path: str) -> tuple[Selector, Selector]:
    """The `namespaceSelector` and `objectSelector` of `raw` (each matching everything when unset); PolicyError at
    the field under `path` for an invalid one."""
    compiled = []
    for key in ("namespaceSelector", "objectSelector"):
        try:
            compiled.append(compile_selector(raw.get(key)))
        except SelectorError as exc:
            raise PolicyError.of(exc, f"{path}.{key}") from None
    return compiled[0], compiled[1]


def compile_value(raw: str, env: cel.Environment, path: str) -> Value:
    """A literal string, or a `{{ <CEL> }}` Template compiled now (PolicyError at `path` if it does not compile)."""
    match = TEMPLATE.match(raw)
    if not match:
        return raw
    try:
        return Template(raw, env.compile(match.group(1).strip()))
    except cel.CelError as exc:
        raise PolicyError(f"CEL: {exc}", path=path) from None


def compile_map(raw: Mapping[str, Any] | None, env: cel.Environment, path: str, *,
                labels: bool) -> list[tuple[str, Value]]:
    """A key -> value map of annotations (labels=False) or labels; keys and literal label values are checked."""
    items: list[tuple[str, Value]] = []
    for key, value in (raw or {}).items():
        problem = label_key_error(str(key))
        if problem:
            raise PolicyError(problem, path=f"{path}[{key}]")
        if not isinstance(value, str):
            raise PolicyError(f"value must be a string, not {value!r} (quote it in YAML)", path=f"{path}[{key}]")
        compiled = compile_value(value, env, f"{path}[{key}]")
        if labels and isinstance(compiled, str):
            problem = label_value_error(compiled)
            if problem:
                raise PolicyError(problem, path=f"{path}[{key}]")
        items.append((str(key), compiled))
    return items


def _merge(preset_items: Iterable[tuple[str, Any]], own: Iterable[tuple[str, Any]]) -> tuple[tuple[str, Any], ...]:
    """Preset values first; the profile's own value for the same key replaces the preset's."""
    merged = dict(preset_items)
    merged.update(own)
    return tuple(merged.items())


def compile_profile(obj: Mapping[str, Any], env: cel.Environment, *, source: str = "") -> Profile:
    """Validate (CRD schema first, then semantics) and compile one BurstProfile object.

    Raises PolicyError carrying `source`, "BurstProfile/<name>" and the field path of the first problem(s).
    """
    result = profile_errors(obj, env, source=source)
    if isinstance(result, Profile):
        return result
    raise result[0] if len(result) == 1 else PolicyErrors(result)


class PolicyErrors(PolicyError):
    """Several problems found in one object."""

    def __init__(self, errors: list[PolicyError]) -> None:
        self.errors = errors
        first = errors[0]
        super().__init__(first.message, path=first.path, obj=first.obj, source=first.source)

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


def profile_errors(obj: Mapping[str, Any], env: cel.Environment, *, source: str = "") -> Profile | list[PolicyError]:
    """The compiled Profile, or every problem found (schema problems stop before semantic checks)."""
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
    name = metadata.get("name")
    ref = f"{KIND}/{name or '<unnamed>'}"

    def err(message: str, path: str) -> list[PolicyError]:
        return [PolicyError(message, path=path, obj=ref, source=source)]

    if obj.get("apiVersion") != API_VERSION:
        return err(f"apiVersion must be {API_VERSION}, not {obj.get('apiVersion')!r}", "apiVersion")
    if not isinstance(name, str) or not name:
        return err("is required", "metadata.name")
    if len(name) > 253 or not DNS_SUBDOMAIN.match(name):
        return err(f"{name!r} must be a lowercase DNS subdomain (a-z, 0-9, '-', '.')", "metadata.name")
    if metadata.get("namespace"):
        return err("BurstProfile is cluster-scoped: remove metadata.namespace", "metadata.namespace")
    problems = schema_errors(obj)
    if problems:
        return [p.located(obj=ref, source=source) for p in problems]
    obj = _schema().prune(obj)  # compiled as the API server would store it
    spec = obj.get("spec") or {}
    try:
        return _compile_spec(name, spec, env, source=source)
    except PolicyError as exc:
        return [exc.located(obj=ref, source=source, prefix="spec")]


def _compile_spec(name: str, spec: Mapping[str, Any], env: cel.Environment, *, source: str) -> Profile:
    match = spec.get("match") or {}
    namespace_selector, object_selector = compile_selectors(match, "match")
    conditions = []
    for index, condition in enumerate(match.get("matchConditions") or ()):
        try:
            conditions.append(Condition(condition["name"], env.compile(condition["expression"])))
        except cel.CelError as exc:
            raise PolicyError(f"CEL: {exc}", path=f"match.matchConditions[{index}].expression") from None
    effect = Effect()
    provider_name = ""
    for provider_name, settings in (spec.get("provider") or {}).items():
        try:
            effect = preset(provider_name, settings)
        except PresetError as exc:
            raise PolicyError.of(exc, f"provider.{provider_name}") from None
    annotations = compile_map(spec.get("annotations"), env, "annotations", labels=False)
    labels = compile_map(spec.get("labels"), env, "labels", labels=True)
    node_selector = []
    for key, value in (spec.get("nodeSelector") or {}).items():
        problem = label_key_error(key) or label_value_error(value)
        if problem:
            raise PolicyError(problem, path=f"nodeSelector[{key}]")
        node_selector.append((key, value))
    seccomp = spec.get("seccomp", "RuntimeDefault")
    return Profile(
        name=name,
        source=source,
        priority=int(spec.get("priority", 0)),
        origin_rank=0,
        namespace_selector=namespace_selector,
        object_selector=object_selector,
        workflow_pods_only=bool(match.get("workflowPodsOnly", True)),
        conditions=tuple(conditions),
        annotations=_merge(effect.annotations, annotations),
        labels=_merge(effect.labels, labels),
        node_selector=_merge(effect.node_selector, node_selector),
        tolerations=tuple(effect.tolerations) + tuple(spec.get("tolerations") or ()),
        node_affinity=tuple(effect.node_affinity),
        preferred=tuple(effect.preferred),
        seccomp=seccomp == "RuntimeDefault",
        override=bool(spec.get("override", False)),
        provider=provider_name,
    )
