"""The files Burstflow reads at run time, shipped inside the package and read through importlib.resources.

`crds/` holds the CustomResourceDefinitions (the BurstProfile schema the webhook validates profiles against, and
what the demos install) and `examples/` the example policies of the README and the demos. In the repository both
are symlinks to their one source (manifests/base/crds/ and policies/); building the wheel copies the files in.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

PACKAGE = "burstflow"
CRDS = "crds"
EXAMPLES = "examples"


class MissingDataFile(RuntimeError):
    """A file that should ship inside the package is not there: a broken or partial install, never bad input."""

    def __init__(self, where: str) -> None:
        self.where = where
        super().__init__(f"package data file missing: {where} (the burstflow installation is incomplete; "
                         "reinstall the package)")


def path(*parts: str) -> Path:
    """The file (or directory) `parts` below the package, as a filesystem path; MissingDataFile when absent.

    pip installs wheels unpacked, so package data is always a real path; a zipped install is refused the same way.
    """
    found = resources.files(PACKAGE).joinpath(*parts)
    where = str(found)
    if not isinstance(found, Path) or not found.exists():
        raise MissingDataFile(where)
    return found


def read_text(*parts: str) -> str:
    """The text of a packaged file (UTF-8); MissingDataFile naming it when absent."""
    return path(*parts).read_text(encoding="utf-8")


def crd_text(name: str) -> str:
    """A CustomResourceDefinition shipped with the package, e.g. `crd_text("burstprofiles.burstflow.io.yaml")`."""
    return read_text(CRDS, name)


def example(name: str) -> Path:
    """An example policy file shipped with the package (the files of the repository's policies/)."""
    return path(EXAMPLES, name)


REQUIRED = (
    (CRDS, "burstprofiles.burstflow.io.yaml"),
    (CRDS, "resourcepolicies.burstflow.io.yaml"),
    (CRDS, "cronworkflows.burstflow.io.yaml"),
)


def require() -> None:
    """Fail early, with one line naming the file, when a file every service needs is missing."""
    for parts in REQUIRED:
        path(*parts)
