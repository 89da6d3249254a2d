"""The parts of benchmarks/bench_windows_calls.py that need no test build:
its refusal on any other build, and the table it prints (the counts of the
connections after the first, a range where they differed). The measurement
itself runs in the Windows lane (tests/windows/test_emulated_callout.py)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from support import NEUTRAL_DIRECTORY, project_file

FUSED = "query_redirect_info + set_redirect_records"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    path = project_file("benchmarks/bench_windows_calls.py")
    spec = importlib.util.spec_from_file_location("bench_windows_calls", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_build_without_the_emulated_callout_measures_nothing(tmp_path: Path) -> None:
    """Here (Linux, or the release wheel inside Windows CPython) the script
    says what it needs, exits 2 and writes no results."""
    result = subprocess.run(
        [
            sys.executable,
            str(project_file("benchmarks/bench_windows_calls.py")),
            "--output",
            str(tmp_path / "results"),
        ],
        cwd=NEUTRAL_DIRECTORY if sys.platform != "win32" else None,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout, result.stderr) == (
        2,
        "",
        "bench_windows_calls: needs Windows CPython with the test build of wfpredirect "
        "(WFPREDIRECT_EMULATED_CALLOUT=1; the Windows lane makes it)\n",
    )
    assert not (tmp_path / "results").exists()


#: As the script names them (a copy, so that a renamed count fails here).
NAMES = ("records_query", "context_query", "set", "so_original_dst")
NAMES += ("getsockname", "getpeername", "other")


def counts(*values: int | str) -> dict[str, int | str]:
    return dict(zip(NAMES, values, strict=True))


def test_the_table_shows_each_count_and_a_range_where_connections_differed(
    bench: ModuleType,
) -> None:
    assert bench.COUNTED == NAMES
    later = [counts(1, 1, 1, 0, 0, 2, 2), counts(1, 2, 1, 1, 0, 2, 2)]
    merged = {name: bench.later_count(later, name) for name in bench.COUNTED}
    assert merged == counts(1, "1-2", 1, "0-1", 0, 2, 2)
    stack = {
        "description": "a stack",
        "candidates": {
            FUSED: {
                "first": {"counts": counts(1, 1, 1, 1, 1, 2, 2), "us": 289.4},
                "later": {"connections": 2, "counts": merged, "us": 179.2, "q1": 168, "q3": 210},
            }
        },
        "fused_vs_singles": 0.78,
    }
    result = {
        "where": "Wine 8.0",
        "timed_on": "Wine 8.0 (an emulation, not Windows)",
        "implementation": "CPython",
        "python": "3.11.9",
        "wfpredirect": "0.1.0",
        "backend": "winsock",
        "connections": 3,
        "stacks": {"lacks": stack},
    }
    lines = bench.render(result).splitlines()
    first = lines.index(f"  {FUSED}")
    assert lines[first + 2 : first + 6] == [
        "    connection    records query  context query  queries  set  SO_ORIGINAL_DST"
        "  getsockname  getpeername  other      us         IQR",
        "    first                     1              1        2    1                1"
        "            1            2      2     289",
        "    later (2)                 1            1-2        -    1              0-1"
        "            0            2      2     179     168-210",
        "  the one pass's time: 0.78x the single queries' (median of the later "
        "connections' ratios)",
    ]
