"""The resource types the sim serves (built-ins and CRD-defined) and the discovery documents describing them."""
from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable

from .schema import SchemaValidator

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
# CRD-served resources list their verbs in this order (see discovery-argoproj-v1alpha1.json).
CRD_VERBS = ["delete", "deletecollection", "get", "list", "patch", "create", "update", "watch"]

VERSION_INFO = {
    "major": "1",
    "minor": "24",
    "gitVersion": "v1.24.0+0",
    "gitCommit": "2cc6ddc68588debdbb6806e1b57e73207505324f",
    "gitTreeState": "clean",
    "buildDate": "2022-05-06T09:44:28Z",
    "goVersion": "go1.27.3",
    "compiler": "gc",
    "platform": "linux/amd64",
}

# The groups a v1.24 server announces on /apis (discovery-apis.json without the CRD-provided argoproj.io):
# (name, versions, preferred version). Groups we serve no resources of answer an empty APIResourceList.
BUILTIN_GROUPS: list[tuple[str, list[str], str]] = [
    ("apiregistration.k8s.io", ["v1"], "v1"),
    ("apps", ["v1"], "v1"),
    ("events.k8s.io", ["v1", "v1beta1"], "v1"),
    ("authentication.k8s.io", ["v1"], "v1"),
    ("authorization.k8s.io", ["v1"], "v1"),
    ("autoscaling", ["v2", "v1", "v2beta1", "v2beta2"], "v2"),
    ("batch", ["v1", "v1beta1"], "v1"),
    ("certificates.k8s.io", ["v1"], "v1"),
    ("networking.k8s.io", ["v1"], "v1"),
    ("policy", ["v1", "v1beta1"], "v1"),
    ("rbac.authorization.k8s.io", ["v1"], "v1"),
    ("storage.k8s.io", ["v1", "v1beta1"], "v1"),
    ("admissionregistration.k8s.io", ["v1"], "v1"),
    ("apiextensions.k8s.io", ["v1"], "v1"),
    ("scheduling.k8s.io", ["v1"], "v1"),
    ("coordination.k8s.io", ["v1"], "v1"),
    ("node.k8s.io", ["v1", "v1beta1"], "v1"),
    ("discovery.k8s.io", ["v1", "v1beta1"], "v1"),
    ("flowcontrol.apiserver.k8s.io", ["v1beta2", "v1beta1"], "v1beta2"),
]


def _meta(obj: dict) -> dict:
    return obj.get("metadata") or {}


FieldGetter = Callable[[dict], Any]
META_FIELDS: dict[str, FieldGetter] = {
    "metadata.name": lambda o: _meta(o).get("name"),
    "metadata.namespace": lambda o: _meta(o).get("namespace"),
}
POD_FIELDS: dict[str, FieldGetter] = {
    **META_FIELDS,
    "status.phase": lambda o: (o.get("status") or {}).get("phase"),
    "spec.nodeName": lambda o: (o.get("spec") or {}).get("nodeName"),
    "spec.restartPolicy": lambda o: (o.get("spec") or {}).get("restartPolicy"),
    "spec.schedulerName": lambda o: (o.get("spec") or {}).get("schedulerName"),
    "spec.serviceAccountName": lambda o: (o.get("spec") or {}).get("serviceAccountName"),
    "status.podIP": lambda o: (o.get("status") or {}).get("podIP"),
    "status.nominatedNodeName": lambda o: (o.get("status") or {}).get("nominatedNodeName"),
}
EVENT_FIELDS: dict[str, FieldGetter] = {
    **META_FIELDS,
    "involvedObject.kind": lambda o: (o.get("involvedObject") or {}).get("kind"),
    "involvedObject.name": lambda o: (o.get("involvedObject") or {}).get("name"),
    "involvedObject.namespace": lambda o: (o.get("involvedObject") or {}).get("namespace"),
    "involvedObject.uid": lambda o: (o.get("involvedObject") or {}).get("uid"),
    "reason": lambda o: o.get("reason"),
    "type": lambda o: o.get("type"),
}
NAMESPACE_FIELDS: dict[str, FieldGetter] = {
    **META_FIELDS,
    "status.phase": lambda o: (o.get("status") or {}).get("phase"),
}


@dataclass
class ResourceType:
    """One served resource; `group`+`plural` is its storage key, shared by every version it is served at."""

    group: str
    versions: list[str]
    plural: str
    singular: str
    kind: str
    namespaced: bool
    status_subresource: bool = False
    short_names: list[str] = field(default_factory=list)
    custom: bool = False
    schemas: dict[str, SchemaValidator] = field(default_factory=dict)  # version -> validator
    fields: dict[str, FieldGetter] = field(default_factory=lambda: dict(META_FIELDS))
    # What a BOOKMARK's object carries besides kind/apiVersion/metadata (the typed zero value, as Go encodes it).
    bookmark_body: dict = field(default_factory=dict)
    bookmark_meta_extra: dict = field(default_factory=lambda: {"creationTimestamp": None})
    # Unconditional PUT (no resourceVersion) is accepted by built-in registries and refused for custom resources.
    allow_unconditional_update: bool = True
    delete_returns_object: bool = False
    validate_names: bool = True

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    def api_version(self, version: str) -> str:
        return f"{self.group}/{version}" if self.group else version

    def storage_version_hash(self, version: str) -> str:
        digest = hashlib.sha256(f"{self.group}/{version}/{self.kind}".encode()).digest()
        return base64.b64encode(digest[:8]).decode()

    def discovery_entries(self, version: str) -> list[dict]:
        entry: dict[str, Any] = {
            "name": self.plural,
            "singularName": self.singular if self.custom else "",
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": CRD_VERBS if self.custom else VERBS,
        }
        if self.short_names:
            entry["shortNames"] = list(self.short_names)
        entry["storageVersionHash"] = self.storage_version_hash(version)
        entries = [entry]
        if self.status_subresource:
            entries.append({"name": f"{self.plural}/status", "singularName": "", "namespaced": self.namespaced,
                            "kind": self.kind, "verbs": ["get", "patch", "update"]})
        return entries


def builtin_types() -> list[ResourceType]:
    return [
        ResourceType("", ["v1"], "pods", "pod", "Pod", True, status_subresource=True, short_names=["po"],
                     fields=POD_FIELDS, bookmark_body={"spec": {"containers": None}, "status": {}},
                     delete_returns_object=True),
        ResourceType("", ["v1"], "namespaces", "namespace", "Namespace", False, status_subresource=True,
                     short_names=["ns"], fields=NAMESPACE_FIELDS, bookmark_body={"spec": {}, "status": {}},
                     delete_returns_object=True),
        ResourceType("", ["v1"], "configmaps", "configmap", "ConfigMap", True, short_names=["cm"]),
        ResourceType("", ["v1"], "nodes", "node", "Node", False, status_subresource=True, short_names=["no"],
                     bookmark_body={"spec": {}, "status": {}}, delete_returns_object=True),
        ResourceType("", ["v1"], "secrets", "secret", "Secret", True),
        ResourceType("", ["v1"], "events", "event", "Event", True, short_names=["ev"], fields=EVENT_FIELDS,
                     bookmark_body={"involvedObject": {}, "source": {}, "firstTimestamp": None,
                                    "lastTimestamp": None, "eventTime": None, "reportingComponent": "",
                                    "reportingInstance": ""},
                     validate_names=False),
        ResourceType("coordination.k8s.io", ["v1"], "leases", "lease", "Lease", True,
                     bookmark_body={"spec": {}}),
        ResourceType("events.k8s.io", ["v1"], "events", "event", "Event", True, short_names=["ev"],
                     bookmark_body={"eventTime": None}),
        ResourceType("apiextensions.k8s.io", ["v1"], "customresourcedefinitions", "customresourcedefinition",
                     "CustomResourceDefinition", False, status_subresource=True, short_names=["crd", "crds"],
                     bookmark_body={"spec": {"group": "", "names": {"plural": "", "kind": ""}, "scope": "",
                                             "versions": None},
                                    "status": {"conditions": None, "acceptedNames": {"plural": "", "kind": ""},
                                               "storedVersions": None}}),
        ResourceType("admissionregistration.k8s.io", ["v1"], "mutatingwebhookconfigurations",
                     "mutatingwebhookconfiguration", "MutatingWebhookConfiguration", False),
    ]


def crd_resource_type(crd: dict) -> ResourceType:
    """The ResourceType a CustomResourceDefinition declares (served versions, scope, status, schemas)."""
    spec = crd["spec"]
    names = spec["names"]
    served = [v for v in spec.get("versions") or [] if v.get("served", True)]
    schemas: dict[str, SchemaValidator] = {}
    status = False
    for v in served:
        schema = (v.get("schema") or {}).get("openAPIV3Schema")
        if schema:
            schemas[v["name"]] = SchemaValidator(schema)
        if "status" in (v.get("subresources") or {}):
            status = True
    return ResourceType(
        group=spec["group"], versions=[v["name"] for v in served], plural=names["plural"],
        singular=names.get("singular") or names["kind"].lower(), kind=names["kind"],
        namespaced=spec.get("scope", "Namespaced") == "Namespaced", status_subresource=status,
        short_names=list(names.get("shortNames") or []), custom=True, schemas=schemas,
        bookmark_meta_extra={}, allow_unconditional_update=False, delete_returns_object=True,
    )
