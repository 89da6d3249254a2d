"""The native relay's engine (_core.RelayEngine, ``--relay native``) on real
sockets, below the proxy's command line: the exact counts and the
half-close in both directions through pipes (splice) and through the plain
copy; the accept pause when the process is out of descriptors; a client
gone before its query; and, under strace, the options its sockets get
(TCP_NODELAY both sides, keepalive, the records' mark on the upstream
before its connect). Then the proxy's bounds on this path: the idle
timeout, the connection cap, keepalive as ss shows it, and the totals (a
loop counted as refused; the UDP relay's counts kept)."""

from __future__ import annotations

import errno
import os
import random
import re
import resource
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import pytest

from netns import run_in_netns
from processes import messages, running
from rules import LOOPING_RULES, redirect
from support import require_tool
from wfpredirect.cli import _proxy_log as proxy_log

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


def test_a_client_gone_before_its_query_is_its_own_event() -> None:
    """A client that reset while its connection waited in the backlog: its
    redirect state cannot be read (getpeername: ENOTCONN), and the event
    says it went away (the proxy's debug line), not a failure."""

    def body() -> list[tuple[Any, ...]]:
        listener = socket.create_server(("127.0.0.1", 15001))
        client = socket.create_connection(("127.0.0.2", 8080), timeout=10)
        client_address = client.getsockname()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()  # a reset, before the engine exists to accept it
        engine = RelayEngine([listener.detach()], connect_timeout=5)
        thread = threading.Thread(target=engine.run)
        thread.start()
        events = wait_for_events(engine, 1)
        engine.stop(0)
        thread.join(10)
        return [
            (kind, "CLIENT" if address == client_address else address, *rest)
            for kind, address, *rest in events
        ]

    assert run_in_netns(body, nft_rules=RULES) == [("gone", "CLIENT")]


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
        "idle": lambda: RelayEngine([listener.fileno()], connect_timeout=1, idle_timeout=0),
        "cap": lambda: RelayEngine([listener.fileno()], connect_timeout=1, max_connections=0),
        "cap type": lambda: RelayEngine(
            [listener.fileno()],
            connect_timeout=1,
            max_connections=1.5,  # type: ignore[arg-type]
        ),
        "pipes": lambda: RelayEngine([listener.fileno()], connect_timeout=1, max_pipes=-1),
        "pipes type": lambda: RelayEngine(
            [listener.fileno()],
            connect_timeout=1,
            max_pipes="32",  # type: ignore[arg-type]
        ),
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
        "idle": ("ValueError", "RelayEngine: idle_timeout must be a positive number, or None"),
        "cap": (
            "ValueError",
            "RelayEngine: max_connections must be at least 1 (and fit an int), or None",
        ),
        "cap type": ("TypeError", "RelayEngine: max_connections must be an int, or None"),
        "pipes": (
            "ValueError",
            "RelayEngine: max_pipes must be 0 or more (and fit an int), or None",
        ),
        "pipes type": ("TypeError", "RelayEngine: max_pipes must be an int, or None"),
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
LISTENER = re.compile(r"^\d+ +accept4\((\d+), ")
CONNECT = re.compile(r"^\d+ +connect\((\d+), .*sin_port=htons\(8080\).*\) = -1 EINPROGRESS")


def test_the_sockets_get_tcp_nodelay_keepalive_and_the_upstream_its_mark_before_connect() -> None:
    """The accepted socket inherits the listener's keepalive settings (set
    once, when the engine takes the listener); the upstream gets its own."""
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
        # Before it: the listener's last four options (its descriptor may
        # have been another socket's before).
        listener = LISTENER.match(calls[first])
        assert listener is not None
        listener_options = [
            option.groups()[1:]
            for option in map(SETSOCKOPT.match, calls[:first])
            if option and option[1] == listener[1]
        ][-4:]
        seen: list[tuple[str, ...]] = [
            ("setsockopt", "listener", *option) for option in listener_options
        ]
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

    keepalive = [
        ("SOL_SOCKET", "SO_KEEPALIVE", "1"),
        ("SOL_TCP", "TCP_KEEPIDLE", "60"),
        ("SOL_TCP", "TCP_KEEPINTVL", "10"),
        ("SOL_TCP", "TCP_KEEPCNT", "6"),
    ]
    assert run_in_netns(body, nft_rules=RULES) == [
        *(("setsockopt", "listener", *option) for option in keepalive),
        ("setsockopt", "accepted", "SOL_TCP", "TCP_NODELAY", "1"),
        ("socket", "upstream"),
        ("setsockopt", "upstream", "SOL_SOCKET", "SO_MARK", "64"),
        ("setsockopt", "upstream", "SOL_TCP", "TCP_NODELAY", "1"),
        *(("setsockopt", "upstream", *option) for option in keepalive),
        ("connect", "upstream"),
    ]


# ---- the proxy's bounds on this path -----------------------------------------

READY = proxy_log.LISTENING.line(host="127.0.0.1", port=15001)


def native_proxy(*extra: str) -> list[str]:
    return [
        sys.executable, "-m", "wfpredirect", "proxy", "--listen", "127.0.0.1:15001",
        "--relay", "native", "--summary-interval", "0", *extra,
    ]  # fmt: skip


def stop(proxy: subprocess.Popen[str]) -> tuple[int, list[str]]:
    """SIGTERM; the exit status and the rest of the log (nothing on stderr)."""
    proxy.send_signal(signal.SIGTERM)
    output, errors = proxy.communicate(timeout=10)
    assert errors == "", errors
    return proxy.returncode, messages(output)


def relayed(lines: list[str]) -> list[tuple[int, int, str]]:
    """Each relayed line's (up, down, outcome), in order."""
    return [
        (int(match["up"]), int(match["down"]), match["outcome"])
        for match in map(proxy_log.RELAYED.pattern.fullmatch, lines)
        if match
    ]


def stopped(lines: list[str]) -> dict[str, int]:
    """The stop line's totals."""
    match = proxy_log.STOPPED.pattern.fullmatch(lines[-1])
    assert match is not None, lines
    return {name: int(value) for name, value in match.groupdict().items() if name != "seconds"}


def receive(sock: socket.socket, size: int) -> bytes:
    """Exactly `size` bytes, or fewer at the end of the stream."""
    data = b""
    while len(data) < size and (chunk := sock.recv(size - len(data))):
        data += chunk
    return data


class EchoOrigin:
    """127.0.0.2:8080 sends back what it reads until the end of the stream;
    counts its connections (MAX_ACCEPTS at most, each silent for at most
    ORIGIN_TIMEOUT seconds) and how each ended ("eof", "reset" or "timeout")."""

    MAX_ACCEPTS = 16
    ORIGIN_TIMEOUT = 30.0

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.2", 8080))
        self.server.settimeout(self.ORIGIN_TIMEOUT)
        self.accepted = 0
        self.ends: list[str] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while self.accepted < self.MAX_ACCEPTS:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            self.accepted += 1
            connection.settimeout(self.ORIGIN_TIMEOUT)
            threading.Thread(target=self._echo, args=(connection,), daemon=True).start()

    def _echo(self, connection: socket.socket) -> None:
        with connection:
            try:
                while data := connection.recv(65536):
                    connection.sendall(data)
            except ConnectionResetError:
                self.ends.append("reset")
                return
            except TimeoutError:
                self.ends.append("timeout")
                return
            self.ends.append("eof")

    def close(self) -> None:
        self.server.shutdown(socket.SHUT_RDWR)  # wakes the accept
        self.server.close()


def connected(message: bytes = b"ping") -> socket.socket:
    """A client through the proxy whose `message` came back: relaying."""
    client = socket.create_connection(("127.0.0.2", 8080), timeout=10)
    client.sendall(message)
    assert receive(client, len(message)) == message
    return client


def test_an_idle_connection_is_closed_and_a_busy_one_is_not() -> None:
    """--idle-timeout 2: a connection silent for 2 s is closed on both sides
    (an end of stream: nothing was left to deliver) with the outcome `idle
    timeout`; one that moves a few bytes every 0.1 s meanwhile goes on and
    ends when its client closes."""

    def body() -> dict[str, object]:
        origin = EchoOrigin()
        with running(native_proxy("--idle-timeout", "2"), ready=READY) as proxy:
            idle = connected()
            busy = connected(b"beat")
            beats = []
            for _ in range(30):  # 3 s
                busy.sendall(b"beat")
                beats.append(receive(busy, 4))
                time.sleep(0.1)
            idle_end = idle.recv(100)  # closed a second ago
            busy.shutdown(socket.SHUT_WR)
            busy_end = busy.recv(100)
            status, lines = stop(proxy)
        origin.close()
        idle.close()
        busy.close()
        return {
            "beats": set(beats),
            "ends": (idle_end, busy_end),
            "origin saw": sorted(origin.ends),
            "relayed": relayed(lines),
            "stopped": stopped(lines),
            "exit": status,
        }

    assert run_in_netns(body, nft_rules=RULES) == {
        "beats": {b"beat"},
        "ends": (b"", b""),
        "origin saw": ["eof", "eof"],
        "relayed": [(4, 4, "idle timeout"), (124, 124, "closed")],
        "stopped": {"open": 0, "relayed": 2, "refused": 0, "failed": 0, "up": 128, "down": 128},
        "exit": 0,
    }


def test_at_the_connection_cap_a_client_waits_until_one_ends() -> None:
    """--max-connections 3: with three connections held, a fourth client's
    connect completes (the kernel's backlog) but nothing relays it; one
    line says so; once one of the three ends, the fourth is relayed."""

    def body() -> dict[str, object]:
        origin = EchoOrigin()
        with running(native_proxy("--max-connections", "3"), ready=READY) as proxy:
            held = [connected() for _ in range(3)]
            fourth = socket.create_connection(("127.0.0.2", 8080), timeout=10)
            fourth.sendall(b"wait")
            answered_while_capped = select.select([fourth], [], [], 1.0)[0] != []
            origin_while_capped = origin.accepted
            held[0].shutdown(socket.SHUT_WR)
            first_end = held[0].recv(100)
            answer = receive(fourth, 4)
            for client in [*held, fourth]:
                client.close()
            status, lines = stop(proxy)
        origin.close()
        return {
            "answered while capped": answered_while_capped,
            "origin while capped": origin_while_capped,
            "first end": first_end,
            "answer": answer,
            "origin": origin.accepted,
            "cap lines": [
                line for line in lines if proxy_log.CONNECTION_CAP.pattern.fullmatch(line)
            ],
            "relayed": len(relayed(lines)),
            "exit": status,
        }

    assert run_in_netns(body, nft_rules=RULES) == {
        "answered while capped": False,
        "origin while capped": 3,
        "first end": b"",
        "answer": b"wait",
        "origin": 4,
        "cap lines": ["at the connection cap (3): accepting paused (0 more suppressed)"],
        "relayed": 4,
        "exit": 0,
    }


# `ss -Htno state established`: Recv-Q, Send-Q, local, peer, then the timer.
SS_SOCKET = re.compile(r"^\d+\s+\d+\s+(\S+)\s+(\S+)(.*)$")


def test_both_sockets_of_a_relayed_connection_have_keepalive() -> None:
    """ss shows a keepalive timer on the proxy's two sockets (the accepted
    one and its upstream), and none on the client's or the origin's."""
    ss = require_tool("ss")

    def body() -> dict[str, bool]:
        origin = EchoOrigin()
        with running(native_proxy(), ready=READY) as proxy:
            client = connected()
            listing = subprocess.run(
                [ss, "-Htno", "state", "established"], capture_output=True, text=True, check=True
            ).stdout
            client_end = f"127.0.0.1:{client.getsockname()[1]}"
            client.close()
            stop(proxy)
        origin.close()
        timers = {}
        for line in listing.splitlines():
            match = SS_SOCKET.match(line)
            assert match is not None, line
            local, peer, rest = match.groups()
            name = (
                "client" if local == client_end
                else "accepted" if local == "127.0.0.1:15001"
                else "origin" if local == "127.0.0.2:8080"
                else "upstream" if peer == "127.0.0.2:8080"
                else line
            )  # fmt: skip
            timers[name] = "timer:(keepalive," in rest
        return timers

    assert run_in_netns(body, nft_rules=RULES) == {
        "client": False,
        "accepted": True,
        "upstream": True,
        "origin": False,
    }


def test_a_loop_is_counted_as_refused() -> None:
    """A redirect rule without the loop exemption: the proxy's upstream
    comes back and is refused; the stop line counts it as refused (the
    client's own connection as relayed)."""

    def body() -> dict[str, object]:
        with running(native_proxy(), ready=READY) as proxy:
            client = socket.create_connection(("127.0.0.2", 8080), timeout=10)
            try:
                client_end = client.recv(100)
            except ConnectionResetError:
                client_end = b""
            client.close()
            status, lines = stop(proxy)
        return {"client end": client_end, "stopped": stopped(lines), "exit": status}

    assert run_in_netns(body, nft_rules=LOOPING_RULES) == {
        "client end": b"",
        "stopped": {"open": 0, "relayed": 1, "refused": 1, "failed": 0, "up": 0, "down": 0},
        "exit": 0,
    }


def test_the_udp_relay_s_totals_add_to_the_engine_s() -> None:
    """--udp on the default relay (native): the stop line's bytes are the
    TCP connection's plus the UDP flow's."""
    from test_aio_datagrams import UdpOrigin
    from test_datagrams import IPV4, ORIGIN_PORT, PROXY_PORT, route_marked_locally, tproxy_rules

    def body() -> dict[str, object]:
        route_marked_locally(IPV4)
        udp_origin = UdpOrigin()
        origin = EchoOrigin()
        command = native_proxy("--udp", f"0.0.0.0:{PROXY_PORT}")
        command.remove("native")
        command.remove("--relay")
        with running(command, ready=READY) as proxy:
            assert proxy.stdout is not None
            proxy.stdout.readline()  # listening for udp
            client = connected(b"12345678")  # 8 bytes each way
            client.shutdown(socket.SHUT_WR)
            tcp_end = client.recv(100)
            client.close()
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.settimeout(10)
            udp.bind((IPV4.client_host, 0))
            udp.sendto(b"hello", (IPV4.origin_host, ORIGIN_PORT))  # 5 up
            answer = udp.recv(100)  # "origin hello": 12 down
            udp.close()
            status, lines = stop(proxy)
        origin.close()
        del udp_origin
        return {"tcp end": tcp_end, "answer": answer, "stopped": stopped(lines), "exit": status}

    rules = RULES + tproxy_rules(IPV4)
    assert run_in_netns(body, nft_rules=rules) == {
        "tcp end": b"",
        "answer": b"origin hello",
        "stopped": {"open": 0, "relayed": 2, "refused": 0, "failed": 0, "up": 13, "down": 20},
        "exit": 0,
    }
