"""A smoke run of benchmarks/bench_held.py (40 connections, a short hold):
each candidate it runs holds every connection, answered before and after
the hold, and the table says so; the native relay's row shows 2
descriptors a connection and no pipe (exact: what the proxy's /proc shows);
nothing is written without --write. The kernel memory and RSS figures are
the benchmark's to print, not a test's to assert. HAProxy is not required:
without it its row says why it is missing."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

from support import NEUTRAL_DIRECTORY, linux_only, project_file, require_root, require_tool

COUNT = 40
# descriptors | pipe fds | kernel KiB above direct | RSS KiB | answered
FIGURES = r"\s+\|\s+(?P<descriptors>\d+\.\d\d) \|\s+(?P<pipes>[\d,]+) \|\s+-?\d+\.\d \|\s+-?\d+\.\d"
ANSWERED = rf" \| {COUNT} of {COUNT}"


@linux_only
def test_a_short_run_holds_every_connection_and_writes_nothing() -> None:
    require_root()
    for tool in ("ip", "nft"):
        require_tool(tool)
    script = project_file("benchmarks/bench_held.py")
    results = script.parent / "results"
    written_before = {path.name: path.stat().st_mtime_ns for path in results.iterdir()}
    names = ["wfpredirect (native)", "wfpredirect --relay streams", "haproxy splice"]
    completed = subprocess.run(
        [sys.executable, str(script), "--counts", str(COUNT), "--hold", "0.2", "--only", *names],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=NEUTRAL_DIRECTORY,
    )
    assert completed.returncode == 0, completed.stderr
    rows = {}
    for line in completed.stdout.splitlines():
        cells = [cell.strip() for cell in line.split("|")]
        if len(cells) > 2 and cells[0] == str(COUNT):
            rows[cells[1]] = line
    assert list(rows) == ["direct", *names], completed.stdout

    def figures(name: str) -> tuple[str, str]:
        match = re.fullmatch(rf"\s+{COUNT} \| {re.escape(name)}\s*{FIGURES}{ANSWERED}", rows[name])
        assert match is not None, rows[name]
        return match["descriptors"], match["pipes"]

    assert figures("wfpredirect (native)") == ("2.00", "0")
    assert figures("wfpredirect --relay streams") == ("2.00", "0")
    if shutil.which("haproxy"):
        figures("haproxy splice")  # its pipes come and go with its splicing
    else:
        assert rows["haproxy splice"].endswith(
            "| skipped: haproxy is not installed "
            "(`apt-get install haproxy`, or run this with --install)"
        )
    assert {path.name: path.stat().st_mtime_ns for path in results.iterdir()} == written_before
