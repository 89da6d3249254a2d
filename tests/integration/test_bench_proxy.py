"""A smoke run of benchmarks/bench_proxy.py (one quick round): it builds its
load generator, starts every candidate this machine can run in its own
namespace, checks each one reaches the original destination, measures and
prints the table, and writes nothing without --write. Its figures are not
asserted: speed is the benchmark's to print, not a test's to time. HAProxy
is not required: without it the table says why its rows are missing."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

from support import NEUTRAL_DIRECTORY, linux_only, project_file, require_root, require_tool

HAPROXY_ROWS = [
    "haproxy",
    "haproxy splice-auto",
    "haproxy splice",
    "haproxy nbthread 2",
    "haproxy splice-auto nbthread 2",
    "haproxy splice nbthread 2",
]
# A row of figures: conn/s, MiB/s, p50, p99, CPU us per connection, CPU s per GiB.
FIGURES = r"\s+[\d,]+\s+[\d,]+\s+[\d,]+\s+[\d,]+\s+[\d,]+\s+\d+\.\d\d"


@linux_only
def test_a_quick_round_prints_the_table_and_writes_nothing() -> None:
    require_root()
    for tool in ("ip", "nft", "cc"):
        require_tool(tool)
    script = project_file("benchmarks/bench_proxy.py")
    results = script.parent / "results"
    written_before = {path.name: path.stat().st_mtime_ns for path in results.iterdir()}
    completed = subprocess.run(
        [sys.executable, str(script), "--rounds", "1", "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=NEUTRAL_DIRECTORY,
    )
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert lines[0] == "bench_proxy: the reference proxy against HAProxy and a stdlib relay"

    targets = lines.index(
        "targets (median per-round ratio to HAProxy with as many threads as workers):"
    )

    def row(name: str) -> str:
        found = [line for line in lines[:targets] if line.startswith(f"{name:44} ")]
        assert len(found) == 1, (name, completed.stdout)
        return found[0]

    assert re.fullmatch(f"wfpredirect{FIGURES}", row("wfpredirect"))
    assert re.fullmatch(f"stdlib relay{FIGURES}", row("stdlib relay"))
    if shutil.which("haproxy"):
        for name in HAPROXY_ROWS:
            assert re.fullmatch(f"{re.escape(name)}{FIGURES}", row(name))
        verdicts = r"(\s+\d+\.\d\d (pass|FAIL)){4}"
    else:
        for name in HAPROXY_ROWS:
            assert row(name) == (
                f"{name:44} skipped: haproxy is not installed "
                "(`apt-get install haproxy`, or run this with --install)"
            )
        verdicts = r"(\s+n/a \(no anchor\)){4}"
    assert re.fullmatch(f"wfpredirect{verdicts}", lines[targets + 2]), lines[targets + 2]
    # The client's and the origin's share, beside the proxies'.
    assert any(line.startswith("load generator: native/loadgen.c (C, epoll") for line in lines)
    assert {path.name: path.stat().st_mtime_ns for path in results.iterdir()} == written_before
