"""The ``streams`` relay path (``wfpredirect proxy --relay streams``):
asyncio streams (StreamReader/StreamWriter), a read, a write and a drain per
chunk. Every event loop has them (the Windows Proactor loop too), and
``auto`` picks it on Windows. What the paths share is _relay's."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

from .._addresses import Address
from .._records import RedirectInfo
from ..aio import open_upstream, redirect_stream_callback
from . import _relay as relay
from ._relay import (
    CHUNK_SIZE,
    Count,
    Handler,
    Listening,
    Serving,
    Ticket,
    accepting,
    connect_accepted,
    listening_addresses,
    reset_transports,
)


async def _copy(
    source: asyncio.StreamReader,
    destination: asyncio.StreamWriter,
    count: Callable[[int], None],
) -> None:
    """Copy one direction until end of stream, then pass the half-close on."""
    while data := await source.read(CHUNK_SIZE):
        destination.write(data)
        await destination.drain()  # back-pressure: wait while the peer is slow
        count(len(data))
    if destination.can_write_eof():
        destination.write_eof()


class StreamConnection:
    """The streams path: start_redirect_server's reader and writer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    def peername(self) -> Any:
        return self.writer.get_extra_info("peername")

    def sockets(self) -> list[Any]:
        writers = [self.writer] if self.upstream is None else [self.writer, self.upstream[1]]
        return [writer.get_extra_info("socket") for writer in writers]

    def abort(self) -> None:
        self.writer.transport.abort()
        if self.upstream is not None:
            self.upstream[1].transport.abort()

    def reset(self) -> None:
        writers = [self.writer] if self.upstream is None else [self.writer, self.upstream[1]]
        reset_transports(writer.transport for writer in writers)
        self.abort()

    async def open_upstream(
        self,
        redirect: RedirectInfo,
        *,
        loop_mark: int | None,
        mark_mask: int | None,
        source: Address | None = None,
    ) -> None:
        self.upstream = await open_upstream(
            redirect,
            loop_mark=loop_mark,
            mark_mask=mark_mask,
            local_addr=source,
            transparent=source is not None,
        )

    async def relay(self, count: Count) -> BaseException | None:
        assert self.upstream is not None
        upstream_reader, upstream_writer = self.upstream

        async def direction(
            name: str, source: asyncio.StreamReader, destination: asyncio.StreamWriter
        ) -> None:
            try:
                await _copy(source, destination, lambda size: count(name, size))
            except OSError:
                self.reset()  # the other direction ends too
                raise

        results = await asyncio.gather(
            direction("up", self.reader, upstream_writer),
            direction("down", upstream_reader, self.writer),
            return_exceptions=True,
        )
        # close(), not abort(): what is still buffered gets sent first.
        self.writer.close()
        upstream_writer.close()
        errors = [result for result in results if isinstance(result, BaseException)]
        return errors[0] if errors else None


class _StreamSide(asyncio.StreamReaderProtocol):
    """asyncio's stream protocol for a client the streams path accepted
    itself: its place under the cap is given back when it closes."""

    def __init__(self, callback: Any, ticket: Ticket) -> None:
        super().__init__(asyncio.StreamReader(limit=CHUNK_SIZE), callback)
        self.ticket = ticket

    def connection_lost(self, exc: Exception | None) -> None:
        self.ticket.release()
        super().connection_lost(exc)


async def serve_streams(
    handler: Handler,
    host: str,
    port: int,
    *,
    listener: socket.socket | None,
    reuse_port: bool,
    serving: Serving,
) -> Listening:
    """The streams path's server: start_redirect_server's callback (the
    judgement, then `handler` with a StreamConnection in a task of its
    own), on connections accepted by _Acceptor where the loop can watch a
    listener (add_reader: every loop but Windows' Proactor), else by
    asyncio's own server (no cap there)."""

    async def connected_streams(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, redirect: RedirectInfo
    ) -> None:
        await handler(StreamConnection(reader, writer), redirect)

    addresses: list[Address] = []
    loop = asyncio.get_running_loop()

    def callback_for(peer: Any) -> Any:
        return redirect_stream_callback(
            connected_streams,
            addresses,
            serving.loop_mark,
            on_loop=serving.on_loop,
            on_gone=serving.on_gone,
            peer=peer,
        )

    if not relay.own_acceptors():
        # reuse_address is left to asyncio: SO_REUSEADDR on POSIX, where it
        # only allows a restart while old connections linger in TIME_WAIT;
        # never on Windows, where it would let any other socket bind the
        # same port and take redirected connections.
        kw: dict[str, Any] = (
            {"sock": listener}
            if listener is not None
            else {"host": host, "port": port, "reuse_port": reuse_port or None}
        )
        server = await asyncio.start_server(
            callback_for(None), backlog=serving.backlog, start_serving=False, **kw
        )
        addresses += listening_addresses(server.sockets)
        await server.start_serving()
        return server

    def accepted(sock: socket.socket, peer: Any, ticket: Ticket) -> None:
        callback = callback_for(peer)
        connect_accepted(loop, sock, ticket, lambda: _StreamSide(callback, ticket))

    return accepting(host, port, listener, reuse_port, serving, addresses, accepted)
