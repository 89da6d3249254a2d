"""--relay native's Python side: each kind of engine event becomes exactly
the line (logger, level, text) and the totals the other paths give."""

from __future__ import annotations

import asyncio
import errno
import logging
import sys
from typing import Any

import pytest

from support import linux_only
from wfpredirect._errors import CAPABILITY_ADVICE, RedirectError

if sys.platform == "linux":  # the native relay is Linux's
    from wfpredirect.cli import _proxy, _proxy_log, _relay_native

pytestmark = linux_only

CLIENT = ("127.0.0.1", 40000)
TARGET = ("127.0.0.2", 8080)


class FakeEngine:
    """The events and counters a RelayEngine would give."""

    event_fd = -1

    def __init__(self, events: list[tuple[Any, ...]]) -> None:
        self.pending = events

    def events(self) -> list[tuple[Any, ...]]:
        events, self.pending = self.pending, []
        return events

    def counters(self) -> tuple[int, int, int]:
        return (0, 300, 200)


def native_server(events: list[tuple[Any, ...]], totals: _proxy.Totals) -> Any:
    """A NativeServer on a FakeEngine, without its thread."""
    server = _relay_native.NativeServer.__new__(_relay_native.NativeServer)
    server.engine = FakeEngine(events)
    server.totals = totals
    server.loop_mark = 0x40
    server.counted = (0, 0, 0)
    return server


def lines_for(
    events: list[tuple[Any, ...]], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> tuple[list[tuple[str, str, str]], dict[str, int]]:
    said: list[str] = []
    monkeypatch.setattr(_proxy, "say", said.append)
    monkeypatch.setattr(_proxy_log, "say", said.append)  # the throttled lines'
    monkeypatch.setattr(_proxy_log, "THROTTLE", _proxy_log.Throttle())
    totals = _proxy.Totals()

    async def handle() -> None:
        native_server(events, totals).handle_events()

    with caplog.at_level(logging.ERROR, logger="wfpredirect"):
        asyncio.run(handle())
    logged = [(record.name, record.levelname, record.getMessage()) for record in caplog.records]
    proxy_lines = [("wfpredirect.proxy", "", line) for line in said]
    return proxy_lines + logged, vars(totals)


def test_each_event_is_the_line_the_other_paths_say(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    records_error = RedirectError(
        errno.EINVAL, "set_redirect_records: the records are not netfilter records"
    )
    unreadable = RedirectError(errno.EBADF, "query_redirect_info: getsockname: Bad descriptor")
    lines, totals = lines_for(
        [
            ("relayed", CLIENT, TARGET, 300, 200, 0.25, 0),
            ("relayed", CLIENT, TARGET, 0, 0, 1.5, errno.ECONNRESET),
            ("relayed", CLIENT, TARGET, 0, 0, 2.0, -1),
            ("relayed", CLIENT, TARGET, 5, 0, 3.0, -2),
            ("refused", CLIENT),
            ("failed", CLIENT, TARGET, errno.ECONNREFUSED),
            ("failed", CLIENT, TARGET, 0),
            ("failed", CLIENT, TARGET, records_error),
            ("failed_call", CLIENT, TARGET, "setsockopt(IP_TRANSPARENT)", errno.EPERM),
            ("failed_call", CLIENT, TARGET, "bind", errno.EADDRNOTAVAIL),
            ("loop", CLIENT),
            ("unreadable", CLIENT, unreadable),
            ("gone", CLIENT),
            ("connection_cap", ("127.0.0.1", 15001), 3),
            ("connection_cap", ("127.0.0.1", 15001), 3),
            ("accept_error", ("127.0.0.1", 15001), errno.EMFILE),
        ],
        monkeypatch,
        caplog,
    )
    assert lines == [
        (
            "wfpredirect.proxy",
            "",
            "127.0.0.1:40000 -> 127.0.0.2:8080: 300 bytes up, 200 bytes down, 0.250 s, closed",
        ),
        (
            "wfpredirect.proxy",
            "",
            "127.0.0.1:40000 -> 127.0.0.2:8080: 0 bytes up, 0 bytes down, 1.500 s, "
            "ended by ConnectionResetError(104, 'Connection reset by peer')",
        ),
        (
            "wfpredirect.proxy",
            "",
            "127.0.0.1:40000 -> 127.0.0.2:8080: 0 bytes up, 0 bytes down, 2.000 s, cut at shutdown",
        ),
        (
            "wfpredirect.proxy",
            "",
            "127.0.0.1:40000 -> 127.0.0.2:8080: 5 bytes up, 0 bytes down, 3.000 s, idle timeout",
        ),
        (
            "wfpredirect.proxy",
            "",
            "refused 127.0.0.1:40000: not redirected (addressed to the proxy itself)",
        ),
        (
            "wfpredirect.proxy",
            "",
            "failed 127.0.0.1:40000 -> 127.0.0.2:8080: cannot connect upstream: "
            "[Errno 111] Connect call failed ('127.0.0.2', 8080)",
        ),
        (
            "wfpredirect.proxy",
            "",
            "failed 127.0.0.1:40000 -> 127.0.0.2:8080: cannot connect upstream: timed out",
        ),
        (
            "wfpredirect.proxy",
            "",
            "failed 127.0.0.1:40000 -> 127.0.0.2:8080: cannot connect upstream: "
            "[Errno 22] open_upstream: the records are not netfilter records",
        ),
        (
            "wfpredirect.proxy",
            "",
            "failed 127.0.0.1:40000 -> 127.0.0.2:8080: cannot connect upstream: "
            "[Errno 1] open_upstream: cannot bind a client's address: "
            f"setsockopt(IP_TRANSPARENT): Operation not permitted: {CAPABILITY_ADVICE}",
        ),
        (
            "wfpredirect.proxy",
            "",
            "failed 127.0.0.1:40000 -> 127.0.0.2:8080: cannot connect upstream: "
            "[Errno 99] Cannot assign requested address",
        ),
        ("wfpredirect.proxy", "", "127.0.0.1:40000 went away before its redirect state was read"),
        (
            "wfpredirect.proxy",
            "",
            "at the connection cap (3): accepting paused (0 more suppressed)",
        ),
        (
            "wfpredirect.proxy",
            "",
            "accept() on 127.0.0.1:15001: [Errno 24] Too many open files; "
            "accepting again in 1 s (0 more suppressed)",
        ),
        (
            "wfpredirect.aio",
            "ERROR",
            "refused 127.0.0.1 port 40000: the proxy's own upstream connection came back: "
            "the redirect rule does not skip the loop mark 0x40 (or the upstream carried no "
            "records): put `meta mark & 0x40 == 0x40 return` (nft) or "
            "`iptables -t nat -I OUTPUT -m mark --mark 0x40/0x40 -j RETURN` (iptables) before it",
        ),
        (
            "wfpredirect.aio",
            "ERROR",
            "closed the connection from 127.0.0.1 port 40000: its redirect state could not be "
            "read: [Errno 9] query_redirect_info: getsockname: Bad descriptor",
        ),
    ]
    assert totals == {
        "open": 0,
        "relayed": 4,
        "refused": 2,  # the loop too
        "failed": 5,
        "bytes_up": 300,
        "bytes_down": 200,
    }


def test_the_engine_s_totals_add_to_the_udp_relay_s() -> None:
    """refresh() adds what the engine counted since the last call: the UDP
    relay's counts in the same totals stay."""
    totals = _proxy.Totals(open=1, relayed=2, bytes_up=11, bytes_down=7)
    server = native_server([], totals)
    server.engine.counters = lambda: (2, 300, 200)
    server.refresh()
    server.refresh()  # nothing new
    seen = [vars(totals).copy()]
    server.engine.counters = lambda: (1, 350, 260)
    server.refresh()
    seen.append(vars(totals).copy())
    assert seen == [
        {"open": 3, "relayed": 2, "refused": 0, "failed": 0, "bytes_up": 311, "bytes_down": 207},
        {"open": 2, "relayed": 2, "refused": 0, "failed": 0, "bytes_up": 361, "bytes_down": 267},
    ]
