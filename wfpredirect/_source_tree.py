"""What ``import wfpredirect`` says when it finds a source tree whose native
core is not built: the checkout comes first on ``sys.path`` (it is the
current directory, or on PYTHONPATH) and shadows the installed package."""

from __future__ import annotations

import sys
from pathlib import Path

#: The development setup, which builds _core in the source tree (README).
DEVELOPMENT_SETUP = "python -m pip install -e ."


def core_import_error(error: ImportError) -> ImportError:
    """The error to raise for `error`, which importing _core raised: the
    same error when a built _core is there (it failed to load), else one
    that says what happened and how to fix it."""
    folder = Path(__file__).resolve().parent
    if any(path.suffix in (".so", ".pyd") for path in folder.glob("_core*")):
        return error
    return ImportError(
        f"wfpredirect: {folder} is a source tree whose native core (_core) is not built, "
        "and it shadows the installed package (it comes first on sys.path: the current "
        "directory, or PYTHONPATH). Run from another directory, or build the core in this "
        f"tree: {DEVELOPMENT_SETUP}"
    )


def running_this_package() -> bool:
    """Whether this import is ``python -m wfpredirect`` finding the package
    to run (runpy leaves ``sys.argv[0]`` as ``-m`` until it runs the module)."""
    return sys.argv[:1] == ["-m"]
