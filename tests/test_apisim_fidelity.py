"""Answers where the local endpoint once differed from kube-apiserver, checked on whichever API the run targets.

Each expected body was captured from a real kube-apiserver 1.24; with BURSTFLOW_E2E_KUBECONFIG the same tests run
against a real cluster, so a drift of the local endpoint or of the expectation shows up in one of the two runs.
"""
from __future__ import annotations

import pytest

from burstflow.kube import CONFIGMAPS, LEASES, Invalid, KubeError

LEASE_V1 = "Lease in version \"v1\" cannot be handled as a Lease: json: cannot unmarshal"


def _lease(name: str, **spec) -> dict:
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": name},
            "spec": {"holderIdentity": "fidelity", **spec}}


@pytest.mark.parametrize("duration", [0, -1], ids=["zero", "negative"])
async def test_a_lease_duration_below_one_second_is_invalid(kube, namespace, duration):
    with pytest.raises(Invalid) as caught:
        await kube.create(LEASES, _lease("l", leaseDurationSeconds=duration), namespace=namespace)
    assert caught.value.status == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": f'Lease.coordination.k8s.io "l" is invalid: spec.leaseDurationSeconds: Invalid value: '
                   f"{duration}: must be greater than 0",
        "reason": "Invalid",
        "details": {"name": "l", "group": "coordination.k8s.io", "kind": "Lease", "causes": [
            {"reason": "FieldValueInvalid", "message": f"Invalid value: {duration}: must be greater than 0",
             "field": "spec.leaseDurationSeconds"}]},
        "code": 422}


@pytest.mark.parametrize("value, shown", [(0.6, "number 0.6"), (1.0, "number 1.0"), ("5", "string"),
                                          (2 ** 31, "number 2147483648")],
                         ids=["fraction", "float-one", "string", "int32-overflow"])
async def test_a_lease_duration_that_is_not_an_int32_does_not_decode(kube, namespace, value, shown):
    with pytest.raises(KubeError) as caught:
        await kube.create(LEASES, _lease("l", leaseDurationSeconds=value), namespace=namespace)
    assert caught.value.status == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": f"{LEASE_V1} {shown} into Go struct field LeaseSpec.spec.leaseDurationSeconds of type int32",
        "reason": "BadRequest", "code": 400}


async def test_negative_lease_transitions_are_invalid_and_a_whole_second_lease_is_stored(kube, namespace):
    with pytest.raises(Invalid) as caught:
        await kube.create(LEASES, _lease("l", leaseTransitions=-1), namespace=namespace)
    assert caught.value.status["details"]["causes"] == [
        {"reason": "FieldValueInvalid", "message": "Invalid value: -1: must be greater than or equal to 0",
         "field": "spec.leaseTransitions"}]
    stored = await kube.create(LEASES, _lease("l", leaseDurationSeconds=1), namespace=namespace)
    assert stored["spec"]["leaseDurationSeconds"] == 1


@pytest.mark.parametrize("resource, body, message", [
    ("configmaps", {"metadata": {"name": "x", "namespace": "elsewhere"}},
     "the namespace of the provided object does not match the namespace sent on the request"),
    ("configmaps", {"metadata": {"name": "x", "labels": [1]}},
     'ConfigMap in version "v1" cannot be handled as a ConfigMap: json: cannot unmarshal array into Go struct field '
     "ObjectMeta.metadata.labels of type map[string]string"),
    ("configmaps", {"metadata": "x"},
     'ConfigMap in version "v1" cannot be handled as a ConfigMap: json: cannot unmarshal string into Go struct field '
     "ConfigMap.metadata of type v1.ObjectMeta"),
], ids=["namespace-mismatch", "labels-not-a-map", "metadata-not-an-object"])
async def test_a_body_the_server_cannot_take_is_a_bad_request_without_details(kube, namespace, resource, body,
                                                                              message):
    with pytest.raises(KubeError) as caught:
        await kube.create(CONFIGMAPS, {"apiVersion": "v1", "kind": "ConfigMap", **body}, namespace=namespace)
    assert caught.value.status == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                   "message": message, "reason": "BadRequest", "code": 400}
