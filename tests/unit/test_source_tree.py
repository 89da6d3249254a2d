"""A source tree whose native core is not built, first on sys.path (as the
current directory is for ``python -c`` or ``python -m``), shadows the
installed package: importing it says so, and how to fix it, instead of
a puzzling circular-import error."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support import project_file

# The embeddable Windows CPython (the Windows lane's) puts no current
# directory on sys.path, not even for `python -m`: its ._pth file fixes
# sys.path.
NO_CURRENT_DIRECTORY = "this interpreter puts no current directory on sys.path for -m"


def test_an_unbuilt_source_tree_says_what_happened(tmp_path: Path) -> None:
    source = project_file("wfpredirect/__init__.py").parent
    tree = tmp_path / "checkout" / "wfpredirect"
    shutil.copytree(
        source, tree, ignore=shutil.ignore_patterns("_core*.so", "_core*.pyd", "__pycache__")
    )
    # The tree first on sys.path, as the current directory is for `python
    # -c` (said explicitly: an embeddable Windows Python adds no directory).
    program = f"import sys; sys.path.insert(0, {str(tree.parent)!r}); import wfpredirect"
    result = subprocess.run(
        [sys.executable, "-c", program],
        cwd=tree.parent,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert (result.returncode, result.stderr.splitlines()[-1]) == (
        1,
        f"ImportError: wfpredirect: {tree.resolve()} is a source tree whose native core "
        "(_core) is not built, and it shadows the installed package (it comes first on "
        "sys.path: the current directory, or PYTHONPATH). Run from another directory, or "
        "build the core in this tree: python -m pip install -e .",
    )


def test_running_an_unbuilt_source_tree_says_it_without_a_traceback(tmp_path: Path) -> None:
    """`python -m wfpredirect` in such a checkout: the message alone, exit 1."""
    environment = {"PATH": "/usr/bin:/bin", "PYTHONSAFEPATH": ""}
    probe = tmp_path / "probe"
    probe.mkdir()
    module = "current_directory_probe"
    (probe / module).with_suffix(".py").write_text("")
    probed = subprocess.run(
        [sys.executable, "-m", module],
        cwd=probe,
        capture_output=True,
        check=False,
        timeout=60,
        env=environment,
    )
    if probed.returncode != 0:
        pytest.skip(NO_CURRENT_DIRECTORY)
    source = project_file("wfpredirect/__init__.py").parent
    tree = tmp_path / "checkout" / "wfpredirect"
    shutil.copytree(
        source, tree, ignore=shutil.ignore_patterns("_core*.so", "_core*.pyd", "__pycache__")
    )
    result = subprocess.run(
        [sys.executable, "-m", "wfpredirect", "doctor"],
        cwd=tree.parent,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env=environment,
    )
    assert (result.returncode, result.stdout, result.stderr) == (
        1,
        "",
        f"wfpredirect: {tree.resolve()} is a source tree whose native core "
        "(_core) is not built, and it shadows the installed package (it comes first on "
        "sys.path: the current directory, or PYTHONPATH). Run from another directory, or "
        "build the core in this tree: python -m pip install -e .\n",
    )
