"""The reference proxy (`wfpredirect proxy`, each of its variants) against
HAProxy, the relay users would pick instead, and a relay doing the proxy's
work with the standard library only (proxy_peers.py).

Linux, root, in the benchmark's own network namespace (loopback only): for
each candidate an nft rule redirects 127.0.0.2:PORT to the candidate's
listener, and the origin serves every PORT. The loop exemptions are the ones
each would use: the loop mark for the reference proxy and the stdlib relay,
`meta skuid` for HAProxy, which runs as its own user (`user haproxy` in its
configuration, as Debian's has it). HAProxy is configured as a user would:
`mode tcp`, `server ... 0.0.0.0:0` (the address and port the client dialed,
which HAProxy reads with SO_ORIGINAL_DST), plain, with `option splice-auto`
and with `option splice-request` + `splice-response`, `nbthread` 1 and 2.
Every candidate is checked to reach the original destination before it is
measured.

Measured for each candidate, in interleaved rounds (each round runs every
candidate once, the order rotated), medians over the rounds:
  - connections per second: CONCURRENCY clients, 100 bytes each way;
  - bulk MiB/s: STREAMS parallel downloads of TRANSFER_MIB each;
  - p50 and p99 latency of one connection at a time (100 bytes each way);
  - the proxy's CPU per connection and per GiB: utime + stime of its whole
    process tree, from /proc/PID/stat.
Targets are median per-round ratios against HAProxy with as many threads as
the candidate has workers. The clients and the origin are one small C
program (native/loadgen.c, built here with cc), so that they take as little
of the machine as possible; their CPU per connection is printed beside the
proxies'.

Usage: python benchmarks/bench_proxy.py [--install] [--rounds N] [--quick]
       [--seconds S] [--concurrency C] [--streams K] [--transfer-mib M]
       [--latency-count L] [--only NAME ...] [--write [--output DIR]]
  --install  apt-get install haproxy (Debian's) when it is missing; without
             it, and without HAProxy, the HAProxy candidates are skipped.
  --write    writes bench_proxy-linux.json and .txt to benchmarks/results/
             (or --output), and the chart when matplotlib is installed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import machine
import redirect_namespace

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
ORIGIN_HOST = "127.0.0.2"  # the original destination: the origin listens here
LISTEN_HOST = "127.0.0.1"  # the candidates listen here
FIRST_ORIGINAL_PORT = 9000  # candidate i: 127.0.0.2:9000+i redirected to :16000+i
FIRST_LISTEN_PORT = 16000
LOOP_MARK = redirect_namespace.LOOP_MARK
MIB = 1 << 20
GIB = 1 << 30

#: The reference proxy's candidates: a name and the extra arguments of
#: `wfpredirect proxy`. One runs when `wfpredirect proxy --help` names each
#: of its flags and word values; so this list may name options before they
#: land. A new option is one line here.
PROXY_VARIANTS: list[tuple[str, list[str]]] = [
    ("wfpredirect", []),
    ("wfpredirect --relay streams", ["--relay", "streams"]),
    ("wfpredirect --relay protocol", ["--relay", "protocol"]),
    ("wfpredirect --loop uvloop", ["--loop", "uvloop"]),
    ("wfpredirect --relay protocol --loop uvloop", ["--relay", "protocol", "--loop", "uvloop"]),
    ("wfpredirect --workers 2", ["--workers", "2"]),
]
#: HAProxy's: (name, splicing, nbthread). Splicing "auto" is `option
#: splice-auto`, whose heuristics (HAProxy 2.6) may never choose to splice on
#: loopback; "always" is `option splice-request` and `option splice-response`.
HAPROXY_VARIANTS: list[tuple[str, str, int]] = [
    ("haproxy", "", 1),
    ("haproxy splice-auto", "auto", 1),
    ("haproxy splice", "always", 1),
    ("haproxy nbthread 2", "", 2),
    ("haproxy splice-auto nbthread 2", "auto", 2),
    ("haproxy splice nbthread 2", "always", 2),
]
SPLICE_OPTIONS = {
    "": "",
    "auto": "    option splice-auto\n",
    "always": "    option splice-request\n    option splice-response\n",
}
STDLIB = "stdlib relay"

#: The targets: (key, metric, anchor kind, comparison, limit, label).
#: The anchor is HAProxy with the candidate's thread count, plain, or
#: splicing (the better of splice-auto and splice in each round); the ratio
#: is the candidate's over the anchor's.
TARGETS: list[tuple[str, str, str, str, float, str]] = [
    ("bulk", "mib_per_second", "splice", ">=", 1.0, "MiB/s >= 1.0x splice"),
    ("p50", "p50_us", "plain", "<=", 1.6, "p50 <= 1.6x"),
    ("cpu", "cpu_us_per_connection", "plain", "<=", 2.0, "CPU/conn <= 2.0x"),
    ("connections", "connections_per_second", "plain", ">=", 0.0, "conn/s >= 0.5x|0.7x"),
]
#: The connections-per-second floor by worker count (HAProxy nbthread = workers).
CONNECTION_TARGETS = {1: 0.5, 2: 0.7}
METRICS = (
    "connections_per_second",
    "mib_per_second",
    "p50_us",
    "p99_us",
    "cpu_us_per_connection",
    "cpu_seconds_per_gib",
    "client_cpu_us_per_connection",
    "origin_cpu_us_per_connection",
)


@dataclass
class Candidate:
    name: str
    kind: str  # "wfpredirect", "stdlib" or "haproxy"
    arguments: list[str] = field(default_factory=list)  # wfpredirect's extra ones
    splice: str = ""  # haproxy's splicing: "", "auto" or "always" (SPLICE_OPTIONS)
    threads: int = 1  # haproxy's nbthread, wfpredirect's --workers
    original_port: int = 0
    listen_port: int = 0
    skipped: str = ""  # why it does not run, when it does not
    pid: int = 0


def workers(arguments: Sequence[str]) -> int:
    """The --workers N among `wfpredirect proxy` arguments (1 without)."""
    for flag, value in pairwise(arguments):
        if flag == "--workers":
            return int(value)
    return 1


def unsupported(arguments: Sequence[str], help_text: str) -> str:
    """Why `wfpredirect proxy` with these extra arguments cannot run, judged
    from its --help: a flag it does not name, or a word value it does not
    offer. Empty when it can."""
    for argument in arguments:
        if argument.startswith("--"):
            if not re.search(rf"(?<![\w-]){re.escape(argument)}(?![\w-])", help_text):
                return f"`wfpredirect proxy` has no {argument}"
        elif not argument.isdigit() and not re.search(rf"\b{re.escape(argument)}\b", help_text):
            return f"`wfpredirect proxy --help` does not offer {argument!r}"
    return ""


def candidates(help_text: str, haproxy_problem: str) -> list[Candidate]:
    """Every candidate, in the table's order, with its ports; those that
    cannot run carry the reason."""
    found = [
        Candidate(name, "wfpredirect", list(arguments), threads=workers(arguments))
        for name, arguments in PROXY_VARIANTS
    ]
    for candidate in found:
        candidate.skipped = unsupported(candidate.arguments, help_text)
    found.append(Candidate(STDLIB, "stdlib"))
    for name, splice, threads in HAPROXY_VARIANTS:
        found.append(Candidate(name, "haproxy", splice=splice, threads=threads))
        found[-1].skipped = haproxy_problem
    for index, candidate in enumerate(found):
        candidate.original_port = FIRST_ORIGINAL_PORT + index
        candidate.listen_port = FIRST_LISTEN_PORT + index
    return found


def haproxy_config(candidate: Candidate, user: str, group: str) -> str:
    """HAProxy's configuration for a candidate, as a user would write it."""
    splice = SPLICE_OPTIONS[candidate.splice]
    return f"""global
    nbthread {candidate.threads}
    maxconn 4096
    user {user}
    group {group}

defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
{splice}
frontend redirected
    bind {LISTEN_HOST}:{candidate.listen_port}
    default_backend original_destination

backend original_destination
    # 0.0.0.0:0: the address and port the client dialed (SO_ORIGINAL_DST)
    server original 0.0.0.0:0
"""


def nft_rules(found: Sequence[Candidate], haproxy_uid: int | None, probe: tuple[int, int]) -> str:
    """The namespace's rules: each candidate's original port redirected to
    its listener (and the library probe's), skipping the loop mark and,
    when HAProxy runs, its user's packets (nft 1.0.6 wants a newline before
    each closing brace)."""
    exemptions = [f"    meta mark & {LOOP_MARK:#x} == {LOOP_MARK:#x} return"]
    if haproxy_uid is not None:
        exemptions.append(f"    meta skuid {haproxy_uid} return")
    pairs = [(c.original_port, c.listen_port) for c in found] + [probe]
    redirects = [
        f"    ip daddr {ORIGIN_HOST} tcp dport {original} redirect to :{listen}"
        for original, listen in pairs
    ]
    body = "\n".join(exemptions + redirects)
    return f"""table ip wfpr_bench_proxy {{
  chain out {{
    type nat hook output priority -100;
{body}
  }}
}}
"""


# ---- the figures: medians, ratios, targets ----


def percentile(samples: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (fraction in (0, 1])."""
    ordered = sorted(samples)
    rank = max(1, -(-len(ordered) * fraction // 1))  # ceil
    return ordered[int(rank) - 1]


def medians(rounds: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    """For each candidate, each metric's median over its rounds."""
    return {
        name: {metric: statistics.median(row[metric] for row in rows) for metric in rows[0]}
        for name, rows in rounds.items()
        if rows
    }


def paired_ratio(
    mine: list[dict[str, float]], theirs: list[dict[str, float]], metric: str
) -> float:
    """The median over rounds of mine/theirs, each pair from one round (so
    the ratio holds while the machine's speed drifts between rounds)."""
    return statistics.median(a[metric] / b[metric] for a, b in zip(mine, theirs, strict=True))


def anchor_names(kind: str, threads: int) -> list[str]:
    """The HAProxy candidates a target compares with: the plain one, or
    those that splice, with `threads` threads."""
    return [
        name
        for name, splice, nbthread in HAPROXY_VARIANTS
        if nbthread == threads and bool(splice) == (kind == "splice")
    ]


def evaluate_targets(
    found: Sequence[Candidate], rounds: dict[str, list[dict[str, float]]]
) -> dict[str, dict[str, dict[str, Any]]]:
    """For each reference-proxy candidate that ran, each target: the
    anchor, the ratio, the limit and whether it holds (None when no anchor
    ran). Several anchors (splice-auto and splice): the better in each round."""
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for candidate in found:
        mine = rounds.get(candidate.name)
        if candidate.kind != "wfpredirect" or not mine:
            continue
        row: dict[str, dict[str, Any]] = {}
        for key, metric, kind, comparison, limit, _ in TARGETS:
            if key == "connections":
                limit = CONNECTION_TARGETS.get(candidate.threads, 0.0)
            anchors = [name for name in anchor_names(kind, candidate.threads) if rounds.get(name)]
            if not anchors:
                row[key] = {"anchor": "", "ratio": None, "limit": limit, "passed": None}
                continue
            # The better anchor: higher for a floor (>=), lower for a ceiling.
            best = max if comparison == ">=" else min
            ratio = statistics.median(
                sample[metric] / best(rounds[name][number][metric] for name in anchors)
                for number, sample in enumerate(mine)
            )
            passed = ratio >= limit if comparison == ">=" else ratio <= limit
            row[key] = {
                "anchor": " or ".join(anchors),
                "ratio": ratio,
                "limit": limit,
                "passed": passed,
            }
        results[candidate.name] = row
    return results


def render(result: dict[str, Any]) -> str:
    info = result["machine"]
    options = result["options"]
    table = result["candidates"]
    lines = [
        "bench_proxy: the reference proxy against HAProxy and a stdlib relay",
        f"{info['kernel']}, {info['cpu']}, {info['cpus']} CPUs, CPython {info['python']}, "
        f"{result.get('haproxy_version') or 'no HAProxy'}; medians of {options['rounds']} "
        f"rounds; {options['concurrency']} clients x 100 bytes each way for "
        f"{options['seconds']} s, {options['streams']} x {options['transfer_mib']} MiB, "
        f"{options['latency_count']} connections one at a time",
        "",
    ]
    for number, entry in enumerate(result["rounds"], 1):
        load = ", ".join(f"{value:.2f}" for value in entry["load_average"])
        lines.append(f"round {number}: load average {load}; order: {', '.join(entry['order'])}")
    lines += [
        "",
        f"{'candidate':44} {'conn/s':>8} {'MiB/s':>7} {'p50 us':>7} {'p99 us':>7} "
        f"{'CPU us/conn':>11} {'CPU s/GiB':>9}",
    ]
    for name, row in table.items():
        lines.append(
            f"{name:44} {row['connections_per_second']:8,.0f} {row['mib_per_second']:7,.0f} "
            f"{row['p50_us']:7,.0f} {row['p99_us']:7,.0f} "
            f"{row['cpu_us_per_connection']:11,.0f} {row['cpu_seconds_per_gib']:9.2f}"
        )
    for name, reason in result["skipped"].items():
        lines.append(f"{name:44} skipped: {reason}")
    if result["targets"]:
        lines += [
            "",
            "targets (median per-round ratio to HAProxy with as many threads as workers):",
            f"{'candidate':44} " + " ".join(f"{label:>26}" for *_, label in TARGETS),
        ]
        for name, row in result["targets"].items():
            cells = []
            for key, *_ in TARGETS:
                target = row[key]
                if target["ratio"] is None:
                    cells.append(f"{'n/a (no anchor)':>26}")
                else:
                    verdict = "pass" if target["passed"] else "FAIL"
                    cells.append(f"{target['ratio']:21.2f} {verdict}")
            lines.append(f"{name:44} " + " ".join(cells))
    notes = []
    if "wfpredirect" in table and STDLIB in table:
        ratios = result["stdlib_ratios"]
        notes.append(
            f"wfpredirect / stdlib relay (median per-round ratio): conn/s "
            f"{ratios['connections_per_second']:.2f}, MiB/s {ratios['mib_per_second']:.2f}"
        )
    clients = [row["client_cpu_us_per_connection"] for row in table.values()]
    origins = [row["origin_cpu_us_per_connection"] for row in table.values()]
    proxies = [row["cpu_us_per_connection"] for row in table.values()]
    if clients:
        notes.append(
            f"load generator: native/loadgen.c (C, epoll, one thread), "
            f"{statistics.median(clients):.0f} us CPU per connection for the clients and "
            f"{statistics.median(origins):.0f} us for the origin, against "
            f"{min(proxies):.0f}-{max(proxies):.0f} us for the proxies"
        )
    library = result.get("library_us_per_connection")
    if library is not None and "wfpredirect" in table:
        p50 = table["wfpredirect"]["p50_us"]
        notes.append(
            f"library calls per connection (query_redirect_info + set_redirect_records): "
            f"{library:.1f} us = {100 * library / p50:.2f} % "
            f"of one connection's p50 through wfpredirect ({p50:,.0f} us)"
        )
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"


# ---- running: the namespace, the processes, the clients ----


def haproxy_problem(install: bool) -> str:
    """Why the HAProxy candidates cannot run (empty when they can);
    installs Debian's haproxy first when asked to."""
    if os.geteuid() != 0:
        return "HAProxy runs as its own user for the `meta skuid` exemption, which needs root"
    if shutil.which("haproxy") is None and install:
        print("installing Debian's haproxy: apt-get install haproxy", flush=True)
        environment = {**native_environment(), "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=environment)
        subprocess.run(["apt-get", "install", "-y", "-qq", "haproxy"], check=True, env=environment)
    if shutil.which("haproxy") is None:
        return "haproxy is not installed (`apt-get install haproxy`, or run this with --install)"
    return ""


def haproxy_user() -> tuple[str, str, int]:
    """The user HAProxy runs as: Debian's haproxy, else nobody."""
    import grp
    import pwd

    for name in ("haproxy", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return name, grp.getgrgid(entry.pw_gid).gr_name, entry.pw_uid
    raise RuntimeError("neither a haproxy nor a nobody user exists to run HAProxy as")


def native_environment() -> dict[str, str]:
    """The environment of the programs that are not Python (the compiler,
    loadgen, HAProxy, cat): this one without a preloaded library (the
    sanitizer pass of .ci/run preloads libasan into Python only)."""
    return {name: value for name, value in os.environ.items() if name != "LD_PRELOAD"}


def spawn(command: list[str], stdout: Any, errors: Any, haproxy: bool) -> subprocess.Popen[bytes]:
    """A candidate's process, in / with no input and its errors to `errors`
    (HAProxy without a preloaded library: native_environment)."""
    return subprocess.Popen(
        command,
        stdout=stdout,
        stderr=errors,
        stdin=subprocess.DEVNULL,
        cwd="/",
        env=native_environment() if haproxy else None,
    )


def build_loadgen(directory: Path) -> Path:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("bench_proxy.py builds native/loadgen.c with cc, which is missing")
    output = directory / "loadgen"
    subprocess.run(
        [compiler, "-O2", "-Wall", "-o", str(output), str(HERE / "native" / "loadgen.c")],
        check=True,
        env=native_environment(),
    )
    return output


def namespace_sysctls() -> None:
    """The namespace's own settings (the machine's are untouched): an
    ephemeral port range above the benchmark's ports, and conntrack's
    TIME_WAIT at 1 s, so that a run's hundreds of thousands of connections
    do not fill the conntrack table."""
    settings = {
        "net/ipv4/ip_local_port_range": "20000 65000",
        "net/netfilter/nf_conntrack_tcp_timeout_time_wait": "1",
    }
    for name, value in settings.items():
        with open(f"/proc/sys/{name}", "w") as sysctl:
            sysctl.write(value)


def process_tree_seconds(pid: int) -> float:
    """utime + stime of `pid` and every live descendant, plus the children
    each has reaped (cutime + cstime), in seconds."""
    stats: dict[int, tuple[int, float]] = {}  # pid: (parent, seconds)
    ticks = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        # fields[0] is the state (field 3): ppid is field 4, utime..cstime 14-17.
        stats[int(entry)] = (int(fields[1]), sum(int(value) for value in fields[11:15]) / ticks)
    children: dict[int, list[int]] = {}
    for child, (parent, _) in stats.items():
        children.setdefault(parent, []).append(child)
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        if current in stats:
            total += stats[current][1]
        pending.extend(children.get(current, []))
    return total


def children_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def loadgen(program: Path, *arguments: object, timeout: float = 120) -> str:
    completed = subprocess.run(
        [str(program), *map(str, arguments)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=native_environment(),
    )
    if completed.returncode != 0:
        raise RuntimeError(f"loadgen {arguments}: {completed.stderr.strip()}")
    return completed.stdout


def fields(line: str) -> dict[str, float]:
    return {key: float(value) for key, value in (pair.split("=") for pair in line.split())}


def reaches_origin(program: Path, candidate: Candidate, process: subprocess.Popen[Any]) -> str:
    """Waits until the candidate relays a connection; the reason it does
    not (empty when it does). The origin answers with the address the
    connection reached, which must be the original destination."""
    expected = f"{ORIGIN_HOST}:{candidate.original_port}"
    deadline = time.monotonic() + 10
    answer = ""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return f"exited with status {process.returncode}"
        result = subprocess.run(
            [str(program), "whoami", ORIGIN_HOST, str(candidate.original_port)],
            capture_output=True,
            text=True,
            env=native_environment(),
        )
        answer = result.stdout.strip()
        if answer == expected:
            return ""
        if answer:
            raise RuntimeError(f"{candidate.name} relayed to {answer}, not to {expected}")
        time.sleep(0.1)
    return f"relayed nothing to the origin within 10 s ({answer!r})"


def start_candidate(
    stack: ExitStack, candidate: Candidate, directory: Path, program: Path, user: tuple[str, str]
) -> None:
    """Starts a candidate's process and checks it reaches the original
    destination; on failure sets candidate.skipped with the reason."""
    log = directory / f"{candidate.listen_port}.log"
    if candidate.kind == "haproxy":
        config = directory / f"haproxy-{candidate.listen_port}.cfg"
        config.write_text(haproxy_config(candidate, *user))
        command = ["haproxy", "-db", "-f", str(config)]
    elif candidate.kind == "stdlib":
        command = [
            sys.executable,
            str(HERE / "proxy_peers.py"),
            "stdlib-relay",
            LISTEN_HOST,
            str(candidate.listen_port),
        ]
    else:
        command = [
            sys.executable,
            "-m",
            "wfpredirect",
            "proxy",
            "--listen",
            f"{LISTEN_HOST}:{candidate.listen_port}",
            "--summary-interval",
            "0",
            *candidate.arguments,
        ]
    with open(log, "w") as errors:
        # The per-connection log lines go to a pipe drained by `cat`, as a
        # proxy's log would go somewhere; its errors go to a file.
        process = spawn(command, subprocess.PIPE, errors, candidate.kind == "haproxy")
    assert process.stdout is not None
    drain = subprocess.Popen(
        ["cat"], stdin=process.stdout, stdout=subprocess.DEVNULL, env=native_environment()
    )
    process.stdout.close()
    stack.callback(drain.wait, 10)
    stack.callback(process.wait, 10)
    stack.callback(lambda: process.poll() is None and process.terminate())
    reason = reaches_origin(program, candidate, process)
    if reason:
        text = log.read_text().strip().splitlines()
        candidate.skipped = f"{reason}: {text[-1] if text else 'no output'}"
        return
    candidate.pid = process.pid


def measure_once(
    program: Path, candidate: Candidate, origin: int, options: Any
) -> dict[str, float]:
    """One round of one candidate: connections, bulk, latency."""
    port = candidate.original_port
    proxy_before, origin_before, client_before = (
        process_tree_seconds(candidate.pid),
        process_tree_seconds(origin),
        children_seconds(),
    )
    run = fields(
        loadgen(program, "connections", ORIGIN_HOST, port, options.concurrency, options.seconds)
    )
    proxy_after, origin_after, client_after = (
        process_tree_seconds(candidate.pid),
        process_tree_seconds(origin),
        children_seconds(),
    )
    if run["errors"] or not run["completed"]:
        raise RuntimeError(f"{candidate.name}: {run['errors']:.0f} failed connections")
    size = options.transfer_mib * MIB
    bulk = fields(loadgen(program, "bulk", ORIGIN_HOST, port, options.streams, size))
    proxy_bulk = process_tree_seconds(candidate.pid)
    if bulk["errors"] or bulk["bytes"] != size * options.streams:
        raise RuntimeError(f"{candidate.name}: short transfers ({bulk})")
    times = [
        int(line) / 1e3
        for line in loadgen(program, "latency", ORIGIN_HOST, port, options.latency_count).split()
    ]
    completed = run["completed"]
    return {
        "connections_per_second": completed / run["seconds"],
        "mib_per_second": bulk["bytes"] / MIB / bulk["seconds"],
        "p50_us": percentile(times, 0.50),
        "p99_us": percentile(times, 0.99),
        "cpu_us_per_connection": (proxy_after - proxy_before) / completed * 1e6,
        "cpu_seconds_per_gib": (proxy_bulk - proxy_after) / (bulk["bytes"] / GIB),
        "client_cpu_us_per_connection": (client_after - client_before) / completed * 1e6,
        "origin_cpu_us_per_connection": (origin_after - origin_before) / completed * 1e6,
    }


def rotations(names: list[str], count: int) -> Iterator[list[str]]:
    """Each round's order: every candidate once, the start rotated."""
    for number in range(count):
        shift = number % len(names) if names else 0
        yield names[shift:] + names[:shift]


def library_us_per_connection(probe: tuple[int, int], rounds: int = 21) -> float:
    """The library's work for one connection, as a proxy written with the
    public calls does it (query_redirect_info on the accepted socket,
    set_redirect_records on a new upstream), on a redirected connection of
    this process: the median per-round mean. The native relay makes the
    same system calls in its own loop."""
    import wfpredirect

    original_port, listen_port = probe
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((LISTEN_HOST, listen_port))
    listener.listen()
    client = socket.create_connection((ORIGIN_HOST, original_port))
    accepted, _ = listener.accept()
    upstreams = [socket.socket() for _ in range(200)]
    means = []
    try:
        for _ in range(rounds):
            started = time.perf_counter_ns()
            for upstream in upstreams:
                info = wfpredirect.query_redirect_info(accepted)
                assert info.records is not None
                wfpredirect.set_redirect_records(upstream, info.records)
            means.append((time.perf_counter_ns() - started) / len(upstreams) / 1e3)
    finally:
        for sock in (*upstreams, accepted, client, listener):
            sock.close()
    return statistics.median(means)


def proxy_help() -> str:
    return subprocess.run(
        [sys.executable, "-m", "wfpredirect", "proxy", "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd="/",
    ).stdout


def haproxy_version() -> str:
    if shutil.which("haproxy") is None:
        return ""
    output = subprocess.run(
        ["haproxy", "-v"], capture_output=True, text=True, env=native_environment()
    ).stdout
    match = re.search(r"HAProxy version (\S+)", output)
    return f"HAProxy {match.group(1)}" if match else "HAProxy"


def arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--install", action="store_true", help="apt-get install haproxy")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="short runs: a check, not a figure")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--transfer-mib", type=int, default=256)
    parser.add_argument("--latency-count", type=int, default=2000)
    parser.add_argument(
        "--only", nargs="+", metavar="NAME", help="only the candidates whose name contains one"
    )
    parser.add_argument("--write", action="store_true", help="write the results and the chart")
    parser.add_argument("--output", type=Path, default=RESULTS)
    options = parser.parse_args(argv)
    if options.quick:
        options.seconds, options.transfer_mib, options.latency_count = 0.5, 32, 200
    return options


def main() -> int:
    options = arguments()
    if not sys.platform.startswith("linux"):
        print("bench_proxy.py runs on Linux (nft redirects in a network namespace)")
        return 0
    problem = haproxy_problem(options.install)
    found = candidates(proxy_help(), problem)
    if options.only:
        found = [c for c in found if any(part in c.name for part in options.only)]
    user = haproxy_user() if not problem else ("", "", -1)
    probe = (FIRST_ORIGINAL_PORT + 99, FIRST_LISTEN_PORT + 99)
    rules = nft_rules(found, None if problem else user[2], probe)
    how = redirect_namespace.enter_redirect_namespace(rules)
    if os.geteuid() == 0:
        namespace_sysctls()
    rounds: dict[str, list[dict[str, float]]] = {}
    round_notes = []
    with ExitStack() as stack, tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        os.chmod(directory, 0o755)  # HAProxy reads its configuration before it drops root
        program = build_loadgen(directory)
        ports = [str(c.original_port) for c in found]
        origin = subprocess.Popen(
            [str(program), "origin", ORIGIN_HOST, *ports],
            stdout=subprocess.PIPE,
            text=True,
            env=native_environment(),
        )
        stack.callback(origin.wait, 10)
        stack.callback(origin.terminate)
        assert origin.stdout is not None
        if origin.stdout.readline().strip() != "ready":
            raise RuntimeError("the origin did not start")
        for candidate in found:
            if not candidate.skipped:
                start_candidate(stack, candidate, directory, program, user[:2])
        running = [c for c in found if not c.skipped]
        by_name = {c.name: c for c in running}
        for candidate in running:  # a warm-up: every code path once, untimed
            try:
                loadgen(program, "latency", ORIGIN_HOST, candidate.original_port, 20)
                loadgen(program, "bulk", ORIGIN_HOST, candidate.original_port, 2, MIB)
            except (RuntimeError, subprocess.TimeoutExpired) as error:
                candidate.skipped = f"failed its warm-up: {error}"
        running = [c for c in running if not c.skipped]
        for order in rotations([c.name for c in running], options.rounds):
            round_notes.append({"load_average": os.getloadavg(), "order": order})
            for name in order:
                sample = measure_once(program, by_name[name], origin.pid, options)
                rounds.setdefault(name, []).append(sample)
        library = library_us_per_connection(probe)
    table = medians({c.name: rounds[c.name] for c in running})
    stdlib_ratios = {}
    if "wfpredirect" in rounds and STDLIB in rounds:
        stdlib_ratios = {
            metric: paired_ratio(rounds["wfpredirect"], rounds[STDLIB], metric)
            for metric in ("connections_per_second", "mib_per_second")
        }
    result = {
        "benchmark": "bench_proxy",
        "platform": "linux",
        "namespace": how,
        "machine": machine.describe(),
        "haproxy_version": haproxy_version() if not problem else "",
        "options": {k: v for k, v in vars(options).items() if k not in ("output", "install")},
        "rounds": round_notes,
        "candidates": table,
        "samples": rounds,
        "skipped": {c.name: c.skipped for c in found if c.skipped},
        "targets": evaluate_targets(found, rounds),
        "stdlib_ratios": stdlib_ratios,
        "library_us_per_connection": library,
    }
    text = render(result)
    print(text, end="")
    if options.write:
        options.output.mkdir(parents=True, exist_ok=True)
        path = options.output / "bench_proxy-linux.json"
        path.write_text(json.dumps(result, indent=2) + "\n")
        (options.output / "bench_proxy-linux.txt").write_text(text)
        try:
            import plot
        except ImportError:
            print(f"wrote {path}; for the chart: pip install matplotlib, python benchmarks/plot.py")
        else:
            print(f"wrote {path} and {plot.plot(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
