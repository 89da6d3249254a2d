"""Shared test helpers: the strictness rule for tests that need a tool.

With WFPREDIRECT_STRICT=1 (exported by .ci/run) a test whose tool is missing
fails; without it (a laptop, a GitHub runner, a cibuildwheel container) it
skips with the reason.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

STRICT = os.environ.get("WFPREDIRECT_STRICT") == "1"

# What the sanitizer pass of .ci/run sets for every Python process: libasan
# preloaded into the uninstrumented interpreter, and the sanitizers' options.
SANITIZER_VARIABLES = ("LD_PRELOAD", "PYTHONMALLOC", "ASAN_OPTIONS", "UBSAN_OPTIONS")


def sanitizer_environment() -> dict[str, str]:
    """The sanitizer settings in effect, for a Python subprocess given an
    environment of its own (empty outside the sanitizer pass)."""
    return {name: os.environ[name] for name in SANITIZER_VARIABLES if name in os.environ}


# The working directory for Python subprocesses: `python -c` puts its working
# directory first on sys.path, and in a checkout that would import the
# unbuilt source tree instead of the installed package.
NEUTRAL_DIRECTORY = "/"


#: For tests of the netfilter backend: they need Linux itself, not a tool.
linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="tests the netfilter backend, which is Linux's"
)


def unavailable(reason: str) -> None:
    """Fail under WFPREDIRECT_STRICT=1, otherwise skip, with the reason."""
    if STRICT:
        pytest.fail(f"WFPREDIRECT_STRICT=1 and {reason}", pytrace=False)
    pytest.skip(reason)


def require_tool(name: str) -> str:
    """The path of command `name`, or fail/skip saying it is missing."""
    path = shutil.which(name)
    if path is None:
        unavailable(f"the command {name!r} is not installed")
    assert path is not None
    return path


def require_root() -> None:
    if os.geteuid() != 0:  # only reached on Linux (linux_only)
        unavailable("this test needs root (network namespaces, nft)")


def project_file(name: str) -> Path:
    """A file of the project's checkout (or unpacked sdist) that is not part
    of the tests, such as README.md: in WFPREDIRECT_PROJECT when that is set
    (the Windows lane runs a copy of the tests elsewhere), else in the folder
    above tests/. Missing, it fails under WFPREDIRECT_STRICT=1 and skips
    otherwise, rather than reading whatever lies above a copied tests folder."""
    configured = os.environ.get("WFPREDIRECT_PROJECT")
    project = Path(configured) if configured else Path(__file__).resolve().parents[1]
    path = project / name
    if not (project / "pyproject.toml").is_file() or not path.is_file():
        unavailable(
            f"{name} is the project's, and {project} is not the project: "
            "run the tests from a checkout, or set WFPREDIRECT_PROJECT to one"
        )
    return path
