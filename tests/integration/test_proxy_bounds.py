"""The proxy's bounds on the Python relay paths (``--relay protocol``,
``streams``), each in a fresh network namespace: the idle
timeout, TCP keepalive on both sockets, the connection cap (accepting
paused, not failing), a client gone before its redirect state was read, a
loop counted as refused, and accept() out of descriptors said at most once
a second, in JSON when asked."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import queue
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

import processes
from netns import run_in_netns
from processes import messages, running
from rules import LOOPING_RULES, redirect
from support import NEUTRAL_DIRECTORY, linux_only, require_tool, unavailable
from wfpredirect.cli import _proxy_log as proxy_log
from wfpredirect.cli._proxy_log import message

pytestmark = linux_only

RULES = redirect("ip", "127.0.0.2", 8080, 15001)
PROXY_READY = proxy_log.LISTENING.line(host="127.0.0.1", port=15001)
# Each Python relay path, on asyncio's loop and on uvloop's.
PATHS = [
    "protocol",
    "streams",
    "protocol-uvloop",
    "streams-uvloop",
]
LINGER_NOW = struct.pack("ii", 1, 0)
# A client port in a line, for exact comparison.
PORT = re.compile(r"(127\.0\.0\.1):\d+")


def proxy_command(path: str, *extra: str) -> list[str]:
    relay, _, loop = path.partition("-")
    if loop and importlib.util.find_spec(loop) is None:
        unavailable(f"{loop} is not installed (.ci/run installs it)")
    return processes.proxy_command("--relay", relay, "--loop", loop or "asyncio", *extra)


def stop(process: subprocess.Popen[str]) -> tuple[int, str]:
    """SIGTERM, then the exit status and the rest of stdout; nothing on stderr."""
    process.send_signal(signal.SIGTERM)
    output, errors = process.communicate(timeout=20)
    assert errors == "", errors
    return process.returncode, output


class Lines:
    """A process's standard output, read line by line in a thread (so that
    a test can wait for a line with a bound, and nothing read is lost)."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.thread = threading.Thread(target=self._read)
        self.thread.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def until(self, wanted: str, limit: int = 200) -> list[str]:
        """The lines up to and including the first whose message starts
        with `wanted`: at most `limit` lines, 10 s each."""
        seen = []
        for _ in range(limit):
            line = self.lines.get(timeout=10)
            assert line is not None, (wanted, seen)
            seen.append(line)
            if message(line).startswith(wanted):
                return seen
        raise AssertionError(wanted, seen)

    def stop(self) -> tuple[int, list[str], str]:
        """SIGTERM: the exit status, the lines not yet taken, standard error."""
        self.process.send_signal(signal.SIGTERM)
        status = self.process.wait(timeout=30)
        self.thread.join(10)
        rest = []
        while (line := self.lines.get(timeout=10)) is not None:
            rest.append(line)
        assert self.process.stderr is not None
        return status, rest, self.process.stderr.read()


def origin_listener() -> socket.socket:
    listener = socket.create_server(("127.0.0.2", 8080))
    listener.settimeout(10)
    return listener


def read_to_the_end(connection: socket.socket) -> tuple[bytes, str]:
    """What arrives until the peer closes, and how: "end" or "reset"."""
    chunks = []
    try:
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        return b"".join(chunks), "reset"
    return b"".join(chunks), "end"


def accept_queue() -> int:
    """Connections waiting in the proxy listener's accept queue (ss's Recv-Q)."""
    listing = subprocess.run(
        ["ss", "-Hltn", "sport = :15001"], capture_output=True, text=True, check=True
    ).stdout.split()
    return int(listing[1])


def without_ports(lines: list[str]) -> list[str]:
    return [PORT.sub(r"\1:PORT", line) for line in lines]


@pytest.mark.parametrize("path", PATHS)
def test_an_idle_connection_is_ended_as_an_idle_timeout(path: str) -> None:
    """No byte either way for --idle-timeout: both sides are reset (not an
    end of stream that would pass for a finished exchange), and the line
    says `idle timeout` with the exact counts."""

    def body() -> dict[str, object]:
        with running(proxy_command(path, "--idle-timeout", "0.5"), ready=PROXY_READY) as proxy:
            listener = origin_listener()
            origin_saw: dict[str, tuple[bytes, str]] = {}

            def origin() -> None:
                connection, _ = listener.accept()
                with connection:
                    connection.settimeout(10)
                    first = connection.recv(65536)
                    connection.sendall(b"hello")
                    data, how = read_to_the_end(connection)
                    origin_saw["data"] = (first + data, how)

            thread = threading.Thread(target=origin)
            thread.start()
            with socket.create_connection(("127.0.0.2", 8080), timeout=10) as client:
                client.sendall(b"hi")
                first = client.recv(5)
                data, how = read_to_the_end(client)
            thread.join(10)
            listener.close()
            status, output = stop(proxy)
        lines = messages(output)
        return {
            "client saw": (first + data, how),
            "origin saw": origin_saw.get("data"),
            "relayed": without_ports([line for line in lines if " -> " in line]),
            "exit": status,
        }

    result = run_in_netns(body, nft_rules=RULES)
    relayed = result.pop("relayed")
    assert result == {
        "client saw": (b"hello", "reset"),
        "origin saw": (b"hi", "reset"),
        "exit": 0,
    }
    assert len(relayed) == 1  # type: ignore[arg-type]
    match = proxy_log.RELAYED.pattern.fullmatch(relayed[0])  # type: ignore[index]
    assert match is not None
    assert (match["client"], match["target"], match["up"], match["down"], match["outcome"]) == (
        "127.0.0.1:PORT",
        "127.0.0.2:8080",
        "2",
        "5",
        "idle timeout",
    )


@pytest.mark.parametrize("path", PATHS)
def test_both_sockets_of_a_connection_have_keepalive(path: str) -> None:
    """While a connection is relayed, the proxy's two sockets (the accepted
    one and its upstream) have a keepalive timer; the client's and the
    origin's own sockets, which asked for none, have none."""
    require_tool("ss")

    def body() -> list[str]:
        with running(proxy_command(path), ready=PROXY_READY) as proxy:
            listener = origin_listener()
            client = socket.create_connection(("127.0.0.2", 8080), timeout=10)
            client.sendall(b"ping")
            origin, _ = listener.accept()
            origin.settimeout(10)
            assert origin.recv(4) == b"ping"
            listing = subprocess.run(
                ["ss", "-Htno", "state", "established"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            client.close()
            origin.close()
            listener.close()
            stop(proxy)
        found = []
        for row in listing.splitlines():
            fields = row.split()
            local, peer = fields[2], fields[3]
            keepalive = "timer:(keepalive," in row
            if local == "127.0.0.1:15001":
                found.append(f"accepted, keepalive {keepalive}")
            elif peer == "127.0.0.2:8080":
                found.append(f"upstream or client, keepalive {keepalive}")
            elif local == "127.0.0.2:8080":
                found.append(f"origin, keepalive {keepalive}")
        return sorted(found)

    assert run_in_netns(body, nft_rules=RULES) == [
        "accepted, keepalive True",
        "origin, keepalive False",
        # The client's socket (its peer is the original destination, as
        # it sees it) and the proxy's upstream: one of each.
        "upstream or client, keepalive False",
        "upstream or client, keepalive True",
    ]


@pytest.mark.parametrize("path", PATHS)
def test_the_connection_cap_pauses_accepting_and_a_gone_client_is_a_debug_line(
    path: str,
) -> None:
    """--max-connections 1: with one connection relayed the proxy stops
    accepting (the next clients wait in the listener's queue, where one of
    them resets); when it ends, the reset client is a `gone` line (DEBUG,
    not counted) and the waiting one is relayed. The cap's line comes at
    most once a second: the test waits that second before the first
    connection ends."""
    require_tool("ss")

    def body() -> dict[str, object]:
        command = proxy_command(path, "--max-connections", "1", "--log-level", "debug")
        with running(command, ready=PROXY_READY) as proxy:
            output = Lines(proxy)
            listener = origin_listener()
            heard: list[bytes] = []

            def origin() -> None:
                for _ in range(2):
                    connection, _ = listener.accept()
                    with connection:
                        connection.settimeout(10)
                        heard.append(read_to_the_end(connection)[0])

            thread = threading.Thread(target=origin)
            thread.start()
            first = socket.create_connection(("127.0.0.2", 8080), timeout=10)
            first.sendall(b"one")
            before_cap = output.until("at the connection cap")
            capped = time.monotonic()
            gone = socket.create_connection(("127.0.0.2", 8080), timeout=10)
            gone.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_NOW)
            gone.close()
            waiting = socket.create_connection(("127.0.0.2", 8080), timeout=10)
            waiting.sendall(b"three")
            queued = 0
            for _ in range(100):
                queued = accept_queue()
                if queued == 2:
                    break
                time.sleep(0.05)
            # The cap's line again only a second after the first.
            time.sleep(max(0.0, capped + 1.1 - time.monotonic()))
            first.shutdown(socket.SHUT_WR)
            first_saw = read_to_the_end(first)
            first.close()
            waiting.shutdown(socket.SHUT_WR)
            waiting_saw = read_to_the_end(waiting)
            waiting.close()
            thread.join(10)
            listener.close()
            status, rest, errors = output.stop()
        assert errors == "", errors
        lines = messages("\n".join(before_cap + rest))
        return {
            "queued while capped": queued,
            "origin heard": heard,
            "clients saw": [first_saw, waiting_saw],
            "lines": without_ports(
                [
                    re.sub(
                        r", \d+\.\d+ s, ", ", N s, ", re.sub(r"after \d+\.\d s", "after N s", line)
                    )
                    for line in lines
                    # The start lines (test_service.py checks privileges and capacity).
                    if not line.startswith(("listening", "stopping", "privileges", "descriptors"))
                ]
            ),
            "exit": status,
        }

    assert run_in_netns(body, nft_rules=RULES) == {
        "queued while capped": 2,
        "origin heard": [b"one", b"three"],
        "clients saw": [(b"", "end"), (b"", "end")],
        "lines": [
            "at the connection cap (1): accepting paused (0 more suppressed)",
            "127.0.0.1:PORT -> 127.0.0.2:8080: 3 bytes up, 0 bytes down, N s, closed",
            # The reset client is counted from its accept() until it is
            # closed, like any other: it reaches the cap for a moment, and
            # the waiting one reaches it again (held back: in that second).
            "at the connection cap (1): accepting paused (0 more suppressed)",
            "127.0.0.1:PORT went away before its redirect state was read",
            "127.0.0.1:PORT -> 127.0.0.2:8080: 5 bytes up, 0 bytes down, N s, closed",
            "stopped after N s: 0 open, 2 relayed, 0 refused, 0 failed, 8 bytes up, 0 bytes down",
        ],
        "exit": 0,
    }


@pytest.mark.parametrize("path", PATHS)
def test_a_loop_is_counted_as_refused(path: str) -> None:
    """A rule without the loop exemption: the proxy's own upstream comes
    back and is refused with the library's line, and the totals count it:
    the client's connection relayed, its upstream refused."""

    def body() -> dict[str, object]:
        with running(proxy_command(path), ready=PROXY_READY) as proxy:
            with socket.create_connection(("127.0.0.2", 8080), timeout=10) as client:
                saw = read_to_the_end(client)
            status, output = stop(proxy)
        lines = messages(output)
        return {
            "client saw": saw[0],
            "loop lines": len([line for line in lines if "came back" in line]),
            "stopped": re.sub(r"after \d+\.\d s", "after N s", lines[-1]),
            "exit": status,
        }

    assert run_in_netns(body, nft_rules=LOOPING_RULES) == {
        "client saw": b"",
        "loop lines": 1,
        "stopped": "stopped after N s: 0 open, 1 relayed, 1 refused, 0 failed, "
        "0 bytes up, 0 bytes down",
        "exit": 0,
    }


HELD = 100
HOLD_SECONDS = 2.0


@pytest.mark.parametrize("path", PATHS)
def test_out_of_descriptors_accept_says_so_once_a_second_in_json(path: str) -> None:
    """100 clients held against a proxy whose limit was lowered to 64 descriptors: accept()
    answers EMFILE again and again, and the proxy says so at most once a
    second (the rest counted), every line a JSON object, no traceback."""

    def body() -> dict[str, object]:
        command = proxy_command(path, "--log-format", "json", "--grace", "0")
        proxy = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=NEUTRAL_DIRECTORY,
        )
        clients: list[socket.socket] = []
        held: list[socket.socket] = []
        listener = socket.create_server(("127.0.0.2", 8080), backlog=HELD)
        listener.settimeout(0.2)
        output = Lines(proxy)
        try:
            assert json.loads(output.until("{")[0])["event"] == "listening"
            # Out of descriptors for another reason than the connection cap
            # (which the limit at start bounds): the limit lowered under the
            # running proxy.
            subprocess.run(["prlimit", f"--pid={proxy.pid}", "--nofile=64:64"], check=True)
            for _ in range(HELD):
                clients.append(socket.create_connection(("127.0.0.2", 8080), timeout=10))
            taken = output.until('{"time"', limit=1)
            while json.loads(taken[-1])["event"] != "accept_paused":
                taken += output.until('{"time"', limit=1)
            first = json.loads(taken[-1])
            deadline = time.monotonic() + HOLD_SECONDS
            while time.monotonic() < deadline:  # the origin takes what comes meanwhile
                with contextlib.suppress(TimeoutError):
                    held.append(listener.accept()[0])
            elapsed = time.monotonic() - deadline + HOLD_SECONDS
        finally:
            for sock in clients + held:
                sock.close()
            listener.close()
            status, rest, errors = output.stop()
        events = [json.loads(line) for line in taken + rest]
        paused = [event for event in events if event["event"] == "accept_paused"]
        return {
            "first": {key: first[key] for key in ("level", "listener", "error")},
            "at most one a second": len(paused) <= elapsed + 2,
            "lines": len(paused),
            "errors": errors,
            "stopped": events[-1]["event"],
            "exit": status,
        }

    result = run_in_netns(body, nft_rules=RULES)
    lines = result.pop("lines")
    assert result == {
        "first": {
            "level": "ERROR",
            "listener": "127.0.0.1:15001",
            "error": "[Errno 24] Too many open files",
        },
        "at most one a second": True,
        "errors": "",
        "stopped": "stopped",
        "exit": 0,
    }, lines


def test_the_library_logs_a_client_gone_before_its_query_at_debug() -> None:
    """start_redirect_server: a client that reset its connection before the
    query is closed, never reaches the callback, and is one DEBUG record on
    the ``wfpredirect.aio`` logger (an ERROR was one per port scan probe)."""

    def body() -> list[tuple[str, str]]:
        import asyncio
        import logging

        from wfpredirect.aio import start_redirect_server

        records: list[tuple[str, str]] = []

        class Keep(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                records.append((record.levelname, record.getMessage()))

        library = logging.getLogger("wfpredirect.aio")
        library.addHandler(Keep())
        library.setLevel(logging.DEBUG)

        async def main() -> None:
            def callback(*_: object) -> None:
                records.append(("CALLBACK", ""))

            # Listening, but not accepting yet: the client waits in the queue.
            listener = socket.create_server(("127.0.0.1", 15001))
            server = await start_redirect_server(callback, sock=listener, start_serving=False)
            gone = socket.create_connection(("127.0.0.2", 8080), timeout=10)
            gone.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_NOW)
            gone.close()
            await server.start_serving()
            for _ in range(200):
                if records:
                    break
                await asyncio.sleep(0.01)
            server.close()
            await server.wait_closed()

        asyncio.run(main())
        return [(level, re.sub(r"port \d+", "port PORT", text)) for level, text in records]

    assert run_in_netns(body, nft_rules=RULES) == [
        (
            "DEBUG",
            "closed the connection from 127.0.0.1 port PORT: it went away before its redirect "
            "state was read: [Errno 107] query_redirect_info: getpeername (Transport "
            "endpoint is not connected)",
        )
    ]


# The clients and the origin of the test below, in a process of their own
# (with descriptors enough): HELD clients through the redirect, held until
# standard input closes.
CLIENTS = f"""
import socket, sys, threading
origin = socket.create_server(("127.0.0.2", 8080), backlog={HELD})
held = []
def take():
    while True:
        try:
            held.append(origin.accept()[0])
        except OSError:
            return
threading.Thread(target=take, daemon=True).start()
clients = [socket.create_connection(("127.0.0.2", 8080), timeout=10) for _ in range({HELD})]
print("connected", flush=True)
sys.stdin.read()
origin.close()
"""


@pytest.mark.parametrize("path", ["protocol", "streams"])
def test_asyncio_s_own_accept_loop_out_of_descriptors_is_a_throttled_line(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the paths leave accepting to asyncio's own server (Windows'
    Proactor loop; here forced on the selector loop), its accept() out of
    descriptors reaches the proxy's exception handler: the accept_paused
    line in JSON, at most once a second, and nothing from asyncio itself."""
    import asyncio
    import io
    import logging
    import resource

    from wfpredirect.cli import _proxy, _relay

    monkeypatch.setattr(_relay, "own_acceptors", lambda: False)

    def body() -> dict[str, object]:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        buffer = io.StringIO()
        proxy_log.configure(logging.INFO, "json", buffer)
        from_asyncio: list[str] = []

        class Keep(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                from_asyncio.append(record.getMessage())

        logging.getLogger("asyncio").addHandler(Keep())
        ready = threading.Event()
        timing: dict[str, float] = {}

        def clients() -> None:
            assert ready.wait(10)
            helper = subprocess.Popen(
                [sys.executable, "-c", CLIENTS],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                cwd=NEUTRAL_DIRECTORY,
                # Its own descriptors: the proxy (this process) has 64.
                preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard)),
            )
            assert helper.stdout is not None and helper.stdin is not None
            assert helper.stdout.readline() == "connected\n"
            timing["start"] = time.monotonic()
            time.sleep(HOLD_SECONDS)
            timing["seconds"] = time.monotonic() - timing["start"]
            signal.raise_signal(signal.SIGTERM)
            helper.stdin.close()
            helper.wait(10)

        class Ready(_proxy.Proxy):
            async def report_periodically(self, stop: asyncio.Event) -> None:
                ready.set()

        thread = threading.Thread(target=clients)
        thread.start()
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
        settings = _proxy.ProxySettings("127.0.0.1", 15001, relay=path, grace=0.0)
        settings.summary_interval = 1.0
        asyncio.run(Ready(settings).run())
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        thread.join(20)
        events = [json.loads(line) for line in buffer.getvalue().splitlines()]
        paused = [event for event in events if event["event"] == "accept_paused"]
        return {
            "first": {key: paused[0][key] for key in ("level", "listener", "error")}
            if paused
            else None,
            "at most one a second": len(paused) <= timing["seconds"] + 2,
            "from asyncio": from_asyncio,
            # asyncio's accept pause may still end after its server closed
            # (its _start_serving then fails on the closed socket): said as
            # a loop_error line, after the stop.
            "stopped": [
                event["event"]
                for event in events
                if not (event["event"] == "loop_error" and "_start_serving" in event["error"])
            ][-1],
        }

    assert run_in_netns(body, nft_rules=RULES) == {
        "first": {
            "level": "ERROR",
            "listener": "127.0.0.1:15001",
            "error": "[Errno 24] Too many open files",
        },
        "at most one a second": True,
        "from asyncio": [],
        "stopped": "stopped",
    }
