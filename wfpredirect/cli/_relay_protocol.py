"""The ``protocol`` relay path (``wfpredirect proxy --relay protocol``):
asyncio Protocols, one per side, each writing what it receives into the
other side's transport; a transport whose buffer is full pauses the other
side's reading (pause_writing/resume_writing). No buffer copies in user
space beyond the transports', and one task per connection. What the paths
share is _relay's."""

from __future__ import annotations

import asyncio
import socket
from typing import Any, cast

from .._addresses import Address
from .._loops import Endpoint, forget_upstream
from .._records import RedirectInfo
from ..aio import judge_connection
from . import _relay as relay
from ._relay import (
    CHUNK_SIZE,
    CONNECTION_LOST,
    Count,
    Handler,
    Listening,
    Serving,
    Ticket,
    accepting,
    connect_accepted,
    connect_upstream,
    listening_addresses,
    reset_transports,
)


class _Side(asyncio.Protocol):
    """One socket of a ProtocolConnection (which sets `connection` and
    `peer`): what it receives goes to the other side, under `name` ("up":
    received from the client)."""

    connection: ProtocolConnection

    def __init__(self, name: str) -> None:
        self.name = name
        self.transport: asyncio.Transport | None = None
        self.peer: _Side = self
        self.ended = False  # its end of stream was received (and passed on)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports are not asyncio.Transport subclasses.)
        self.transport = cast("asyncio.Transport", transport)

    def data_received(self, data: bytes) -> None:
        self.connection.received(self, data)

    def eof_received(self) -> bool:
        self.connection.ended(self)
        return True  # keep the other direction open: a half-close

    def pause_writing(self) -> None:
        # Back-pressure: this side's buffer is full, stop reading the other.
        if not self.peer.ended and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if not self.peer.ended and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.connection.lost(self, exc)


class _ClientSide(_Side):
    """The accepted side: its redirect state decides whether the handler
    runs for it."""

    def __init__(
        self,
        handler: Handler,
        listening_addresses: list[Address],
        serving: Serving,
        ticket: Ticket,
        peer: Any = None,
    ) -> None:
        super().__init__("up")
        self.peer_address = peer
        ProtocolConnection(self)
        self.handler = handler
        self.listening_addresses = listening_addresses
        self.serving = serving
        self.ticket = ticket
        self.task: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        serving = self.serving
        redirect = judge_connection(
            transport.get_extra_info("socket"),
            self.peer_address or transport.get_extra_info("peername"),
            self.listening_addresses,
            serving.loop_mark,
            on_loop=serving.on_loop,
            on_gone=serving.on_gone,
        )
        if redirect is None:
            # Not from inside connection_made: uvloop leaves the socket open then.
            asyncio.get_running_loop().call_soon(cast("asyncio.Transport", transport).abort)
            return
        self.task = asyncio.ensure_future(self.handler(self.connection, redirect))

    def connection_lost(self, exc: Exception | None) -> None:
        self.ticket.release()
        super().connection_lost(exc)


class ProtocolConnection:
    """The protocol path: each side writes what it receives into the other's
    transport. What either side sends before relaying starts (the client
    while the upstream connects; an origin that speaks first, before relay()
    runs) waits here, that side's reading paused beyond CHUNK_SIZE; an end
    of stream received then is passed on when relaying starts."""

    def __init__(self, client: _ClientSide) -> None:
        self.client: _Side = client
        self.upstream = _Side("down")
        client.connection = self.upstream.connection = self
        client.peer, self.upstream.peer = self.upstream, client
        self.count: Count | None = None  # set once relaying
        self.early: list[tuple[_Side, bytes]] = []
        self.early_size = {self.client: 0, self.upstream: 0}
        self.finished: asyncio.Future[BaseException | None] | None = None
        self.problem: BaseException | None = None  # lost before relaying
        self.key: Endpoint | None = None
        self.aborted = False

    def peername(self) -> Any:
        assert self.client.transport is not None
        return self.client.transport.get_extra_info("peername")

    def sockets(self) -> list[Any]:
        return [
            side.transport.get_extra_info("socket")
            for side in (self.client, self.upstream)
            if side.transport is not None
        ]

    async def open_upstream(
        self,
        redirect: RedirectInfo,
        *,
        loop_mark: int | None,
        mark_mask: int | None,
        source: Address | None = None,
    ) -> None:
        sock, key = await connect_upstream(
            redirect, loop_mark=loop_mark, mark_mask=mark_mask, source=source
        )
        try:
            await asyncio.get_running_loop().create_connection(lambda: self.upstream, sock=sock)
        except BaseException:
            forget_upstream(key)
            sock.close()
            raise
        self.key = key

    async def relay(self, count: Count) -> BaseException | None:
        client, upstream = self.client.transport, self.upstream.transport
        assert client is not None and upstream is not None
        self.finished = asyncio.get_running_loop().create_future()
        if self.problem is not None:
            self.finished.set_result(self.problem)
        self.count = count
        # Reading resumes before the early data is written, so that a peer
        # whose buffer that data fills pauses this side's reading again.
        for side in (self.client, self.upstream):
            if self.early_size[side] > CHUNK_SIZE and not side.ended:
                assert side.transport is not None
                side.transport.resume_reading()
        early, self.early = self.early, []
        for side, data in early:
            transport = side.peer.transport
            assert transport is not None
            transport.write(data)
            count(side.name, len(data))
        for side in (self.client, self.upstream):
            if side.ended:
                side.ended = False  # passed on now
                self.ended(side)
        error = await self.finished
        if error is None:
            client.close()  # close(), not abort(): the buffers get sent first
            upstream.close()
        else:
            self.reset()
        return error

    def received(self, side: _Side, data: bytes) -> None:
        count = self.count
        if count is None:  # not relaying yet
            self.early.append((side, data))
            self.early_size[side] += len(data)
            if self.early_size[side] > CHUNK_SIZE and side.transport is not None:
                side.transport.pause_reading()
            return
        transport = side.peer.transport
        assert transport is not None
        if transport.is_closing():
            return  # the peer is gone (lost() has the outcome): nothing to pass on
        transport.write(data)
        count(side.name, len(data))

    def ended(self, side: _Side) -> None:
        if side.ended:
            return
        side.ended = True
        if self.count is None:
            return  # passed on when relaying starts
        transport = side.peer.transport
        assert transport is not None
        if not transport.is_closing() and transport.can_write_eof():
            transport.write_eof()
        if side.peer.ended and self.finished is not None and not self.finished.done():
            self.finished.set_result(None)

    def lost(self, side: _Side, exc: Exception | None) -> None:
        if side is self.upstream and self.key is not None:
            forget_upstream(self.key)
            self.key = None
        if self.aborted or (self.client.ended and self.upstream.ended):
            return
        error = exc if exc is not None else ConnectionResetError(CONNECTION_LOST)
        if self.finished is None:
            if self.problem is None:
                self.problem = error
        elif not self.finished.done():
            self.finished.set_result(error)

    def abort(self) -> None:
        self.aborted = True
        for side in (self.client, self.upstream):
            if side.transport is not None:
                side.transport.abort()

    def reset(self) -> None:
        reset_transports(
            side.transport for side in (self.client, self.upstream) if side.transport is not None
        )
        self.abort()


async def serve_protocol(
    handler: Handler,
    host: str,
    port: int,
    *,
    listener: socket.socket | None,
    reuse_port: bool,
    serving: Serving,
) -> Listening:
    """The protocol path's server on (host, port), or on bound socket
    `listener`; `handler` runs, in a task, for each connection whose
    redirect state could be read. Accepted by _Acceptor where the loop can
    watch a listener, else by asyncio's own server (no cap there)."""
    loop = asyncio.get_running_loop()
    addresses: list[Address] = []
    if not relay.own_acceptors():

        def client() -> _ClientSide:
            return _ClientSide(handler, addresses, serving, Ticket(None))

        if listener is not None:
            server = await loop.create_server(
                client, sock=listener, backlog=serving.backlog, start_serving=False
            )
        else:
            server = await loop.create_server(
                client,
                host,
                port,
                backlog=serving.backlog,
                reuse_port=reuse_port or None,
                start_serving=False,
            )
        # Not serving until the listening addresses are known (start_redirect_server's rule).
        addresses += listening_addresses(server.sockets)
        await server.start_serving()
        return server

    def accepted(sock: socket.socket, peer: Any, ticket: Ticket) -> None:
        connect_accepted(
            loop, sock, ticket, lambda: _ClientSide(handler, addresses, serving, ticket, peer)
        )

    return accepting(host, port, listener, reuse_port, serving, addresses, accepted)
