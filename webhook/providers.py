"""Provider presets: what a pod needs to land on Volcengine VCI, Alibaba ECI / ACS or any virtual-kubelet node.

A preset turns the few settings a platform team cares about into an `Effect` (annotations, labels, tolerations,
node selector, required node-affinity requirements, preferred node-affinity terms). Effects are plain data:
BurstProfiles, the vci-profile / eci-profile ConfigMaps and resource-pool subsets all build them here and apply them
with `webhook.mutate` (profiles) or `webhook.pools.placement` (pool subsets).

Sources for what each provider documents (docs/concepts/burstprofile.md, "Provider presets"):
- Alibaba ACK, native scheduling to ECI (current ACK; `alibabacloud.com/burst-resource` is no longer maintained for
  Kubernetes >= 1.24): https://www.alibabacloud.com/help/en/ack/ack-managed-and-ack-dedicated/user-guide/configure-eci-scaling
  and https://www.alibabacloud.com/help/en/ack/ack-managed-and-ack-dedicated/user-guide/use-elastic-container-instance-based-scheduling
- ECI spot annotations, including `k8s.aliyun.com/eci-spot-fallback`:
  https://www.alibabacloud.com/help/en/eci/user-guide/create-a-preemptible-elastic-container-instance-1
- Volcengine vci-profile (soft) versus `vke.volcengine.com/burst-to-vci: enforce` (hard, ResourcePolicy does not
  apply): https://docs.byteplus.com/id/docs/vke/Using-VCI-by-configuring-vci-profile
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from burstflow.crdschema import FieldError

# Annotation and label keys, as the providers document them (docs/concepts/burstprofile.md, "Provider presets").
VCI_BURST = "vke.volcengine.com/burst-to-vci"
VCI_SUBNETS = "vke.volcengine.com/preferred-subnet-ids"
VCI_INSTANCE_FAMILY = "vci.vke.volcengine.com/preferred-instance-family"
VCI_TOLERATION = {"key": "vci.vke.volcengine.com/node-type", "operator": "Equal", "value": "vci",
                  "effect": "NoSchedule"}

ECI_BURST = "alibabacloud.com/burst-resource"
ECI_SPECS = "k8s.aliyun.com/eci-use-specs"
ECI_SPOT_STRATEGY = "k8s.aliyun.com/eci-spot-strategy"
ECI_SPOT_PRICE_LIMIT = "k8s.aliyun.com/eci-spot-price-limit"
ECI_SPOT_FALLBACK = "k8s.aliyun.com/eci-spot-fallback"
ECI_EXTRA_STORAGE = "k8s.aliyun.com/eci-extra-ephemeral-storage"
ECI_VSWITCH = "k8s.aliyun.com/eci-vswitch"
ECI_SECURITY_GROUP = "k8s.aliyun.com/eci-security-group"
VK_PROVIDER_TAINT = "virtual-kubelet.io/provider"
ECI_TOLERATION = {"key": VK_PROVIDER_TAINT, "operator": "Equal", "value": "alibabacloud", "effect": "NoSchedule"}

ACS_LABEL = "alibabacloud.com/acs"
ACS_COMPUTE_CLASS = "alibabacloud.com/compute-class"
ACS_COMPUTE_QOS = "alibabacloud.com/compute-qos"

VK_NODE_LABEL = ("type", "virtual-kubelet")
# Node-affinity requirements on the virtual-node label: Alibaba's documented "ECS first" preference
# (type NotIn [virtual-kubelet]) and "ECI only" requirement (type In [virtual-kubelet]); the same label selects VCI
# virtual nodes in Volcengine's ResourcePolicy example.
ON_VIRTUAL_NODE = {"key": VK_NODE_LABEL[0], "operator": "In", "values": [VK_NODE_LABEL[1]]}
OFF_VIRTUAL_NODE = {"key": VK_NODE_LABEL[0], "operator": "NotIn", "values": [VK_NODE_LABEL[1]]}
# Weight of a preset's preferred term: the maximum, so that the preference outweighs resource-balancing scores
# (the scheduler normalises node-affinity scores per pod, then weighs them against the other score plugins).
PREFERRED_WEIGHT = 100

VCI_MODES = ("enforce", "auto")
ECI_MODES = ("eci", "eci_only")
# nodeAffinity: Kubernetes-native scheduling, what Alibaba documents for current ACK. burstResource: the legacy
# `alibabacloud.com/burst-resource` annotation, read only by ACK's older "ECI-based elastic scheduling".
ECI_SCHEDULING = ("nodeAffinity", "burstResource")
ECI_SPOT_STRATEGIES = ("SpotAsPriceGo", "SpotWithPriceLimit")
ACS_QOS = ("default", "best-effort")
VK_PLACEMENTS = ("nodeSelector", "nodeAffinity")


class PresetError(FieldError):
    """A preset setting that cannot be applied; `path` is relative to the preset's settings object."""


@dataclass(frozen=True)
class Effect:
    """What to add to a pod. Key/value pairs keep their declaration order; tolerations are full toleration dicts;
    `node_affinity` holds `NodeSelectorRequirement` dicts that must hold on the chosen node (ANDed into every
    required term); `preferred` holds `PreferredSchedulingTerm` dicts ({weight, preference}) added to the pod's
    preferred node affinity."""

    annotations: tuple[tuple[str, str], ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    tolerations: tuple[Mapping[str, Any], ...] = ()
    node_selector: tuple[tuple[str, str], ...] = ()
    node_affinity: tuple[Mapping[str, Any], ...] = field(default=())
    preferred: tuple[Mapping[str, Any], ...] = field(default=())

    def __add__(self, other: Effect) -> Effect:
        return Effect(self.annotations + other.annotations, self.labels + other.labels,
                      self.tolerations + other.tolerations, self.node_selector + other.node_selector,
                      self.node_affinity + other.node_affinity, self.preferred + other.preferred)

    @property
    def empty(self) -> bool:
        return not (self.annotations or self.labels or self.tolerations or self.node_selector or self.node_affinity
                    or self.preferred)


def prefer(*requirements: Mapping[str, Any], weight: int = PREFERRED_WEIGHT) -> dict[str, Any]:
    """A `PreferredSchedulingTerm` whose preference ANDs `requirements`."""
    return {"weight": weight, "preference": {"matchExpressions": [dict(r) for r in requirements]}}


def enforced_to_vci(annotations: Mapping[str, Any] | None) -> bool:
    """True when the pod carries `vke.volcengine.com/burst-to-vci: enforce`: Volcengine hard-schedules it to VCI and
    a ResourcePolicy does not apply to it (their documented precedence), so Burstflow's pools leave it alone too."""
    return bool(annotations) and annotations.get(VCI_BURST) == "enforce"


def _string(settings: Mapping[str, Any], key: str, *, choices: tuple[str, ...] | None = None,
            default: str | None = None) -> str | None:
    value = settings.get(key, default)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise PresetError(key, f"must be a non-empty string, not {value!r}")
    if choices and value not in choices:
        raise PresetError(key, f"must be one of {', '.join(choices)}, not {value!r}")
    return value


def _joined(settings: Mapping[str, Any], key: str) -> str | None:
    """A list of strings (or one comma-separated string) as the comma-separated annotation value providers read."""
    value = settings.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        items = [item.strip() for item in value.split(",")]
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        items = [item.strip() for item in value]
    else:
        raise PresetError(key, f"must be a list of strings, not {value!r}")
    if not items or not all(items):
        raise PresetError(key, "must not be empty or contain empty entries")
    return ",".join(items)


def _only(settings: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    for key in settings:
        if key not in allowed:
            raise PresetError(key, f"unknown setting (this preset takes {', '.join(allowed)})")


def volcengine_vci(settings: Mapping[str, Any]) -> Effect:
    """`mode` (enforce | auto, default enforce), `subnetIds`, `instanceFamily` -> VKE annotations + VCI toleration.

    enforce is hard placement on VCI, so the pod also requires the virtual nodes (type In [virtual-kubelet], the
    term Volcengine's ResourcePolicy example uses for them): any kube-scheduler then honours it, not only VKE's.
    auto leaves the choice to VKE's scheduler."""
    _only(settings, ("mode", "subnetIds", "instanceFamily"))
    mode = _string(settings, "mode", choices=VCI_MODES, default="enforce")
    annotations = [(VCI_BURST, mode)]
    subnets = _joined(settings, "subnetIds")
    if subnets:
        annotations.append((VCI_SUBNETS, subnets))
    family = _joined(settings, "instanceFamily")
    if family:
        annotations.append((VCI_INSTANCE_FAMILY, family))
    return Effect(annotations=tuple(annotations), tolerations=(VCI_TOLERATION,),
                  node_affinity=(ON_VIRTUAL_NODE,) if mode == "enforce" else ())


def _flag(settings: Mapping[str, Any], key: str) -> bool:
    value = settings.get(key, False)
    if not isinstance(value, bool):
        raise PresetError(key, f"must be true or false, not {value!r}")
    return value


def alibaba_eci(settings: Mapping[str, Any]) -> Effect:
    """`mode` (eci = ECS first, ECI when ECS is full | eci_only, default eci), `scheduling` (nodeAffinity | the
    legacy burstResource, default nodeAffinity), `specs`, `spotStrategy`, `spotPriceLimit`, `spotFallback`,
    `extraEphemeralStorage` -> the virtual-node toleration, node affinity (or the legacy annotation), ECI annotations.

    nodeAffinity, as Alibaba documents for current ACK: `eci` prefers nodes that are not virtual nodes
    (type NotIn [virtual-kubelet]) and tolerates the virtual nodes' taint, so the scheduler falls through to ECI when
    ECS is full; `eci_only` requires type In [virtual-kubelet]."""
    _only(settings, ("mode", "scheduling", "specs", "spotStrategy", "spotPriceLimit", "spotFallback",
                     "extraEphemeralStorage"))
    mode = _string(settings, "mode", choices=ECI_MODES, default="eci")
    scheduling = _string(settings, "scheduling", choices=ECI_SCHEDULING, default="nodeAffinity")
    annotations = []
    node_affinity: tuple[Mapping[str, Any], ...] = ()
    preferred: tuple[Mapping[str, Any], ...] = ()
    if scheduling == "burstResource":
        annotations.append((ECI_BURST, mode))
    elif mode == "eci_only":
        node_affinity = (ON_VIRTUAL_NODE,)
    else:
        preferred = (prefer(OFF_VIRTUAL_NODE),)
    specs = _joined(settings, "specs")
    if specs:
        annotations.append((ECI_SPECS, specs))
    strategy = _string(settings, "spotStrategy", choices=ECI_SPOT_STRATEGIES)
    limit = settings.get("spotPriceLimit")
    if strategy == "SpotWithPriceLimit" and limit is None:
        raise PresetError("spotPriceLimit", "is required when spotStrategy is SpotWithPriceLimit")
    if limit is not None and strategy != "SpotWithPriceLimit":
        raise PresetError("spotPriceLimit", "only applies with spotStrategy: SpotWithPriceLimit")
    if strategy:
        annotations.append((ECI_SPOT_STRATEGY, strategy))
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, (int, float, str)):
            raise PresetError("spotPriceLimit", f"must be a number (hourly price), not {limit!r}")
        annotations.append((ECI_SPOT_PRICE_LIMIT, str(limit)))
    if _flag(settings, "spotFallback"):
        if not strategy:
            raise PresetError("spotFallback", "only applies with a spotStrategy (it falls back from spot to "
                                              "pay-as-you-go)")
        annotations.append((ECI_SPOT_FALLBACK, "true"))
    storage = _string(settings, "extraEphemeralStorage")
    if storage:
        annotations.append((ECI_EXTRA_STORAGE, storage))
    return Effect(annotations=tuple(annotations), tolerations=(ECI_TOLERATION,), node_affinity=node_affinity,
                  preferred=preferred)


def alibaba_acs(settings: Mapping[str, Any]) -> Effect:
    """`computeClass` (default general-purpose), `computeQos` (default | best-effort, default default) -> ACS labels."""
    _only(settings, ("computeClass", "computeQos"))
    return Effect(labels=(
        (ACS_LABEL, "true"),
        (ACS_COMPUTE_CLASS, _string(settings, "computeClass", default="general-purpose")),
        (ACS_COMPUTE_QOS, _string(settings, "computeQos", choices=ACS_QOS, default="default")),
    ))


def virtual_kubelet(settings: Mapping[str, Any]) -> Effect:
    """Generic virtual-kubelet: `placement` nodeSelector (default) | nodeAffinity puts the pod on nodes labelled
    `type: virtual-kubelet`; the toleration tolerates `virtual-kubelet.io/provider` (any value, or `providerName`)."""
    _only(settings, ("placement", "providerName"))
    placement = _string(settings, "placement", choices=VK_PLACEMENTS, default="nodeSelector")
    provider = _string(settings, "providerName")
    toleration: dict[str, Any] = {"key": VK_PROVIDER_TAINT, "operator": "Exists", "effect": "NoSchedule"}
    if provider:
        toleration = {"key": VK_PROVIDER_TAINT, "operator": "Equal", "value": provider, "effect": "NoSchedule"}
    key, value = VK_NODE_LABEL
    if placement == "nodeSelector":
        return Effect(node_selector=((key, value),), tolerations=(toleration,))
    return Effect(node_affinity=({"key": key, "operator": "In", "values": [value]},), tolerations=(toleration,))


PRESETS: dict[str, Callable[[Mapping[str, Any]], Effect]] = {
    "volcengine-vci": volcengine_vci,
    "alibaba-eci": alibaba_eci,
    "alibaba-acs": alibaba_acs,
    "virtual-kubelet": virtual_kubelet,
}


def preset(name: str, settings: Mapping[str, Any] | None) -> Effect:
    """The Effect of preset `name` with `settings` (None = all defaults); raises PresetError on bad settings."""
    try:
        build = PRESETS[name]
    except KeyError:
        raise PresetError("", f"unknown provider {name!r} (known: {', '.join(PRESETS)})") from None
    if settings is None:
        settings = {}
    if not isinstance(settings, Mapping):
        raise PresetError("", f"settings must be an object, not {type(settings).__name__}")
    return build(settings)
