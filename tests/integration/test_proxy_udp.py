"""``python -m wfpredirect proxy --udp`` relaying real UDP flows through an
nft TPROXY rule to a UDP origin, in a fresh network namespace."""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import threading
import time
from collections.abc import Iterable

import pytest

import wfpredirect
from netns import run_in_netns
from processes import messages, running
from rules import redirect
from support import require_tool
from test_aio_datagrams import UdpOrigin
from test_datagrams import IPV4, ORIGIN_PORT, PROXY_PORT, route_marked_locally, tproxy_rules
from test_proxy import PROXY_READY, proxy_command, stop
from wfpredirect.cli import _proxy_log as proxy_log
from wfpredirect.cli._proxy_log import message

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
            # With --workers, the second worker's own start lines (no UDP,
            # so other capabilities and caps) may come first.
            while refused.startswith(("privileges: ", "descriptors: ")):
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


def udp_receive_queues(ignored: frozenset[int] = frozenset()) -> list[str]:
    """The UDP sockets of this network namespace with bytes waiting (their
    lines in /proc/net/udp), but for those bound to a port in `ignored`."""
    waiting = []
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with open(table) as lines:
            next(lines)  # the heading
            for line in lines:
                fields = line.split()
                port = int(fields[1].split(":")[1], 16)
                if int(fields[4].split(":")[1], 16) and port not in ignored:
                    waiting.append(line)
    return waiting


def wait_until_read(clients: Iterable[socket.socket] = ()) -> None:
    """Until every UDP socket here but `clients` (answers they were sent
    wait there unread) has read what it was sent (10 s at most): what the
    proxy received it has handled once its loop turns."""
    ignored = frozenset(client.getsockname()[1] for client in clients)
    for _ in range(1000):
        if not udp_receive_queues(ignored):
            return
        time.sleep(0.01)
    raise AssertionError(f"datagrams still waiting: {udp_receive_queues(ignored)}")


def kernel_udp_drops() -> int:
    """Datagrams the kernel dropped for a full receive buffer in this namespace."""
    with open("/proc/net/snmp") as table:
        heading, values = (line.split() for line in table if line.startswith("Udp:"))
    return int(dict(zip(heading, values, strict=True))["RcvbufErrors"])


def open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class PlainUdpOrigin:
    """A UDP origin that did not set SO_REUSEADDR: answers each datagram
    with b"origin " + data and counts its answers."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((IPV4.origin_host, ORIGIN_PORT))
        self.answered = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            data, source = self.sock.recvfrom(2048)
            self.sock.sendto(b"origin " + data, source)
            self.answered += 1


def test_an_origin_without_so_reuseaddr_gets_one_warning() -> None:
    """The answer cannot be sent from the origin's own address while the
    origin's socket holds it without SO_REUSEADDR: one line says so and
    what to do, however many answers are lost, and each counts as failed."""
    asked = [b"first", b"second", b"third"]

    def body() -> dict[str, object]:
        route_marked_locally(IPV4)
        origin = PlainUdpOrigin()
        command = proxy_command("--udp", f"0.0.0.0:{PROXY_PORT}")
        with running(command, ready=PROXY_READY) as proxy:
            assert proxy.stdout is not None
            udp_ready = message(proxy.stdout.readline())
            client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            client.bind((IPV4.client_host, 0))
            for data in asked:
                client.sendto(data, (IPV4.origin_host, ORIGIN_PORT))
            for _ in range(200):  # until the origin answered all (10 s at most)
                if origin.answered == len(asked):
                    break
                time.sleep(0.05)
            wait_until_read()
            status, output = stop(proxy)
        lines = messages(output)
        return {
            "udp ready": udp_ready.strip(),
            "answered": origin.answered,
            "warnings": [
                line for line in lines if proxy_log.UDP_REPLY_FAILED.pattern.fullmatch(line)
            ],
            "flows": [
                (match["client"], match["target"], int(match["up"]), int(match["down"]))
                for match in map(FLOW_LINE.fullmatch, lines)
                if match
            ],
            "stopped": [
                (int(match["relayed"]), int(match["refused"]), int(match["failed"]))
                for match in map(proxy_log.STOPPED.pattern.fullmatch, lines)
                if match
            ],
            "client": f"127.0.0.1:{client.getsockname()[1]}",
            "exit": status,
        }

    result = run_in_netns(body, nft_rules=tproxy_rules(IPV4))
    client = result.pop("client")
    target = f"127.0.0.3:{ORIGIN_PORT}"
    assert result == {
        "udp ready": UDP_READY,
        "answered": 3,
        "warnings": [
            f"udp {client} -> {target}: cannot answer from that address: [Errno 98] "
            f"datagram_reply_socket: bind(('127.0.0.3', {ORIGIN_PORT})): Address already in use; "
            "the origin on this host must set SO_REUSEADDR on its socket"
        ],
        "flows": [(client, target, sum(map(len, asked)), 0)],
        "stopped": [(1, 0, 3)],
        "exit": 0,
    }


#: The flood: FLOOD_CLIENTS sockets, each sending FLOOD_ROUNDS datagrams,
#: BATCH at a time (each batch read by the proxy before the next is sent, so
#: that the kernel drops none and every count is exact), at a proxy that
#: holds UDP_CAP flows and may open FLOOD_DESCRIPTORS descriptors: without
#: the cap the flood's flows would need more than ten times that many.
UDP_CAP = 50
FLOOD_CLIENTS = 2000
FLOOD_ROUNDS = 10
BATCH = 100
FLOOD_DESCRIPTORS = 512
TCP_ORIGIN = ("127.0.0.2", 8080)


def echo_once(listener: socket.socket) -> None:
    """Answer one TCP connection with b"echo " + what it sent."""
    connection, _ = listener.accept()
    with connection:
        connection.settimeout(10)
        received = b""
        while chunk := connection.recv(2048):
            received += chunk
        connection.sendall(b"echo " + received)


def tcp_exchange(data: bytes) -> bytes:
    with socket.create_connection(TCP_ORIGIN, timeout=10) as client:
        client.sendall(data)
        client.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := client.recv(2048):
            answer += chunk
    return answer


def test_a_flood_of_new_flows_stops_at_the_cap() -> None:
    """20,000 datagrams of 2,000 new flows at a proxy holding its cap of
    flows: each is dropped without a descriptor and counted as refused, a
    few throttled lines say how many, the flows held go on, and a TCP client
    still gets through."""
    require_tool("prlimit")
    flood = FLOOD_CLIENTS * FLOOD_ROUNDS
    destination = (IPV4.origin_host, ORIGIN_PORT)

    def body() -> dict[str, object]:
        route_marked_locally(IPV4)
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # this process's sockets
        UdpOrigin()
        listener = socket.create_server(TCP_ORIGIN)
        threading.Thread(target=echo_once, args=(listener,), daemon=True).start()
        command = [
            "prlimit",
            f"--nofile={FLOOD_DESCRIPTORS}:{FLOOD_DESCRIPTORS}",
            "--",
            *proxy_command(
                "--udp",
                f"0.0.0.0:{PROXY_PORT}",
                "--max-udp-flows",
                str(UDP_CAP),
                "--udp-idle-timeout",
                "600",
            ),
        ]
        with running(command, ready=PROXY_READY) as proxy:
            assert proxy.stdout is not None
            udp_ready = message(proxy.stdout.readline())
            # Kept open: a flood client must not get a held client's port.
            held_clients, held = [], []
            for number in range(UDP_CAP):
                client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                client.bind((IPV4.client_host, 0))
                client.settimeout(10)
                held_clients.append(client)
                held.append(ask(client, b"held %d" % number, destination)[0])
            wait_until_read()
            descriptors = open_descriptors(proxy.pid)
            drops = kernel_udp_drops()
            clients = []
            for _ in range(FLOOD_CLIENTS):
                client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                client.bind((IPV4.client_host, 0))
                clients.append(client)
            during = set()
            for _ in range(FLOOD_ROUNDS):
                for start in range(0, FLOOD_CLIENTS, BATCH):
                    for client in clients[start : start + BATCH]:
                        client.sendto(b"flood", destination)
                    wait_until_read()
                    during.add(open_descriptors(proxy.pid))
            tcp = tcp_exchange(b"through")
            # A last new flow, once the throttle's second has passed: its
            # line counts every drop held back before it.
            time.sleep(1.1)
            clients[0].sendto(b"last", destination)
            wait_until_read()
            status, output = stop(proxy)
            for client in clients + held_clients:
                client.close()
        lines = messages(output)
        caps = [match for match in map(proxy_log.UDP_FLOW_CAP.pattern.fullmatch, lines) if match]
        return {
            "udp ready": udp_ready.strip(),
            "held": held,
            "descriptors during the flood": sorted(during - {descriptors}),
            "kernel drops": kernel_udp_drops() - drops,
            "tcp": tcp,
            "cap lines": {line["limit"] for line in caps},
            "drops said": sum(1 + int(line["suppressed"]) for line in caps),
            "flows": sorted(
                (int(match["up"]), int(match["down"]))
                for match in map(FLOW_LINE.fullmatch, lines)
                if match
            ),
            "errors": [line for line in lines if proxy_log.UDP_ERROR.pattern.fullmatch(line)],
            "stopped": [
                (int(match["relayed"]), int(match["refused"]), int(match["failed"]))
                for match in map(proxy_log.STOPPED.pattern.fullmatch, lines)
                if match
            ],
            "exit": status,
        }

    result = run_in_netns(
        body, nft_rules=tproxy_rules(IPV4) + redirect("ip", TCP_ORIGIN[0], TCP_ORIGIN[1], 15001)
    )
    assert result == {
        "udp ready": UDP_READY,
        "held": [b"origin held %d" % number for number in range(UDP_CAP)],
        "descriptors during the flood": [],
        "kernel drops": 0,
        "tcp": b"echo through",
        "cap lines": {str(UDP_CAP)},
        "drops said": flood + 1,
        "flows": sorted(
            (len(b"held %d" % number), len(b"origin held %d" % number)) for number in range(UDP_CAP)
        ),
        "errors": [],
        "stopped": [(UDP_CAP + 1, flood + 1, 0)],
        "exit": 0,
    }


PROCESS_LIMIT = 64


def test_udp_errors_are_throttled() -> None:
    """Out of descriptors (the running proxy's limit lowered to 64, under
    its cap), every new flow's upstream socket fails with EMFILE: the
    udp_error lines come at most one a second, and together they count
    every failure."""
    require_tool("prlimit")
    destination = (IPV4.origin_host, ORIGIN_PORT)
    clients_count = 400

    def body() -> dict[str, object]:
        route_marked_locally(IPV4)
        UdpOrigin()
        command = proxy_command("--udp", f"0.0.0.0:{PROXY_PORT}", "--max-udp-flows", "1000")
        with running(command, ready=PROXY_READY) as proxy:
            assert proxy.stdout is not None
            udp_ready = message(proxy.stdout.readline())
            # Out of descriptors for another reason than the flows: the
            # limit lowered under the running proxy, below what it holds
            # now and what its cap allowed for.
            subprocess.run(
                ["prlimit", f"--pid={proxy.pid}", f"--nofile={PROCESS_LIMIT}:{PROCESS_LIMIT}"],
                check=True,
            )
            clients = []
            for _ in range(clients_count):
                client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                client.bind((IPV4.client_host, 0))
                clients.append(client)
            for start in range(0, clients_count, BATCH):
                for client in clients[start : start + BATCH]:
                    client.sendto(b"flood", destination)
                wait_until_read(clients)
            # Once the throttle's second has passed, a last failure: its
            # line counts every one held back before it.
            time.sleep(1.1)
            last = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            last.bind((IPV4.client_host, 0))
            last.sendto(b"flood", destination)
            wait_until_read([*clients, last])
            status, output = stop(proxy)
            for client in [*clients, last]:
                client.close()
        lines = messages(output)
        errors = [match for match in map(proxy_log.UDP_ERROR.pattern.fullmatch, lines) if match]
        flows = [match for match in map(FLOW_LINE.fullmatch, lines) if match]
        return {
            "udp ready": udp_ready.strip(),
            "error texts": {match["error"] for match in errors},
            "errors said": sum(1 + int(match["suppressed"]) for match in errors),
            "lines": len(errors),
            "answered": sum(1 for match in flows if match["down"] != "0"),
            "stopped": [
                (int(match["relayed"]), int(match["failed"]))
                for match in map(proxy_log.STOPPED.pattern.fullmatch, lines)
                if match
            ],
            "exit": status,
        }

    result = run_in_netns(body, nft_rules=tproxy_rules(IPV4))
    # Each datagram either was answered, or failed once: its flow's
    # upstream socket, or the reply socket for its answer, could not be made.
    failed = clients_count + 1 - result.pop("answered")  # type: ignore[operator]
    assert result.pop("lines") < clients_count / 10  # type: ignore[operator]
    assert result == {
        "udp ready": UDP_READY,
        "error texts": {"[Errno 24] Too many open files"},
        "errors said": failed,
        "stopped": [(clients_count + 1, failed)],
        "exit": 0,
    }
