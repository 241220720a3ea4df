"""Mutating admission as kube-apiserver runs it: matching webhooks called over HTTPS in name order, JSON patches
applied, `reinvocationPolicy: IfNeeded` honoured once, failures handled per `failurePolicy`."""
from __future__ import annotations

import asyncio
import base64
import copy
import json
import ssl
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jsonpatch

from burstflow.clock import Clock
from burstflow.selectors import compile_selector

from .resources import ResourceType
from .status import REASONS, ApiError

USER_INFO = {"username": "admin", "uid": "admin", "groups": ["system:masters", "system:authenticated"]}
DEFAULT_TIMEOUT_SECONDS = 10  # admissionregistration/v1 default for timeoutSeconds


@dataclass
class Attributes:
    """One admission request's inputs; `name` is None for a create with generateName (no name exists yet)."""

    operation: str
    rt: ResourceType
    version: str
    namespace: str | None
    name: str | None
    obj: dict
    old: dict | None
    dry_run: bool
    options: dict
    namespace_labels: dict | None


@dataclass
class Outcome:
    obj: dict
    warnings: list[str] = field(default_factory=list)
    calls: int = 0


class CallFailed(Exception):
    """The webhook could not be called or answered nonsense; `failurePolicy` decides what that means."""


def _match_rule(rule: dict, a: Attributes) -> bool:
    def has(values: list | None, want: str) -> bool:
        return bool(values) and ("*" in values or want in values)

    resources = rule.get("resources") or []
    scope = rule.get("scope", "*")
    if scope == "Namespaced" and not a.rt.namespaced or scope == "Cluster" and a.rt.namespaced:
        return False
    return (has(rule.get("operations"), a.operation) and has(rule.get("apiGroups"), a.rt.group)
            and has(rule.get("apiVersions"), a.version)
            and ("*" in resources or "*/*" in resources or a.rt.plural in resources))


def webhook_applies(hook: dict, a: Attributes) -> bool:
    """Rules, namespaceSelector (namespaced objects and Namespaces) and objectSelector all must match."""
    if not any(_match_rule(r, a) for r in hook.get("rules") or []):
        return False
    labels_of = lambda o: ((o or {}).get("metadata") or {}).get("labels") or {}  # noqa: E731
    ns_selector = compile_selector(hook.get("namespaceSelector"))
    if a.rt.namespaced and not ns_selector.matches(a.namespace_labels):
        return False
    if a.rt.key == ("", "namespaces") and not ns_selector.matches(labels_of(a.obj)):
        return False
    obj_selector = compile_selector(hook.get("objectSelector"))
    return obj_selector.matches(labels_of(a.obj)) or (a.old is not None and obj_selector.matches(labels_of(a.old)))


class Dispatcher:
    """Calls webhooks; owns nothing but a cache of TLS contexts keyed by caBundle."""

    def __init__(self, *, session: aiohttp.ClientSession, clock: Clock) -> None:
        self._session = session
        self._clock = clock
        self._ssl: dict[str, ssl.SSLContext] = {}

    def _ssl_context(self, ca_bundle: str | None) -> ssl.SSLContext:
        key = ca_bundle or ""
        if key not in self._ssl:
            if ca_bundle:
                pem = base64.b64decode(ca_bundle).decode()
                self._ssl[key] = ssl.create_default_context(cadata=pem)
            else:
                self._ssl[key] = ssl.create_default_context()
        return self._ssl[key]

    def review(self, a: Attributes, obj: dict) -> dict:
        gvk = {"group": a.rt.group, "version": a.version, "kind": a.rt.kind}
        gvr = {"group": a.rt.group, "version": a.version, "resource": a.rt.plural}
        request: dict[str, Any] = {"uid": str(uuid.uuid4()), "kind": gvk, "resource": gvr,
                                   "requestKind": dict(gvk), "requestResource": dict(gvr)}
        if a.name:
            request["name"] = a.name
        if a.namespace:
            request["namespace"] = a.namespace
        request.update({"operation": a.operation, "userInfo": copy.deepcopy(USER_INFO), "object": obj,
                        "oldObject": a.old, "dryRun": a.dry_run, "options": a.options})
        return {"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": request}

    async def _post(self, url: str, body: bytes, ctx: ssl.SSLContext) -> tuple[int, bytes]:
        async with self._session.post(url, data=body, ssl=ctx, headers={
                "Content-Type": "application/json", "Accept": "application/json, */*"}) as resp:
            return resp.status, await resp.read()

    async def call(self, hook: dict, a: Attributes, obj: dict) -> tuple[dict, bool, list[str]]:
        """Call one webhook; returns (object, changed, warnings). Raises ApiError on denial, CallFailed else."""
        name = hook.get("name", "")
        cc = hook.get("clientConfig") or {}
        base = cc.get("url")
        if not base:
            raise CallFailed(f'failed calling webhook "{name}": clientConfig.url is required by this sim '
                             f'(clientConfig.service is not supported)')
        timeout = int(hook.get("timeoutSeconds") or DEFAULT_TIMEOUT_SECONDS)
        url = f"{base}{'&' if '?' in base else '?'}timeout={timeout}s"
        review = self.review(a, obj)
        uid = review["request"]["uid"]
        ctx = self._ssl_context(cc.get("caBundle"))
        post = asyncio.ensure_future(self._post(url, json.dumps(review).encode(), ctx))
        sleeper = asyncio.ensure_future(self._clock.sleep(timeout))
        try:
            await asyncio.wait({post, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
        if not post.done():
            post.cancel()
            raise CallFailed(f'failed calling webhook "{name}": failed to call webhook: Post "{url}": '
                             f'context deadline exceeded')
        try:
            status, raw = post.result()
        except (aiohttp.ClientError, OSError, ssl.SSLError) as exc:
            raise CallFailed(f'failed calling webhook "{name}": failed to call webhook: Post "{url}": {exc}')
        if status != 200:
            raise CallFailed(f'failed calling webhook "{name}": received invalid webhook response: '
                             f'unexpected HTTP status {status}')
        try:
            response = json.loads(raw)["response"]
            got_uid = response.get("uid")
        except (ValueError, KeyError, TypeError, AttributeError):
            raise CallFailed(f'failed calling webhook "{name}": received invalid webhook response: '
                             f'not an AdmissionReview with a response')
        if got_uid != uid:
            raise CallFailed(f'failed calling webhook "{name}": received invalid webhook response: '
                             f'expected response.uid="{uid}", got "{got_uid}"')
        warnings = [w for w in response.get("warnings") or [] if isinstance(w, str)]
        if not response.get("allowed"):
            st = response.get("status") or {}
            code = int(st.get("code") or 403)
            message = st.get("message")
            text = (f'admission webhook "{name}" denied the request: {message}' if message
                    else f'admission webhook "{name}" denied the request without explanation')
            raise ApiError(code, text, reason=st.get("reason") or REASONS.get(code, "Forbidden"))
        patch = response.get("patch")
        if not patch:
            return obj, False, warnings
        if response.get("patchType") != "JSONPatch":
            raise CallFailed(f'failed calling webhook "{name}": received invalid webhook response: '
                             f'unsupported patch type "{response.get("patchType")}"')
        try:
            ops = json.loads(base64.b64decode(patch))
            patched = jsonpatch.JsonPatch(ops).apply(copy.deepcopy(obj))
        except Exception as exc:  # any malformed patch is the webhook's failure, judged by failurePolicy
            raise CallFailed(f'failed calling webhook "{name}": received invalid webhook response: '
                             f'invalid patch: {exc}')
        return patched, patched != obj, warnings

    async def admit(self, configs: list[dict], a: Attributes) -> Outcome:
        """Run every matching webhook of `configs` (sorted by name) on `a.obj`; the result is the admitted object.

        A webhook that changes the object makes every earlier IfNeeded webhook due for one reinvocation, which
        runs after the first pass with a new request uid and the object as patched so far.
        """
        hooks = [h for c in sorted(configs, key=lambda c: c["metadata"]["name"]) for h in c.get("webhooks") or []]
        outcome = Outcome(obj=a.obj)
        previously: list[int] = []
        due: set[int] = set()
        for reinvoke in (False, True):
            if reinvoke and not due:
                break
            for i, hook in enumerate(hooks):
                if reinvoke and i not in due:
                    continue
                if not webhook_applies(hook, a):
                    continue
                if a.dry_run and hook.get("sideEffects") not in ("None", "NoneOnDryRun"):
                    raise ApiError(400, f'admission webhook "{hook.get("name")}" does not support dry run',
                                   details={})
                outcome.calls += 1
                try:
                    obj, changed, warnings = await self.call(hook, a, outcome.obj)
                except CallFailed as exc:
                    if hook.get("failurePolicy", "Fail") == "Ignore":
                        continue
                    raise ApiError(500, f"Internal error occurred: {exc}", details={"causes": [{"message": str(exc)}]})
                outcome.warnings += warnings
                if changed:
                    outcome.obj = obj
                    if not reinvoke:
                        due.update(previously)
                if not reinvoke and hook.get("reinvocationPolicy") == "IfNeeded":
                    previously.append(i)
        return outcome
