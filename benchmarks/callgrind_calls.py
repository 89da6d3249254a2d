"""Instructions per call of the hot wfpredirect calls against the C-API
reference and the floor, counted by valgrind's callgrind: repeatable
whatever else the machine is doing, where bench_calls.py's times are not.

Each (operation, candidate) runs in a worker under callgrind twice, making
SHORT and LONG calls on a redirected connection in the benchmark's network
namespace (see bench_calls.py); the difference of the two totals divided by
LONG - SHORT is the cost of one call, start-up and set-up cancelling out.
Only user-space instructions are counted: the kernel's share of a system
call is not, so the floor is the libc wrappers and the C loop. One
connection as a proxy handles it ("per connection", issue 16:
query_redirect_info, then the records on the library's own upstream as the
proxy sets them, or set_redirect_records on a caller's socket) is counted
too, against the three single calls they replaced and the C floor; it has
no C-API reference.

Usage: python benchmarks/callgrind_calls.py [--all]   (Linux, as root, valgrind installed)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import machine
from timing import FLOOR, LIBRARY, REFERENCE

SHORT = 2000
LONG = 12000
RESULTS = Path(__file__).resolve().parent / "results"
COLLECTED = re.compile(r"Collected : (\d+)")


def worker(operation: str, name: str, count: int, slot: int, native_directory: str) -> None:
    """Runs `count` calls of one candidate; the parent counts the instructions."""
    import connection_candidates
    import linux_candidates
    import native
    from redirect_namespace import redirected_connection

    import wfpredirect

    floor = native.load_floor(Path(native_directory))
    capi_reference = native.load_capi_reference(Path(native_directory))
    capi_reference.configure(wfpredirect.LOOP_MARK, wfpredirect.MARK_MASK)
    connection = redirected_connection(slot)
    found = (
        connection_candidates.candidates(connection, floor)
        if operation == connection_candidates.OPERATION
        else linux_candidates.candidates(operation, connection, floor, capi_reference)
    )
    (candidate,) = [candidate for candidate in found if candidate.name == name]
    candidate.runner(count)
    connection.close()


def instructions(operation: str, name: str, count: int, slot: int, native_directory: Path) -> int:
    with tempfile.TemporaryDirectory() as scratch:
        completed = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={scratch}/callgrind.out",
                sys.executable,
                __file__,
                "--worker",
                operation,
                name,
                str(count),
                str(slot),
                str(native_directory),
            ],
            # The same hash seed in every run: dict and str hashing then cost
            # the same in the SHORT and LONG runs.
            env={**os.environ, "PYTHONHASHSEED": "0"},
            capture_output=True,
            text=True,
            check=True,
        )
    match = COLLECTED.search(completed.stderr)
    if match is None:
        raise RuntimeError(f"no instruction count from callgrind:\n{completed.stderr}")
    return int(match.group(1))


def per_call(job: tuple[str, str, int, Path]) -> float:
    operation, name, slot, native_directory = job
    short = instructions(operation, name, SHORT, slot, native_directory)
    long = instructions(operation, name, LONG, slot, native_directory)
    return (long - short) / (LONG - SHORT)


def render(result: dict[str, Any]) -> str:
    info = result["machine"]
    lines = [
        "callgrind_calls: user-space instructions per call "
        f"((Ir of {LONG} calls - Ir of {SHORT} calls) / {LONG - SHORT})",
        f"{info['system']} {info['kernel']}, {info['cpu']}, "
        f"{info['implementation']} {info['python']}",
        "",
    ]
    for operation, rows in result["operations"].items():
        lines.append(f"{operation:<32} {'instr/call':>10} {'x C-API':>8} {'above floor':>12}")
        for name, row in rows.items():
            ratio = f"{row['ratio_vs_reference']:.2f}" if "ratio_vs_reference" in row else "-"
            lines.append(
                f"  {name:<30} {row['instructions_per_call']:>10.0f} "
                f"{ratio:>8} {row['above_floor']:>+12.0f}"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker_operation, worker_name, count, slot, directory = sys.argv[2:7]
        worker(worker_operation, worker_name, int(count), int(slot), directory)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--all", action="store_true", help="also count stdlib and ctypes")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where the JSON goes")
    options = parser.parse_args()
    if not sys.platform.startswith("linux") or shutil.which("valgrind") is None:
        print("callgrind_calls: needs Linux and valgrind (apt install valgrind)")
        return 0

    import connection_candidates
    import linux_candidates
    import native
    from redirect_namespace import WORKER_SLOTS, enter_redirect_namespace

    import wfpredirect

    enter_redirect_namespace()
    names = [LIBRARY, REFERENCE, FLOOR] + (["stdlib", "ctypes"] if options.all else [])
    connection_names = [
        connection_candidates.AS_THE_PROXY,
        LIBRARY,
        connection_candidates.THREE_QUERIES,
        FLOOR,
    ]
    with tempfile.TemporaryDirectory(prefix="wfpredirect-callgrind-") as scratch:
        native_directory = Path(scratch)
        native.build(native_directory)
        jobs = [(operation, name) for operation in linux_candidates.OPERATIONS for name in names]
        jobs += [(connection_candidates.OPERATION, name) for name in connection_names]
        # Two workers at a time, each on its own redirected port.
        with ThreadPoolExecutor(max_workers=2) as pool:
            counts = list(
                pool.map(
                    per_call,
                    [
                        (operation, name, index % 2, native_directory)
                        for index, (operation, name) in enumerate(jobs)
                    ],
                )
            )
    assert WORKER_SLOTS >= 2
    measured: dict[str, dict[str, float]] = {}
    for (operation, name), per_call_count in zip(jobs, counts, strict=True):
        measured.setdefault(operation, {})[name] = per_call_count
    operations = {
        operation: {
            name: {
                "instructions_per_call": round(count, 1),
                **(
                    {"ratio_vs_reference": round(count / rows[REFERENCE], 3)}
                    if REFERENCE in rows
                    else {}
                ),
                "above_floor": round(count - rows[FLOOR], 1),
            }
            for name, count in rows.items()
        }
        for operation, rows in measured.items()
    }
    result = {
        "benchmark": "callgrind_calls",
        "platform": "linux",
        "machine": machine.describe(),
        "wfpredirect": wfpredirect.__version__,
        "command": "python " + " ".join(["benchmarks/callgrind_calls.py", *sys.argv[1:]]),
        "short": SHORT,
        "long": LONG,
        "operations": operations,
    }
    table = render(result)
    print(table)
    options.output.mkdir(parents=True, exist_ok=True)
    (options.output / "callgrind_calls-linux.json").write_text(json.dumps(result, indent=2) + "\n")
    (options.output / "callgrind_calls-linux.txt").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
