"""The native relay's engine (_core.RelayEngine, ``--relay native``) on real
sockets, below the proxy's command line: the exact counts and the
half-close in both directions through pipes (splice) and through the plain
copy; the accept pause when the process is out of descriptors; and, under
strace, the options its sockets get (TCP_NODELAY both sides, the records'
mark on the upstream before its connect)."""

from __future__ import annotations

import errno
import os
import random
import re
import resource
import select
import signal
import socket
import sys
import tempfile
import threading
from typing import Any

import pytest

from netns import run_in_netns
from processes import running
from rules import redirect
from support import require_tool
from wfpredirect import _proxy_log as proxy_log

if sys.platform != "linux":
    pytest.skip("the native relay is Linux's", allow_module_level=True)

from wfpredirect._core import RelayEngine

RULES = redirect("ip", "127.0.0.2", 8080, 15001)
UP = random.Random(3).randbytes(300_000)
DOWN = random.Random(4).randbytes(200_000)


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def wait_for_events(engine: Any, count: int) -> list[tuple[Any, ...]]:
    """The engine's next `count` events (each batch signalled on event_fd)."""
    events: list[tuple[Any, ...]] = []
    while len(events) < count:
        readable, _, _ = select.select([engine.event_fd], [], [], 10)
        assert readable, f"no event in 10 s after {events}"
        events += engine.events()
    return events


def engine_on(port: int, **settings: Any) -> tuple[Any, threading.Thread]:
    listener = socket.create_server(("127.0.0.1", port))
    engine = RelayEngine([listener.detach()], connect_timeout=5, **settings)
    thread = threading.Thread(target=engine.run)
    thread.start()
    return engine, thread


def relay_once(splice: bool) -> dict[str, object]:
    """One redirected connection through the engine: the client and the
    origin each send their bytes, then shut their writing down; each side
    reads to the end."""
    origin = socket.create_server(("127.0.0.2", 8080))
    origin_saw: dict[str, bytes] = {}

    def serve() -> None:
        connection, _ = origin.accept()
        with connection:
            connection.sendall(DOWN)
            connection.shutdown(socket.SHUT_WR)
            origin_saw["data"] = read_all(connection)

    server = threading.Thread(target=serve)
    server.start()
    engine, thread = engine_on(15001, splice=splice)
    with socket.create_connection(("127.0.0.2", 8080), timeout=10) as client:
        client_address = client.getsockname()
        client.sendall(UP)
        client.shutdown(socket.SHUT_WR)
        client_saw = read_all(client)
        events = wait_for_events(engine, 1)
    server.join(10)
    engine.stop(0)
    thread.join(10)
    origin.close()
    kind, client_seen, target, up, down, seconds, code = events[0]
    return {
        "events": [(kind, client_seen, target, up, down, code)],
        "seconds": isinstance(seconds, float) and seconds >= 0,
        "client saw all": client_saw == DOWN,
        "origin saw all": origin_saw.get("data") == UP,
        "client": client_seen == client_address,
        "stopped": not thread.is_alive(),
    }


EXPECTED = {
    "events": [("relayed", "CLIENT", ("127.0.0.2", 8080), len(UP), len(DOWN), 0)],
    "seconds": True,
    "client saw all": True,
    "origin saw all": True,
    "client": True,
    "stopped": True,
}


@pytest.mark.parametrize("splice", [True, False], ids=["splice", "plain copy"])
def test_both_directions_and_both_half_closes(splice: bool) -> None:
    result = run_in_netns(lambda: relay_once(splice), nft_rules=RULES)
    events = result["events"]
    assert isinstance(events, list)
    result["events"] = [(events[0][0], "CLIENT", *events[0][2:])]
    assert result == EXPECTED


def test_out_of_descriptors_accepting_pauses_and_resumes() -> None:
    """accept() answering EMFILE: one accept_error event (the proxy's
    "accepting again in 1 s" line), then, with descriptors back, the
    waiting connection is accepted (here refused: it is addressed to the
    listener itself)."""

    def body() -> list[tuple[Any, ...]]:
        engine, thread = engine_on(15001)
        client = socket.socket()
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        lowest_free = os.dup(0)
        os.close(lowest_free)
        # Every descriptor below the limit is taken: the next one is EMFILE.
        resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))
        try:
            client.connect(("127.0.0.1", 15001))
            events = wait_for_events(engine, 1)
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        events += wait_for_events(engine, 1)
        client_address = client.getsockname()
        client.close()
        engine.stop(0)
        thread.join(10)
        return [
            (kind, "CLIENT" if address == client_address else address, *rest)
            for kind, address, *rest in events
        ]

    assert run_in_netns(body, nft_rules=RULES) == [
        ("accept_error", ("127.0.0.1", 15001), errno.EMFILE),
        ("refused", "CLIENT"),
    ]


def test_the_engine_names_each_bad_argument() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    unbound = socket.socket()
    cases = {
        "no listener": lambda: RelayEngine([], connect_timeout=1),
        "not a descriptor": lambda: RelayEngine(["3"], connect_timeout=1),  # type: ignore[list-item]
        "negative": lambda: RelayEngine([-1], connect_timeout=1),
        "not listening": lambda: RelayEngine([unbound.fileno()], connect_timeout=1),
        "timeout": lambda: RelayEngine([listener.fileno()], connect_timeout=0),
        "backlog": lambda: RelayEngine([listener.fileno()], connect_timeout=1, backlog=0),
        "marks": lambda: RelayEngine(
            [listener.fileno()], connect_timeout=1, loop_mark=0x100, mark_mask=0xF0
        ),
    }
    raised = {}
    for name, make in cases.items():
        with pytest.raises((ValueError, TypeError)) as error:
            make()
        raised[name] = (type(error.value).__name__, str(error.value))
    engine = RelayEngine([listener.detach()], connect_timeout=1)
    with pytest.raises(ValueError) as error:
        engine.stop(-1)
    raised["grace"] = (type(error.value).__name__, str(error.value))
    unbound.close()
    assert raised == {
        "no listener": ("ValueError", "RelayEngine: listeners must name at least one socket"),
        "not a descriptor": (
            "TypeError",
            "RelayEngine: listeners must be a sequence of descriptors (int)",
        ),
        "negative": ("ValueError", "RelayEngine: listeners: -1 is not a descriptor"),
        "not listening": ("ValueError", "RelayEngine: a listener is not listening"),
        "timeout": ("ValueError", "RelayEngine: connect_timeout must be a positive number"),
        "backlog": ("ValueError", "RelayEngine: backlog must be at least 1"),
        "marks": (
            "ValueError",
            "RelayEngine: loop_mark 0x100 is not inside mark_mask 0xf0: the loop mark must "
            "only use bits of the mark mask",
        ),
        "grace": ("ValueError", "RelayEngine.stop: grace must be a number of seconds, 0 or more"),
    }


# ---- the system calls, under strace ------------------------------------------

SETSOCKOPT = re.compile(r"^\d+ +setsockopt\((\d+), (\w+), (\w+), \[(\d+)\], 4\) = 0$")
SOCKET = re.compile(
    r"^\d+ +socket\(AF_INET, SOCK_STREAM\|SOCK_CLOEXEC\|SOCK_NONBLOCK, "
    r"IPPROTO_TCP\) = (\d+)$"
)
ACCEPT = re.compile(r"^\d+ +accept4\(\d+, .*\) = (\d+)$")
CONNECT = re.compile(r"^\d+ +connect\((\d+), .*sin_port=htons\(8080\).*\) = -1 EINPROGRESS")


def test_the_sockets_get_tcp_nodelay_and_the_upstream_its_mark_before_connect() -> None:
    strace = require_tool("strace")
    require_tool("curl")

    def body() -> list[tuple[str, ...]]:
        origin = socket.create_server(("127.0.0.2", 8080))

        def answer() -> None:
            connection, _ = origin.accept()
            with connection:
                connection.sendall(connection.recv(100))

        server = threading.Thread(target=answer)
        server.start()
        with tempfile.TemporaryDirectory(prefix="wfpredirect-strace-") as scratch:
            trace = os.path.join(scratch, "trace")
            command = [
                strace, "-f", "-qq", "-e", "trace=socket,accept4,setsockopt,connect",
                "-o", trace, sys.executable, "-m", "wfpredirect", "proxy", "--listen",
                "127.0.0.1:15001", "--relay", "native", "--summary-interval", "0",
            ]  # fmt: skip
            ready = proxy_log.LISTENING.line(host="127.0.0.1", port=15001)
            with running(command, ready=ready) as proxy:
                with socket.create_connection(("127.0.0.2", 8080), timeout=10) as client:
                    client.sendall(b"ping")
                    assert client.recv(100) == b"ping"
                server.join(10)
                # The proxy is strace's child: strace ends with it.
                with open(f"/proc/{proxy.pid}/task/{proxy.pid}/children") as children:
                    os.kill(int(children.read().split()[0]), signal.SIGTERM)
                proxy.communicate(timeout=10)
            with open(trace, encoding="utf-8") as lines:
                calls = lines.read().splitlines()
        origin.close()
        # From the accept on: the engine's calls for the one connection.
        first = next(i for i, line in enumerate(calls) if ACCEPT.match(line))
        accepted = ACCEPT.match(calls[first])
        assert accepted is not None
        names = {accepted[1]: "accepted"}
        seen: list[tuple[str, ...]] = []
        for line in calls[first:]:
            if made := SOCKET.match(line):
                names[made[1]] = "upstream"
                seen.append(("socket", "upstream"))
            elif option := SETSOCKOPT.match(line):
                if option[1] in names:
                    seen.append(("setsockopt", names[option[1]], *option.groups()[1:]))
            elif connecting := CONNECT.match(line):
                seen.append(("connect", names.get(connecting[1], connecting[1])))
        return seen

    assert run_in_netns(body, nft_rules=RULES) == [
        ("setsockopt", "accepted", "SOL_TCP", "TCP_NODELAY", "1"),
        ("socket", "upstream"),
        ("setsockopt", "upstream", "SOL_SOCKET", "SO_MARK", "64"),
        ("setsockopt", "upstream", "SOL_TCP", "TCP_NODELAY", "1"),
        ("connect", "upstream"),
    ]
