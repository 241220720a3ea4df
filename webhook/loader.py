"""Policies from YAML/JSON files and directories (or objects listed from a cluster) -> one compiled PolicySet.

The loader never raises for bad policies: it returns `(PolicySet, errors)` where each error names the file, the
object and the field path, so a reload can keep the last good set and say why.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from burstflow import cel
from burstflow.webhook.configmaps import compile_configmap, is_profile_configmap
from burstflow.webhook.policy import API_VERSION, KIND, PolicyError, PolicyErrors, PolicySet, Profile, new_environment, \
    profile_errors, sort_profiles
from burstflow.webhook.pools.model import ResourcePolicyError, compile_resource_policy

SUFFIXES = (".yaml", ".yml", ".json")
# Kinds that live beside policies in policies/ but belong to other components: skipped without a warning.
OTHER_COMPONENTS = {"CronWorkflow", "Workflow", "WorkflowTemplate", "ClusterWorkflowTemplate"}

# A compiler for another kind (e.g. the resource pools' ResourcePolicy): (object, env=, source=) -> compiled value;
# raises PolicyError. Results are collected in PolicySet.compiled[kind].
Compiler = Callable[..., Any]


@dataclass(frozen=True)
class Document:
    """One Kubernetes object and where it came from ("policies/vci.yaml#2" = third document of that file)."""

    source: str
    obj: Any


def default_compilers() -> dict[str, Compiler]:
    """Compilers for kinds owned by other parts of the webhook; the one place to register them."""
    def resource_policy(obj: Mapping[str, Any], *, env: cel.Environment, source: str) -> Any:
        metadata = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
        ref = f"ResourcePolicy/{metadata.get('namespace', '')}/{metadata.get('name', '<unnamed>')}"
        try:
            return compile_resource_policy(obj, source="")
        except ResourcePolicyError as exc:
            raise PolicyErrors([PolicyError(problem, obj=ref, source=source) for problem in exc.errors]) from None

    return {"ResourcePolicy": resource_policy}


def read_documents(paths: Iterable[str | Path]) -> tuple[list[Document], list[PolicyError]]:
    """Every document in the files (directories are walked recursively, *.yaml/*.yml/*.json, sorted), with
    `kind: List` expanded. Unreadable files and YAML syntax errors become errors naming the file (and line)."""
    documents: list[Document] = []
    errors: list[PolicyError] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES)
        elif path.exists():
            files = [path]
        else:
            errors.append(PolicyError("no such file or directory", source=str(path)))
            continue
        for file in files:
            try:
                text = file.read_text()
                loaded = list(yaml.safe_load_all(text))
            except (OSError, UnicodeDecodeError) as exc:
                errors.append(PolicyError(f"cannot read: {exc}", source=str(file)))
                continue
            except yaml.YAMLError as exc:
                mark = getattr(exc, "problem_mark", None)
                where = f"line {mark.line + 1}: " if mark else ""
                errors.append(PolicyError(f"{where}not valid YAML: {getattr(exc, 'problem', exc)}", source=str(file)))
                continue
            for index, obj in enumerate(loaded):
                if obj is None:
                    continue
                source = str(file) if len(loaded) == 1 else f"{file}#{index}"
                if isinstance(obj, Mapping) and obj.get("kind") == "List" and isinstance(obj.get("items"), list):
                    documents.extend(Document(f"{source}.items[{i}]", item) for i, item in enumerate(obj["items"]))
                else:
                    documents.append(Document(source, obj))
    return documents, errors


def compile_objects(documents: Iterable[Document], *, compilers: Mapping[str, Compiler] | None = None,
                    env: cel.Environment | None = None) -> tuple[PolicySet, list[PolicyError]]:
    """Compile BurstProfiles, vci-profile/eci-profile ConfigMaps, Namespaces (their labels) and the kinds in
    `compilers`; a bad object is left out of the set and reported, the others still compile."""
    env = env or new_environment()
    compilers = default_compilers() if compilers is None else compilers
    profiles: list[Profile] = []
    namespaces: dict[str, Mapping[str, Any]] = {}
    compiled: dict[str, list[Any]] = {}
    warnings: list[str] = []
    errors: list[PolicyError] = []
    names: dict[str, str] = {}
    for document in documents:
        obj, source = document.obj, document.source
        if not isinstance(obj, Mapping):
            errors.append(PolicyError(f"expected a Kubernetes object, not {type(obj).__name__}", source=source))
            continue
        kind = obj.get("kind")
        metadata = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
        if not kind or not obj.get("apiVersion"):
            errors.append(PolicyError("apiVersion and kind are required", path="kind" if not kind else "apiVersion",
                                      source=source))
            continue
        if kind == KIND:
            result = profile_errors(obj, env, source=source)
            if isinstance(result, Profile):
                if result.name in names:
                    errors.append(PolicyError(f"duplicate BurstProfile (also in {names[result.name]})",
                                              path="metadata.name", obj=f"{KIND}/{result.name}", source=source))
                    continue
                names[result.name] = source
                profiles.append(result)
            else:
                errors.extend(result)
        elif kind == "ConfigMap" and is_profile_configmap(obj):
            try:
                found, notes = compile_configmap(obj, env, source=source)
            except PolicyError as exc:
                errors.append(exc)
                continue
            profiles.extend(found)
            warnings.extend(notes)
        elif kind == "Namespace" and obj.get("apiVersion") == "v1":
            if metadata.get("name"):
                namespaces[metadata["name"]] = obj
            else:
                errors.append(PolicyError("is required", path="metadata.name", obj="Namespace", source=source))
        elif kind in compilers:
            try:
                compiled.setdefault(kind, []).append(compilers[kind](obj, env=env, source=source))
            except PolicyErrors as exc:
                errors.extend(exc.errors)
            except PolicyError as exc:
                errors.append(exc.located(obj=f"{kind}/{metadata.get('name', '<unnamed>')}", source=source))
        elif kind in OTHER_COMPONENTS:
            continue
        else:
            what = f"{kind}/{metadata.get('name', '<unnamed>')}"
            if kind == "ConfigMap":
                warnings.append(f"{source}: ConfigMap/{metadata.get('namespace', '')}/{metadata.get('name', '')}: "
                                "ignored (only kube-system/vci-profile and kube-system/eci-profile are read)")
            elif kind == KIND:
                errors.append(PolicyError(f"unsupported apiVersion {obj.get('apiVersion')!r} (expected {API_VERSION})",
                                          path="apiVersion", obj=what, source=source))
            else:
                warnings.append(f"{source}: {what}: ignored (kind {kind} is not a webhook policy)")
    policy_set = PolicySet(
        profiles=sort_profiles(profiles),
        namespaces=namespaces,
        compiled={kind: tuple(items) for kind, items in compiled.items()},
        env=env,
        warnings=tuple(warnings),
    )
    return policy_set, errors


def load(paths: Iterable[str | Path], *, compilers: Mapping[str, Compiler] | None = None,
         env: cel.Environment | None = None) -> tuple[PolicySet, list[PolicyError]]:
    """Read and compile everything under `paths` (files or directories)."""
    documents, errors = read_documents(paths)
    policy_set, compile_errors = compile_objects(documents, compilers=compilers, env=env)
    return policy_set, errors + compile_errors
