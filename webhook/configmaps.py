"""Compatibility with the providers' own profile ConfigMaps: `kube-system/vci-profile` (Volcengine VKE) and
`kube-system/eci-profile` (Alibaba ACK) become profiles, so a cluster that already has them works unchanged.

Honoured keys (everything else is ignored with a warning; the providers' platforms read those themselves):
- vci-profile: `selectors` (JSON list of {name, namespaceSelector, objectSelector, effect: {annotations, labels}}),
  `preferredSubnetIds` (-> vke.volcengine.com/preferred-subnet-ids), `enforceSelectorToVci` ("true" ->
  vke.volcengine.com/burst-to-vci: enforce, hard placement on VCI; otherwise soft: a preferred node affinity for
  `type: virtual-kubelet`). Every selected pod also gets the VCI toleration.
- eci-profile: `selectors` (same shape), `vSwitchIds` (-> k8s.aliyun.com/eci-vswitch), `securityGroupId`
  (-> k8s.aliyun.com/eci-security-group). Selected pods are sent to the virtual nodes: node selector
  `type: virtual-kubelet` and the toleration `virtual-kubelet.io/provider=alibabacloud:NoSchedule`.
As with the providers' own webhooks, these profiles select every pod (not only Argo pods) and have no say on seccomp
(a BurstProfile that matches the same pod still decides it).
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from burstflow import cel
from burstflow.webhook import providers
from burstflow.webhook.policy import PolicyError, Profile, compile_map, compile_selectors

NAMESPACE = "kube-system"
VCI_PROFILE = "vci-profile"
ECI_PROFILE = "eci-profile"
HONOURED = {
    VCI_PROFILE: ("selectors", "preferredSubnetIds", "enforceSelectorToVci"),
    ECI_PROFILE: ("selectors", "vSwitchIds", "securityGroupId"),
}


def is_profile_configmap(obj: Mapping[str, Any]) -> bool:
    """True for `kube-system/vci-profile` and `kube-system/eci-profile` ConfigMaps."""
    metadata = obj.get("metadata") or {}
    return (obj.get("kind") == "ConfigMap" and metadata.get("namespace") == NAMESPACE
            and metadata.get("name") in HONOURED)


def compile_configmap(obj: Mapping[str, Any], env: cel.Environment, *,
                      source: str = "") -> tuple[list[Profile], list[str]]:
    """(profiles, warnings) for a vci-profile / eci-profile ConfigMap; raises PolicyError on a bad `selectors`."""
    name = obj["metadata"]["name"]
    ref = f"ConfigMap/{NAMESPACE}/{name}"
    where = f"{source}: {ref}" if source else ref
    data = obj.get("data") or {}
    if not isinstance(data, Mapping):
        raise PolicyError("must be a map of strings", path="data", obj=ref, source=source)
    warnings = [f"{where}: data.{key}: ignored (not a pod mutation Burstflow performs)"
                for key in data if key not in HONOURED[name]]
    raw = data.get("selectors")
    if raw is None:
        warnings.append(f"{where}: data.selectors: missing, so this ConfigMap selects no pods")
        return [], warnings
    try:
        selectors = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError as exc:
        raise PolicyError(f"not valid JSON: {exc}", path="data.selectors", obj=ref, source=source) from None
    if not isinstance(selectors, list):
        raise PolicyError("must be a JSON list of selectors", path="data.selectors", obj=ref, source=source)
    base = _base_effect(name, data, ref=ref, source=source)
    profiles = []
    seen: set[str] = set()
    for index, selector in enumerate(selectors):
        path = f"data.selectors[{index}]"
        try:
            profile = _selector_profile(name, index, selector, base, env, path)
        except PolicyError as exc:
            raise exc.located(obj=ref, source=source) from None
        if profile.name in seen:
            raise PolicyError(f"duplicate selector name {profile.name.split(':', 1)[1]!r}", path=f"{path}.name",
                              obj=ref, source=source)
        seen.add(profile.name)
        if profile.namespace_selector.empty and profile.object_selector.empty:
            warnings.append(f"{where}: {path}: no namespaceSelector or objectSelector, so it selects every pod")
        profiles.append(profile)
    return profiles, warnings


def _flag(value: Any) -> bool:
    return str(value).strip().lower() == "true"


def _base_effect(name: str, data: Mapping[str, Any], *, ref: str, source: str) -> providers.Effect:
    try:
        if name == VCI_PROFILE:
            annotations = []
            preferred: tuple[Mapping[str, Any], ...] = ()
            if _flag(data.get("enforceSelectorToVci")):
                annotations.append((providers.VCI_BURST, "enforce"))
            else:
                # Soft, as Volcengine documents vci-profile: prefer the virtual nodes, fall back to the others.
                preferred = (providers.prefer(providers.ON_VIRTUAL_NODE),)
            if data.get("preferredSubnetIds"):
                annotations.append((providers.VCI_SUBNETS, providers._joined(data, "preferredSubnetIds")))
            return providers.Effect(annotations=tuple(annotations), tolerations=(providers.VCI_TOLERATION,),
                                    preferred=preferred)
        annotations = []
        if data.get("vSwitchIds"):
            annotations.append((providers.ECI_VSWITCH, providers._joined(data, "vSwitchIds")))
        if data.get("securityGroupId"):
            annotations.append((providers.ECI_SECURITY_GROUP, str(data["securityGroupId"]).strip()))
        return providers.Effect(annotations=tuple(annotations)) + providers.virtual_kubelet(
            {"providerName": "alibabacloud"})
    except providers.PresetError as exc:
        raise PolicyError.of(exc, "data").located(obj=ref, source=source) from None


def _selector_profile(configmap: str, index: int, raw: Any, base: providers.Effect, env: cel.Environment,
                      path: str) -> Profile:
    if not isinstance(raw, Mapping):
        raise PolicyError("must be an object with name, namespaceSelector, objectSelector, effect", path=path)
    unknown = sorted(set(raw) - {"name", "namespaceSelector", "objectSelector", "effect"})
    if unknown:
        raise PolicyError("unknown field", path=f"{path}.{unknown[0]}")
    selector_name = raw.get("name") or f"selectors[{index}]"
    if not isinstance(selector_name, str):
        raise PolicyError("must be a string", path=f"{path}.name")
    namespace_selector, object_selector = compile_selectors(raw, path)
    effect = raw.get("effect") or {}
    if not isinstance(effect, Mapping) or set(effect) - {"annotations", "labels"}:
        raise PolicyError("must be an object with annotations and/or labels", path=f"{path}.effect")
    for key in ("annotations", "labels"):
        if not isinstance(effect.get(key) or {}, Mapping):
            raise PolicyError("must be a map of strings", path=f"{path}.effect.{key}")
    annotations = compile_map(effect.get("annotations"), env, f"{path}.effect.annotations", labels=False)
    labels = compile_map(effect.get("labels"), env, f"{path}.effect.labels", labels=True)
    merged_annotations = dict(base.annotations)
    merged_annotations.update(annotations)
    return Profile(
        name=f"{configmap}:{selector_name}",
        source=f"ConfigMap {NAMESPACE}/{configmap}",
        priority=0,
        origin_rank=1,
        namespace_selector=namespace_selector,
        object_selector=object_selector,
        workflow_pods_only=False,
        annotations=tuple(merged_annotations.items()),
        labels=tuple(base.labels) + tuple(labels),
        node_selector=tuple(base.node_selector),
        tolerations=tuple(base.tolerations),
        node_affinity=tuple(base.node_affinity),
        preferred=tuple(base.preferred),
        seccomp=None,
        order=(configmap, index),
    )
