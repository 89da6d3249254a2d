"""Datagram redirect records through the real kernel: an nft TPROXY rule and
policy routing divert a client's datagram for the origin's address to the
proxy, which receives it with its original destination and a record,
forwards it with the record (or, without it, loops back into itself) and
answers the client from the original destination."""

from __future__ import annotations

import socket
import subprocess
from dataclasses import dataclass
from typing import Any

import pytest

import wfpredirect
from netns import run_in_netns
from record_format import decode

SO_MARK = 36  # asm-generic/socket.h
SO_RCVMARK = 75  # Linux 5.19+
PROXY_PORT = 15353
ORIGIN_PORT = 5353
CLIENT_MARK = 0x20  # inside MARK_MASK (0xF0): travels in the record
TPROXY_MARK = 0x1  # the routing mark, outside MARK_MASK: must not travel


@dataclass(frozen=True)
class Case:
    family: int
    nft_family: str
    address_match: str
    ip: str  # the `ip` command's family flag
    origin_host: str  # where the client sends; the origin also sits there
    proxy_host: str  # what the proxy binds (a wildcard, as TPROXY needs)
    client_host: str
    any_route: str


IPV4 = Case(
    socket.AF_INET, "ip", "ip daddr", "-4", "127.0.0.3", "0.0.0.0", "127.0.0.1", "0.0.0.0/0"
)
IPV6 = Case(socket.AF_INET6, "ip6", "ip6 daddr", "-6", "::1", "::", "::1", "::/0")


def tproxy_rules(case: Case) -> str:
    divert = (
        f"{case.address_match} {case.origin_host} udp dport {ORIGIN_PORT} "
        f"tproxy to :{PROXY_PORT} meta mark set meta mark | {TPROXY_MARK} accept"
    )
    return f"""table {case.nft_family} wfpr_udp {{
  chain pre {{
    type filter hook prerouting priority mangle;
    meta mark & 0x40 == 0x40 return
    {divert}
  }}
}}
"""


def route_marked_locally(case: Case) -> None:
    subprocess.run(["ip", case.ip, "rule", "add", "fwmark", "0x1/0x1", "lookup", "100"], check=True)
    subprocess.run(
        ["ip", case.ip, "route", "add", "local", case.any_route, "dev", "lo", "table", "100"],
        check=True,
    )


def udp(case: Case, bind: tuple[Any, ...] | None = None, reuse: bool = False) -> socket.socket:
    sock = socket.socket(case.family, socket.SOCK_DGRAM)
    sock.settimeout(5)
    if reuse:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if bind is not None:
        sock.bind(bind)
    return sock


def receive_with_mark(sock: socket.socket) -> tuple[bytes, int]:
    """A datagram and the mark it arrived with (SO_RCVMARK)."""
    data, ancillary, _, _ = sock.recvmsg(2048, socket.CMSG_SPACE(4))
    marks = [
        int.from_bytes(payload, "little")
        for level, kind, payload in ancillary
        if (level, kind) == (socket.SOL_SOCKET, SO_MARK)
    ]
    return data, marks[0] if marks else 0


def nothing_waiting(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        sock.recv(2048)
    except BlockingIOError:
        return True
    finally:
        sock.settimeout(5)
    return False


@pytest.mark.parametrize("case", [IPV4, IPV6], ids=["ipv4", "ipv6"])
def test_tproxy_datagram_flow(case: Case) -> None:
    def body() -> dict[str, object]:
        route_marked_locally(case)
        origin = udp(case, (case.origin_host, ORIGIN_PORT), reuse=True)
        origin.setsockopt(socket.SOL_SOCKET, SO_RCVMARK, 1)
        proxy = wfpredirect.RedirectSocket(case.family, socket.SOCK_DGRAM)
        proxy.settimeout(5)
        proxy.bind((case.proxy_host, PROXY_PORT))
        proxy.enable_datagram_records()

        client = udp(case, (case.client_host, 0))
        client.setsockopt(socket.SOL_SOCKET, SO_MARK, CLIENT_MARK)
        client.sendto(b"query", (case.origin_host, ORIGIN_PORT))
        first = proxy.recvmsg_redirect(2048)

        # Forwarded with the record: the rule lets it through to the origin.
        upstream = udp(case, (case.client_host, 0))
        sent = wfpredirect.sendmsg_redirect(
            upstream, first.data, first.original_destination, first.records
        )
        forwarded = receive_with_mark(origin)

        # Without the record it comes straight back into the proxy.
        looping = udp(case, (case.client_host, 0))
        wfpredirect.sendmsg_redirect(looping, b"loop", (case.origin_host, ORIGIN_PORT))
        looped = proxy.recvmsg_redirect(2048)

        # The origin answers the upstream; the proxy answers each client from
        # the original destination, one reply socket per client.
        origin.sendto(b"answer", upstream.getsockname())
        answer = upstream.recv(2048)
        second_client = udp(case, (case.client_host, 0))
        second_client.sendto(b"second", (case.origin_host, ORIGIN_PORT))
        second = proxy.recvmsg_redirect(2048)
        replies = [
            wfpredirect.datagram_reply_socket(datagram.original_destination, peer=datagram.address)
            for datagram in (first, second)
        ]
        replies[0].send(answer)
        replies[1].send(b"second answer")

        # Addressed to the proxy itself: not redirected.
        direct = udp(case, (case.client_host, 0))
        direct.sendto(b"direct", (case.client_host, PROXY_PORT))
        not_redirected = proxy.recvmsg_redirect(2048)

        return {
            "first": (
                first.data,
                first.address == client.getsockname(),
                first.context,
                first.original_destination,
                decode(first.records or b""),
            ),
            "sent": sent,
            "forwarded": forwarded,
            "looped": (looped.data, looped.original_destination, decode(looped.records or b"")),
            "origin idle": nothing_waiting(origin),
            "client answer": client.recvfrom(2048),
            "second answer": second_client.recvfrom(2048),
            "direct": (
                not_redirected.data,
                not_redirected.address == direct.getsockname(),
                not_redirected.records,
                not_redirected.context,
                not_redirected.original_destination,
            ),
        }

    result = run_in_netns(body, nft_rules=tproxy_rules(case))
    destination: tuple[object, ...] = (case.origin_host, ORIGIN_PORT)
    if case.family == socket.AF_INET6:
        destination += (0, 0)
    assert result == {
        "first": (
            b"query",
            True,
            None,
            destination,
            {"destination": destination, "mark": CLIENT_MARK, "transparent": True},
        ),
        "sent": 5,
        # (record mark AND MARK_MASK) OR LOOP_MARK: the TPROXY mark stayed behind.
        "forwarded": (b"query", CLIENT_MARK | wfpredirect.LOOP_MARK),
        "looped": (
            b"loop",
            destination,
            {"destination": destination, "mark": 0, "transparent": True},
        ),
        "origin idle": True,
        "client answer": (b"answer", destination),
        "second answer": (b"second answer", destination),
        "direct": (b"direct", True, None, None, None),
    }


def test_dual_stack_proxy_receives_ipv4_flows() -> None:
    """An AF_INET6 proxy socket takes IPv4 TPROXY datagrams: the client is
    reported IPv4-mapped (as the socket module reports it), the original
    destination as IPv4, and the flow is forwarded from that same socket."""

    def body() -> dict[str, object]:
        route_marked_locally(IPV4)
        origin = udp(IPV4, (IPV4.origin_host, ORIGIN_PORT), reuse=True)
        proxy = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        proxy.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        proxy.settimeout(5)
        proxy.bind(("::", PROXY_PORT))
        wfpredirect.enable_datagram_records(proxy)
        client = udp(IPV4, (IPV4.client_host, 0))
        client.sendto(b"dual", (IPV4.origin_host, ORIGIN_PORT))
        buffer = bytearray(16)
        nbytes, address, records, context, destination = wfpredirect.recvmsg_redirect_into(
            proxy, buffer
        )
        assert destination is not None and records is not None
        wfpredirect.sendmsg_redirect(proxy, buffer[:nbytes], destination, records)
        data, source = origin.recvfrom(2048)
        return {
            "received": (
                bytes(buffer[:nbytes]),
                address[0],
                address[1] == client.getsockname()[1],
                context,
                destination,
                decode(records),
            ),
            "origin got": (data, source[1] == PROXY_PORT),
        }

    result = run_in_netns(body, nft_rules=tproxy_rules(IPV4))
    assert result == {
        "received": (
            b"dual",
            "::ffff:127.0.0.1",
            True,
            None,
            ("127.0.0.3", ORIGIN_PORT),
            {"destination": ("127.0.0.3", ORIGIN_PORT), "mark": 0, "transparent": True},
        ),
        "origin got": (b"dual", True),
    }
