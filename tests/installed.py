"""Pytest plugin: Burstflow as users get it, a wheel built from this tree and installed into a fresh virtualenv
outside the checkout, once per test session.

Fixture `installed_burstflow` (session): an `Installed` with the virtualenv's `burstflow` executable, its `python`,
and `workdir`, an empty directory outside the checkout to run them from. The wheel is built from a copy of exactly
what the Dockerfile copies (symlinks kept, as `COPY` keeps them), with pip's isolated build; it is installed
without its dependencies, which the virtualenv takes from the test environment's site-packages through a `.pth`
line (fast and offline; tests/test_dockerfile.py resolves the declared dependencies from the package index). Only
the project's own code and data come from the wheel, so anything the package forgets to ship fails here.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# What the Dockerfile's build stage copies (tests/test_dockerfile.py checks the two lists agree).
BUILD_INPUTS = ("pyproject.toml", "README.md", "burstflow", "webhook", "cron", "manifests/base/crds", "policies")
BUILD_TIMEOUT = 300


@dataclass(frozen=True)
class Installed:
    venv: Path
    wheel: Path
    workdir: Path

    @property
    def exe(self) -> Path:
        return self.venv / "bin" / "burstflow"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def run(self, *args: str, input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        """`burstflow *args` from the installed package, run in `workdir` (outside the checkout)."""
        return subprocess.run([str(self.exe), *args], capture_output=True, text=True, input=input,
                              timeout=timeout, cwd=self.workdir, env=clean_env())


def clean_env() -> dict[str, str]:
    """The environment minus what would point Python back at the checkout."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}


def copy_build_inputs(dest: Path) -> None:
    for name in BUILD_INPUTS:
        src, target = ROOT / name, dest / name
        if src.is_dir():
            shutil.copytree(src, target, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)


def _fail(what: str, result: subprocess.CompletedProcess) -> None:
    output = (result.stdout or "")[-3000:] + (result.stderr or "")[-3000:]
    if "Could not find a version that satisfies" in output or "Failed to establish a new connection" in output:
        pytest.skip(f"cannot build the wheel: the package index is unreachable ({what})")
    pytest.fail(f"{what} failed ({result.returncode}):\n{output}")


@pytest.fixture(scope="session")
def installed_burstflow(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("installed-burstflow")
    source, dist, env_dir, workdir = base / "src", base / "dist", base / "venv", base / "work"
    copy_build_inputs(source)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(dist),
                            str(source)], capture_output=True, text=True, timeout=BUILD_TIMEOUT, cwd=base)
    if built.returncode != 0:
        _fail("pip wheel", built)
    [wheel] = dist.glob("burstflow-*.whl")
    venv.EnvBuilder(with_pip=False, clear=True).create(env_dir)
    python = env_dir / "bin" / "python"
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
                                "--no-deps", "--no-index", str(wheel)],
                               capture_output=True, text=True, timeout=BUILD_TIMEOUT, cwd=base)
    if installed.returncode != 0:
        _fail("pip install of the wheel", installed)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # Dependencies from the test environment, after the virtualenv's own site-packages on sys.path.
    Path(site, "_burstflow_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    workdir.mkdir()
    return Installed(venv=env_dir, wheel=wheel, workdir=workdir)
