"""The proxy's UDP relay: what it counts and says when a flow is beyond the
cap and when an answer cannot be sent from the origin's address. The
network side of both is in tests/integration/test_proxy_udp.py; here, the
bookkeeping that a real test would need thousands of origins for."""

from __future__ import annotations

import errno
import io
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from wfpredirect._records import Datagram
from wfpredirect.cli import _proxy
from wfpredirect.cli import _proxy_log as log


@pytest.fixture
def stream(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """configure() writing to a buffer, a fresh throttle; the library's logger as it was, after."""
    monkeypatch.setattr(log, "THROTTLE", log.Throttle())
    library = logging.getLogger("wfpredirect")
    saved = (library.handlers[:], library.level, library.propagate)
    buffer = io.StringIO()
    log.configure(logging.INFO, "text", buffer)
    try:
        yield buffer
    finally:
        library.handlers[:], library.level, library.propagate = saved


class HeldOrigin:
    """A flow whose answers cannot be sent: the origin holds its address."""

    def __init__(self, client: tuple[str, int], target: tuple[str, int]) -> None:
        self.client = client
        self.original_destination = target

    def reply(self, data: bytes) -> None:
        raise OSError(errno.EADDRINUSE, "Address already in use")


def said(stream: io.StringIO) -> list[str]:
    return [log.message(line) for line in stream.getvalue().splitlines()]


def test_each_origin_address_is_warned_about_once_within_a_bounded_memory(
    stream: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_proxy, "REPLY_WARNINGS_KEPT", 2)
    totals = _proxy.Totals()
    relay = _proxy.UdpRelay(totals)
    # The second flow to port 53 is not warned about; the third is, once
    # two other origins have pushed 53 out of the addresses remembered.
    ports = [53, 53, 54, 55, 53]
    flows: list[Any] = [
        HeldOrigin(("127.0.0.1", 40000 + number), ("127.0.0.3", port))
        for number, port in enumerate(ports)
    ]
    for flow in flows:
        relay.moved[flow] = {"up": 0, "down": 0}
        for _ in range(2):
            relay.upstream_datagram_received(b"answer", flow)
    fix = "the origin on this host must set SO_REUSEADDR on its socket"
    assert said(stream) == [
        f"udp 127.0.0.1:{40000 + number} -> 127.0.0.3:{ports[number]}: cannot answer from "
        f"that address: [Errno {errno.EADDRINUSE}] Address already in use; {fix}"
        for number in (0, 2, 3, 4)
    ]
    assert (totals.failed, totals.bytes_down) == (10, 0)


def test_datagrams_beyond_the_cap_are_refused_with_one_line_a_second(
    stream: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [100.0]
    monkeypatch.setattr(log.time, "monotonic", lambda: now[0])
    totals = _proxy.Totals()
    relay = _proxy.UdpRelay(totals, limit=500)
    datagram = Datagram(b"x", ("127.0.0.1", 40000), None, None, ("127.0.0.3", 53))
    for _ in range(4):
        relay.flow_dropped(datagram)
    now[0] = 101.0
    relay.flow_dropped(datagram)
    assert said(stream) == [
        "at the udp flow cap (500): new flows dropped (0 more suppressed)",
        "at the udp flow cap (500): new flows dropped (3 more suppressed)",
    ]
    assert (totals.refused, totals.open, totals.failed) == (5, 0, 0)
