"""The import contract of docs/development/architecture.md, checked on the source tree.

    composition root   burstflow.cli, burstflow.demo.*, burstflow.__main__   may import anything below
    services           burstflow.webhook.*  |  burstflow.cron.*              import the base and themselves
    local endpoint     burstflow.apisim.*                                    imports the base and itself
    base               every other burstflow.* module                        imports only the base

Services never import each other, the local endpoint or the root; nothing imports `webhook` or `cron` as top-level
packages (the distribution installs only `burstflow`); below the root no function-local import of a Burstflow
module hides a cycle; and the module-level import graph has no cycle.
"""
from __future__ import annotations

import ast
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "burstflow"
ROOT_LAYER = ("burstflow.cli", "burstflow.demo", "burstflow.__main__")
SERVICES = ("burstflow.webhook", "burstflow.cron")
ENDPOINT = "burstflow.apisim"


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the imported burstflow module (or a top-level name outside burstflow)
    line: int
    local: bool  # inside a function body
    type_only: bool  # under `if TYPE_CHECKING:`


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def layer(module: str) -> str:
    if any(_within(module, p) for p in ROOT_LAYER):
        return "root"
    for service in SERVICES:
        if _within(module, service):
            return service.rsplit(".", 1)[1]
    if _within(module, ENDPOINT):
        return "apisim"
    return "base"


ALLOWED = {
    "base": {"base"},
    "webhook": {"base", "webhook"},
    "cron": {"base", "cron"},
    "apisim": {"base", "apisim"},
    "root": {"base", "webhook", "cron", "apisim", "root"},
}


def modules(package: Path) -> dict[str, Path]:
    """Module name -> file, for every .py below `package` (symlinked folders followed, as the wheel does)."""
    found: dict[str, Path] = {}
    paths = [Path(folder) / name for folder, dirs, names in os.walk(package, followlinks=True)
             if "__pycache__" not in folder for name in names if name.endswith(".py")]
    for path in sorted(paths):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(module: str, path: Path, known: dict[str, Path]) -> Iterator[Import]:
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"

    def visit(node: ast.AST, local: bool, type_only: bool) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            child_local = local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            child_type_only = type_only or (
                isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield Import(module, alias.name, child.lineno, local, type_only)
            elif isinstance(child, ast.ImportFrom):
                target = _resolve(module, is_package, child)
                for alias in child.names:  # `from burstflow.webhook import mutate` imports a module
                    sub = f"{target}.{alias.name}"
                    yield Import(module, sub if sub in known else target, child.lineno, local, type_only)
            yield from visit(child, child_local, child_type_only)

    yield from visit(tree, False, False)


def violations(package: Path) -> list[str]:
    known = modules(package)
    found: list[str] = []
    graph: dict[str, set[str]] = {name: set() for name in known}
    for module, path in known.items():
        for imp in imports(module, path, known):
            top = imp.target.split(".")[0]
            where = f"{path.relative_to(package.parent)}:{imp.line}"
            if top in ("webhook", "cron"):
                found.append(f"{where}: imports the top-level package {imp.target!r}; use burstflow.{imp.target}")
                continue
            if top != "burstflow":
                continue
            source, target = layer(module), layer(imp.target)
            if target not in ALLOWED[source]:
                found.append(f"{where}: {module} ({source}) may not import {imp.target} ({target})")
            if imp.local and source != "root":
                found.append(f"{where}: function-local import of {imp.target} in {module}; import it at the top")
            if not imp.local and not imp.type_only and imp.target in known and imp.target != module:
                graph[module].add(imp.target)
    found.extend(f"import cycle: {' -> '.join(cycle)}" for cycle in _cycles(graph))
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                out.append(sorted(component) + [min(component)])

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return out


def test_the_source_tree_keeps_the_import_contract():
    assert modules(PACKAGE), "no modules found under burstflow/"
    assert "burstflow.webhook.mutate" in modules(PACKAGE) and "burstflow.cron.engine" in modules(PACKAGE)
    problems = violations(PACKAGE)
    assert not problems, "import contract broken (docs/development/architecture.md):\n" + "\n".join(problems)


def test_tests_and_benchmarks_import_the_services_through_burstflow():
    found = []
    for path in [*sorted((ROOT / "tests").rglob("*.py")), *sorted((ROOT / "benchmarks").rglob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            found += [f"{path.relative_to(ROOT)}:{node.lineno}: {n}" for n in names
                      if n.split(".")[0] in ("webhook", "cron")]
    assert not found, "\n".join(found)


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / "burstflow" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path / "burstflow"


@pytest.mark.parametrize("files, expected", [
    ({"clock.py": "from burstflow.webhook import mutate\n", "webhook/__init__.py": "", "webhook/mutate.py": ""},
     "burstflow.clock (base) may not import burstflow.webhook.mutate (webhook)"),
    ({"webhook/__init__.py": "", "webhook/a.py": "from burstflow.cron.engine import x\n",
      "cron/__init__.py": "", "cron/engine.py": ""},
     "burstflow.webhook.a (webhook) may not import burstflow.cron.engine (cron)"),
    ({"cron/__init__.py": "", "cron/a.py": "import burstflow.apisim.server\n",
      "apisim/__init__.py": "", "apisim/server.py": ""},
     "burstflow.cron.a (cron) may not import burstflow.apisim.server (apisim)"),
    ({"apisim/__init__.py": "", "apisim/a.py": "from ..cli import main\n", "cli.py": ""},
     "burstflow.apisim.a (apisim) may not import burstflow.cli (root)"),
    ({"kube.py": "def f():\n    from burstflow import clock\n", "clock.py": ""},
     "function-local import of burstflow.clock in burstflow.kube"),
    ({"webhook/__init__.py": "", "webhook/a.py": "from . import b\n", "webhook/b.py": "from .a import x\n"},
     "import cycle: burstflow.webhook.a -> burstflow.webhook.b -> burstflow.webhook.a"),
    ({"cron/__init__.py": "", "cron/a.py": "import cron.engine\n"},
     "imports the top-level package 'cron.engine'"),
])
def test_the_checker_catches_each_kind_of_break(tmp_path, files, expected):
    problems = violations(_tree(tmp_path, {"__init__.py": "", **files}))
    assert any(expected in problem for problem in problems), problems


def test_the_checker_allows_what_the_contract_allows(tmp_path):
    package = _tree(tmp_path, {
        "__init__.py": "", "clock.py": "", "kube.py": "from burstflow import clock\n",
        "webhook/__init__.py": "", "webhook/a.py": "from burstflow.kube import x\nfrom . import b\n", "webhook/b.py": "",
        "apisim/__init__.py": "", "apisim/s.py": "from burstflow import clock\n",
        "cli.py": "from burstflow.webhook import a\nfrom burstflow.apisim import s\n",
        "demo/__init__.py": "def run():\n    from burstflow.cron import x\n", "cron/__init__.py": "",
        "cron/x.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from burstflow.cron import y\n",
        "cron/y.py": "from burstflow.cron import x\n",
    })
    assert violations(package) == []
