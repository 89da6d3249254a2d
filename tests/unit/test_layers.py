"""The package's layers (docs/design.md, "Layers"): the library at the
package root, the command-line application in wfpredirect/cli/ above it.
Importing the library loads nothing of the application, as a fresh
interpreter shows."""

from __future__ import annotations

import subprocess
import sys

from support import NEUTRAL_DIRECTORY

#: A fresh interpreter imports the library's two entry points and lists the
#: package's modules it then holds.
LOADED = (
    "import sys, wfpredirect, wfpredirect.aio; "
    "print('\\n'.join(sorted(name for name in sys.modules if name.startswith('wfpredirect'))))"
)


def loaded_by_the_library() -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", LOADED],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=NEUTRAL_DIRECTORY if sys.platform != "win32" else None,
    )
    return result.stdout.split()


def test_importing_the_library_loads_nothing_of_the_application() -> None:
    loaded = loaded_by_the_library()
    assert [name for name in loaded if name.startswith("wfpredirect.cli")] == []
    assert "wfpredirect.__main__" not in loaded
    # The probe sees the package's modules (a broken one would see none).
    assert {"wfpredirect", "wfpredirect.aio", "wfpredirect._backend"} <= set(loaded)
