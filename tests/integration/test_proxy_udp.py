"""``python -m wfpredirect proxy --udp`` relaying real UDP flows through an
nft TPROXY rule to a UDP origin, in a fresh network namespace."""

from __future__ import annotations

import socket

import pytest

import wfpredirect
from netns import run_in_netns
from processes import running
from test_aio_datagrams import UdpOrigin
from test_datagrams import IPV4, ORIGIN_PORT, PROXY_PORT, route_marked_locally, tproxy_rules
from test_proxy import PROXY_READY, proxy_command, stop
from wfpredirect import _proxy_log as proxy_log
from wfpredirect._proxy_log import message

UDP_READY = proxy_log.LISTENING_UDP.line(host="0.0.0.0", port=PROXY_PORT)
FLOW_LINE = proxy_log.UDP_FLOW.pattern


def ask(client: socket.socket, data: bytes, to: tuple[str, int]) -> tuple[bytes, object]:
    client.sendto(data, to)
    return client.recvfrom(2048)


# One process, and two workers (the first of which relays UDP).
@pytest.mark.parametrize("way", [(), ("--workers", "2")], ids=["one", "workers"])
def test_udp_flows_are_relayed_with_their_records(way: tuple[str, ...]) -> None:
    def body() -> dict[str, object]:
        route_marked_locally(IPV4)
        origin = UdpOrigin()
        destination = (IPV4.origin_host, ORIGIN_PORT)
        command = proxy_command(*way, "--udp", f"0.0.0.0:{PROXY_PORT}")
        with running(command, ready=PROXY_READY) as proxy:
            assert proxy.stdout is not None
            udp_ready = message(proxy.stdout.readline())
            # The capacity and the privileges, said at start.
            start = [message(proxy.stdout.readline()).split(":")[0] for _ in range(2)]
            clients = []
            for _ in range(2):
                client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                client.bind((IPV4.client_host, 0))
                client.settimeout(10)
                clients.append(client)
            answers = [
                ask(clients[0], b"hello", destination),
                ask(clients[0], b"again", destination),
                ask(clients[1], b"other", destination),
            ]
            clients[1].sendto(b"direct", (IPV4.client_host, PROXY_PORT))
            # The refusal line tells that the proxy saw it.
            refused = message(proxy.stdout.readline())
            status, output = stop(proxy)
        flows = sorted(
            (
                int(match["client"].removeprefix("127.0.0.1:")),
                match["target"],
                int(match["up"]),
                int(match["down"]),
            )
            for match in map(FLOW_LINE.fullmatch, output.splitlines())
            if match
        )
        return {
            "udp ready": udp_ready.strip(),
            "start": start,
            "answers": answers,
            "origin": [(data, mark) for data, _, mark in origin.arrivals],
            "refused": refused.strip()
            == f"refused udp 127.0.0.1:{clients[1].getsockname()[1]}: not redirected",
            "flows": flows,
            "client ports": [client.getsockname()[1] for client in clients],
            "exit": status,
        }

    result = run_in_netns(body, nft_rules=tproxy_rules(IPV4))
    destination = (IPV4.origin_host, ORIGIN_PORT)
    loop_mark = wfpredirect.LOOP_MARK
    first_port, second_port = result.pop("client ports")  # type: ignore[misc]
    target = f"127.0.0.3:{ORIGIN_PORT}"
    assert {key: value for key, value in result.items() if key != "flows"} == {
        "udp ready": UDP_READY,
        "answers": [
            (b"origin hello", destination),
            (b"origin again", destination),
            (b"origin other", destination),
        ],
        "origin": [(b"hello", loop_mark), (b"again", loop_mark), (b"other", loop_mark)],
        "start": ["privileges", "descriptors"],
        "refused": True,
        "exit": 0,
    }
    assert result["flows"] == sorted([(first_port, target, 10, 24), (second_port, target, 5, 12)])
