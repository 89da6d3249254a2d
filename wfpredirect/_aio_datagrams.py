"""The asyncio datagram endpoint that wfpredirect.aio exports: each received
Datagram goes to a protocol with its flow, and each flow keeps its own
upstream socket carrying the flow's records, until it has been idle for
`idle_timeout` seconds."""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from ._addresses import Address
from ._core import (
    _DATAGRAM_STATE_ON_FIRST_ONLY,
    enable_datagram_records,
    recvmsg_redirect,
    sendmsg_redirect,
)
from ._datagrams import datagram_reply_socket
from ._errors import UnsupportedError
from ._records import Datagram, RedirectRecords

# The largest UDP payload: every datagram fits.
_MAX_DATAGRAM = 65535

#: idle_timeout's least value: the expiry timer runs every half of it, and a
#: timeout near zero would keep it always due (a core spinning); the proxy's
#: --udp-idle-timeout has the same floor.
MIN_IDLE_TIMEOUT = 0.1


def _checked_idle_timeout(idle_timeout: float) -> float:
    """`idle_timeout`, or ValueError naming it: a finite number of seconds,
    at least MIN_IDLE_TIMEOUT (nan would never expire a flow, inf neither)."""
    if isinstance(idle_timeout, bool) or not isinstance(idle_timeout, (int, float)):
        raise TypeError(
            "create_redirect_datagram_endpoint: idle_timeout must be a number of seconds, "
            f"not {type(idle_timeout).__name__}"
        )
    if not math.isfinite(idle_timeout) or idle_timeout < MIN_IDLE_TIMEOUT:
        raise ValueError(
            "create_redirect_datagram_endpoint: idle_timeout must be a finite number of "
            f"seconds, at least {MIN_IDLE_TIMEOUT} (got {idle_timeout!r})"
        )
    return float(idle_timeout)


def _checked_max_flows(max_flows: int | None) -> int | None:
    """`max_flows` (None: no cap), or an error naming it: a whole number, at least 1."""
    if max_flows is None:
        return None
    if isinstance(max_flows, bool) or not isinstance(max_flows, int):
        raise TypeError(
            "create_redirect_datagram_endpoint: max_flows must be an int or None, "
            f"not {type(max_flows).__name__}"
        )
    if max_flows < 1:
        raise ValueError(
            f"create_redirect_datagram_endpoint: max_flows must be at least 1 (got {max_flows})"
        )
    return max_flows


class DatagramFlow:
    """One client's flow to one original destination.

    ``send_upstream(data)`` sends to the original destination (or `address`)
    from the flow's own upstream socket, carrying the flow's records;
    ``reply(data)`` answers the client from the address it sent to.
    """

    def __init__(self, endpoint: RedirectDatagramEndpoint, first: Datagram) -> None:
        self.client: Address = first.address
        self.original_destination: Address | None = first.original_destination
        self.records: RedirectRecords | None = first.records
        self.context: bytes | None = first.context
        self.created = self.last_active = time.monotonic()
        self._endpoint = endpoint
        self._upstream: socket.socket | None = None
        self._reply: socket.socket | None = None
        self._readers: list[asyncio.Task[None]] = []
        self.closed = False

    def send_upstream(self, data: bytes, address: Address | None = None) -> None:
        """Send `data` upstream, to `address` or the original destination."""
        target = address if address is not None else self.original_destination
        if target is None:
            raise ValueError("send_upstream: the flow has no original destination; give address")
        if self._upstream is None:
            family = socket.AF_INET if len(target) == 2 else socket.AF_INET6
            self._upstream = socket.socket(family, socket.SOCK_DGRAM)
            self._upstream.setblocking(False)
            # The upstream is bound by its first send; read its answers then.
            self._endpoint._send(self._upstream, data, target, self.records)
            self._read(self._upstream, self._upstream_received)
        else:
            self._endpoint._send(self._upstream, data, target, self.records)
        self.last_active = time.monotonic()

    def reply(self, data: bytes) -> None:
        """Answer the client from the address it sent to (Linux: a socket
        bound to the original destination; where there is no transparent
        bind, from the endpoint's own socket)."""
        if self._reply is None and self.original_destination is not None:
            # Windows has no transparent bind: the endpoint's socket answers.
            with contextlib.suppress(UnsupportedError):
                self._reply = datagram_reply_socket(self.original_destination, peer=self.client)
                self._reply.setblocking(False)
                # Bound to the destination and connected to the client, it
                # now also receives the client's later datagrams: TPROXY
                # hands a datagram to the socket that matches it exactly.
                self._read(self._reply, self._client_received)
        if self._reply is not None:
            self._reply.send(data)
        else:
            self._endpoint._sock.sendto(data, self.client)
        self.last_active = time.monotonic()

    def _read(self, sock: socket.socket, received: Callable[[bytes], None]) -> None:
        self._readers.append(self._endpoint._loop.create_task(self._read_loop(sock, received)))

    async def _read_loop(self, sock: socket.socket, received: Callable[[bytes], None]) -> None:
        loop = self._endpoint._loop
        while not self.closed:
            try:
                data = await loop.sock_recv(sock, _MAX_DATAGRAM)
            except OSError as error:
                if self.closed:
                    return
                self._endpoint._protocol.error_received(error)
                continue
            self.last_active = time.monotonic()
            try:
                received(data)
            except OSError as error:
                # An answer that could not be sent (its reply socket could
                # not be bound, say): the flow goes on reading.
                self._endpoint._protocol.error_received(error)

    def _upstream_received(self, data: bytes) -> None:
        self._endpoint._protocol.upstream_datagram_received(data, self)

    def _client_received(self, data: bytes) -> None:
        datagram = Datagram(
            data, self.client, self.records, self.context, self.original_destination
        )
        self._endpoint._deliver(datagram, self)

    def close(self) -> None:
        """Close the flow's sockets; the endpoint forgets it."""
        if self.closed:
            return
        self.closed = True
        for reader in self._readers:
            reader.cancel()
        for sock in (self._upstream, self._reply):
            if sock is not None:
                sock.close()
        self._endpoint._forget(self)


class RedirectDatagramProtocol(asyncio.BaseProtocol):
    """What a redirect datagram endpoint calls. The defaults relay: a
    client's datagram goes upstream, an upstream answer back to the client."""

    def datagram_received(self, datagram: Datagram, flow: DatagramFlow | None) -> None:
        """A client's datagram; `flow` is None when it was not redirected."""
        if flow is not None:
            flow.send_upstream(datagram.data)

    def upstream_datagram_received(self, data: bytes, flow: DatagramFlow) -> None:
        """An answer on the flow's upstream socket."""
        flow.reply(data)

    def flow_closed(self, flow: DatagramFlow) -> None:
        """The flow was idle for the endpoint's idle timeout, or closed."""

    def flow_dropped(self, datagram: Datagram) -> None:
        """A datagram that would have started a new flow, dropped because
        the endpoint holds `max_flows` flows already: no socket was made
        for it, and nothing was sent."""

    def error_received(self, exc: OSError) -> None:
        """A send or receive failed; the endpoint goes on."""


class RedirectDatagramEndpoint:
    """The receiving socket, its flows and their expiry."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        protocol: RedirectDatagramProtocol,
        idle_timeout: float,
        loop_mark: int | None = None,
        mark_mask: int | None = None,
        max_flows: int | None = None,
    ) -> None:
        self._loop = loop
        self._max_flows = max_flows
        self._loop_mark = loop_mark
        self._mark_mask = mark_mask
        self._sock = sock
        self._protocol = protocol
        self._idle_timeout = idle_timeout
        # By (client, original destination); a flow's later datagrams carry
        # no redirect state under WFP, so they are found by client alone.
        self._flows: dict[tuple[Address, Address | None], DatagramFlow] = {}
        self._by_client: dict[Address, DatagramFlow] = {}
        self._thread: threading.Thread | None = None
        self._expiry = loop.call_later(idle_timeout / 2, self._expire)
        self._closed = False

    @property
    def flows(self) -> list[DatagramFlow]:
        return list(self._flows.values())

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "socket":
            return self._sock
        if name == "sockname":
            return self._sock.getsockname()
        return default

    def _send(
        self, sock: socket.socket, data: bytes, target: Address, records: RedirectRecords | None
    ) -> None:
        sendmsg_redirect(
            sock, data, target, records, loop_mark=self._loop_mark, mark_mask=self._mark_mask
        )

    def _start(self) -> None:
        self._protocol.connection_made(self)  # type: ignore[arg-type]
        try:
            self._loop.add_reader(self._sock.fileno(), self._readable)
        except NotImplementedError:
            # The Proactor loop has no add_reader and asyncio cannot issue
            # WSARecvMsg: a thread receives (blocking, without the GIL) and
            # hands each datagram to the loop. Only a Windows runner
            # exercises this path.
            self._sock.setblocking(True)
            self._thread = threading.Thread(target=self._receive_in_thread, daemon=True)
            self._thread.start()

    def _readable(self) -> None:
        # Everything waiting, so one wakeup serves a burst.
        while True:
            try:
                datagram = recvmsg_redirect(self._sock, _MAX_DATAGRAM)
            except BlockingIOError:
                return
            except OSError as error:
                self._protocol.error_received(error)
                return
            self._received(datagram)

    def _receive_in_thread(self) -> None:
        while not self._closed:
            try:
                datagram = recvmsg_redirect(self._sock, _MAX_DATAGRAM)
            except OSError as error:
                if self._closed:
                    return
                self._loop.call_soon_threadsafe(self._protocol.error_received, error)
                continue
            self._loop.call_soon_threadsafe(self._received, datagram)

    def _received(self, datagram: Datagram) -> None:
        admitted, flow = self._flow_for(datagram)
        if not admitted:
            self._protocol.flow_dropped(datagram)
            return
        if flow is not None:
            flow.last_active = time.monotonic()
        self._deliver(datagram, flow)

    def _deliver(self, datagram: Datagram, flow: DatagramFlow | None) -> None:
        try:
            self._protocol.datagram_received(datagram, flow)
        except OSError as error:
            self._protocol.error_received(error)

    def _flow_for(self, datagram: Datagram) -> tuple[bool, DatagramFlow | None]:
        """Whether `datagram` is to be delivered (not when it would start a
        flow beyond max_flows), and its flow (None: not redirected)."""
        if datagram.records is None and datagram.original_destination is None:
            # WFP gives the state with a flow's first datagram only; under
            # netfilter a datagram without it was addressed to the proxy.
            if _DATAGRAM_STATE_ON_FIRST_ONLY:
                return True, self._by_client.get(datagram.address)
            return True, None
        key = (datagram.address, datagram.original_destination)
        flow = self._flows.get(key)
        if flow is None:
            if self._max_flows is not None and len(self._flows) >= self._max_flows:
                return False, None
            flow = DatagramFlow(self, datagram)
            self._flows[key] = flow
            self._by_client[datagram.address] = flow
        return True, flow

    def _forget(self, flow: DatagramFlow) -> None:
        self._flows.pop((flow.client, flow.original_destination), None)
        if self._by_client.get(flow.client) is flow:
            del self._by_client[flow.client]
        self._protocol.flow_closed(flow)

    def _expire(self) -> None:
        deadline = time.monotonic() - self._idle_timeout
        for flow in [flow for flow in self._flows.values() if flow.last_active <= deadline]:
            flow.close()
        if not self._closed:
            self._expiry = self._loop.call_later(self._idle_timeout / 2, self._expire)

    def close(self) -> None:
        """Stop receiving; close every flow and the socket."""
        if self._closed:
            return
        self._closed = True
        self._expiry.cancel()
        if self._thread is None:
            self._loop.remove_reader(self._sock.fileno())
        for flow in list(self._flows.values()):
            flow.close()
        self._sock.close()
        self._protocol.connection_lost(None)


async def create_redirect_datagram_endpoint(
    protocol_factory: Callable[[], RedirectDatagramProtocol],
    local_addr: tuple[str, int] | None = None,
    *,
    family: int = socket.AF_UNSPEC,
    sock: socket.socket | None = None,
    idle_timeout: float = 60.0,
    loop_mark: int | None = None,
    mark_mask: int | None = None,
    max_flows: int | None = None,
) -> tuple[RedirectDatagramEndpoint, RedirectDatagramProtocol]:
    """Receive redirected datagrams on `local_addr` (or the UDP socket
    `sock`): like ``loop.create_datagram_endpoint``, but each datagram goes
    to ``protocol.datagram_received(datagram, flow)`` with its
    :class:`~wfpredirect.Datagram` and its :class:`DatagramFlow`, which
    keeps one upstream socket carrying the flow's records. A flow idle for
    `idle_timeout` seconds is closed (``protocol.flow_closed``): a finite
    number of seconds, at least 0.1 (ValueError otherwise). With
    `max_flows`, at most that many flows are held at once (each holds up to
    two sockets: its upstream and its reply socket); a datagram that would
    start another is dropped, without a socket, and given to
    ``protocol.flow_dropped``. None (the default) sets no cap.
    `loop_mark` and `mark_mask` are ``sendmsg_redirect``'s.

    On a loop without ``add_reader`` (Windows' Proactor loop) a thread
    receives; later datagrams of a Linux TPROXY flow arrive on its reply
    socket, which the flow reads once it has answered.
    """
    idle_timeout = _checked_idle_timeout(idle_timeout)
    max_flows = _checked_max_flows(max_flows)
    loop = asyncio.get_running_loop()
    if sock is None:
        if local_addr is None:
            raise ValueError("create_redirect_datagram_endpoint: give local_addr or sock")
        infos = await loop.getaddrinfo(
            local_addr[0], local_addr[1], family=family, type=socket.SOCK_DGRAM
        )
        sock = socket.socket(infos[0][0], socket.SOCK_DGRAM)
        try:
            sock.bind(infos[0][4])
        except BaseException:
            sock.close()
            raise
    try:
        enable_datagram_records(sock)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    protocol = protocol_factory()
    endpoint = RedirectDatagramEndpoint(
        loop, sock, protocol, idle_timeout, loop_mark, mark_mask, max_flows
    )
    endpoint._start()
    return endpoint, protocol
