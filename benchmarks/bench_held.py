"""What one held connection costs a proxy: N connections through
`wfpredirect proxy` (each relay path) and through HAProxy, on the same nft
REDIRECT rules and the same origin, each answered before and after a hold;
for each, per connection: the kernel memory above the same N connections
made directly just before (/proc/meminfo Slab), the proxy's descriptors,
and its resident memory; and the pipe descriptors it holds in all.

Linux, root, in the benchmark's own network namespace (loopback only). The
clients connect from SOURCES loopback addresses to ORIGIN_PORTS ports of
127.0.0.2 (so that no address pair runs out of ports at large N); one rule
redirects them to the candidate's listener. The origin (this script's
`origin` role, a separate process) listens on those ports on every
address: a direct connection goes to 127.0.0.3, which no rule touches. Each
connection sends one line and must get it back before the hold and after
it; then the client resets it (SO_LINGER 0), so that no TIME_WAIT socket is
left to blur the next candidate's kernel memory.

The kernel memory is the machine's (Slab is not per namespace): other work
on the machine adds noise, a few hundred bytes per connection at 3,000.

Usage: python benchmarks/bench_held.py [--install] [--counts N ...]
       [--hold S] [--only NAME ...] [--python PATH] [--write [--output DIR]]
  --install  apt-get install haproxy (Debian's) when it is missing.
  --python   the interpreter that runs `wfpredirect proxy` (another
             build's, to compare), this one's by default.
  --write    writes held-linux.json and .txt to benchmarks/results/ (or
             --output).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import struct
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import machine
import redirect_namespace
from bench_proxy import haproxy_problem, haproxy_user, native_environment, spawn

from wfpredirect.cli._capacity import PIPE_POOL

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
ORIGINAL_HOST = "127.0.0.2"  # what the clients dial: redirected
DIRECT_HOST = "127.0.0.3"  # the same origin, not redirected
LISTEN_HOST = "127.0.0.1"
LISTEN_PORT = 15001
#: The clients' source addresses and the origin's ports: connection i comes
#: from SOURCES[i % len] to port ORIGIN_PORTS[i // len % len].
SOURCES = [f"127.0.1.{host}" for host in range(1, 5)]
ORIGIN_PORTS = list(range(9000, 9008))
LOOP_MARK = redirect_namespace.LOOP_MARK
LINE = b"held?\n"
#: Descriptors this script keeps aside beyond its clients (and the origin
#: beyond its connections).
SPARE_DESCRIPTORS = 200
KIB = 1024

#: The candidates: name, kind, and the proxy's arguments or HAProxy's
#: splicing options (splice both ways, as bench_proxy's "haproxy splice").
CANDIDATES: list[tuple[str, str, list[str]]] = [
    ("wfpredirect (native)", "wfpredirect", []),
    ("wfpredirect --relay protocol", "wfpredirect", ["--relay", "protocol"]),
    ("wfpredirect --relay streams", "wfpredirect", ["--relay", "streams"]),
    ("haproxy splice", "haproxy", ["option splice-request", "option splice-response"]),
]
#: Descriptors one connection holds by relay path (wfpredirect/cli/_capacity.py),
#: to skip a count the descriptor limit cannot hold.
PER_CONNECTION = {"wfpredirect": 2, "haproxy": 2}


# ---- the origin (a process of its own) ----


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Each line back, until the end of the stream or a reset."""
    try:
        while line := await reader.readline():
            writer.write(line)
            await writer.drain()
    except OSError:
        pass
    writer.transport.abort()  # a reset: no TIME_WAIT here either


async def serve_origin() -> None:
    servers = [
        await asyncio.start_server(echo, "0.0.0.0", port, backlog=4096) for port in ORIGIN_PORTS
    ]
    print("ready", flush=True)
    await asyncio.gather(*(server.serve_forever() for server in servers))


# ---- measuring ----


def slab_kib() -> int:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("Slab:"):
                return int(line.split()[1])
    raise RuntimeError("no Slab line in /proc/meminfo")


def process_figures(pid: int) -> dict[str, int]:
    """The process's descriptors, its pipes among them, and its RSS (KiB)."""
    directory = f"/proc/{pid}/fd"
    links = []
    for name in os.listdir(directory):
        try:
            links.append(os.readlink(f"{directory}/{name}"))
        except FileNotFoundError:
            continue
    with open(f"/proc/{pid}/status") as status:
        rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return {
        "descriptors": len(links),
        "pipes": sum(link.startswith("pipe:") for link in links),
        "rss_kib": rss,
    }


def settle() -> int:
    """Slab once freed memory has gone back (the kernel frees sockets after
    an RCU grace period): the lowest of a few readings."""
    readings = []
    for _ in range(5):
        time.sleep(0.2)
        readings.append(slab_kib())
    return min(readings)


def open_connections(count: int, host: str) -> list[socket.socket]:
    """`count` connections to `host`, spread over SOURCES and ORIGIN_PORTS,
    each answered once."""
    clients = []
    for index in range(count):
        source = SOURCES[index % len(SOURCES)]
        port = ORIGIN_PORTS[index // len(SOURCES) % len(ORIGIN_PORTS)]
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        client.settimeout(10)
        client.bind((source, 0))
        client.connect((host, port))
        clients.append(client)
        ask(client)
    return clients


def ask(client: socket.socket) -> None:
    client.sendall(LINE)
    answer = b""
    while len(answer) < len(LINE):
        chunk = client.recv(len(LINE) - len(answer))
        if not chunk:
            raise RuntimeError(f"{client.getsockname()}: closed before its answer")
        answer += chunk
    if answer != LINE:
        raise RuntimeError(f"{client.getsockname()}: answered {answer!r}")


def reset_all(clients: list[socket.socket]) -> None:
    linger = struct.pack("ii", 1, 0)
    for client in clients:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        client.close()


def hold(count: int, host: str, seconds: float, pid: int | None) -> dict[str, float]:
    """`count` connections held for `seconds`: the Slab they add (KiB), and
    the process `pid`'s figures before and while it holds them."""
    before = settle()
    idle = process_figures(pid) if pid else {}
    clients = open_connections(count, host)
    held = process_figures(pid) if pid else {}
    time.sleep(seconds)
    during = settle()
    for client in clients:
        ask(client)
    reset_all(clients)
    figures: dict[str, float] = {"slab_kib": during - before, "answered": count}
    for key in ("descriptors", "pipes", "rss_kib"):
        if pid:
            figures[key] = held[key] - idle[key] if key != "pipes" else held[key]
    return figures


# ---- the candidates ----


def haproxy_config(options: list[str], count: int, user: tuple[str, str]) -> str:
    lines = "".join(f"    {option}\n" for option in options)
    return f"""global
    maxconn {count + SPARE_DESCRIPTORS}
    # The native relay's pool size; HAProxy's default, maxconn / 4, would
    # ask for more descriptors than the limit at 9,000 connections.
    maxpipes {PIPE_POOL}
    user {user[0]}
    group {user[1]}

defaults
    mode tcp
    timeout connect 5s
    timeout client 10m
    timeout server 10m
    option nolinger
{lines}
frontend redirected
    bind {LISTEN_HOST}:{LISTEN_PORT}
    default_backend original_destination

backend original_destination
    # 0.0.0.0:0: the address and port the client dialed (SO_ORIGINAL_DST)
    server original 0.0.0.0:0
"""


def start(
    stack: ExitStack, kind: str, options: list[str], count: int, directory: Path, python: str
) -> subprocess.Popen[bytes]:
    if kind == "haproxy":
        config = directory / "haproxy.cfg"
        config.write_text(haproxy_config(options, count, haproxy_user()[:2]))
        command = ["haproxy", "-db", "-f", str(config)]
    else:
        command = [
            python, "-m", "wfpredirect", "proxy",
            "--listen", f"{LISTEN_HOST}:{LISTEN_PORT}",
            "--summary-interval", "0", "--log-level", "warning", *options,
        ]  # fmt: skip
    with open(directory / "errors.log", "w") as errors:
        process = spawn(command, subprocess.DEVNULL, errors, kind == "haproxy")
    stack.callback(process.wait, 30)
    stack.callback(lambda: process.poll() is None and process.terminate())
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{command[0]} exited: {(directory / 'errors.log').read_text()}")
        try:
            reset_all(open_connections(1, ORIGINAL_HOST))
            return process
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{' '.join(command)} relayed nothing in 20 s")


def too_many(name: str, kind: str, count: int, limit: int) -> str:
    """Why `count` connections cannot fit under descriptor limit `limit`."""
    per = PER_CONNECTION.get(name, PER_CONNECTION[kind])
    need = per * count + SPARE_DESCRIPTORS
    if need <= limit:
        return ""
    return f"{per} descriptors a connection: {need:,} needed, the limit is {limit:,}"


def per_connection(figures: dict[str, float], direct: dict[str, float], count: int) -> dict:
    row = {
        "kernel_kib": (figures["slab_kib"] - direct["slab_kib"]) / count,
        "descriptors": figures["descriptors"] / count,
        "pipe_descriptors": figures["pipes"],
        "rss_kib": figures["rss_kib"] / count,
        "answered": figures["answered"],
    }
    return row


def raise_descriptor_limit() -> int:
    """The soft descriptor limit raised to the hard one: the limit now."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def run(options: argparse.Namespace) -> dict[str, Any]:
    hard = raise_descriptor_limit()
    problem = haproxy_problem(options.install)
    how = redirect_namespace.enter_redirect_namespace(rules(problem))
    for name, value in {
        "net/ipv4/ip_local_port_range": "20000 65000",
    }.items():
        with open(f"/proc/sys/{name}", "w") as sysctl:
            sysctl.write(value)
    result: dict[str, Any] = {
        "benchmark": "bench_held",
        "machine": machine.describe(),
        "namespace": how,
        "descriptor_limit": hard,
        "haproxy_version": haproxy_version() if not problem else "",
        "hold_seconds": options.hold,
        "python": options.python,
        "counts": {},
    }
    chosen = [c for c in CANDIDATES if not options.only or c[0] in options.only]
    with ExitStack() as stack:
        origin = subprocess.Popen(
            [sys.executable, __file__, "origin"], stdout=subprocess.PIPE, cwd="/"
        )
        stack.callback(origin.wait, 10)
        stack.callback(origin.terminate)
        assert origin.stdout is not None
        if origin.stdout.readline().strip() != b"ready":
            raise RuntimeError("the origin did not start")
        for count in options.counts:
            rows: dict[str, Any] = {"direct": {}}  # first in the table, filled last
            directs = []
            for name, kind, arguments in chosen:
                reason = (problem if kind == "haproxy" else "") or too_many(name, kind, count, hard)
                if reason:
                    rows[name] = {"skipped": reason}
                    print(f"{count} {name}: skipped ({reason})", flush=True)
                    continue
                # The same connections made directly just before: the
                # machine's drift between the two readings stays small.
                direct = hold(count, DIRECT_HOST, options.hold, None)
                directs.append(direct["slab_kib"] / count)
                with ExitStack() as run_stack, tempfile.TemporaryDirectory() as scratch:
                    process = start(
                        run_stack, kind, arguments, count, Path(scratch), options.python
                    )
                    figures = hold(count, ORIGINAL_HOST, options.hold, process.pid)
                rows[name] = per_connection(figures, direct, count)
                print(f"{count} {name}: {rows[name]}", flush=True)
            rows["direct"] = {"kernel_kib_total": sorted(directs)[len(directs) // 2]}
            result["counts"][str(count)] = rows
    return result


def rules(haproxy_problem_text: str) -> str:
    exemptions = [f"    meta mark & {LOOP_MARK:#x} == {LOOP_MARK:#x} return"]
    if not haproxy_problem_text:
        exemptions.append(f"    meta skuid {haproxy_user()[2]} return")
    ports = f"{ORIGIN_PORTS[0]}-{ORIGIN_PORTS[-1]}"
    body = "\n".join(
        [*exemptions, f"    ip daddr {ORIGINAL_HOST} tcp dport {ports} redirect to :{LISTEN_PORT}"]
    )
    return f"""table ip wfpr_bench_held {{
  chain out {{
    type nat hook output priority -100;
{body}
  }}
}}
"""


def haproxy_version() -> str:
    completed = subprocess.run(
        ["haproxy", "-v"], capture_output=True, text=True, env=native_environment()
    )
    return completed.stdout.splitlines()[0] if completed.stdout else ""


# ---- the table ----


def table(result: dict[str, Any]) -> str:
    described = result["machine"]
    lines = [
        "bench_held: held connections through each proxy, per connection "
        f"(hold {result['hold_seconds']:g} s, each answered before and after)",
        f"system {described['system']}, kernel {described['kernel']}, cpus {described['cpus']}, "
        f"python {described['python']}, {result['haproxy_version'] or 'no HAProxy'}, "
        f"descriptor limit {result['descriptor_limit']:,}",
        "",
    ]
    header = (
        f"{'connections':>11} | {'candidate':<30} | {'descriptors':>11} | {'pipe fds':>8} | "
        f"{'kernel KiB above direct':>23} | {'RSS KiB':>7} | answered"
    )
    lines += [header, "-" * len(header)]
    for count, rows in result["counts"].items():
        for name, row in rows.items():
            if name == "direct":
                text = f"(direct: {row['kernel_kib_total']:.1f} KiB of kernel memory each, median)"
                lines.append(f"{int(count):>11,} | {name:<30} | {text}")
            elif "skipped" in row:
                lines.append(f"{int(count):>11,} | {name:<30} | skipped: {row['skipped']}")
            else:
                lines.append(
                    f"{int(count):>11,} | {name:<30} | {row['descriptors']:>11.2f} | "
                    f"{row['pipe_descriptors']:>8,} | {row['kernel_kib']:>23.1f} | "
                    f"{row['rss_kib']:>7.1f} | {row['answered']:,.0f} of {int(count):,}"
                )
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if argv[:1] == ["origin"]:
        raise_descriptor_limit()
        asyncio.run(serve_origin())
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--install", action="store_true")
    parser.add_argument("--counts", type=int, nargs="+", default=[3000, 9000])
    parser.add_argument("--hold", type=float, default=5.0)
    parser.add_argument("--only", nargs="+", default=[])
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--output", type=Path, default=RESULTS)
    options = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_held.py: needs root (a network namespace, nft rules)", file=sys.stderr)
        return 2
    result = run(options)
    text = table(result)
    print(text, end="")
    if options.write:
        options.output.mkdir(parents=True, exist_ok=True)
        (options.output / "held-linux.txt").write_text(text)
        (options.output / "held-linux.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
