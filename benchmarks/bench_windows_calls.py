"""Winsock calls per accepted connection on Windows, counted code by code
(issue 16), in the Windows lane: Windows CPython under Wine, with the test
build of _core whose emulated WFP callout driver (WFPREDIRECT_EMULATED_CALLOUT=1,
csrc/core/wfp/emulated) redirected each connection and counts every call
it is asked. The sockets are real (Wine's loopback); only the WFP answers
are the emulated driver's.

For each accepted connection, what a proxy does with it, one candidate per
connection in a rotating order:
- the one native pass: query_redirect_info, then set_redirect_records on a
  new upstream socket (what the proxy, RedirectSocket and wfpredirect.aio do);
- the three single queries it replaced (original_destination,
  query_redirect_records, query_redirect_context), then set_redirect_records.
There is no C floor: nothing in the lane builds a C loop for Windows
CPython's process (bench_calls.py's floor is Linux's).

Two stacks: one without SO_ORIGINAL_DST (Wine's, which answers WSAEINVAL:
the fused pass learns it on the first redirected connection and skips the
option for the rest of the process, so the first connection and the later
ones are shown apart) and one whose SO_ORIGINAL_DST answers (recent Windows
builds, played by the emulated driver). Every call's result is checked
against the redirect the driver was given.

Counted per connection, through the backend's table of Winsock calls: each
WSAIoctl code (records query, context query, set), getsockopt(SO_ORIGINAL_DST),
getsockname, getpeername and every other call (set_redirect_records checks
the new socket with getsockopt SO_PROTOCOL_INFOW and SO_ACCEPTCONN, and
getpeername).

The time is the calls' own (perf_counter_ns around them, the connection's
setup outside it), one sample per connection: under Wine it is Wine's cost,
an emulation, not Windows'; and the emulated driver finds each connection
with a getpeername of its own inside each WFP IOCTL and SO_ORIGINAL_DST it
answers, which a real driver does not.

Prints a table, saves it as JSON and text under benchmarks/results/, exits
0; with a release build, or off Windows, says what it needs and exits 2.

Usage: python benchmarks/bench_windows_calls.py [--connections N] [--output DIR]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import platform
import socket
import statistics
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from time import perf_counter_ns
from typing import Any

import wfpredirect
from wfpredirect import RedirectInfo, RedirectRecords

RESULTS = Path(__file__).resolve().parent / "results"

FWP_E_NOT_FOUND = 0x80320008
ERROR_INSUFFICIENT_BUFFER = 122
LOOPBACK = "127.0.0.1"
#: Where the redirected clients meant to go (never connected to).
ORIGINAL = ("127.0.0.2", 8080)
RECORDS = bytes(range(64))
TIMEOUT = 10

FUSED = "query_redirect_info + set_redirect_records"
SINGLES = "three single queries + set_redirect_records"
#: The calls counted, as _emulated_callout_calls names them: each WSAIoctl
#: code, getsockopt(SO_ORIGINAL_DST), then the backend's other Winsock calls.
COUNTED = (
    "records_query",
    "context_query",
    "set",
    "so_original_dst",
    "getsockname",
    "getpeername",
    "other",
)
#: The table's count columns: (heading, width, the counts it sums); "queries"
#: is the two query IOCTLs together.
COLUMNS = (
    ("records query", 14, ("records_query",)),
    ("context query", 15, ("context_query",)),
    ("queries", 9, ("records_query", "context_query")),
    ("set", 5, ("set",)),
    ("SO_ORIGINAL_DST", 17, ("so_original_dst",)),
    ("getsockname", 13, ("getsockname",)),
    ("getpeername", 13, ("getpeername",)),
    ("other", 7, ("other",)),
)
STACKS = {
    "lacks": "a stack without SO_ORIGINAL_DST (getsockopt answers WSAEINVAL, as Wine's does)",
    "answers": "a stack whose SO_ORIGINAL_DST answers (recent Windows builds; emulated)",
}


def windows_sockaddr(host: str, port: int) -> bytes:
    """A SOCKADDR_IN in a 128-byte SOCKADDR_STORAGE."""
    body = struct.pack("<H", 2) + struct.pack("!H", port) + socket.inet_aton(host) + bytes(8)
    return body.ljust(128, b"\0")


#: What Microsoft's WFPSampler stores: the original remote, then the local.
CONTEXT = windows_sockaddr(*ORIGINAL) + windows_sockaddr(LOOPBACK, 40000)
EXPECTED = RedirectInfo(RedirectRecords(RECORDS), CONTEXT, ORIGINAL)


def quartiles(samples: list[float]) -> tuple[float, float, float]:
    """As timing.py's: the script imports nothing beside it, since the
    embeddable Windows CPython the lane uses (its python3X._pth) does not
    put a script's folder on sys.path."""
    first, median, third = statistics.quantiles(samples, n=4, method="inclusive")
    return first, median, third


def paired_ratio(samples: list[float], baseline: list[float]) -> float:
    """The median of the ratios of samples taken in the same round."""
    return statistics.median(a / b for a, b in zip(samples, baseline, strict=True))


def fused(accepted: socket.socket, upstream: socket.socket) -> RedirectInfo:
    info = wfpredirect.query_redirect_info(accepted)
    if info.records is not None:
        wfpredirect.set_redirect_records(upstream, info.records)
    return info


def singles(accepted: socket.socket, upstream: socket.socket) -> RedirectInfo:
    destination = wfpredirect.original_destination(accepted)
    records = wfpredirect.query_redirect_records(accepted)
    context = wfpredirect.query_redirect_context(accepted)
    info = RedirectInfo(records, context, destination)
    wfpredirect.set_redirect_records(upstream, records)
    return info


CANDIDATES: dict[str, Callable[[socket.socket, socket.socket], RedirectInfo]] = {
    FUSED: fused,
    SINGLES: singles,
}


def wine_version() -> str | None:
    """Wine's version when this runs under Wine (ntdll exports it there)."""
    try:
        ntdll = ctypes.WinDLL("ntdll")  # type: ignore[attr-defined,unused-ignore]
        get_version = ntdll.wine_get_version
    except (AttributeError, OSError):
        return None
    get_version.restype = ctypes.c_char_p
    return str(get_version().decode())


def one_connection(
    core: Any,
    listener: socket.socket,
    call: Callable[[socket.socket, socket.socket], RedirectInfo],
    original_dst_option: bool,
) -> tuple[dict[str, int], int]:
    """A new redirected connection, accepted, and `call` on it and on a new
    upstream socket: the calls the driver counted, and the ns they took."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as client:
        client.bind((LOOPBACK, 0))
        client.settimeout(TIMEOUT)
        core._emulated_callout_add(
            client.getsockname(),
            ORIGINAL,
            RECORDS,
            CONTEXT,
            ERROR_INSUFFICIENT_BUFFER,
            original_dst_option,
        )
        client.connect(listener.getsockname())
        accepted, _ = listener.accept()
        with accepted, socket.socket(socket.AF_INET, socket.SOCK_STREAM) as upstream:
            before = core._emulated_callout_calls()
            start = perf_counter_ns()
            info = call(accepted, upstream)
            elapsed = perf_counter_ns() - start
            after = core._emulated_callout_calls()
            if info != EXPECTED:
                raise RuntimeError(f"{call.__name__} gave {info}, not {EXPECTED}")
            (upstream_set,) = core._emulated_callout_sets()[-1:]
            if upstream_set != (upstream.fileno(), RECORDS, False, False):
                raise RuntimeError(f"{call.__name__}: the upstream's set was {upstream_set}")
    return {name: after[name] - before[name] for name in COUNTED}, elapsed


def later_count(counts: list[dict[str, int]], name: str) -> int | str:
    """The count every later connection had, or its range ("0-1") when they
    differed."""
    values = sorted({c[name] for c in counts})
    return values[0] if len(values) == 1 else f"{values[0]}-{values[-1]}"


def run_stack(core: Any, stack: str, connections: int) -> dict[str, Any]:
    """`connections` per candidate on a fresh emulated stack (the fused
    pass's knowledge of SO_ORIGINAL_DST forgotten, as in a new process)."""
    core._emulated_callout_reset(FWP_E_NOT_FOUND)
    option = stack == "answers"
    names = list(CANDIDATES)
    seen: dict[str, list[tuple[dict[str, int], int]]] = {name: [] for name in names}
    with socket.create_server((LOOPBACK, 0)) as listener:
        listener.settimeout(TIMEOUT)
        for number in range(connections):
            shift = number % len(names)
            for name in names[shift:] + names[:shift]:
                seen[name].append(one_connection(core, listener, CANDIDATES[name], option))
    core._emulated_callout_reset(FWP_E_NOT_FOUND)
    rows: dict[str, Any] = {}
    for name, samples in seen.items():
        first_counts, first_ns = samples[0]
        later = samples[1:]
        later_counts = [c for c, _ in later]
        later_us = [ns / 1000 for _, ns in later]
        low, median, high = quartiles(later_us) if len(later_us) > 1 else (0.0, 0.0, 0.0)
        rows[name] = {
            "first": {"counts": first_counts, "us": round(first_ns / 1000, 1)},
            "later": {
                "connections": len(later),
                "counts": {n: later_count(later_counts, n) for n in COUNTED},
                "us": round(median, 1),
                "q1": round(low, 1),
                "q3": round(high, 1),
            },
        }
    ratio = paired_ratio([ns for _, ns in seen[FUSED][1:]], [ns for _, ns in seen[SINGLES][1:]])
    return {"description": STACKS[stack], "candidates": rows, "fused_vs_singles": round(ratio, 2)}


def summed(counts: dict[str, int | str], names: tuple[str, ...]) -> int | str:
    """The counts of `names` added up; "-" when one of them differed between
    the connections (a range)."""
    values = [counts[name] for name in names]
    if len(values) == 1:
        return values[0]
    numbers = [v for v in values if isinstance(v, int)]
    return sum(numbers) if len(numbers) == len(values) else "-"


def render(result: dict[str, Any]) -> str:
    where = result["where"]
    lines = [
        "bench_windows_calls: Winsock calls per accepted connection, counted by the emulated "
        "callout driver of the test build",
        f"{result['implementation']} {result['python']} on {where}, wfpredirect "
        f"{result['wfpredirect']} ({result['backend']}); {result['connections']} connections per "
        "candidate, interleaved",
        "a redirected IPv4 loopback connection (original destination "
        f"{ORIGINAL[0]}:{ORIGINAL[1]}, {len(RECORDS)}-byte records, a WFPSampler context); "
        "the records set on a new upstream socket",
        f"us per connection: the calls' own time under {result['timed_on']}; first: one "
        "sample; later: median and IQR",
        "",
    ]
    groups = f"{'':<13}{'WSAIoctl':^43}{'getsockopt':>17}{'other Winsock calls':^33}"
    header = f"{'connection':<13}" + "".join(f"{h:>{w}}" for h, w, _ in COLUMNS)
    header += f"{'us':>8}{'IQR':>12}"
    for stack in result["stacks"].values():
        lines.append(stack["description"])
        for name, row in stack["candidates"].items():
            lines.append(f"  {name}")
            lines.append(f"    {groups}".rstrip())
            lines.append(f"    {header}")
            for which in ("first", "later"):
                entry = row[which]
                label = which if which == "first" else f"later ({entry['connections']})"
                cells = "".join(
                    f"{summed(entry['counts'], names)!s:>{width}}" for _, width, names in COLUMNS
                )
                quartile_range = f"{entry['q1']:.0f}-{entry['q3']:.0f}" if "q1" in entry else ""
                lines.append(
                    f"    {label:<13}{cells}{entry['us']:>8.0f}{quartile_range:>12}".rstrip()
                )
        lines.append(
            f"  the one pass's time: {stack['fused_vs_singles']:.2f}x the single queries' "
            "(median of the later connections' ratios)"
        )
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--connections", type=int, default=201, help="connections per candidate (default 201)"
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="where the JSON goes")
    options = parser.parse_args()
    if options.connections < 3:
        parser.error("--connections: at least 3 (the first, and later ones to take a median of)")

    from wfpredirect import _core

    if sys.platform != "win32" or not hasattr(_core, "_emulated_callout_calls"):
        print(
            "bench_windows_calls: needs Windows CPython with the test build of wfpredirect "
            "(WFPREDIRECT_EMULATED_CALLOUT=1; the Windows lane makes it)",
            file=sys.stderr,
        )
        return 2
    wine = wine_version()
    windows = f"Windows {platform.version()}"
    result: dict[str, Any] = {
        "benchmark": "bench_windows_calls",
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "where": f"Wine {wine} (reporting {windows})" if wine else windows,
        "timed_on": f"Wine {wine} (an emulation, not Windows)" if wine else windows,
        "wfpredirect": wfpredirect.__version__,
        "backend": wfpredirect.BACKEND,
        "command": "python " + " ".join(["benchmarks/bench_windows_calls.py", *sys.argv[1:]]),
        "connections": options.connections,
        "stacks": {stack: run_stack(_core, stack, options.connections) for stack in STACKS},
    }
    save(options.output, "bench_windows_calls", wine, result, render(result))
    return 0


def save(output: Path, benchmark: str, wine: str | None, result: Any, table: str) -> None:
    """Print `table`, and write it and `result` to `output` as
    BENCHMARK-wine (under Wine) or BENCHMARK-windows, .txt and .json."""
    print(table)
    name = "wine" if wine else "windows"
    output.mkdir(parents=True, exist_ok=True)
    # Line ends as the other results' (Windows' text mode would write CRLF).
    (output / f"{benchmark}-{name}.json").write_text(
        json.dumps(result, indent=2) + "\n", newline="\n"
    )
    (output / f"{benchmark}-{name}.txt").write_text(table + "\n", newline="\n")


if __name__ == "__main__":
    sys.exit(main())
