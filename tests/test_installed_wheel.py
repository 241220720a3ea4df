"""The installed package is the product: the wheel carries its data, and from a virtualenv outside the checkout
`burstflow policies validate`, `burstflow mutate` and `burstflow cron preview` give what the source tree gives.

The e2e suite (tests/e2e) runs its webhook and cron processes from the same installation.
"""
from __future__ import annotations

import io
import json
import subprocess
import zipfile
from pathlib import Path
from contextlib import redirect_stderr, redirect_stdout

from burstflow.cli import main as burstflow_in_tree
from tests.conftest import FIXTURES, POLICIES, ROOT
from tests.installed import clean_env

CRD_DIR = ROOT / "manifests" / "base" / "crds"
POLICY_FILES = sorted(POLICIES.glob("*.yaml"))
ARGO_POD = FIXTURES / "admission" / "pod-create-argo-workflow-pod.json"


def in_tree(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = burstflow_in_tree(list(argv))
    return code, out.getvalue(), err.getvalue()


def test_the_wheel_carries_the_crds_and_example_policies_as_files(installed_burstflow):
    with zipfile.ZipFile(installed_burstflow.wheel) as wheel:
        names = set(wheel.namelist())
        for crd in sorted(CRD_DIR.glob("*.yaml")):
            assert wheel.read(f"burstflow/crds/{crd.name}") == crd.read_bytes(), crd.name
        for example in POLICY_FILES:
            assert wheel.read(f"burstflow/examples/{example.name}") == example.read_bytes(), example.name
    assert "burstflow/demo_data/argo-workflow-pod-review.json" in names
    assert not [name for name in names if name.startswith(("manifests/", "policies/", "tests/"))]


# Run inside the installed interpreter: `burstflow`'s entry point on each policy file, one process for all of them
# (a process start costs seconds here); the executable itself is exercised by the tests below and by tests/e2e.
EVERY_FILE = """
import contextlib, io, json, sys
import burstflow, burstflow.webhook as webhook, burstflow.cron as cron
from burstflow import data
from burstflow.cli import main
def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return [code, out.getvalue(), err.getvalue()]
pod, files = sys.argv[1], sys.argv[2:]
print(json.dumps({
    "where": [burstflow.__file__, webhook.__file__, cron.__file__, str(data.path("crds")), str(data.path("examples"))],
    "validate": {f: run("policies", "validate", f) for f in files},
    "mutate": {f: run("mutate", "--policies", f, pod, "-o", "json") for f in files},
}))
"""


def test_every_policy_file_validates_and_mutates_as_in_the_source_tree(installed_burstflow):
    files = [str(p) for p in POLICY_FILES] + [str(POLICIES)]
    result = subprocess.run([str(installed_burstflow.python), "-c", EVERY_FILE, str(ARGO_POD), *files],
                            capture_output=True, text=True, cwd=installed_burstflow.workdir, timeout=300,
                            env=clean_env())
    assert result.returncode == 0, result.stderr
    answers = json.loads(result.stdout)
    # The code and the data it read came from the virtualenv, not from the checkout.
    assert all(path.startswith(str(installed_burstflow.venv)) for path in answers["where"]), answers["where"]
    # One top-level package: the services are inside burstflow/, nothing named webhook or cron beside it.
    site = Path(answers["where"][0]).parent.parent
    assert not (site / "webhook").exists() and not (site / "cron").exists(), sorted(p.name for p in site.iterdir())
    for path in files:
        assert answers["validate"][path] == list(in_tree("policies", "validate", path)), path
        assert answers["validate"][path][0] == 0, answers["validate"][path]
        assert answers["mutate"][path] == list(in_tree("mutate", "--policies", path, str(ARGO_POD), "-o", "json")), path
        assert answers["mutate"][path][0] == 0, answers["mutate"][path]


def test_the_burstflow_executable_validates_mutates_and_previews(installed_burstflow):
    validated = installed_burstflow.run("policies", "validate", str(POLICIES))
    assert (validated.returncode, validated.stdout) == in_tree("policies", "validate", str(POLICIES))[:2]
    mutated = installed_burstflow.run("mutate", "--policies", str(POLICIES), str(ARGO_POD), "-o", "patch")
    assert mutated.returncode == 0, mutated.stderr
    assert mutated.stdout == in_tree("mutate", "--policies", str(POLICIES), str(ARGO_POD), "-o", "patch")[1]
    assert "/spec/securityContext/seccompProfile" in mutated.stdout
    args = ("cron", "preview", str(POLICIES / "cronworkflow-seed.yaml"), "--from", "2026-01-05T09:58:00Z", "-n", "4")
    previewed = installed_burstflow.run(*args)
    assert (previewed.returncode, previewed.stdout) == in_tree(*args)[:2]
    assert previewed.returncode == 0, previewed.stderr


def test_a_missing_data_file_is_one_line_naming_it(installed_burstflow):
    crd = installed_burstflow.venv.glob("lib/python*/site-packages/burstflow/crds/burstprofiles.burstflow.io.yaml")
    [crd] = list(crd)
    hidden = crd.with_name(crd.name + ".hidden")
    crd.rename(hidden)
    try:
        broken = installed_burstflow.run("mutate", "--policies", str(POLICIES), str(ARGO_POD))
    finally:
        hidden.rename(crd)
    assert broken.returncode == 1 and broken.stdout == ""
    assert broken.stderr.count("\n") == 1 and "Traceback" not in broken.stderr, broken.stderr
    assert broken.stderr.startswith("burstflow: error: package data file missing: ") and str(crd) in broken.stderr
