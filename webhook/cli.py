"""`burstflow` subcommands of the webhook service: `mutate` (offline, with dry-run pool placement), `policies validate`,
`webhook serve`."""
from __future__ import annotations

import argparse
import asyncio
import difflib
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import yaml

from burstflow.webhook.app import serve_command
from burstflow.webhook.loader import load
from burstflow.webhook.mutate import decide, namespace_view
from burstflow.webhook.pools.model import RESERVATION_ANNOTATION, ResourcePolicy
from burstflow.webhook.pools.placer import PoolPlacer
from burstflow.webhook.pools.placement import bypassed_policies, effective_maxes, enforce_overlaps, select_policy
from burstflow.webhook.pools.usage import Usage
from burstflow.webhook.providers import VCI_BURST
from burstflow.webhook.settings import WebhookSettings

OUTPUTS = ("yaml", "json", "patch", "diff")
RESOURCE_POLICY = "ResourcePolicy"
# Exit status of `mutate` when the webhook would refuse the pod (a ResourcePolicy with every pool full, whenAllFull:
# Deny); 1 is taken by invalid policies and 2 by bad input.
EXIT_DENIED = 3


def register(commands: Any) -> None:
    """Add this service's subcommands to the top-level parser."""
    mutate = commands.add_parser(
        "mutate", help="apply policies to a pod offline and print the result (no cluster needed)",
        description="Apply BurstProfiles / vci-profile / eci-profile ConfigMaps to a Pod manifest or an "
                    "AdmissionReview, then place it in a pool of the ResourcePolicy that selects it (a dry run "
                    "against --pool-usage counts: nothing is reserved, no cluster is contacted), and print the "
                    "mutated pod, the JSON patch or a diff. What each profile and the pool step did is printed to "
                    "stderr. Exit status: 1 invalid policies, 2 bad input, 3 the webhook would deny the pod.")
    mutate.add_argument("--policies", "-p", action="append", required=True, metavar="PATH",
                        help="policy file or directory (repeatable); Namespace objects there provide namespace labels")
    mutate.add_argument("input", metavar="INPUT",
                        help="Pod manifest, AdmissionReview or captured {path, headers, body} file (YAML or JSON); "
                             "'-' reads stdin")
    mutate.add_argument("-o", "--output", choices=OUTPUTS, default="yaml", help="what to print (default yaml)")
    mutate.add_argument("--namespace-label", action="append", default=[], metavar="KEY=VALUE",
                        help="a label of the pod's namespace (repeatable); replaces the labels from Namespace objects")
    mutate.add_argument("--pool-usage", action="append", default=[], metavar="SUBSET=N[,SUBSET=N...]",
                        help="pods assumed to be in each pool of the ResourcePolicy that selects the pod (repeatable; "
                             "pools not named are empty). Placement is a dry run: nothing is reserved, no API call")
    mutate.set_defaults(func=mutate_command)

    policies = commands.add_parser("policies", help="work with policy files")
    verbs = policies.add_subparsers(dest="policies_command", required=True, metavar="COMMAND")
    validate = verbs.add_parser("validate", help="compile every policy and report errors with file and field path",
                                description="Exit status 1 when any policy is invalid.")
    validate.add_argument("paths", nargs="+", metavar="PATH", help="policy files or directories")
    validate.set_defaults(func=validate_command)

    webhook = commands.add_parser("webhook", help="the admission webhook service")
    actions = webhook.add_subparsers(dest="webhook_command", required=True, metavar="COMMAND")
    serve = actions.add_parser("serve", help="run the HTTPS admission webhook")
    WebhookSettings.add_arguments(serve)
    serve.set_defaults(func=serve_command)


def read_input(text: str) -> dict[str, Any]:
    """An AdmissionReview `request` built from any accepted INPUT shape; raises ValueError with the reason.

    A bare Pod becomes a CREATE request in its own namespace (or "default").
    """
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise ValueError(f"not valid YAML or JSON: {exc}") from None
    if len(documents) != 1 or not isinstance(documents[0], Mapping):
        raise ValueError(f"expected exactly one object, found {len(documents)} documents")
    obj = documents[0]
    if "body" in obj and isinstance(obj["body"], Mapping) and "kind" not in obj:
        obj = obj["body"]
    if obj.get("kind") == "AdmissionReview":
        request = obj.get("request")
        if not isinstance(request, Mapping):
            raise ValueError("AdmissionReview has no request")
        return dict(request)
    if obj.get("kind") != "Pod":
        raise ValueError(f"expected a Pod or an AdmissionReview, not kind {obj.get('kind')!r}")
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
    return {"uid": "burstflow-mutate", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": metadata.get("namespace") or "default", "operation": "CREATE", "dryRun": True,
            "object": obj}


def _print_errors(errors: list[Any], stream: TextIO) -> None:
    for error in errors:
        print(f"error: {error}", file=stream)


def mutate_command(args: argparse.Namespace, *, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    policies, errors = load(args.policies)
    if errors:
        _print_errors(errors, stderr)
        print(f"burstflow mutate: {len(errors)} invalid polic{'y' if len(errors) == 1 else 'ies'}; fix them first "
              "(see `burstflow policies validate`)", file=stderr)
        return 1
    try:
        text = sys.stdin.read() if args.input == "-" else open(args.input, encoding="utf-8").read()
        request = read_input(text)
    except (OSError, ValueError) as exc:
        print(f"burstflow mutate: {args.input}: {exc}", file=stderr)
        return 2
    try:
        assumed = parse_pool_usage(args.pool_usage)
    except ValueError as exc:
        print(f"burstflow mutate: {exc}", file=stderr)
        return 2
    namespaces = None
    if args.namespace_label:
        labels = {}
        for item in args.namespace_label:
            key, sep, value = item.partition("=")
            if not sep or not key:
                print(f"burstflow mutate: --namespace-label {item!r}: expected KEY=VALUE", file=stderr)
                return 2
            labels[key] = value
        namespaces = {str(request.get("namespace") or ""): labels}
    decision = decide(request, policies=policies, namespaces=namespaces)
    if decision.outcome == "error":
        print(f"burstflow mutate: {decision.reason}", file=stderr)
        return 2
    placement = None
    resource_policies = policies.compiled.get(RESOURCE_POLICY, ())
    if decision.draft is not None and not decision.opted_out:
        try:
            placement = place_offline(decision.draft.pod, namespace=str(request.get("namespace") or ""),
                                      policies=resource_policies, assumed=assumed)
        except ValueError as exc:
            print(f"burstflow mutate: {exc}", file=stderr)
            return 2
    _explain(decision, request, namespaces if namespaces is not None else policies.namespaces, stderr)
    if placement is not None:
        _explain_placement(placement, stderr)
        if placement.denied is not None:
            return EXIT_DENIED
        decision.draft.pod = placement.pod
    elif decision.draft is not None and not decision.opted_out and resource_policies:
        namespace = str(request.get("namespace") or "")
        bypassed = bypassed_policies(decision.draft.pod, resource_policies, namespace)
        if bypassed:
            print(f"# pool: none ({VCI_BURST}: enforce wins over ResourcePolicy "
                  f"{', '.join(f'{namespace}/{name}' for name in bypassed)}: the pod goes to VCI, unplaced and "
                  "uncounted)", file=stderr)
        else:
            print(f"# pool: none (no ResourcePolicy in namespace {namespace!r} selects this pod)", file=stderr)
    if decision.draft is not None and not decision.patch():
        print("# no change", file=stderr)
    patch = decision.patch()
    original = request.get("object")
    mutated = decision.pod if decision.pod is not None else original
    if args.output == "yaml":
        stdout.write(yaml.safe_dump(mutated, sort_keys=False))
    elif args.output == "json":
        stdout.write(json.dumps(mutated, indent=2) + "\n")
    elif args.output == "patch":
        stdout.write(json.dumps(patch, indent=2) + "\n")
    else:
        before = yaml.safe_dump(original, sort_keys=False).splitlines(keepends=True)
        after = yaml.safe_dump(mutated, sort_keys=False).splitlines(keepends=True)
        stdout.writelines(difflib.unified_diff(before, after, "original", "mutated"))
    return 0


def _explain(decision: Any, request: Mapping[str, Any], namespaces: Any, stream: TextIO) -> None:
    namespace = str(request.get("namespace") or "")
    _, _, known = namespace_view(namespaces, namespace)
    if decision.draft is not None and not known:
        print(f"note: namespace {namespace!r} is unknown (no Namespace object in --policies and no "
              "--namespace-label): namespaceSelectors see no labels", file=stream)
    if decision.reason:
        print(f"# {decision.reason}", file=stream)
    if decision.applied:
        print(f"# profiles applied, in order: {', '.join(decision.applied)}", file=stream)
    for change in decision.changes:
        print(f"#   {change}", file=stream)
    if any(change.field == SECCOMP_FIELD for change in decision.changes):
        print(SECCOMP_NOTE, file=stream)
    for warning in decision.warnings:
        print(f"warning: {warning}", file=stream)


SECCOMP_FIELD = "spec.securityContext.seccompProfile.type"
# What the RuntimeDefault default is, said honestly (docs/concepts/burstprofile.md, "Seccomp"): Argo 3.6 sets it only on the pods it runs for
# itself (workflow/common/security_context.go: the agent and artifact-GC pods, and the executor containers of
# resource-template pods); every other workflow pod gets it from Burstflow.
SECCOMP_NOTE = ("# seccomp: RuntimeDefault here is Burstflow's default for every workflow pod a profile matches; "
                "Argo 3.6 itself sets it only on its agent, artifact-GC and resource-template pods. A pod opts out "
                "with its own seccompProfile (it always wins), a profile with `seccomp: Disabled`, or "
                "burstflow.io/skip: \"true\" (which skips every profile)")
DRY_RUN_NOTE = "# pool placement is a dry run: no reservation token, no API call; counts are the assumed usage"


def parse_pool_usage(values: list[str]) -> dict[str, int]:
    """`--pool-usage` values (each SUBSET=N[,SUBSET=N...]) as {subset: N}; raises ValueError naming the bad item."""
    usage: dict[str, int] = {}
    for value in values:
        for item in value.split(","):
            name, sep, count = (part.strip() for part in item.partition("="))
            if not sep or not name:
                raise ValueError(f"--pool-usage {item.strip()!r}: expected SUBSET=N (e.g. own-nodes=5)")
            if not count.isdecimal() or not count.isascii():
                raise ValueError(f"--pool-usage {item.strip()!r}: N must be a whole number >= 0, not {count!r}")
            if name in usage:
                raise ValueError(f"--pool-usage: subset {name!r} is given twice")
            usage[name] = int(count)
    return usage


class AssumedUsage(Usage):
    """Pool counts given on the command line instead of read from a ResourcePolicy's status; unnamed pools are
    empty and nothing is left unplaced."""

    def __init__(self, counts: Mapping[str, int]) -> None:
        super().__init__()
        self.counts = dict(counts)

    def count(self, bucket: str) -> int:
        return self.counts.get(bucket, 0)


class OfflineLedger:
    """The `Ledger` surface `PoolPlacer` uses for a dry run, answering from `AssumedUsage`; never reserves."""

    def __init__(self, counts: Mapping[str, int]) -> None:
        self.counts = counts

    async def snapshot(self, policy: ResourcePolicy, *, timeout: float) -> Usage:
        return AssumedUsage(self.counts)

    async def reserve(self, policy: ResourcePolicy, token: str, *, timeout: float) -> Any:
        raise RuntimeError("burstflow mutate never reserves a pool slot")


@dataclass(frozen=True)
class OfflinePlacement:
    """A `PoolPlacer` placement of a dry run, with the policy that decided it and the usage it was decided on."""

    placement: Any
    policy: ResourcePolicy
    counts: Mapping[str, int]

    @property
    def pod(self) -> dict[str, Any]:
        return self.placement.pod

    @property
    def denied(self) -> tuple[int, str] | None:
        return self.placement.denied

    def usage_summary(self) -> str:
        placed = [self.counts.get(subset.name, 0) for subset in self.policy.subsets]
        maxes = effective_maxes(self.policy, placed)
        return ", ".join(f"{subset.name} {placed[i]}/{'-' if maxes[i] is None else maxes[i]}"
                         for i, subset in enumerate(self.policy.subsets))


def place_offline(pod: Mapping[str, Any], *, namespace: str, policies: Sequence[ResourcePolicy],
                  assumed: Mapping[str, int]) -> OfflinePlacement | None:
    """Place `pod` as the webhook's dry-run admission would (`PoolPlacer`, `dry_run=True`), against `assumed` counts.

    None when no ResourcePolicy selects the pod. The reservation token the placer writes into a new pod is removed:
    nothing was reserved, so the output carries no token. Raises ValueError when `assumed` names a pool the
    deciding policy (or, when none selects the pod, every loaded policy) does not have.
    """
    policy, _ = select_policy(policies, pod, namespace)
    known = [s.name for s in policy.subsets] if policy is not None else [s.name for p in policies for s in p.subsets]
    for name in assumed:
        if name not in known:
            if policy is None:
                raise ValueError(f"--pool-usage {name}={assumed[name]}: no ResourcePolicy in --policies has a subset "
                                 f"{name!r}")
            raise ValueError(f"--pool-usage {name}={assumed[name]}: ResourcePolicy {policy.namespace}/{policy.name} "
                             f"(the one selecting this pod) has no subset {name!r}; its subsets: {', '.join(known)}")
    if policy is None:
        return None
    had_token = RESERVATION_ANNOTATION in ((pod.get("metadata") or {}).get("annotations") or {})
    placer = PoolPlacer(ledger=OfflineLedger(assumed))  # type: ignore[arg-type]
    placement = asyncio.run(placer.place(pod, namespace=namespace, policies=policies, dry_run=True))
    if not had_token and placement.denied is None:
        annotations = placement.pod.get("metadata", {}).get("annotations", {})
        annotations.pop(RESERVATION_ANNOTATION, None)
    return OfflinePlacement(placement, policy, assumed)


def _explain_placement(offline: OfflinePlacement, stream: TextIO) -> None:
    placement, policy = offline.placement, offline.policy
    where = f"ResourcePolicy {policy.namespace}/{policy.name}; usage assumed: {offline.usage_summary()}"
    if placement.denied is not None:
        code, message = placement.denied
        print(f"# pool: denied (HTTP {code}: {message}) ({where})", file=stream)
    elif placement.subset is not None:
        print(f"# pool: {placement.subset} ({where})", file=stream)
    else:
        print(f"# pool: none, left unplaced ({where})", file=stream)
    for warning in placement.warnings:
        print(f"warning: {warning}", file=stream)
    print(DRY_RUN_NOTE, file=stream)


def validate_command(args: argparse.Namespace, *, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    policies, errors = load(args.paths)
    for warning in policies.warnings:
        print(f"warning: {warning}", file=stderr)
    for warning in enforce_overlaps(profiles=policies.profiles, namespaces=policies.namespaces,
                                    resource_policies=policies.compiled.get(RESOURCE_POLICY, ())):
        print(f"warning: {warning}", file=stderr)
    _print_errors(errors, stderr)
    counts = ", ".join(f"{count} {kind}" for kind, count in policies.counts().items() if count)
    if errors:
        print(f"{len(errors)} error(s); valid: {counts or 'nothing'}", file=stderr)
        return 1
    print(f"ok: {counts or 'no policies found'}", file=stdout)
    for profile in policies.profiles:
        print(f"  {profile.priority:>5}  {profile.name}" + (f"  ({profile.provider})" if profile.provider else ""),
              file=stdout)
    return 0
