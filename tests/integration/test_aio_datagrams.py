"""create_redirect_datagram_endpoint through a real TPROXY rule: each flow
gets its own upstream socket carrying its records, answers reach each
client from the original destination, idle flows expire."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest

import wfpredirect
from netns import run_in_netns
from servers import SO_MARK
from test_datagrams import IPV4, ORIGIN_PORT, PROXY_PORT, route_marked_locally, tproxy_rules
from wfpredirect import _aio_datagrams as aio_datagrams
from wfpredirect.aio import (
    DatagramFlow,
    RedirectDatagramProtocol,
    create_redirect_datagram_endpoint,
)

SO_RCVMARK = 75


class UdpOrigin:
    """Answers each datagram with b"origin " + data; records (data, source
    port, mark)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVMARK, 1)
        self.sock.bind((IPV4.origin_host, ORIGIN_PORT))
        self.arrivals: list[tuple[bytes, int, int]] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            data, ancillary, _, source = self.sock.recvmsg(2048, socket.CMSG_SPACE(4))
            mark = next(
                (
                    int.from_bytes(payload, "little")
                    for level, kind, payload in ancillary
                    if (level, kind) == (socket.SOL_SOCKET, SO_MARK)
                ),
                0,
            )
            self.arrivals.append((data, source[1], mark))
            self.sock.sendto(b"origin " + data, source)


class Recorder(RedirectDatagramProtocol):
    def __init__(self) -> None:
        self.unredirected: list[bytes] = []
        self.closed: list[DatagramFlow] = []

    def datagram_received(self, datagram: wfpredirect.Datagram, flow: DatagramFlow | None) -> None:
        if flow is None:
            self.unredirected.append(datagram.data)
        super().datagram_received(datagram, flow)

    def flow_closed(self, flow: DatagramFlow) -> None:
        self.closed.append(flow)


async def ask(client: socket.socket, data: bytes) -> tuple[bytes, tuple[object, ...]]:
    loop = asyncio.get_running_loop()
    await loop.sock_sendto(client, data, (IPV4.origin_host, ORIGIN_PORT))
    return await asyncio.wait_for(loop.sock_recvfrom(client, 2048), 10)


def client_socket() -> socket.socket:
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind((IPV4.client_host, 0))
    client.setblocking(False)
    return client


async def relay() -> dict[str, object]:
    origin = UdpOrigin()
    endpoint, protocol = await create_redirect_datagram_endpoint(
        Recorder, ("0.0.0.0", PROXY_PORT), idle_timeout=0.5
    )
    first, second = client_socket(), client_socket()
    answers = [await ask(first, b"one"), await ask(first, b"two"), await ask(second, b"three")]
    flows = sorted(
        (flow.client[1] == first.getsockname()[1], flow.original_destination)
        for flow in endpoint.flows
    )
    # Addressed to the proxy itself: no flow.
    loop = asyncio.get_running_loop()
    await loop.sock_sendto(first, b"direct", (IPV4.client_host, PROXY_PORT))
    for _ in range(200):  # until both flows expired (10 s at most)
        if len(protocol.closed) == 2 and len(origin.arrivals) + len(protocol.unredirected) == 4:
            break
        await asyncio.sleep(0.05)
    result = {
        "answers": answers,
        "flows": flows,
        "origin": [(data, mark) for data, _, mark in origin.arrivals],
        "upstream ports": len({port for _, port, _ in origin.arrivals}),
        "first flow one upstream": origin.arrivals[0][1] == origin.arrivals[1][1],
        "unredirected": protocol.unredirected,
        "expired": len(protocol.closed),
        "left": endpoint.flows,
    }
    endpoint.close()
    return result


@pytest.mark.parametrize("first_only", [False, True], ids=["netfilter rule", "wfp rule"])
def test_datagram_endpoint_relays_each_flow(
    first_only: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under WFP's rule (state on a flow's first datagram only) a client's
    datagram without state belongs to its flow; under netfilter's it was
    addressed to the proxy itself."""
    monkeypatch.setattr(aio_datagrams, "_DATAGRAM_STATE_ON_FIRST_ONLY", first_only)
    result = run_in_netns(
        lambda: (route_marked_locally(IPV4), asyncio.run(relay()))[1],
        nft_rules=tproxy_rules(IPV4),
    )
    destination = (IPV4.origin_host, ORIGIN_PORT)
    loop_mark = wfpredirect.LOOP_MARK
    forwarded = [(b"one", loop_mark), (b"two", loop_mark), (b"three", loop_mark)]
    assert result == {
        "answers": [
            (b"origin one", destination),
            (b"origin two", destination),
            (b"origin three", destination),
        ],
        "flows": [(False, destination), (True, destination)],
        "origin": forwarded + ([(b"direct", loop_mark)] if first_only else []),
        "upstream ports": 2,
        "first flow one upstream": True,
        "unredirected": [] if first_only else [b"direct"],
        "expired": 2,
        "left": [],
    }


class CapRecorder(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.dropped: list[tuple[bytes, object]] = []

    def flow_dropped(self, datagram: wfpredirect.Datagram) -> None:
        self.dropped.append((datagram.data, datagram.original_destination))


async def relay_at_the_cap() -> dict[str, object]:
    origin = UdpOrigin()
    endpoint, protocol = await create_redirect_datagram_endpoint(
        CapRecorder, ("0.0.0.0", PROXY_PORT), idle_timeout=60, max_flows=1
    )
    assert isinstance(protocol, CapRecorder)
    first, second = client_socket(), client_socket()
    answer = await ask(first, b"one")
    loop = asyncio.get_running_loop()
    for data in (b"two", b"three"):  # a second flow: beyond the cap
        await loop.sock_sendto(second, data, (IPV4.origin_host, ORIGIN_PORT))
    for _ in range(200):  # until both were dropped (10 s at most)
        if len(protocol.dropped) == 2:
            break
        await asyncio.sleep(0.05)
    again = await ask(first, b"four")  # the flow held goes on
    result = {
        "answers": [answer, again],
        "dropped": protocol.dropped,
        "flows": [flow.client == first.getsockname() for flow in endpoint.flows],
        "origin": [data for data, _, _ in origin.arrivals],
    }
    endpoint.close()
    return result


def test_datagram_endpoint_drops_new_flows_beyond_max_flows() -> None:
    result = run_in_netns(
        lambda: (route_marked_locally(IPV4), asyncio.run(relay_at_the_cap()))[1],
        nft_rules=tproxy_rules(IPV4),
    )
    destination = (IPV4.origin_host, ORIGIN_PORT)
    assert result == {
        "answers": [(b"origin one", destination), (b"origin four", destination)],
        "dropped": [(b"two", destination), (b"three", destination)],
        "flows": [True],
        "origin": [b"one", b"four"],
    }
