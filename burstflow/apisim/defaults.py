"""What kube-apiserver adds to and checks in an object around admission: pod defaults, qosClass, name rules."""
from __future__ import annotations

import json
import random
from typing import Any

from burstflow.selectors import DNS_LABEL, DNS_SUBDOMAIN

from .status import DNS1123_LABEL_MSG, DNS1123_SUBDOMAIN_MSG, bad_request, cause

# The alphabet Kubernetes' name generator draws from (no vowels, no 0/1/3, so no words or look-alikes).
NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_NOT_READY = {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
              "tolerationSeconds": 300}
_UNREACHABLE = {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute",
                "tolerationSeconds": 300}


def random_suffix(rng: random.Random, n: int = 5) -> str:
    return "".join(rng.choice(NAME_ALPHABET) for _ in range(n))


def _default_container(c: dict) -> None:
    c.setdefault("resources", {})
    res = c["resources"]
    if res.get("limits"):
        requests = res.setdefault("requests", {})
        for k, v in res["limits"].items():
            requests.setdefault(k, v)
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    image = c.get("image") or ""
    tagless = ":" not in image.rsplit("/", 1)[-1] and "@" not in image
    c.setdefault("imagePullPolicy", "Always" if tagless or image.endswith(":latest") else "IfNotPresent")


def default_pod(pod: dict, rng: random.Random) -> None:
    """Apply v1 defaulting plus the ServiceAccount and DefaultTolerationSeconds admission plugins, in place.

    This is the object a mutating webhook receives (compare admission/pod-create-generatename.json).
    """
    spec = pod.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for c in spec.get(key) or []:
            if isinstance(c, dict):
                _default_container(c)
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("serviceAccountName", spec.get("serviceAccount") or "default")
    spec.setdefault("serviceAccount", spec["serviceAccountName"])
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    tolerations = spec.setdefault("tolerations", [])
    if isinstance(tolerations, list):
        keys = {t.get("key") for t in tolerations if isinstance(t, dict)}
        for t in (_NOT_READY, _UNREACHABLE):
            if t["key"] not in keys:
                tolerations.append(dict(t))
    spec.setdefault("priority", 0)
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    pod.setdefault("status", {})
    if spec.get("automountServiceAccountToken") is False:
        return
    volumes = spec.setdefault("volumes", [])
    if any(isinstance(v, dict) and str(v.get("name", "")).startswith("kube-api-access-") for v in volumes):
        return
    vol = f"kube-api-access-{random_suffix(rng)}"
    volumes.append({"name": vol, "projected": {"sources": [
        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace",
                                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
    ], "defaultMode": 420}})
    for key in ("initContainers", "containers"):
        for c in spec.get(key) or []:
            if isinstance(c, dict):
                c.setdefault("volumeMounts", []).append(
                    {"name": vol, "readOnly": True, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"})


def qos_class(pod: dict) -> str:
    """Guaranteed when every container's cpu and memory limits equal requests, BestEffort when none set any."""
    containers = [c for key in ("initContainers", "containers") for c in (pod.get("spec") or {}).get(key) or []]
    any_set, guaranteed = False, True
    for c in containers:
        res = c.get("resources") or {}
        requests, limits = res.get("requests") or {}, res.get("limits") or {}
        if requests or limits:
            any_set = True
        for r in ("cpu", "memory"):
            if r not in limits or str(limits.get(r)) != str(requests.get(r, limits.get(r))):
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def _name_causes(field: str, value: str, *, label: bool, prefix: bool) -> list[dict]:
    checked = value[:-1] if prefix and value.endswith("-") else value
    pattern, msg = (DNS_LABEL, DNS1123_LABEL_MSG) if label else (DNS_SUBDOMAIN, DNS1123_SUBDOMAIN_MSG)
    if checked and (len(checked) > (63 if label else 253) or not pattern.match(checked)):
        return [cause("FieldValueInvalid", field, f'Invalid value: "{value}": {msg}')]
    return []


def metadata_causes(obj: dict, *, label: bool, check_names: bool) -> list[dict]:
    """Causes for metadata.name/generateName as ValidateObjectMeta words them; [] when fine."""
    meta = obj.get("metadata") or {}
    name, generate = meta.get("name"), meta.get("generateName")
    for field, value in (("metadata.name", name), ("metadata.generateName", generate)):
        if value is not None and not isinstance(value, str):
            return [cause("FieldValueTypeInvalid", field, f"Invalid value: {value!r}: must be a string")]
    if not name:
        return [cause("FieldValueRequired", "metadata.name", "Required value: name or generateName is required")]
    if not check_names:
        return []
    causes = _name_causes("metadata.name", name, label=label, prefix=False)
    if generate:
        causes += _name_causes("metadata.generateName", generate, label=label, prefix=True)
    return causes


def pod_causes(pod: dict) -> list[dict]:
    spec = pod.get("spec") or {}
    containers = spec.get("containers")
    if not containers:
        return [cause("FieldValueRequired", "spec.containers", "Required value")]
    causes = []
    seen: set[str] = set()
    for i, c in enumerate(containers):
        if not isinstance(c, dict):
            causes.append(cause("FieldValueInvalid", f"spec.containers[{i}]", "Invalid value: must be an object"))
            continue
        if not c.get("name"):
            causes.append(cause("FieldValueRequired", f"spec.containers[{i}].name", "Required value"))
        elif c["name"] in seen:
            causes.append(cause("FieldValueDuplicate", f"spec.containers[{i}].name",
                                f'Duplicate value: "{c["name"]}"'))
        seen.add(c.get("name", ""))
        if not c.get("image"):
            causes.append(cause("FieldValueRequired", f"spec.containers[{i}].image", "Required value"))
    return causes


_INT32 = (-(2 ** 31), 2 ** 31 - 1)
_JSON_KINDS = {bool: "bool", str: "string", list: "array", dict: "object"}


def lease_decode_check(lease: dict) -> None:
    """The 400 a real server answers when a Lease's int32 fields do not decode (0.6, 1.0, "5", 2**31): Go's json
    decoder names the value for numbers and only the kind for anything else."""
    spec = lease.get("spec")
    if not isinstance(spec, dict):
        return
    for key in ("leaseDurationSeconds", "leaseTransitions"):
        value = spec.get(key)
        if value is None:
            continue
        if isinstance(value, int) and not isinstance(value, bool) and _INT32[0] <= value <= _INT32[1]:
            continue
        what = (f"number {json.dumps(value)}" if isinstance(value, (int, float)) and not isinstance(value, bool)
                else _JSON_KINDS.get(type(value), "value"))
        raise bad_request(f'Lease in version "v1" cannot be handled as a Lease: json: cannot unmarshal {what} into '
                          f"Go struct field LeaseSpec.spec.{key} of type int32")


def lease_causes(lease: dict) -> list[dict]:
    """coordination/validation.ValidateLeaseSpec: a duration must be > 0, transitions >= 0."""
    spec = lease.get("spec") or {}
    causes = []
    duration, transitions = spec.get("leaseDurationSeconds"), spec.get("leaseTransitions")
    if duration is not None and duration <= 0:
        causes.append(cause("FieldValueInvalid", "spec.leaseDurationSeconds",
                            f"Invalid value: {duration}: must be greater than 0"))
    if transitions is not None and transitions < 0:
        causes.append(cause("FieldValueInvalid", "spec.leaseTransitions",
                            f"Invalid value: {transitions}: must be greater than or equal to 0"))
    return causes


def crd_causes(crd: dict) -> list[dict]:
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    causes = []
    for f, v in (("spec.group", spec.get("group")), ("spec.names.plural", names.get("plural")),
                 ("spec.names.kind", names.get("kind"))):
        if not v:
            causes.append(cause("FieldValueRequired", f, "Required value"))
    if not spec.get("versions"):
        causes.append(cause("FieldValueRequired", "spec.versions", "Required value: must have exactly one version "
                            "marked as storage version"))
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        causes.append(cause("FieldValueNotSupported", "spec.scope",
                            f'Unsupported value: "{spec.get("scope", "")}": supported values: "Cluster", "Namespaced"'))
    if not causes:
        want = f'{names["plural"]}.{spec["group"]}'
        name = (crd.get("metadata") or {}).get("name")
        if name != want:
            causes.append(cause("FieldValueInvalid", "metadata.name",
                                f'Invalid value: "{name}": must be spec.names.plural+"."+spec.group'))
    return causes


def crd_status(crd: dict, now: str) -> dict[str, Any]:
    """The status the apiextensions controllers write within milliseconds of a valid CRD's creation."""
    names = dict(crd["spec"]["names"])
    names.setdefault("singular", names["kind"].lower())
    names.setdefault("listKind", names["kind"] + "List")
    storage = [v["name"] for v in crd["spec"]["versions"] if v.get("storage")] or [crd["spec"]["versions"][0]["name"]]
    return {
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "lastTransitionTime": now, "reason": "NoConflicts",
             "message": "no conflicts found"},
            {"type": "Established", "status": "True", "lastTransitionTime": now, "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted"},
        ],
        "acceptedNames": names,
        "storedVersions": storage,
    }


