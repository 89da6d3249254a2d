"""The splice path's own mechanics on real sockets, below the proxy: each
direction through a pipe (os.splice), through a buffer where the backend
has no pipe, and through a buffer after splice answers EINVAL; each with
the exact counts and the half-close passed on in both directions."""

from __future__ import annotations

import asyncio
import errno
import random
import socket
import threading

import pytest

from netns import run_in_netns
from wfpredirect import _relay

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


def test_through_a_buffer_when_splice_answers_einval(monkeypatch: pytest.MonkeyPatch) -> None:
    pipes = [RefusingPipe(), RefusingPipe()]
    monkeypatch.setattr(_relay, "_take_pipe", pipes.pop)

    def body() -> dict[str, object]:
        result = relay_once()
        # The pipes were given back untouched: not broken, just not for these sockets.
        result["spare pipes"] = [type(pipe).__name__ for pipe in _relay._spare_pipes]
        return result

    assert run_in_netns(body) == {**EXPECTED, "spare pipes": ["RefusingPipe", "RefusingPipe"]}
