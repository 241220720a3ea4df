"""Shared pytest fixtures: where the ground-truth fixtures live, and the Kubernetes API fixtures (tests/kubefixtures)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# ../shared beside the project root (CI clones main with shared/ beside it); BURSTFLOW_SHARED overrides.
SHARED = Path(os.environ.get("BURSTFLOW_SHARED", ROOT.parent / "shared"))
FIXTURES = SHARED / "fixtures"
POLICIES = ROOT / "policies"

pytest_plugins = ["tests.kubefixtures", "tests.installed"]


def load_admission(name: str) -> dict:
    """An AdmissionReview fixture file: {"path", "headers", "body"}."""
    return json.loads((FIXTURES / "admission" / name).read_text())


def load_api(name: str):
    path = FIXTURES / "api" / name
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return json.loads(path.read_text())


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"ground-truth fixtures not found at {FIXTURES} (set BURSTFLOW_SHARED)")
    return FIXTURES
