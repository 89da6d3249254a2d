"""The proxy's bounds below its relay paths: the keepalive options, the
idle sweep's interval, the connection cap's gate, and the event loop's
errors turned into throttled lines without a traceback."""

from __future__ import annotations

import asyncio
import errno
import io
import json
import logging
import os
import socket
from collections.abc import Iterator

import pytest

from support import linux_only
from wfpredirect.cli import _proxy, _relay
from wfpredirect.cli import _proxy_log as log


@pytest.fixture
def stream(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """configure() writing JSON to a buffer, a fresh shared throttle; the
    library's logger as it was, after."""
    library = logging.getLogger("wfpredirect")
    saved = (library.handlers[:], library.level, library.propagate)
    monkeypatch.setattr(log.THROTTLE, "last", {})
    buffer = io.StringIO()
    log.configure(logging.DEBUG, "json", buffer)
    try:
        yield buffer
    finally:
        library.handlers[:], library.level, library.propagate = saved


def events(stream: io.StringIO) -> list[tuple[str, str, str]]:
    return [
        (line["level"], line["event"], line["message"])
        for line in map(json.loads, stream.getvalue().splitlines())
    ]


def test_keep_alive_turns_keepalive_on() -> None:
    """Everywhere, Wine included (which refuses the TCP_KEEP* options)."""
    with socket.socket() as sock:
        _relay.keep_alive(sock)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1


@linux_only
def test_keep_alive_sets_the_documented_options() -> None:
    with socket.socket() as sock:
        _relay.keep_alive(sock)
        options = [sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)] + [
            sock.getsockopt(socket.IPPROTO_TCP, option) for option, _ in _relay.KEEPALIVE_OPTIONS
        ]
    assert options == [1, 60, 10, 6]


def test_keep_alive_on_a_closed_socket_does_nothing() -> None:
    sock = socket.socket()
    sock.close()
    _relay.keep_alive(sock)  # no error: a socket already gone keeps what it had


def test_the_idle_sweep_looks_four_times_a_timeout_at_most_once_a_second() -> None:
    assert [_proxy.sweep_interval(t) for t in (0.1, 2.0, 4.0, 3600.0)] == [0.025, 0.5, 1.0, 1.0]


class FakeAcceptor:
    def __init__(self, gate: _relay.Gate) -> None:
        self.gate = gate
        self.states: list[bool] = []

    def update(self) -> None:
        self.states.append(not self.gate.full)


def test_the_gate_pauses_every_acceptor_at_the_cap_and_resumes_below(
    stream: io.StringIO,
) -> None:
    gate = _relay.Gate(2)
    acceptors = [FakeAcceptor(gate), FakeAcceptor(gate)]
    gate.acceptors += acceptors  # type: ignore[arg-type]
    first, second = gate.enter(), gate.enter()
    second.release()
    second.release()  # once only
    third = gate.enter()
    for ticket in (first, third):
        ticket.release()
    assert (gate.held, [acceptor.states for acceptor in acceptors]) == (
        0,
        [[False, True, False, True]] * 2,
    )
    # The second pause came in the same second: held back.
    assert events(stream) == [
        (
            "WARNING",
            "connection_cap",
            "at the connection cap (2): accepting paused (0 more suppressed)",
        )
    ]


def test_no_cap_counts_nothing() -> None:
    gate = _relay.Gate(None)
    tickets = [gate.enter() for _ in range(3)]
    for ticket in tickets:
        ticket.release()
    assert (gate.full, gate.held) == (False, 0)


def test_the_loop_errors_become_throttled_lines_without_a_traceback(
    stream: io.StringIO,
) -> None:
    proxy = _proxy.Proxy(_proxy.ProxySettings("127.0.0.1", 0))
    loop = asyncio.new_event_loop()
    try:
        with socket.create_server(("127.0.0.1", 0)) as listener:
            port = listener.getsockname()[1]
            out_of_descriptors = {
                "message": "socket.accept() out of system resource",
                "exception": OSError(errno.EMFILE, os.strerror(errno.EMFILE)),
                "socket": listener,
            }
            for _ in range(3):
                proxy.loop_exception(loop, out_of_descriptors)
            for _ in range(2):
                proxy.loop_exception(
                    loop,
                    {"message": "Exception in callback f()", "exception": ValueError("two\nlines")},
                )
            proxy.loop_exception(loop, {"message": "Task was destroyed but it is pending!"})
    finally:
        loop.close()
    assert events(stream) == [
        (
            "ERROR",
            "accept_paused",
            f"accept() on 127.0.0.1:{port}: [Errno 24] Too many open files; "
            "accepting again in 1 s (0 more suppressed)",
        ),
        (
            "ERROR",
            "loop_error",
            "event loop: Exception in callback f(): ValueError('two\\nlines') (0 more suppressed)",
        ),
        (
            "ERROR",
            "loop_error",
            "event loop: Task was destroyed but it is pending! (0 more suppressed)",
        ),
    ]
