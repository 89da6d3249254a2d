"""ns per call of the hot wfpredirect calls against the system-call floor
and against what Python users write today (issue 8).

Linux: on a redirected connection in the benchmark's own network namespace
(nft redirect on loopback only), the library against
  (a) the floor: the same system calls in a C loop (native/floor.c),
  (b) the best a binding can do: hand-written C-API functions making the
      same calls and building the same results (native/capi_reference.c),
  (c) ctypes getsockopt/setsockopt, (d) socket.getsockopt and struct;
and one whole connection as a proxy handles it (query_redirect_info, then
the records on the upstream; issue 16): the proxy's own path (its own new
upstream, 5 system calls) and the public calls (set_redirect_records on a
caller's socket, 6) against the three single calls they replaced and C
loops making the minimal calls, the public calls' and the old calls
(connection_candidates.py).
Windows: on the real stack, where without a WFP callout driver only the
error paths exist; the library against ctypes WSAIoctl/getsockopt and the
stdlib getsockopt. The C references are Linux-only.

Prints a table, saves it as JSON and text under benchmarks/results/, exits 0.

Usage: python benchmarks/bench_calls.py [--rounds N] [--batch N]
(Linux: as root, or as a user where unprivileged user namespaces are allowed)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import machine
from timing import FLOOR, LIBRARY, REFERENCE, Candidate, measure, paired_median, quartiles

import wfpredirect

RESULTS = Path(__file__).resolve().parent / "results"

#: The targets of issue 8, per call.
MAX_RATIO_VS_REFERENCE = 1.15
#: Issue 16's target: one connection at most this many times the C floor.
MAX_CONNECTION_RATIO_VS_FLOOR = 1.3
MAX_SHARE_OF_STDLIB_OVERHEAD = 1 / 2
MAX_SHARE_OF_CTYPES_OVERHEAD = 1 / 3


def linux_operations(native_directory: Path) -> tuple[dict[str, list[Candidate]], list[Any], str]:
    import connection_candidates
    import linux_candidates
    import native
    from redirect_namespace import enter_redirect_namespace, redirected_connection

    how = enter_redirect_namespace()
    native.build(native_directory)
    floor = native.load_floor(native_directory)
    capi_reference = native.load_capi_reference(native_directory)
    capi_reference.configure(wfpredirect.LOOP_MARK, wfpredirect.MARK_MASK)
    connection = redirected_connection()
    operations = {
        operation: linux_candidates.candidates(operation, connection, floor, capi_reference)
        for operation in linux_candidates.OPERATIONS
    }
    operations[connection_candidates.OPERATION] = connection_candidates.candidates(
        connection, floor
    )
    setup = (
        f"a redirected IPv4 connection (nft redirect 127.0.0.2:8080 -> 127.0.0.1:15001) in the "
        f"benchmark's own {how}; success paths; every candidate checked to give the library's "
        f"result first"
    )
    return operations, [connection], setup


def windows_operations() -> tuple[dict[str, list[Candidate]], list[Any], str]:
    import windows_candidates

    connection = windows_candidates.loopback_connection()
    operations = windows_candidates.candidates(connection)
    setup = (
        "a plain loopback TCP connection on the real Windows stack, no WFP callout driver: "
        "each call ends in the error shown (the error paths), C references not built on Windows"
    )
    return operations, [connection], setup


def summarize(operations: dict[str, list[Candidate]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for operation, candidates in operations.items():
        by_name = {candidate.name: candidate for candidate in candidates}
        reference = by_name.get(REFERENCE)
        floor = by_name.get(FLOOR)
        rows: dict[str, Any] = {}
        for candidate in candidates:
            first, median, third = quartiles(candidate.samples)
            row: dict[str, Any] = {
                "ns_per_call": round(median, 1),
                "q1": round(first, 1),
                "q3": round(third, 1),
                "outcome": candidate.outcome,
            }
            if reference is not None:
                row["ratio_vs_reference"] = round(
                    paired_median(candidate.samples, reference.samples, "ratio"), 3
                )
            if floor is not None:
                row["overhead_above_floor_ns"] = round(
                    paired_median(candidate.samples, floor.samples, "difference"), 1
                )
                row["ratio_vs_floor"] = round(
                    paired_median(candidate.samples, floor.samples, "ratio"), 3
                )
            rows[candidate.name] = row
        summary[operation] = {"candidates": rows, "targets": targets(rows)}
    return summary


def targets(rows: dict[str, Any]) -> dict[str, Any]:
    """Issue 8's targets for one operation, where its candidates exist, and
    issue 16's for one connection (which has no C-API reference)."""
    library = rows[LIBRARY]
    found: dict[str, Any] = {}
    if "ratio_vs_reference" not in library and "ratio_vs_floor" in library:
        # Per connection: the proxy's own path (when measured) and the
        # public calls, each against the floor.
        import connection_candidates

        for key, name in (
            ("ratio_vs_floor_as_the_proxy", connection_candidates.AS_THE_PROXY),
            ("ratio_vs_floor", LIBRARY),
        ):
            if name in rows:
                ratio = rows[name]["ratio_vs_floor"]
                found[key] = {
                    "value": ratio,
                    "limit": MAX_CONNECTION_RATIO_VS_FLOOR,
                    "met": ratio <= MAX_CONNECTION_RATIO_VS_FLOOR,
                }
        return found
    if "ratio_vs_reference" in library:
        ratio = library["ratio_vs_reference"]
        found["ratio_vs_reference"] = {
            "value": ratio,
            "limit": MAX_RATIO_VS_REFERENCE,
            "met": ratio <= MAX_RATIO_VS_REFERENCE,
        }
    if "overhead_above_floor_ns" in library:
        overhead = library["overhead_above_floor_ns"]
        for name, share in (
            ("stdlib", MAX_SHARE_OF_STDLIB_OVERHEAD),
            ("ctypes", MAX_SHARE_OF_CTYPES_OVERHEAD),
        ):
            if name in rows:
                limit = rows[name]["overhead_above_floor_ns"] * share
                found[f"overhead_vs_{name}"] = {
                    "value": overhead,
                    "limit": round(limit, 1),
                    "met": overhead <= limit,
                }
    return found


def render(result: dict[str, Any]) -> str:
    info = result["machine"]
    lines = [
        f"bench_calls: ns per call, median of {result['rounds']} rounds of {result['batch']} calls",
        f"{info['system']} {info['kernel']}, {info['cpus']} CPUs, {info['cpu']}, "
        f"{info['implementation']} {info['python']}, wfpredirect {result['wfpredirect']} "
        f"({result['backend']})",
        result["setup"],
        "x C-API, x floor and above floor: medians of the per-round ratios and differences",
        "",
    ]
    for operation, entry in result["operations"].items():
        header = (
            f"{'ns/call':>8} {'IQR':>13} {'x C-API':>8} {'x floor':>8} {'above floor':>12}  outcome"
        )
        lines.append(f"{operation:<32} {header}")
        for name, row in entry["candidates"].items():
            ratio = f"{row['ratio_vs_reference']:.2f}" if "ratio_vs_reference" in row else "-"
            floor_ratio = f"{row['ratio_vs_floor']:.2f}" if "ratio_vs_floor" in row else "-"
            overhead = (
                f"{row['overhead_above_floor_ns']:+.0f}"
                if "overhead_above_floor_ns" in row
                else "-"
            )
            quartile_range = f"{row['q1']:.0f}-{row['q3']:.0f}"
            lines.append(
                f"  {name:<30} {row['ns_per_call']:>8.0f} {quartile_range:>13} {ratio:>8} "
                f"{floor_ratio:>8} {overhead:>12}  {row['outcome']}"
            )
        for name, target in entry["targets"].items():
            verdict = "met" if target["met"] else "MISSED"
            lines.append(f"  target {name}: {target['value']} <= {target['limit']}: {verdict}")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=101, help="timed rounds (default 101)")
    parser.add_argument("--batch", type=int, default=500, help="calls per sample (default 500)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where the JSON goes")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="wfpredirect-bench-") as scratch:
        if sys.platform.startswith("linux"):
            operations, keep_alive, setup = linux_operations(Path(scratch))
            name = "linux"
        elif sys.platform == "win32":
            operations, keep_alive, setup = windows_operations()
            name = "windows"
        else:
            print(f"bench_calls: nothing to time on {sys.platform} (backend unsupported)")
            return 0
        measure(operations, rounds=options.rounds, batch=options.batch)
        for thing in keep_alive:
            thing.close()

    result = {
        "benchmark": "bench_calls",
        "platform": name,
        "machine": machine.describe(),
        "wfpredirect": wfpredirect.__version__,
        "backend": wfpredirect.BACKEND,
        "command": "python " + " ".join(["benchmarks/bench_calls.py", *sys.argv[1:]]),
        "rounds": options.rounds,
        "batch": options.batch,
        "setup": setup,
        "operations": summarize(operations),
    }
    table = render(result)
    print(table)
    options.output.mkdir(parents=True, exist_ok=True)
    (options.output / f"bench_calls-{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (options.output / f"bench_calls-{name}.txt").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
