"""Connections per second and bytes per second through the reference proxy
(`python -m wfpredirect proxy`) against a relay doing the same work with the
standard library only (proxy_peers.py), and the library calls' share of one
connection's setup.

Linux, in the benchmark's own network namespace: 127.0.0.2:8080 is
redirected to the reference proxy, 127.0.0.2:8081 to the stdlib relay, and
the origin serves both ports. Both relays run as their own processes; the
clients run here, and the two candidates alternate round by round. Each
figure is a median over the rounds.

Usage: python benchmarks/bench_proxy.py [--rounds N] [--seconds S]
       [--concurrency C] [--streams K] [--transfer-mib M]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import machine
import redirect_namespace

import wfpredirect

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
ORIGIN_HOST = redirect_namespace.ORIGINAL_HOST
CANDIDATES = {
    # name: (original port the client dials, the relay's listening port)
    "wfpredirect proxy": (redirect_namespace.ORIGINAL_PORT, redirect_namespace.LISTEN_PORT),
    "stdlib relay": (redirect_namespace.ORIGINAL_PORT + 1, redirect_namespace.LISTEN_PORT + 1),
}
# A redirected connection of this process's own, for timing the library calls.
PROBE = (redirect_namespace.ORIGINAL_PORT + 2, redirect_namespace.LISTEN_PORT + 2)


def start(stack: ExitStack, command: list[str]) -> None:
    """Start a process whose first line is its readiness; stop it at the end.
    Its later output (one line per connection) is read and dropped."""
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd="/"
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.kill()
        raise RuntimeError(f"{command} exited before it was ready")
    # Drain the log so the relay never blocks on a full pipe.
    drain = subprocess.Popen(["cat"], stdin=process.stdout, stdout=subprocess.DEVNULL)
    # Run last to first: stop the process, then its drain sees the end.
    stack.callback(drain.wait, 10)
    stack.callback(process.wait, 10)
    stack.callback(process.terminate)


async def fetch(port: int, size: int) -> int:
    reader, writer = await asyncio.open_connection(ORIGIN_HOST, port)
    writer.write(b"%d\n" % size)
    received = 0
    while data := await reader.read(1 << 20):
        received += len(data)
    writer.close()
    return received


async def connections_per_second(port: int, seconds: float, concurrency: int) -> float:
    """Complete connections per second: `concurrency` clients each fetching
    100 bytes, one connection after another."""
    deadline = time.monotonic() + seconds
    completed = 0

    async def client() -> None:
        nonlocal completed
        while time.monotonic() < deadline:
            if await fetch(port, 100) != 100:
                raise RuntimeError("a short answer")
            completed += 1

    started = time.monotonic()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return completed / (time.monotonic() - started)


async def bytes_per_second(port: int, streams: int, size: int) -> float:
    started = time.monotonic()
    received = await asyncio.gather(*(fetch(port, size) for _ in range(streams)))
    if received != [size] * streams:
        raise RuntimeError(f"short transfers: {received}")
    return sum(received) / (time.monotonic() - started)


async def setup_seconds(port: int, count: int) -> float:
    """Mean wall time of one connection at a time: connect, 100 bytes, close."""
    started = time.monotonic()
    for _ in range(count):
        await fetch(port, 100)
    return (time.monotonic() - started) / count


def library_seconds_per_connection(rounds: int) -> float:
    """The library's work for one connection, as the proxy does it: the
    redirect state of the accepted connection (original destination,
    records, context) and the records set on a new upstream socket. Median
    per-round mean, on a redirected connection of this process."""
    original_port, listen_port = PROBE
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((redirect_namespace.LISTEN_HOST, listen_port))
    listener.listen()
    client = socket.create_connection((ORIGIN_HOST, original_port))
    accepted, _ = listener.accept()
    upstreams = [socket.socket() for _ in range(200)]
    means = []
    try:
        for _ in range(rounds):
            started = time.perf_counter_ns()
            for upstream in upstreams:
                wfpredirect.original_destination(accepted)
                records = wfpredirect.query_redirect_records(accepted)
                wfpredirect.query_redirect_context(accepted)
                wfpredirect.set_redirect_records(upstream, records)
            means.append((time.perf_counter_ns() - started) / len(upstreams) / 1e9)
    finally:
        for sock in (*upstreams, accepted, client, listener):
            sock.close()
    return statistics.median(means)


async def measure(options: argparse.Namespace) -> dict[str, Any]:
    names = list(CANDIDATES)
    samples: dict[str, dict[str, list[float]]] = {
        name: {"connections_per_second": [], "bytes_per_second": [], "setup_seconds": []}
        for name in names
    }
    size = options.transfer_mib << 20
    for round_number in range(options.rounds):
        order = names if round_number % 2 == 0 else names[::-1]
        for name in order:
            port = CANDIDATES[name][0]
            rows = samples[name]
            rows["connections_per_second"].append(
                await connections_per_second(port, options.seconds, options.concurrency)
            )
            rows["bytes_per_second"].append(await bytes_per_second(port, options.streams, size))
            rows["setup_seconds"].append(await setup_seconds(port, 50))
    medians = {
        name: {metric: statistics.median(values) for metric, values in rows.items()}
        for name, rows in samples.items()
    }
    # Ratios of the same round, whose candidates ran back to back: they hold
    # while the machine's speed drifts between rounds.
    proxy, stdlib = samples["wfpredirect proxy"], samples["stdlib relay"]
    ratios = {
        metric: statistics.median(
            mine / theirs for mine, theirs in zip(proxy[metric], stdlib[metric], strict=True)
        )
        for metric in ("connections_per_second", "bytes_per_second")
    }
    return {"candidates": medians, "ratios": ratios}


def render(result: dict[str, Any]) -> str:
    rows = result["candidates"]
    library = result["library_seconds_per_connection"]
    lines = [
        "bench_proxy: the reference proxy against a stdlib relay doing the same work",
        f"{result['machine']['kernel']}, {result['machine']['cpu']}, "
        f"{result['machine']['cpus']} CPUs, CPython {result['machine']['python']}; "
        f"medians of {result['options']['rounds']} rounds",
        "",
        f"{'candidate':20} {'connections/s':>14} {'MiB/s':>10} {'setup (us)':>11}",
    ]
    for name, row in rows.items():
        lines.append(
            f"{name:20} {row['connections_per_second']:14,.0f} "
            f"{row['bytes_per_second'] / (1 << 20):10,.0f} {row['setup_seconds'] * 1e6:11,.0f}"
        )
    proxy = rows["wfpredirect proxy"]
    ratios = result["ratios"]
    lines += [
        "",
        f"wfpredirect proxy / stdlib relay (median of the per-round ratios): connections/s "
        f"{ratios['connections_per_second']:.2f}, bytes/s {ratios['bytes_per_second']:.2f}",
        f"library calls per connection: {library * 1e6:.1f} us = "
        f"{100 * library / proxy['setup_seconds']:.2f} % of one connection's setup "
        f"({proxy['setup_seconds'] * 1e6:,.0f} us, connect + 100 bytes + close, one at a time)",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--transfer-mib", type=int, default=64)
    parser.add_argument("--output", type=Path, default=RESULTS)
    options = parser.parse_args()
    if not sys.platform.startswith("linux"):
        print("bench_proxy.py runs on Linux (an nft redirect in a network namespace)")
        return 0
    how = redirect_namespace.enter_redirect_namespace()
    with ExitStack() as stack:
        origin_ports = [str(port) for port, _ in (*CANDIDATES.values(), PROBE)]
        start(
            stack,
            [sys.executable, str(HERE / "proxy_peers.py"), "origin", ORIGIN_HOST, *origin_ports],
        )
        proxy_port = CANDIDATES["wfpredirect proxy"][1]
        start(
            stack,
            [
                sys.executable,
                "-m",
                "wfpredirect",
                "proxy",
                "--listen",
                f"{redirect_namespace.LISTEN_HOST}:{proxy_port}",
                "--summary-interval",
                "0",
            ],
        )
        relay_port = CANDIDATES["stdlib relay"][1]
        start(
            stack,
            [
                sys.executable,
                str(HERE / "proxy_peers.py"),
                "stdlib-relay",
                redirect_namespace.LISTEN_HOST,
                str(relay_port),
            ],
        )
        measured = asyncio.run(measure(options))
        library = library_seconds_per_connection(rounds=21)
    result = {
        "benchmark": "bench_proxy",
        "platform": "linux",
        "namespace": how,
        "machine": machine.describe(),
        "load_average": os.getloadavg(),
        "options": {key: value for key, value in vars(options).items() if key != "output"},
        **measured,
        "library_seconds_per_connection": library,
    }
    text = render(result)
    print(text, end="")
    options.output.mkdir(parents=True, exist_ok=True)
    (options.output / "bench_proxy-linux.json").write_text(json.dumps(result, indent=2) + "\n")
    (options.output / "bench_proxy-linux.txt").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
