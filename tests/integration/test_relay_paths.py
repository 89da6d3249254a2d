"""The relay paths' own mechanics on real sockets, below the proxy's
command line: the splice path through a pipe (os.splice), through a buffer
where the backend has no pipe, and through a buffer after splice answers
EINVAL, each with the exact counts and the half-close passed on in both
directions; and TCP_NODELAY on the upstream of every path."""

from __future__ import annotations

import asyncio
import errno
import importlib.util
import os
import random
import signal
import socket
import threading

import pytest

from netns import run_in_netns
from rules import redirect
from support import unavailable
from wfpredirect.cli import _relay

RULES = redirect("ip", "127.0.0.2", 8080, 15001)

UP = random.Random(1).randbytes(300_000)
DOWN = random.Random(2).randbytes(200_000)


class RefusingPipe:
    """A pipe the kernel will not splice with (as for a socket type that
    has no splice_read): every fill answers EINVAL."""

    capacity = 1 << 20
    closed = False

    def fill(self, fd: int, size: int) -> int:
        raise OSError(errno.EINVAL, "Invalid argument")

    def drain(self, fd: int, size: int) -> int:
        raise AssertionError("nothing was filled")

    def close(self) -> None:
        self.closed = True


def connected_pair(listener: socket.socket) -> tuple[socket.socket, socket.socket]:
    outside = socket.create_connection(listener.getsockname(), timeout=10)
    inside, _ = listener.accept()
    inside.setblocking(False)
    return outside, inside


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def relay_once() -> dict[str, object]:
    """A client and an origin, each a thread on loopback, with a
    SocketConnection between them: the client sends UP then ends its
    stream; the origin reads to the end, then answers DOWN and ends its."""
    listener = socket.create_server(("127.0.0.1", 0))
    client, accepted = connected_pair(listener)
    origin, upstream = connected_pair(listener)
    listener.close()
    seen: dict[str, bytes] = {}

    def client_side() -> None:
        client.sendall(UP)
        client.shutdown(socket.SHUT_WR)
        seen["client"] = read_all(client)

    def origin_side() -> None:
        seen["origin"] = read_all(origin)  # ends only if the half-close came through
        origin.sendall(DOWN)
        origin.shutdown(socket.SHUT_WR)

    threads = [threading.Thread(target=side) for side in (client_side, origin_side)]
    counts = {"up": 0, "down": 0}

    def count(name: str, size: int) -> None:
        counts[name] += size

    async def relay() -> BaseException | None:
        connection = _relay.SocketConnection(accepted, client.getsockname())
        connection.upstream = upstream
        for thread in threads:
            thread.start()
        return await connection.relay(count)

    outcome = asyncio.run(relay())
    for thread in threads:
        thread.join(10)
    client.close()
    origin.close()
    return {
        "outcome": outcome,
        "counts": counts,
        "intact": (seen.get("origin") == UP, seen.get("client") == DOWN),
        "closed": (accepted.fileno(), upstream.fileno()),
    }


EXPECTED = {
    "outcome": None,
    "counts": {"up": len(UP), "down": len(DOWN)},
    "intact": (True, True),
    "closed": (-1, -1),
}


@pytest.fixture(autouse=True)
def no_spare_pipes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_relay, "_spare_pipes", [])


def test_through_pipes() -> None:
    def body() -> dict[str, object]:
        result = relay_once()
        # Both pipes are kept for the next connection, empty.
        result["spare pipes"] = len(_relay._spare_pipes)
        return result

    assert run_in_netns(body) == {**EXPECTED, "spare pipes": 2}


def test_through_a_buffer_where_there_is_no_pipe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_relay, "_take_pipe", lambda: None)
    assert run_in_netns(relay_once) == EXPECTED


def test_through_a_buffer_when_no_pipe_can_be_made(monkeypatch: pytest.MonkeyPatch) -> None:
    """pipe2 answering EMFILE (no descriptor left for a pipe): the plain
    copy, and no descriptor kept."""
    calls: list[int] = []

    def no_descriptor_left(flags: int) -> tuple[int, int]:
        calls.append(flags)
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    monkeypatch.setattr(os, "pipe2", no_descriptor_left)

    def body() -> dict[str, object]:
        result = relay_once()
        result["pipe2 calls"] = len(calls)
        result["spare pipes"] = len(_relay._spare_pipes)
        return result

    assert run_in_netns(body) == {**EXPECTED, "pipe2 calls": 2, "spare pipes": 0}


def test_through_a_buffer_when_splice_answers_einval(monkeypatch: pytest.MonkeyPatch) -> None:
    pipes = [RefusingPipe(), RefusingPipe()]
    monkeypatch.setattr(_relay, "_take_pipe", pipes.pop)

    def body() -> dict[str, object]:
        result = relay_once()
        # The pipes were given back untouched: not broken, just not for these sockets.
        result["spare pipes"] = [type(pipe).__name__ for pipe in _relay._spare_pipes]
        return result

    assert run_in_netns(body) == {**EXPECTED, "spare pipes": ["RefusingPipe", "RefusingPipe"]}


def upstream_socket(connection: object) -> socket.socket:
    """The upstream socket of a connection on any relay path."""
    if isinstance(connection, _relay.SocketConnection):
        assert connection.upstream is not None
        return connection.upstream
    if isinstance(connection, _relay.ProtocolConnection):
        assert connection.upstream.transport is not None
        return connection.upstream.transport.get_extra_info("socket")  # type: ignore[no-any-return]
    assert isinstance(connection, _relay.StreamConnection) and connection.upstream is not None
    return connection.upstream[1].get_extra_info("socket")  # type: ignore[no-any-return]


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
# The native path's sockets are the engine's, out of a Python hook's reach:
# test_relay_native.py sees its TCP_NODELAY in the system calls.
@pytest.mark.parametrize("path", [path for path in _relay.RELAY_PATHS if path != "native"])
def test_every_upstream_gets_tcp_nodelay(path: str, loop: str) -> None:
    """Like the client side, the upstream sends each write at once (no
    Nagle delay on a small answer's second segment), on every Python path."""
    if loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        unavailable("uvloop is not installed (.ci/run installs it)")
    from wfpredirect.cli import _proxy

    def body() -> dict[str, object]:
        seen: dict[str, object] = {}
        origin = socket.create_server(("127.0.0.2", 8080))

        def answer() -> None:
            connection, _ = origin.accept()
            with connection:
                connection.sendall(connection.recv(100))

        class Recording(_proxy.Proxy):
            async def _relay(self, connection: _relay.Connection, redirect: object) -> None:
                opened = connection.open_upstream

                async def open_and_look(**marks: object) -> None:
                    await opened(redirect, **marks)  # type: ignore[arg-type]
                    sock = upstream_socket(connection)
                    seen["nodelay"] = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)

                connection.open_upstream = lambda _, **marks: open_and_look(**marks)  # type: ignore[method-assign]
                await super()._relay(connection, redirect)  # type: ignore[arg-type]

        listening = threading.Event()

        def say(line: str) -> None:  # the proxy's lines, in this process
            if line.startswith("listening on "):
                listening.set()

        _proxy.say = say  # (in the namespace's fork only)

        def client() -> None:
            assert listening.wait(10)
            with socket.create_connection(("127.0.0.2", 8080), timeout=10) as sock:
                sock.sendall(b"ping")
                seen["answer"] = sock.recv(100)
            signal.raise_signal(signal.SIGTERM)

        threads = [threading.Thread(target=answer), threading.Thread(target=client)]
        for thread in threads:
            thread.start()
        settings = _proxy.ProxySettings("127.0.0.1", 15001, relay=path, loop=loop)
        settings.summary_interval = 0
        _proxy._runner(loop)(Recording(settings).run())
        for thread in threads:
            thread.join(10)
        origin.close()
        return seen

    assert run_in_netns(body, nft_rules=RULES) == {"nodelay": 1, "answer": b"ping"}
