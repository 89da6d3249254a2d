"""The whole Windows flow with redirect records present, inside Windows
CPython, on real Winsock sockets over loopback.

Wine (like Windows without a callout driver) answers WSAEOPNOTSUPP to every
WFP code, so a test build of _core (WFPREDIRECT_EMULATED_CALLOUT=1, which the
Windows lane makes and no release does) puts an emulated callout driver in
front of ws2_32: these tests tell it which connections were redirected (by
their client's address), from where, with which records and context, and
read back every SIO_SET_WFP_CONNECTION_REDIRECT_RECORDS and every records
control message it saw. Everything else (connect, accept, send, AcceptEx,
ConnectEx, WSARecvMsg) is the real stack.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import json
import re
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import wfpredirect
from support import project_file
from wfpredirect import _core
from wfpredirect.aio import (
    RedirectDatagramProtocol,
    create_redirect_datagram_endpoint,
    open_upstream,
    start_redirect_server,
)
from wfpredirect.cli._proxy_log import message

pytestmark = [
    pytest.mark.skipif(
        sys.platform != "win32", reason="needs Windows CPython (the Windows lane runs it in Wine)"
    ),
    pytest.mark.skipif(
        not hasattr(_core, "_emulated_callout_add"),
        reason="needs a test build with the emulated callout (WFPREDIRECT_EMULATED_CALLOUT=1)",
    ),
]

# Windows' answers, as the emulated stack plays them.
WSAEINVAL = 10022
ERROR_INSUFFICIENT_BUFFER = 122
FWP_E_NOT_FOUND = 0x80320008
ERROR_NOT_FOUND = 1168
IPPROTO_IP = 0
LOOPBACK = "127.0.0.1"
TIMEOUT = 10


def windows_sockaddr(host: str, port: int) -> bytes:
    """A SOCKADDR_IN or SOCKADDR_IN6 in a 128-byte SOCKADDR_STORAGE, written
    here from the Windows headers' layout, independently of the core."""
    ip = ipaddress.ip_address(host)
    if ip.version == 4:
        body = struct.pack("<H", 2) + struct.pack("!H", port) + ip.packed + bytes(8)
    else:
        flowinfo = scope_id = 0
        body = struct.pack("<H", 23) + struct.pack("!HI", port, flowinfo) + ip.packed
        body += struct.pack("<I", scope_id)
    return body.ljust(128, b"\0")


def wfpsampler_context(remote: tuple[str, int], local: tuple[str, int]) -> bytes:
    """What Microsoft's WFPSampler stores: original remote, then local."""
    return windows_sockaddr(*remote) + windows_sockaddr(*local)


@dataclass
class Callout:
    """The emulated callout driver's table, emptied for each test."""

    def redirect(
        self,
        peer: tuple[str, int],
        original_destination: tuple[str, int],
        records: bytes,
        context: bytes | None = None,
        *,
        too_small_error: int = ERROR_INSUFFICIENT_BUFFER,
        original_dst_option: bool = False,
    ) -> None:
        _core._emulated_callout_add(
            peer, original_destination, records, context, too_small_error, original_dst_option
        )

    @property
    def sets(self) -> list[tuple[int, bytes, bool, bool]]:
        return list(_core._emulated_callout_sets())

    @property
    def sent(self) -> list[tuple[int, int, bytes, tuple[str, int]]]:
        return list(_core._emulated_callout_sent())

    @property
    def wfp_ioctls(self) -> int:
        return int(_core._emulated_callout_wfp_ioctls())


@pytest.fixture()
def callout() -> Iterator[Callout]:
    _core._emulated_callout_reset(FWP_E_NOT_FOUND)
    yield Callout()
    _core._emulated_callout_reset(FWP_E_NOT_FOUND)


class EchoOrigin:
    """A real TCP server on loopback that echoes each connection until its
    end of stream, then closes its side: where a redirected client meant to go."""

    def __init__(self, family: int = socket.AF_INET, host: str = LOOPBACK) -> None:
        self.listener = socket.create_server((host, 0), family=family)
        self.address: tuple[str, int] = self.listener.getsockname()[:2]
        self.peers: list[tuple[str, int]] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, peer = self.listener.accept()
            except OSError:
                return
            self.peers.append(peer[:2])
            threading.Thread(target=self._echo, args=(connection,), daemon=True).start()

    @staticmethod
    def _echo(connection: socket.socket) -> None:
        with connection:
            while data := connection.recv(65536):
                connection.sendall(data)
            connection.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture()
def origin() -> Iterator[EchoOrigin]:
    server = EchoOrigin()
    yield server
    server.close()


@pytest.fixture()
def listener() -> Iterator[wfpredirect.RedirectSocket]:
    sock = wfpredirect.RedirectSocket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((LOOPBACK, 0))
    sock.listen()
    sock.settimeout(TIMEOUT)
    yield sock
    sock.close()


def bound_client(family: int = socket.AF_INET, host: str = LOOPBACK) -> socket.socket:
    """A client socket whose address is known before it connects, so the
    emulated callout can be told about it first."""
    client = socket.socket(family, socket.SOCK_STREAM)
    client.bind((host, 0))
    client.settimeout(TIMEOUT)
    return client


def accept_redirected(
    callout: Callout,
    listener: socket.socket,
    original: tuple[str, int],
    records: bytes,
    context: bytes | None = None,
    **options: object,
) -> tuple[socket.socket, wfpredirect.RedirectSocket]:
    client = bound_client()
    callout.redirect(client.getsockname(), original, records, context, **options)  # type: ignore[arg-type]
    client.connect(listener.getsockname())
    accepted, _ = listener.accept()
    return client, accepted  # type: ignore[return-value]


def exchange(sock: socket.socket, payload: bytes) -> bytes:
    """Send everything, half-close, read to the end."""
    sock.sendall(payload)
    sock.shutdown(socket.SHUT_WR)
    chunks = []
    while data := sock.recv(65536):
        chunks.append(data)
    return b"".join(chunks)


def relay(a: socket.socket, b: socket.socket) -> None:
    try:
        while data := a.recv(65536):
            b.sendall(data)
        b.shutdown(socket.SHUT_WR)
    except OSError:
        pass


# ---- Connections: RedirectSocket ----------------------------------------


def test_redirect_socket_carries_the_records_to_the_origin(
    callout: Callout, listener: wfpredirect.RedirectSocket, origin: EchoOrigin
) -> None:
    records = bytes(range(256)) * 2
    context = wfpsampler_context(origin.address, (LOOPBACK, 40000))
    client, accepted = accept_redirected(callout, listener, origin.address, records, context)
    with client, accepted:
        assert accepted.redirect_info == wfpredirect.RedirectInfo(records, context, origin.address)
        assert wfpredirect.query_redirect_info(accepted.fileno()) == accepted.redirect_info
        assert isinstance(accepted.redirect_records, wfpredirect.RedirectRecords)
        with accepted.create_upstream(timeout=TIMEOUT) as upstream:
            # Set once, on the upstream, before it was bound or connected.
            assert callout.sets == [(upstream.fileno(), records, False, False)]
            assert upstream.family == socket.AF_INET
            back = threading.Thread(target=relay, args=(upstream, accepted))
            back.start()
            forward = threading.Thread(target=relay, args=(accepted, upstream))
            forward.start()
            assert exchange(client, b"hello through the redirect") == b"hello through the redirect"
            back.join(TIMEOUT)
            forward.join(TIMEOUT)
            assert origin.peers == [upstream.getsockname()[:2]]


def test_original_destination_from_so_original_dst(
    callout: Callout, listener: wfpredirect.RedirectSocket, origin: EchoOrigin
) -> None:
    client, accepted = accept_redirected(
        callout, listener, origin.address, b"R" * 40, None, original_dst_option=True
    )
    with client, accepted:
        assert wfpredirect.original_destination(accepted) == origin.address
        assert accepted.redirect_info == wfpredirect.RedirectInfo(b"R" * 40, None, origin.address)
        assert wfpredirect.query_redirect_context(accepted) is None


def test_query_redirect_info_asks_each_wfp_query_once(
    callout: Callout, listener: wfpredirect.RedirectSocket, origin: EchoOrigin
) -> None:
    """Two WSAIoctl calls per redirected connection (records, context),
    whether SO_ORIGINAL_DST answers, fails (the context then gives the
    original destination) or is skipped once the first redirected connection
    showed this stack lacks it (Wine answers WSAEINVAL). The three single
    queries asked 2, 3 and 3."""
    records = b"r" * 24
    context = wfpsampler_context(origin.address, (LOOPBACK, 40000))
    fused, single = [], []
    for option in (True, False, False):
        client, accepted = accept_redirected(
            callout, listener, origin.address, records, context, original_dst_option=option
        )
        with client, accepted:
            before = callout.wfp_ioctls
            info = wfpredirect.query_redirect_info(accepted)
            fused.append(callout.wfp_ioctls - before)
            before = callout.wfp_ioctls
            pieces = (
                wfpredirect.query_redirect_records(accepted),
                wfpredirect.query_redirect_context(accepted),
                wfpredirect.original_destination(accepted),
            )
            single.append(callout.wfp_ioctls - before)
            assert info == wfpredirect.RedirectInfo(records, context, origin.address)
            assert tuple(info) == pieces
    assert fused == [2, 2, 2]
    assert single == [2, 3, 3]


def test_a_context_of_another_driver_still_travels(
    callout: Callout, listener: wfpredirect.RedirectSocket, origin: EchoOrigin
) -> None:
    context = b"another driver's layout"
    client, accepted = accept_redirected(callout, listener, origin.address, b"r" * 8, context)
    with client, accepted:
        with pytest.raises(wfpredirect.UnsupportedError) as caught:
            wfpredirect.original_destination(accepted)
        assert str(caught.value).startswith("[WinError 10022] original_destination: ")
        assert accepted.redirect_info == wfpredirect.RedirectInfo(b"r" * 8, context, None)
        with accepted.create_upstream(origin.address, timeout=TIMEOUT) as upstream:
            assert callout.sets == [(upstream.fileno(), b"r" * 8, False, False)]
            assert exchange(upstream, b"direct") == b"direct"


@pytest.mark.parametrize(
    ("too_small_error", "ioctls"),
    [
        # The reported size is asked for at once: 1 KiB, then 3000 bytes.
        (ERROR_INSUFFICIENT_BUFFER, 2),
        # WSAEINVAL with nothing reported: retried once at the 64 KiB cap.
        (WSAEINVAL, 2),
    ],
)
def test_a_record_past_the_first_kibibyte(
    callout: Callout,
    listener: wfpredirect.RedirectSocket,
    origin: EchoOrigin,
    too_small_error: int,
    ioctls: int,
) -> None:
    records = bytes(i % 251 for i in range(3000))
    client, accepted = accept_redirected(
        callout, listener, origin.address, records, too_small_error=too_small_error
    )
    with client, accepted:
        assert wfpredirect.query_redirect_records(accepted) == records
        assert callout.wfp_ioctls == ioctls


def test_a_record_past_the_cap_is_an_error_naming_it(
    callout: Callout, listener: wfpredirect.RedirectSocket, origin: EchoOrigin
) -> None:
    client, accepted = accept_redirected(callout, listener, origin.address, b"x" * 70000)
    with client, accepted:
        with pytest.raises(wfpredirect.RedirectError) as caught:
            wfpredirect.query_redirect_records(accepted)
        assert type(caught.value) is wfpredirect.RedirectError
        assert caught.value.winerror == ERROR_INSUFFICIENT_BUFFER
        assert "the records exceed the 64 KiB cap" in str(caught.value)


def test_a_record_past_the_cap_answered_wsaeinval_reads_as_not_redirected(
    callout: Callout, listener: wfpredirect.RedirectSocket, origin: EchoOrigin
) -> None:
    """The documented ambiguity: WSAEINVAL with no size even at the cap is
    indistinguishable from "not redirected"."""
    client, accepted = accept_redirected(
        callout, listener, origin.address, b"x" * 70000, too_small_error=WSAEINVAL
    )
    with client, accepted:
        with pytest.raises(wfpredirect.NotRedirectedError) as caught:
            wfpredirect.query_redirect_records(accepted)
        assert caught.value.winerror == WSAEINVAL


def test_into_a_small_buffer_reports_the_size_and_writes_nothing_past_it(
    callout: Callout, listener: wfpredirect.RedirectSocket, origin: EchoOrigin
) -> None:
    records = bytes(i % 253 for i in range(3000))
    client, accepted = accept_redirected(callout, listener, origin.address, records)
    with client, accepted:
        buffer = bytearray(b"\xaa" * 96)
        with pytest.raises(wfpredirect.BufferTooSmallError) as caught:
            wfpredirect.query_redirect_records_into(accepted, memoryview(buffer)[16:80])
        assert caught.value.required == 3000
        assert caught.value.winerror == ERROR_INSUFFICIENT_BUFFER
        assert buffer == bytearray(b"\xaa" * 96)
        roomy = bytearray(b"\xbb" * 4000)
        assert wfpredirect.query_redirect_records_into(accepted, roomy) == 3000
        assert roomy == records + b"\xbb" * 1000


@pytest.mark.parametrize("code", [WSAEINVAL, FWP_E_NOT_FOUND, ERROR_NOT_FOUND])
def test_every_not_redirected_answer(
    callout: Callout, listener: wfpredirect.RedirectSocket, code: int
) -> None:
    _core._emulated_callout_reset(code)
    client = socket.create_connection(listener.getsockname(), timeout=TIMEOUT)
    accepted, _ = listener.accept()
    with client, accepted:
        for query in (wfpredirect.query_redirect_records, wfpredirect.query_redirect_context):
            with pytest.raises(wfpredirect.NotRedirectedError) as caught:
                query(accepted)
            assert caught.value.winerror == code
        assert accepted.redirect_info == wfpredirect.RedirectInfo(None, None, None)
        with pytest.raises(wfpredirect.NotRedirectedError):
            accepted.create_upstream()
        assert callout.sets == []


def test_ipv4_on_a_dual_stack_listener_gives_an_ipv4_upstream(
    callout: Callout, origin: EchoOrigin
) -> None:
    listener = wfpredirect.RedirectSocket(socket.AF_INET6, socket.SOCK_STREAM)
    listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    listener.bind(("::", 0))
    listener.listen()
    listener.settimeout(TIMEOUT)
    with listener:
        client = bound_client()
        callout.redirect(client.getsockname(), origin.address, b"dual", original_dst_option=True)
        client.connect((LOOPBACK, listener.getsockname()[1]))
        accepted, peer = listener.accept()
        with client, accepted:
            assert peer[0] == f"::ffff:{LOOPBACK}"
            assert accepted.original_destination == origin.address
            with accepted.create_upstream(timeout=TIMEOUT) as upstream:
                assert upstream.family == socket.AF_INET
                assert exchange(upstream, b"v4") == b"v4"


def test_a_mapped_address_in_a_wfpsampler_context_is_ipv4(
    callout: Callout, listener: wfpredirect.RedirectSocket, origin: EchoOrigin
) -> None:
    host, port = origin.address
    context = wfpsampler_context((f"::ffff:{host}", port), ("::ffff:127.0.0.1", 40000))
    client, accepted = accept_redirected(callout, listener, origin.address, b"m", context)
    with client, accepted:
        assert wfpredirect.original_destination(accepted) == origin.address


# ---- asyncio on the Proactor loop -----------------------------------------


def test_aio_on_the_proactor_loop_relays_a_mebibyte_each_way(
    callout: Callout, origin: EchoOrigin
) -> None:
    records = b"aio-records" * 30
    context = wfpsampler_context(origin.address, (LOOPBACK, 40001))
    payload = bytes(i % 256 for i in range(1 << 20))
    seen: list[wfpredirect.RedirectInfo] = []
    upstream_handles: list[int] = []

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.write_eof()

    async def handle(
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        redirect: wfpredirect.RedirectInfo,
    ) -> None:
        seen.append(redirect)
        upstream_reader, upstream_writer = await open_upstream(redirect)
        upstream_handles.append(upstream_writer.get_extra_info("socket").fileno())
        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))
        writer.close()
        upstream_writer.close()

    async def main() -> bytes:
        assert isinstance(asyncio.get_running_loop(), asyncio.ProactorEventLoop)
        server = await start_redirect_server(handle, LOOPBACK, 0)
        async with server:
            client = bound_client()
            client.setblocking(False)
            callout.redirect(client.getsockname(), origin.address, records, context)
            await asyncio.get_running_loop().sock_connect(client, server.sockets[0].getsockname())
            reader, writer = await asyncio.open_connection(sock=client)
            writer.write(payload)
            await writer.drain()
            writer.write_eof()
            echoed = await reader.read()
            writer.close()
            return echoed

    echoed = asyncio.run(asyncio.wait_for(main(), 60))
    assert echoed == payload
    assert seen == [wfpredirect.RedirectInfo(records, context, origin.address)]
    # asyncio binds before ConnectEx: the records came first.
    assert callout.sets == [(upstream_handles[0], records, False, False)]


# ---- Datagrams ------------------------------------------------------------


class UdpEchoOrigin:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK, 0))
        self.address: tuple[str, int] = self.sock.getsockname()
        self.received: list[tuple[bytes, tuple[str, int]]] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(65535)
            except OSError:
                return
            self.received.append((data, peer))
            self.sock.sendto(b"echo:" + data, peer)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture()
def udp_origin() -> Iterator[UdpEchoOrigin]:
    server = UdpEchoOrigin()
    yield server
    server.close()


def udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((LOOPBACK, 0))
    sock.settimeout(TIMEOUT)
    return sock


def test_datagram_records_arrive_with_a_flow_s_first_datagram_only(
    callout: Callout, udp_origin: UdpEchoOrigin
) -> None:
    records = b"udp-records" * 5
    context = wfpsampler_context(udp_origin.address, ("0.0.0.0", 0))
    with udp_socket() as relay_sock, udp_socket() as client:
        wfpredirect.enable_datagram_records(relay_sock)
        callout.redirect(client.getsockname(), udp_origin.address, records, context)
        client.sendto(b"first", relay_sock.getsockname())
        client.sendto(b"second", relay_sock.getsockname())
        first = wfpredirect.recvmsg_redirect(relay_sock, 2048)
        second = wfpredirect.recvmsg_redirect(relay_sock, 2048)
        assert first == wfpredirect.Datagram(
            b"first", client.getsockname(), records, context, udp_origin.address
        )
        assert second == wfpredirect.Datagram(b"second", client.getsockname(), None, None, None)

        with udp_socket() as upstream:
            sent = wfpredirect.sendmsg_redirect(upstream, b"up", udp_origin.address, first.records)
            assert sent == 2
            assert callout.sent == [(upstream.fileno(), IPPROTO_IP, records, udp_origin.address)]
            assert upstream.recvfrom(100) == (b"echo:up", udp_origin.address)


def test_datagram_endpoint_on_the_proactor_loop_relays_a_flow_both_ways(
    callout: Callout, udp_origin: UdpEchoOrigin
) -> None:
    records = b"flow-records"
    context = wfpsampler_context(udp_origin.address, (LOOPBACK, 0))

    async def main() -> list[bytes]:
        assert isinstance(asyncio.get_running_loop(), asyncio.ProactorEventLoop)
        endpoint, _ = await create_redirect_datagram_endpoint(
            RedirectDatagramProtocol, (LOOPBACK, 0), idle_timeout=30
        )
        try:
            address = endpoint.get_extra_info("sockname")
            with udp_socket() as client:
                client.setblocking(False)
                callout.redirect(client.getsockname(), udp_origin.address, records, context)
                loop = asyncio.get_running_loop()
                answers = []
                for data in (b"one", b"two", b"three"):
                    await loop.sock_sendto(client, data, address)
                    answer, peer = await asyncio.wait_for(loop.sock_recvfrom(client, 100), 10)
                    assert peer == address
                    answers.append(answer)
                return answers
        finally:
            endpoint.close()

    answers = asyncio.run(main())
    assert answers == [b"echo:one", b"echo:two", b"echo:three"]
    # One upstream socket for the flow, every datagram carrying its records.
    assert [data for data, _ in udp_origin.received] == [b"one", b"two", b"three"]
    assert len({peer for _, peer in udp_origin.received}) == 1
    assert [(level, sent, to) for _, level, sent, to in callout.sent] == [
        (IPPROTO_IP, records, udp_origin.address)
    ] * 3


# ---- A connection whose state cannot be read --------------------------------

WSAENETDOWN = 10050  # no WFP page lists it for these IOCTLs


def test_an_undocumented_answer_closes_that_connection_only(
    callout: Callout, origin: EchoOrigin, caplog: pytest.LogCaptureFixture
) -> None:
    handled: list[wfpredirect.RedirectInfo] = []

    async def handle(
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        redirect: wfpredirect.RedirectInfo,
    ) -> None:
        handled.append(redirect)
        writer.close()

    async def connect_and_read(client: socket.socket, address: tuple[str, int]) -> bytes:
        loop = asyncio.get_running_loop()
        await loop.sock_connect(client, address)
        try:
            return await asyncio.wait_for(loop.sock_recv(client, 100), TIMEOUT)
        except ConnectionResetError:
            return b""

    async def main() -> list[bytes]:
        server = await start_redirect_server(handle, LOOPBACK, 0)
        async with server:
            address = server.sockets[0].getsockname()
            answers = []
            for too_small_error in (WSAENETDOWN, ERROR_INSUFFICIENT_BUFFER):
                client = bound_client()
                client.setblocking(False)
                # 2000 bytes: the first 1 KiB query gets the answer below.
                callout.redirect(
                    client.getsockname(),
                    origin.address,
                    b"k" * 2000,
                    too_small_error=too_small_error,
                )
                with client:
                    answers.append(await connect_and_read(client, address))
            return answers

    with caplog.at_level("ERROR", logger="wfpredirect.aio"):
        assert asyncio.run(main()) == [b"", b""]
    # The second connection reached the callback; the first did not.
    assert handled == [wfpredirect.RedirectInfo(b"k" * 2000, None, None)]
    (record,) = caplog.records
    assert record.name == "wfpredirect.aio"
    message = record.getMessage()
    assert message.startswith(f"closed the connection from {LOOPBACK} port ")
    # Then the system's text for the code (Wine has none for this one).
    assert (
        ": its redirect state could not be read: [WinError 10050] query_redirect_info: "
        "WSAIoctl(SIO_QUERY_WFP_CONNECTION_REDIRECT_RECORDS) (" in message
    ), message


# ---- The proxy command ------------------------------------------------------------


@pytest.mark.parametrize("relay", ["protocol", "streams"])
def test_the_proxy_relays_each_client_with_its_own_records_and_stops_on_ctrl_break(
    callout: Callout, origin: EchoOrigin, tmp_path: Path, relay: str
) -> None:
    clients = [bound_client() for _ in range(20)]
    records = {
        client.getsockname(): f"records of client {i}".encode() * 4
        for i, client in enumerate(clients)
    }
    payloads = [f"payload {i} ".encode() * 1000 for i in range(len(clients))]
    table = {
        "not_redirected_error": FWP_E_NOT_FOUND,
        "redirects": [
            {
                "peer": list(peer),
                "original_destination": list(origin.address),
                "records": record.hex(),
                "context": wfpsampler_context(origin.address, (LOOPBACK, 40002)).hex(),
            }
            for peer, record in records.items()
        ],
    }
    (tmp_path / "table.json").write_text(json.dumps(table))
    stop_file = tmp_path / "stop"
    sets_file = tmp_path / "sets.json"
    proxy = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).with_name("emulated_proxy.py")),
            str(tmp_path / "table.json"),
            str(stop_file),
            str(sets_file),
            "proxy",
            "--listen",
            f"{LOOPBACK}:0",
            "--summary-interval",
            "0",
            "--relay",
            relay,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proxy.stdout is not None
        first = proxy.stdout.readline()
        listening = re.fullmatch(rf"listening on {LOOPBACK} port (\d+)\n", message(first))
        assert listening is not None, first + proxy.stdout.read()
        address = (LOOPBACK, int(listening.group(1)))
        for i, client in enumerate(clients):
            with client:
                client.connect(address)
                assert exchange(client, payloads[i]) == payloads[i]
        with socket.create_connection(address, timeout=TIMEOUT) as stranger:
            stranger_port = stranger.getsockname()[1]
            # Refused: closed at once (an abort, so maybe as a reset).
            with contextlib.suppress(ConnectionResetError):
                assert stranger.recv(100) == b""
        stop_file.touch()
        output, _ = proxy.communicate(timeout=60)
    finally:
        proxy.kill()
        proxy.wait()
    assert proxy.returncode == 0, output
    lines = [message(line) for line in output.splitlines()]
    refused = f"refused {LOOPBACK}:{stranger_port}: not redirected (addressed to the proxy itself)"
    assert refused in lines, output
    relayed = [line for line in lines if f" -> {origin.address[0]}:{origin.address[1]}: " in line]
    assert len(relayed) == 20, output
    assert lines[-1].startswith("stopped after ")
    total = sum(map(len, payloads))
    summary = f" s: 0 open, 20 relayed, 1 refused, 0 failed, {total} bytes up, {total} bytes down"
    assert lines[-1].endswith(summary), output
    sets = json.loads(sets_file.read_text())
    # Each upstream carried one client's records, set before bind and connect.
    assert sorted(bytes.fromhex(record) for _, record, _, _ in sets) == sorted(records.values())
    assert {(bound, connected) for _, _, bound, connected in sets} == {(False, False)}


def test_a_first_datagram_longer_than_the_buffer_is_an_error_not_a_silent_loss(
    callout: Callout, udp_origin: UdpEchoOrigin
) -> None:
    """Windows fails WSARecvMsg with WSAEMSGSIZE and drops the datagram, and
    with it the flow's redirect state: recvmsg_redirect says so."""
    with udp_socket() as relay_sock, udp_socket() as client:
        wfpredirect.enable_datagram_records(relay_sock)
        callout.redirect(client.getsockname(), udp_origin.address, b"lost records")
        client.sendto(b"0123456789", relay_sock.getsockname())
        buffer = bytearray(b"\xaa" * 12)
        with pytest.raises(wfpredirect.RedirectError) as caught:
            wfpredirect.recvmsg_redirect_into(relay_sock, memoryview(buffer)[4:8])
        assert caught.value.winerror == 10040  # WSAEMSGSIZE
        assert str(caught.value).startswith(
            "[WinError 10040] recvmsg_redirect_into: WSARecvMsg: the datagram was longer than "
            "the buffer and is lost (WSAEMSGSIZE), with the flow's redirect state if it was "
            "the flow's first; receive with a 65535-byte buffer"
        )
        assert buffer[:4] == b"\xaa" * 4 and buffer[8:] == b"\xaa" * 4
        client.sendto(b"next", relay_sock.getsockname())
        assert wfpredirect.recvmsg_redirect(relay_sock, 65535) == wfpredirect.Datagram(
            b"next", client.getsockname(), None, None, None
        )


def test_set_redirect_records_refuses_connected_and_listening_sockets(
    callout: Callout, listener: wfpredirect.RedirectSocket
) -> None:
    """Before any IOCTL: the connection of a connected socket was made
    without the records, and a listening socket makes no upstream."""
    with socket.create_connection(listener.getsockname(), timeout=TIMEOUT) as client:
        answers = {}
        for name, sock in (("connected", client), ("listening", listener)):
            with pytest.raises(wfpredirect.RedirectError) as caught:
                wfpredirect.set_redirect_records(sock, b"records")
            answers[name] = (caught.value.winerror, str(caught.value).split(" (")[0])
    assert answers == {
        "connected": (
            10056,  # WSAEISCONN
            "[WinError 10056] set_redirect_records: the socket is already connected: set "
            "records before connect",
        ),
        "listening": (
            WSAEINVAL,
            "[WinError 10022] set_redirect_records: the socket is listening: records go on "
            "the proxy's new upstream socket, before it connects",
        ),
    }
    assert callout.sets == []
    assert callout.wfp_ioctls == 0


def test_an_upstream_coming_back_is_recognised_by_its_address(
    callout: Callout, listener: wfpredirect.RedirectSocket
) -> None:
    """A driver that ignored the records would send the upstream back to a
    proxy: the connection from the upstream's own address is a loop."""
    second = wfpredirect.RedirectSocket(socket.AF_INET, socket.SOCK_STREAM)
    second.bind((LOOPBACK, 0))
    second.listen()
    second.settimeout(TIMEOUT)
    client, accepted = accept_redirected(
        callout, listener, second.getsockname(), b"rec", original_dst_option=True
    )
    with second, client, accepted, accepted.create_upstream(timeout=TIMEOUT) as upstream:
        came_back, _ = second.accept()
        with came_back, pytest.raises(wfpredirect.RedirectLoopError) as caught:
            wfpredirect.query_redirect_info(came_back)
        port = upstream.getsockname()[1]
    assert caught.value.errno == errno.ELOOP
    assert str(caught.value) == (
        f"[Errno {errno.ELOOP}] query_redirect_info: the connection from {LOOPBACK} port {port} "
        "is this process's own upstream connection coming back: the callout driver redirected it "
        "although it carries the redirect records: the driver must let such connections pass "
        "(FwpsQueryConnectionRedirectState)"
    )


# ---- The benchmark of calls per connection ------------------------------------

# A row: the connections it sums, eight counts (each a number, or a range
# when the connections differed), the median us and maybe its IQR.
BENCHMARK_ROW = re.compile(
    r"    (first|later) (?:\((\d+)\) )?\s*((?:\s*(?:\d+-\d+|\d+|-)){8})\s+\d+(?:\s+\d+-\d+)?"
)


def run_benchmark(script: str, *arguments: str, output: Path) -> subprocess.CompletedProcess[str]:
    """benchmarks/`script` as shipped, in this interpreter, its results
    written to `output`."""
    return subprocess.run(
        [
            sys.executable,
            str(project_file(f"benchmarks/{script}")),
            *arguments,
            "--output",
            str(output),
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_bench_windows_calls_counts_each_code_per_connection(tmp_path: Path) -> None:
    """benchmarks/bench_windows_calls.py as shipped, in this interpreter:
    per connection, the one pass asks each WSAIoctl code once (the 2 queries
    and the upstream's set) and SO_ORIGINAL_DST only until the stack has
    shown it lacks it; the single queries ask the context twice when
    SO_ORIGINAL_DST fails (original_destination falls back to it). The one
    pass's extra getpeername is its loop check."""
    result = run_benchmark("bench_windows_calls.py", "--connections", "5", output=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    table: dict[str, dict[str, dict[str, tuple[str, ...]]]] = {}
    stack = candidate = ""
    for line in result.stdout.splitlines():
        row = BENCHMARK_ROW.fullmatch(line)
        if row:
            which, connections, counts = row.groups()
            assert connections in (None, "4"), line
            table[stack][candidate][which] = tuple(counts.split())
        elif line.startswith("  ") and not line.startswith("   ") and "+" in line:
            candidate = line.strip()
            table[stack][candidate] = {}
        elif line.startswith("a stack "):
            stack = line.split(" (")[0]
            table[stack] = {}
    fused = "query_redirect_info + set_redirect_records"
    singles = "three single queries + set_redirect_records"
    # WSAIoctl: records query, context query, the two, set; getsockopt
    # SO_ORIGINAL_DST; getsockname, getpeername and every other Winsock call
    # (set_redirect_records' checks of the new socket).
    both = {"first", "later"}
    assert table == {
        "a stack without SO_ORIGINAL_DST": {
            fused: {
                "first": ("1", "1", "2", "1", "1", "1", "2", "2"),
                "later": ("1", "1", "2", "1", "0", "0", "2", "2"),
            },
            singles: dict.fromkeys(both, ("1", "2", "3", "1", "1", "1", "1", "2")),
        },
        "a stack whose SO_ORIGINAL_DST answers": {
            fused: dict.fromkeys(both, ("1", "1", "2", "1", "1", "1", "2", "2")),
            singles: dict.fromkeys(both, ("1", "1", "2", "1", "1", "1", "1", "2")),
        },
    }, result.stdout
    assert "under Wine" in result.stdout and "(an emulation, not Windows)" in result.stdout
    written = json.loads((tmp_path / "bench_windows_calls-wine.json").read_text())
    assert written["stacks"]["lacks"]["candidates"][fused]["later"]["counts"] == {
        "records_query": 1,
        "context_query": 1,
        "set": 1,
        "so_original_dst": 0,
        "getsockname": 0,
        "getpeername": 2,
        "other": 2,
    }


def test_bench_windows_relay_times_both_paths_on_the_proactor_loop(tmp_path: Path) -> None:
    """benchmarks/bench_windows_relay.py as shipped, in this interpreter, on a
    small load: both relay paths in every round, every byte checked by the
    script itself (it exits non-zero on a wrong answer or byte count), the
    table labelled with where it ran."""
    small = ("--rounds", "2", "--connections", "5", "--download-mib", "1")
    result = run_benchmark("bench_windows_relay.py", *small, output=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    (written_file,) = tmp_path.glob("windows_relay-*.json")
    written = json.loads(written_file.read_text())
    under_wine = written["where"].startswith("Wine ")
    assert written_file.name == f"windows_relay-{'wine' if under_wine else 'windows'}.json"
    assert written["label"] == ("Wine, not Windows" if under_wine else "Windows")
    assert written["loop"] == "ProactorEventLoop"
    lines = result.stdout.splitlines()
    assert lines[0].endswith(f"on the Proactor loop ({written['label']})"), result.stdout
    figures = (
        "cpu_us_per_connection",
        "operations_per_connection",
        "connections_per_s",
        "mib_s",
        "cpu_ms_per_mib",
        "operations_per_mib",
    )
    paths = written["summary"]["paths"]
    assert set(paths) == {"protocol", "streams"}
    for path, measured in paths.items():
        assert set(measured) == set(figures)
        assert all(len(measured[figure]["samples"]) == 2 for figure in figures), measured
        assert any(line.startswith(f"{path} ") for line in lines), result.stdout
    assert set(written["summary"]["protocol_vs_streams"]) == set(figures)
