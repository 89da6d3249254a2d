"""The proxy's asyncio relay paths on Windows' Proactor loop (issue 22):
``protocol`` and ``streams``, the two ``wfpredirect proxy --relay`` has on
Windows, timed inside Windows CPython over loopback. In the Windows lane
that is Windows CPython under Wine (Wine's sockets and completion ports: an
emulation, not Windows), and the table says so.

What runs is the proxy's own work per connection, the redirect judgement
aside: asyncio's server on the Proactor loop accepts (as the proxy's does on
Windows), the path's connection opens the upstream (``open_upstream`` with
no records), both sockets get keepalive, and the path's ``relay`` moves the
bytes both ways, passing each end of stream on, then closes. Nothing is
redirected (under Wine there is no callout driver); the judgement's calls
are the same on both paths, and bench_windows_calls.py counts them.

The origin and the clients run in a second process (this script with
``--load``), so the relay process's CPU time (user and system, Windows'
GetProcessTimes through time.process_time) is the relay's alone. Under Wine
part of every socket call's work is done by Wine's server process
(wineserver), which is in neither path's figure.

Each round times both paths, in a rotating order, and each path in two
phases:
- connections: up to --connections connections one after another (at most
  PHASE_SECONDS), each a REQUEST_SIZE-byte request, then the client's end of
  stream, an ANSWER_SIZE-byte answer and the origin's close: the relay
  process's CPU per connection, and connections per second;
- download: one connection carrying --download-mib MiB from the origin: MiB/s
  (wall time) and the relay process's CPU per MiB.
In both, the Proactor's overlapped socket operations (Operations) are
counted too: what a path asks of Winsock, which depends far less than the
times on how fast Wine is (only through how writes gather while a send is
under way). Every byte is checked: the request the origin
got, the answer and the download the client got, and the byte counts the
relay reported.

Prints a table, saves it as JSON and text under benchmarks/results/, exits
0; off Windows, says what it needs and exits 2.

Usage: python benchmarks/bench_windows_relay.py [--rounds R]
    [--connections N] [--download-mib M] [--output DIR]
From Linux, in Windows CPython under Wine from the Windows lane's cached
tools: python benchmarks/wine_run.py benchmarks/bench_windows_relay.py
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import socket
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

# The embeddable Windows CPython (its python3X._pth) does not put a
# script's folder on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_windows_calls import save, wine_version

import wfpredirect
from wfpredirect import RedirectInfo
from wfpredirect.cli import _relay as relay
from wfpredirect.cli import _relay_protocol, _relay_streams

RESULTS = Path(__file__).resolve().parent / "results"
PATHS = ("protocol", "streams")
LOOPBACK = "127.0.0.1"
REQUEST_SIZE = 100
ANSWER_SIZE = 100
#: The first byte of a request says what the origin answers.
SMALL, DOWNLOAD = b"c", b"d"
REQUEST = SMALL + bytes(range(REQUEST_SIZE - 1))
ANSWER = bytes(reversed(range(ANSWER_SIZE)))
#: The download's bytes: this block over and over.
BLOCK = bytes(range(256)) * 256
#: The bound on each phase: a connections phase stops there even short of
#: its count, and the relay's connections must all have ended within it.
PHASE_SECONDS = 60
#: A client or origin socket waits this long for its peer.
SOCKET_TIMEOUT = 30


# -- the load process: origin and clients ------------------------------------


def receive_all(sock: socket.socket) -> bytes:
    """Everything up to the peer's end of stream."""
    parts = []
    while data := sock.recv(65536):
        parts.append(data)
    return b"".join(parts)


def serve_origin(sock: socket.socket) -> None:
    """One origin connection: the whole request, then its answer and a close."""
    with sock:
        sock.settimeout(SOCKET_TIMEOUT)
        request = receive_all(sock)
        if request == REQUEST:
            sock.sendall(ANSWER)
        elif request[:1] == DOWNLOAD and len(request) == 9:
            remaining = int.from_bytes(request[1:], "big")
            view = memoryview(BLOCK)
            while remaining:
                sent = sock.send(view[: min(remaining, len(BLOCK))])
                remaining -= sent
        else:
            raise RuntimeError(f"the origin got {request[:20]!r} ({len(request)} bytes)")


def run_origin(listener: socket.socket) -> None:
    while True:
        sock, _ = listener.accept()
        threading.Thread(target=serve_origin, args=(sock,), daemon=True).start()


def one_exchange(port: int, request: bytes) -> socket.socket:
    sock = socket.create_connection((LOOPBACK, port), timeout=SOCKET_TIMEOUT)
    sock.sendall(request)
    sock.shutdown(socket.SHUT_WR)
    return sock


def run_connections(port: int, count: int) -> tuple[int, float]:
    """Up to `count` exchanges through the relay on `port`, one at a time,
    for at most PHASE_SECONDS: how many, and the seconds they took."""
    start = time.perf_counter()
    done = 0
    while done < count and time.perf_counter() - start < PHASE_SECONDS:
        with one_exchange(port, REQUEST) as sock:
            answer = receive_all(sock)
        if answer != ANSWER:
            raise RuntimeError(f"connection {done}: the answer was {answer[:20]!r}")
        done += 1
    return done, time.perf_counter() - start


def run_download(port: int, size: int) -> float:
    """One download of `size` bytes through the relay on `port`: seconds."""
    start = time.perf_counter()
    received = 0
    with one_exchange(port, DOWNLOAD + size.to_bytes(8, "big")) as sock:
        buffer = bytearray(len(BLOCK))
        while count := sock.recv_into(buffer):
            offset = received % len(BLOCK)
            # recv_into never crosses the end of the buffer; a read that
            # starts inside the block may, so it is checked in two pieces.
            first = min(count, len(BLOCK) - offset)
            if buffer[:first] != BLOCK[offset : offset + first] or (
                buffer[first:count] != BLOCK[: count - first]
            ):
                raise RuntimeError(f"the download differs after {received} bytes")
            received += count
    if received != size:
        raise RuntimeError(f"the download carried {received} bytes, not {size}")
    return time.perf_counter() - start


def load() -> int:
    """The load process: the origin's port on stdout, then one answer line
    per command line on stdin ("connections PORT N", "download PORT BYTES")."""
    listener = socket.create_server((LOOPBACK, 0))
    threading.Thread(target=run_origin, args=(listener,), daemon=True).start()
    print(f"origin {listener.getsockname()[1]}", flush=True)
    for line in sys.stdin:
        command, port, amount = line.split()
        if command == "connections":
            done, seconds = run_connections(int(port), int(amount))
            print(f"{done} {seconds}", flush=True)
        else:
            print(f"{int(amount)} {run_download(int(port), int(amount))}", flush=True)
    return 0


# -- the relay process ---------------------------------------------------------


class Relays:
    """The relay tasks of a phase, their byte counts, and their outcomes."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[None]] = set()
        self.moved = {"up": 0, "down": 0}
        self.relayed = 0
        self.errors: list[BaseException] = []

    def count(self, name: str, size: int) -> None:
        self.moved[name] += size

    def start(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def run(self, connection: Any, origin: tuple[str, int]) -> None:
        """The proxy's steps for one connection (cli/_proxy.py, Proxy._relay), the
        redirect judgement and the log line aside."""
        try:
            await connection.open_upstream(
                RedirectInfo(None, None, origin), loop_mark=None, mark_mask=None
            )
            for sock in connection.sockets():
                relay.keep_alive(sock)
            error = await connection.relay(self.count)
        except Exception as raised:  # noqa: BLE001 - reported after the phase
            error = raised
        if error is not None:
            self.errors.append(error)
        self.relayed += 1

    async def ended(self) -> None:
        """Every connection of the phase relayed, or RuntimeError."""
        deadline = time.monotonic() + PHASE_SECONDS
        while self.tasks and time.monotonic() < deadline:
            await asyncio.wait(set(self.tasks), timeout=deadline - time.monotonic())
        if self.tasks or self.errors:
            raise RuntimeError(f"{len(self.tasks)} relays still running, errors {self.errors}")


async def serve(path: str, origin: tuple[str, int], relays: Relays) -> asyncio.AbstractServer:
    """The relay path `path`'s server on a new loopback port."""
    loop = asyncio.get_running_loop()
    if path == "streams":

        async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await relays.run(_relay_streams.StreamConnection(reader, writer), origin)

        # As serve_streams on Windows: asyncio's server, its streams.
        return await asyncio.start_server(lambda r, w: relays.start(connected(r, w)), LOOPBACK, 0)

    class ClientSide(_relay_protocol._Side):
        """_relay_protocol._ClientSide without the judgement: the relay starts at once."""

        def __init__(self) -> None:
            super().__init__("up")
            _relay_protocol.ProtocolConnection(self)  # type: ignore[arg-type]

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            relays.start(relays.run(self.connection, origin))

    return await loop.create_server(ClientSide, LOOPBACK, 0)


class Operations:
    """The Proactor's overlapped socket operations (its accept, connect,
    recv, recv_into and send: each one a Winsock call and a completion),
    counted by wrapping the loop's proactor (asyncio's private
    ``_proactor``; its transports look the methods up at each call): what a
    path asks of the sockets."""

    NAMES = ("accept", "connect", "recv", "recv_into", "send")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.count = 0
        proactor = loop._proactor  # type: ignore[attr-defined]
        for name in self.NAMES:
            setattr(proactor, name, self._counting(getattr(proactor, name)))

    def _counting(self, operation: Callable[..., Any]) -> Callable[..., Any]:
        def counted(target: Any, *arguments: Any, **keywords: Any) -> Any:
            # The load process's pipes go through the same methods.
            if isinstance(target, socket.socket):
                self.count += 1
            return operation(target, *arguments, **keywords)

        return counted


class Load:
    """The load process, driven one command line at a time."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        assert process.stdin is not None and process.stdout is not None
        self.stdin, self.stdout = process.stdin, process.stdout

    async def line(self) -> list[str]:
        line = await asyncio.wait_for(self.stdout.readline(), 2 * PHASE_SECONDS)
        if not line:
            raise RuntimeError("the load process ended (its error is above)")
        return line.decode().split()

    async def ask(self, command: str) -> list[str]:
        self.stdin.write(command.encode() + b"\n")
        await self.stdin.drain()
        return await self.line()


async def timed_phase(
    path: str,
    origin: tuple[str, int],
    command: Callable[[int], str],
    load: Load,
    operations: Operations,
) -> tuple[list[str], float, int, Relays]:
    """One phase on a fresh server of `path`: the load's answer, the relay
    process's CPU seconds and socket operations from the first connection
    to the last relay's end, and the relays."""
    relays = Relays()
    server = await serve(path, origin, relays)
    port = server.sockets[0].getsockname()[1]
    cpu, count = time.process_time(), operations.count
    answer = await load.ask(command(port))
    await relays.ended()
    cpu, count = time.process_time() - cpu, operations.count - count
    server.close()
    await server.wait_closed()
    return answer, cpu, count, relays


def check_moved(path: str, relays: Relays, expected: dict[str, int]) -> None:
    if relays.moved != expected:
        raise RuntimeError(f"{path}: the relay counted {relays.moved}, not {expected}")


async def measure(options: argparse.Namespace) -> dict[str, dict[str, list[float]]]:
    loop = asyncio.get_running_loop()
    if not isinstance(loop, asyncio.ProactorEventLoop):  # type: ignore[attr-defined,unused-ignore]
        raise RuntimeError(f"the loop is {type(loop).__name__}, not the Proactor loop")
    operations = Operations(loop)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--load",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    load = Load(process)
    samples: dict[str, dict[str, list[float]]] = {
        path: {key: [] for _, key, _ in COLUMNS} for path in PATHS
    }
    size = options.download_mib * 2**20
    try:
        _, port = await load.line()
        origin = (LOOPBACK, int(port))
        for number in range(options.rounds):
            shift = number % len(PATHS)
            for path in PATHS[shift:] + PATHS[:shift]:
                entry = samples[path]
                answer, cpu, count, relays = await timed_phase(
                    path,
                    origin,
                    lambda port: f"connections {port} {options.connections}",
                    load,
                    operations,
                )
                done, seconds = int(answer[0]), float(answer[1])
                check_moved(path, relays, {"up": done * REQUEST_SIZE, "down": done * ANSWER_SIZE})
                if relays.relayed != done:
                    raise RuntimeError(f"{path}: {relays.relayed} relayed, {done} connections")
                entry["cpu_us_per_connection"].append(cpu / done * 1e6)
                entry["connections_per_s"].append(done / seconds)
                entry["operations_per_connection"].append(count / done)
                answer, cpu, count, relays = await timed_phase(
                    path, origin, lambda port: f"download {port} {size}", load, operations
                )
                check_moved(path, relays, {"up": 9, "down": size})
                entry["mib_s"].append(options.download_mib / float(answer[1]))
                entry["cpu_ms_per_mib"].append(cpu / options.download_mib * 1e3)
                entry["operations_per_mib"].append(count / options.download_mib)
    finally:
        load.stdin.close()
        await asyncio.wait_for(process.wait(), PHASE_SECONDS)
    return samples


# -- the report ----------------------------------------------------------------

#: The table's columns: (heading, the samples' key, decimals).
COLUMNS = (
    ("CPU us/connection", "cpu_us_per_connection", 0),
    ("operations/connection", "operations_per_connection", 1),
    ("connections/s", "connections_per_s", 0),
    ("MiB/s", "mib_s", 0),
    ("CPU ms/MiB", "cpu_ms_per_mib", 2),
    ("operations/MiB", "operations_per_mib", 1),
)
#: Each column's width in the table.
WIDTH = 24


def summarize(samples: dict[str, dict[str, list[float]]]) -> dict[str, Any]:
    """Medians and quartiles per path and column, and protocol's figures over
    streams' (the median of the rounds' ratios; None without any)."""
    paths: dict[str, Any] = {}
    for path, entry in samples.items():
        paths[path] = {}
        for _, key, _ in COLUMNS:
            values = entry[key]
            low, median, high = (
                statistics.quantiles(values, n=4, method="inclusive")
                if len(values) > 1
                else (values[0],) * 3
            )
            paths[path][key] = {
                "median": round(median, 2),
                "q1": round(low, 2),
                "q3": round(high, 2),
                "samples": [round(value, 2) for value in values],
            }
    ratios: dict[str, float | None] = {}
    for _, key, _ in COLUMNS:
        # A round whose streams figure is 0 (a CPU time below the clock's
        # tick, on a tiny load) has no ratio.
        pairs = [
            a / b
            for a, b in zip(samples["protocol"][key], samples["streams"][key], strict=True)
            if b
        ]
        ratios[key] = round(statistics.median(pairs), 3) if pairs else None
    return {"paths": paths, "protocol_vs_streams": ratios}


def render(result: dict[str, Any]) -> str:
    lines = [
        "bench_windows_relay: the proxy's asyncio relay paths on the Proactor loop "
        f"({result['label']})",
        f"{result['implementation']} {result['python']} on {result['where']}, wfpredirect "
        f"{result['wfpredirect']} ({result['backend']}); {result['loop']}; {result['rounds']} "
        "rounds, the paths interleaved",
        f"connections: {result['connections']} per round, one at a time, each a "
        f"{REQUEST_SIZE}-byte request and a {ANSWER_SIZE}-byte answer; download: one "
        f"connection of {result['download_mib']} MiB per round",
        "CPU: the relay process's (user and system); Wine's server process is in neither "
        "path's figure; operations: the Proactor's overlapped socket operations",
        "median over the rounds (interquartile range)",
        "",
        f"{'path':<10}" + "".join(f"{heading:>{WIDTH}}" for heading, _, _ in COLUMNS),
    ]
    for path, figures in result["summary"]["paths"].items():
        cells = ""
        for _, key, decimals in COLUMNS:
            figure = figures[key]
            text = (
                f"{figure['median']:.{decimals}f} "
                f"({figure['q1']:.{decimals}f}-{figure['q3']:.{decimals}f})"
            )
            cells += f"{text:>{WIDTH}}"
        lines.append(f"{path:<10}{cells}")
    ratios = result["summary"]["protocol_vs_streams"]
    cells = ["-" if ratios[key] is None else f"{ratios[key]:.2f}x" for _, key, _ in COLUMNS]
    lines.append(
        f"{'protocol/streams':<16}{cells[0]:>{WIDTH - 6}}"
        + "".join(f"{cell:>{WIDTH}}" for cell in cells[1:])
    )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9, help="rounds (default 9)")
    parser.add_argument(
        "--connections", type=int, default=500, help="connections per path and round (default 500)"
    )
    parser.add_argument(
        "--download-mib", type=int, default=256, help="MiB per download (default 256)"
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="where the results go")
    parser.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.load:
        return load()
    if min(options.rounds, options.connections, options.download_mib) < 1:
        parser.error("--rounds, --connections and --download-mib: at least 1")
    if sys.platform != "win32":
        print(
            "bench_windows_relay: needs Windows CPython (its Proactor loop); from Linux, "
            "python benchmarks/wine_run.py benchmarks/bench_windows_relay.py",
            file=sys.stderr,
        )
        return 2

    wine = wine_version()
    windows = f"Windows {platform.version()}"
    samples = asyncio.run(measure(options))
    result: dict[str, Any] = {
        "benchmark": "bench_windows_relay",
        "label": "Wine, not Windows" if wine else "Windows",
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "where": f"Wine {wine} (reporting {windows})" if wine else windows,
        "wfpredirect": wfpredirect.__version__,
        "backend": wfpredirect.BACKEND,
        "loop": "ProactorEventLoop",
        "command": "python " + " ".join(["benchmarks/bench_windows_relay.py", *sys.argv[1:]]),
        "rounds": options.rounds,
        "connections": options.connections,
        "download_mib": options.download_mib,
        "summary": summarize(samples),
    }
    save(options.output, "windows_relay", wine, result, render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
