"""`burstflow` subcommands of the webhook service: `mutate` (offline), `policies validate`, `webhook serve`."""
from __future__ import annotations

import argparse
import difflib
import json
import sys
from collections.abc import Mapping
from typing import Any, TextIO

import yaml

OUTPUTS = ("yaml", "json", "patch", "diff")


def register(commands: Any) -> None:
    """Add this service's subcommands to the top-level parser."""
    mutate = commands.add_parser(
        "mutate", help="apply policies to a pod offline and print the result (no cluster needed)",
        description="Apply BurstProfiles / vci-profile / eci-profile ConfigMaps to a Pod manifest or an "
                    "AdmissionReview and print the mutated pod, the JSON patch or a diff. What each profile did is "
                    "printed to stderr.")
    mutate.add_argument("--policies", "-p", action="append", required=True, metavar="PATH",
                        help="policy file or directory (repeatable); Namespace objects there provide namespace labels")
    mutate.add_argument("input", metavar="INPUT",
                        help="Pod manifest, AdmissionReview or captured {path, headers, body} file (YAML or JSON); "
                             "'-' reads stdin")
    mutate.add_argument("-o", "--output", choices=OUTPUTS, default="yaml", help="what to print (default yaml)")
    mutate.add_argument("--namespace-label", action="append", default=[], metavar="KEY=VALUE",
                        help="a label of the pod's namespace (repeatable); replaces the labels from Namespace objects")
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
    try:
        from webhook.server import add_serve_arguments
    except ImportError as exc:
        serve.set_defaults(func=lambda args: _unavailable(exc))
    else:
        add_serve_arguments(serve)
        serve.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from webhook.server import serve_command

    return serve_command(args)


def _unavailable(exc: Exception) -> int:
    print(f"burstflow webhook serve: not available in this installation ({exc})", file=sys.stderr)
    return 1


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
    from webhook.loader import load
    from webhook.mutate import decide

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
    patch = decision.patch()
    _explain(decision, request, namespaces if namespaces is not None else policies.namespaces, stderr)
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
    from webhook.mutate import namespace_view

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
    for warning in decision.warnings:
        print(f"warning: {warning}", file=stream)
    if decision.draft is not None and not decision.patch():
        print("# no change", file=stream)


def validate_command(args: argparse.Namespace, *, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    from webhook.loader import load

    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    policies, errors = load(args.paths)
    for warning in policies.warnings:
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
