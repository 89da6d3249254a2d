"""benchmarks/plot.py as the performance page runs it: each charted result
becomes a PNG beside it, of the size its layout gives. Here under
tests/integration because it needs matplotlib (the bench extra), which
.ci/run installs only where this folder runs (not in the free-threaded
pass nor inside Windows, which run tests/unit)."""

from __future__ import annotations

import importlib.util
import shutil
import struct
import subprocess
import sys
from pathlib import Path

from support import NEUTRAL_DIRECTORY, project_file, unavailable

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """Width and height in pixels, from the IHDR chunk that follows the
    signature (PNG specification, 11.2.2)."""
    header = path.read_bytes()[:24]
    assert header[:8] == PNG_SIGNATURE and header[12:16] == b"IHDR"
    width, height = struct.unpack(">II", header[16:24])
    return width, height


def test_held_connections_chart(tmp_path: Path) -> None:
    if importlib.util.find_spec("matplotlib") is None:
        unavailable("matplotlib is not installed (pip install '.[bench]'; .ci/run installs it)")
    script = project_file("benchmarks/plot.py")
    shutil.copy(project_file("benchmarks/results/held-linux.json"), tmp_path)
    # A result that is a table only, and service_scenarios' list of rows.
    shutil.copy(project_file("benchmarks/results/bench_windows_calls-wine.json"), tmp_path)
    shutil.copy(project_file("benchmarks/results/service_scenarios-linux.json"), tmp_path)
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        cwd=NEUTRAL_DIRECTORY,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"{tmp_path}/bench_windows_calls-wine.json: a table only, no chart",
        f"{tmp_path}/held-linux.json -> {tmp_path}/held-linux.png",
        f"{tmp_path}/service_scenarios-linux.json: a table only, no chart",
    ]
    assert sorted(path.name for path in tmp_path.glob("*.png")) == ["held-linux.png"]
    # Two counts side by side (6.5 in each) and three panels of five
    # candidates (1 + 0.3 * 5 * 3 in), at 100 dpi.
    assert png_size(tmp_path / "held-linux.png") == (1300, 550)
