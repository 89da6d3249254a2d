"""The package's layers (docs/design.md, "Layers"): the library at the
package root, the command-line application in wfpredirect/cli/ above it,
imports running one way and never in a circle. The imports are read from
the source (tests/import_graph.py: module level and inside functions, not
``if TYPE_CHECKING:``), and importing the library in a fresh interpreter
loads nothing of the application."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from import_graph import (
    LIBRARY_ENTRIES,
    application_names,
    cycles,
    figures,
    imports,
    is_application,
    reached,
)
from support import NEUTRAL_DIRECTORY, project_file

#: A fresh interpreter imports the library's two entry points and lists the
#: package's modules it then holds.
LOADED = (
    "import sys, wfpredirect, wfpredirect.aio; "
    "print('\\n'.join(sorted(name for name in sys.modules if name.startswith('wfpredirect'))))"
)


def package() -> Path:
    return project_file("wfpredirect/__init__.py").parent


def loaded_by_the_library() -> list[str]:
    directory = NEUTRAL_DIRECTORY if sys.platform != "win32" else None
    command = [sys.executable, "-c", LOADED]
    output = subprocess.check_output(command, text=True, cwd=directory, timeout=60)
    return output.split()


def test_no_import_cycle() -> None:
    assert cycles(imports(package())) == []


def test_no_library_module_imports_the_application() -> None:
    graph = imports(package())
    names = application_names(package())
    crossing = {
        (module, target)
        for module, targets in graph.items()
        for target in targets
        if not is_application(module, names) and is_application(target, names)
    }
    assert crossing == set()
    # The reading sees the layers (a broken one would see no application).
    assert {"wfpredirect.cli._proxy", "wfpredirect.cli._workers"} <= graph["wfpredirect.cli._run"]
    assert "wfpredirect.cli._run" in graph["wfpredirect.cli._main"]


def test_importing_the_library_loads_nothing_of_the_application() -> None:
    loaded = loaded_by_the_library()
    assert [name for name in loaded if name.startswith("wfpredirect.cli")] == []
    assert "wfpredirect.__main__" not in loaded
    # What it loads is what the source says the library reaches (at most:
    # the other platforms' backends are there too).
    assert set(loaded) - reached(imports(package()), LIBRARY_ENTRIES) == set()
    assert {"wfpredirect", "wfpredirect.aio", "wfpredirect._backend"} <= set(loaded)


def write_package(root: Path, modules: dict[str, str]) -> Path:
    for name, text in modules.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root / "wfpredirect"


#: A made package with one of each case the reading must tell apart.
MADE = {
    "wfpredirect/__init__.py": "from . import _e\nfrom ._a import A\n",
    # A cycle through an import inside a function.
    "wfpredirect/_a.py": "from . import _b\nA = 1\n",
    "wfpredirect/_b.py": "def late():\n    from ._a import A\n    return A\n",
    # An import for the type checker only, and one in its else branch.
    "wfpredirect/_c.py": (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from .cli import _x\nelse:\n    from . import _d\n"
    ),
    "wfpredirect/_d.py": "",
    "wfpredirect/_core.pyi": "def call() -> None: ...\n",
    # A library module that reaches the application, through its package.
    "wfpredirect/_e.py": "import wfpredirect.cli._x\n",
    "wfpredirect/cli/__init__.py": "",
    "wfpredirect/cli/_x.py": "from .. import __version__\nfrom .._core import call\n",
    "wfpredirect/__main__.py": "from .cli._x import call\n",
}


def test_the_reading_of_a_made_package(tmp_path: Path) -> None:
    made = write_package(tmp_path, MADE)
    assert imports(made) == {
        "wfpredirect": {"wfpredirect._a", "wfpredirect._e"},
        "wfpredirect._a": {"wfpredirect._b"},
        "wfpredirect._b": {"wfpredirect._a"},
        "wfpredirect._c": {"wfpredirect._d"},
        "wfpredirect._d": set(),
        "wfpredirect._core": set(),
        # (The package it is in is loaded already: no import of it.)
        "wfpredirect._e": {"wfpredirect.cli", "wfpredirect.cli._x"},
        "wfpredirect.cli": set(),
        "wfpredirect.cli._x": {"wfpredirect", "wfpredirect._core"},
        "wfpredirect.__main__": {"wfpredirect.cli", "wfpredirect.cli._x"},
    }
    assert figures(made, made) == [
        "modules: 10",
        "imports (module -> module): 11",
        "cycles: 2 (of 3, 2 modules)",
        "  cycle: wfpredirect wfpredirect._e wfpredirect.cli._x",
        "  cycle: wfpredirect._a wfpredirect._b",
        "modules that import wfpredirect and wfpredirect.aio load: 7",
        "  wfpredirect wfpredirect._a wfpredirect._b wfpredirect._core wfpredirect._e "
        "wfpredirect.cli wfpredirect.cli._x",
        "of them the application's: 2",
        "  wfpredirect.cli wfpredirect.cli._x",
    ]
