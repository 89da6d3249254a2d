"""The reference proxy's relay paths: how the bytes of one connection move
between the client and its upstream (``wfpredirect proxy --relay``).

- ``streams``: asyncio streams (StreamReader/StreamWriter): a read, a write
  and a drain per chunk. Every event loop has them (the Windows Proactor
  loop too).
- ``protocol``: asyncio Protocols, one per side, each writing what it
  receives into the other side's transport; a transport whose buffer is full
  pauses the other side's reading (pause_writing/resume_writing). No buffer
  copies in user space beyond the transports', and one task per connection.
- ``splice``: the non-blocking sockets watched with loop.add_reader and
  add_writer, the bytes moved with os.splice through a pipe (raised to
  PIPE_SIZE where the system permits) without entering user space; where
  splice is not possible (no pipe from the platform, or the kernel answers
  EINVAL) a plain recv/send copy through one buffer. Needs a loop with
  add_reader (the selector loops, uvloop).

Which paths this platform has, and which ``auto`` picks, is the platform's (_platform)
``relay_paths``. Every path keeps the same behaviour: back-pressure (a slow
reader slows its writer), a half-close passed on (shutdown of one direction
reaches the other end while the other direction goes on), the exact byte
counts of the log line, and a reset passed on: a connection that breaks
(an error on either side) or is cut at shutdown is closed with RST on both
sides, never with the end of stream a finished one gets. The
proxy around them (timeouts, log lines, the graceful stop) is path-blind:
see ``Connection``.

Each path accepts through _Acceptor where the loop can watch a listening
socket (everywhere but Windows' Proactor loop): one accept() at a time,
each counted under the connection cap (Gate) before the next, so that at
the cap accepting stops exactly there (asyncio's own server accepts up to a
backlog of connections per wakeup before any of them reaches its protocol);
the streams path then makes asyncio's stream transport for each
(loop.connect_accepted_socket) and judges it with start_redirect_server's
own callback. Every connection's sockets get TCP keepalive
(KEEPALIVE_OPTIONS).
"""

from __future__ import annotations

import asyncio
import errno
import socket
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from .. import _upstream as upstream
from .._addresses import Address
from .._backend import backend
from .._errors import RedirectError
from .._loops import Endpoint, forget_upstream, remember_upstream
from .._records import RedirectInfo
from ..aio import judge_connection, open_upstream, redirect_stream_callback
from . import _proxy_log as log
from ._platform import SplicePipe, this_platform

#: Every relay path's name; ``auto`` is the platform's first (this_platform.relay_paths).
#: ``native`` (Linux) is _relay_native's: the whole connection in the core.
RELAY_PATHS = ("splice", "protocol", "streams", "native")

#: Bytes read per step (streams), and the plain copy's buffer.
CHUNK_SIZE = 65536
#: Errors of os.splice that mean "not with these descriptors" rather than a
#: broken connection: the direction goes on with a plain copy (splice(2)).
SPLICE_NOT_POSSIBLE = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP})
#: accept(2) errors that say the system is out of a resource: asyncio's selector
#: loop stops accepting for a second on them, and so do we.
ACCEPT_RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
ACCEPT_PAUSE_SECONDS = 1.0
#: connect_ex answers of a non-blocking connect under way (Winsock says
#: WSAEWOULDBLOCK, which Python's errno has on Windows only).
CONNECTING = frozenset(
    {errno.EINPROGRESS, errno.EAGAIN, errno.EINTR, getattr(errno, "WSAEWOULDBLOCK", errno.EAGAIN)}
)
#: The connection lost without an error of its own: asyncio streams' words.
CONNECTION_LOST = "Connection lost"
#: TCP keepalive on both sockets of every connection, so that a peer that
#: vanished without a FIN or a reset (a host switched off, a NAT that
#: forgot the flow) is found and its connection reaped: the first probe
#: after 60 s without a segment, then one every 10 s, and after 6 unanswered
#: the kernel ends the connection (about 2 minutes in all). Each option is
#: set where the platform has it.
KEEPALIVE_OPTIONS = tuple(
    (getattr(socket, name), value)
    for name, value in (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 6))
    if hasattr(socket, name)
)

#: What a path counts as it delivers: ("up" or "down", bytes).
Count = Callable[[str, int], None]


class Connection(Protocol):
    """One accepted, redirected connection on some relay path; the proxy
    calls open_upstream once, then relay once, or abort at any time."""

    def peername(self) -> Any: ...
    def sockets(self) -> list[Any]:
        """The connection's open sockets: the client's, then the upstream's
        once open (for socket options)."""
        ...

    def abort(self) -> None: ...
    def reset(self) -> None:
        """abort(), each socket closed with a reset (RST) rather than an end
        of stream, so that its peer learns the connection broke or was cut
        instead of taking what it got for the whole."""
        ...

    async def open_upstream(
        self,
        redirect: RedirectInfo,
        *,
        loop_mark: int | None,
        mark_mask: int | None,
        source: Address | None = None,
    ) -> None:
        """Connect the upstream; bound to `source` with IP_TRANSPARENT when
        given (``--keep-client-address``)."""
        ...

    async def relay(self, count: Count) -> BaseException | None:
        """Both directions until each has ended (its end of stream passed
        on), then both closed: None; or the first error, with both reset.
        Cancelled: the caller resets."""
        ...


Handler = Callable[[Connection, RedirectInfo], Coroutine[Any, Any, None]]


class Listening(Protocol):
    """What the proxy needs of a server: asyncio.Server has it."""

    @property
    def sockets(self) -> Any: ...
    def close(self) -> None: ...
    async def wait_closed(self) -> None: ...


def choose_relay_path(requested: str) -> str:
    """The path for ``--relay requested`` here ("auto": the platform's
    first); ValueError saying what this platform has otherwise."""
    paths = this_platform.relay_paths
    if requested == "auto":
        return paths[0]
    if requested not in paths:
        raise ValueError(
            f"--relay {requested} is not available here: this platform has "
            f"{', '.join(paths)} (auto: {paths[0]})"
        )
    return requested


def make_listeners(host: str, port: int, *, reuse_port: bool = False) -> list[socket.socket]:
    """The TCP sockets of the paths' acceptors, bound to every address of `host` as
    asyncio.create_server binds them on POSIX (SO_REUSEADDR, which there only
    allows a restart while old connections linger in TIME_WAIT; IPv6 sockets
    IPv6-only); with `reuse_port`, SO_REUSEPORT before the bind
    (``--workers``). (The paths Windows has leave the listeners to asyncio,
    which sets no SO_REUSEADDR there.)"""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    listeners: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(
            (info[0], info[1], info[2], info[3], info[4]) for info in infos
        ):
            sock = socket.socket(family, kind, proto)
            listeners.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # type: ignore[attr-defined,unused-ignore]
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as error:
                # asyncio.create_server's words, so every path says it alike.
                raise OSError(
                    error.errno,
                    f"error while attempting to bind on address {address!r}: "
                    f"{(error.strerror or '').lower()}",
                ) from None
    except BaseException:
        for sock in listeners:
            sock.close()
        raise
    return listeners


async def connect_upstream(
    redirect: RedirectInfo,
    *,
    loop_mark: int | None,
    mark_mask: int | None,
    source: Address | None = None,
) -> tuple[socket.socket, Endpoint]:
    """open_upstream's socket without streams: connected, non-blocking,
    carrying the records, remembered for the loop check (forget_upstream of
    the key when it closes; see _connect). The errors are open_upstream's."""
    loop = asyncio.get_running_loop()
    attempts = upstream.Attempts(
        "open_upstream",
        redirect.original_destination,
        None,
        None,
        lambda: redirect.records,
        loop_mark=loop_mark,
        mark_mask=mark_mask,
        timeout=0.0,
        local_address=source,
        transparent=source is not None,
    )
    for sock, target in attempts:
        key: Endpoint | None = None
        with attempts.connecting(sock) as attempt:
            key = await _connect(loop, sock, target)
        if attempt.connected:
            assert key is not None
            return sock, key
    raise attempts.error()


def connect_failed(code: int, target: Any) -> OSError:
    """An upstream connect's failure (errno `code`) in the words of asyncio's
    own sock_connect, so that every path's line reads the same."""
    return OSError(code, f"Connect call failed {target}")


def say_accept_paused(listener: Any, error: OSError) -> None:
    """The line for accept() out of a resource on `listener` (its
    address): accepting pauses for ACCEPT_PAUSE_SECONDS. At most one a
    second (log.THROTTLE): under a flood of clients it would come thousands
    of times a second."""
    host, port = listener[0], listener[1]
    log.THROTTLE.say(
        log.ACCEPT_PAUSED,
        listener=f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        error=error,
    )


def keep_alive(sock: Any) -> None:
    """TCP keepalive on `sock` (KEEPALIVE_OPTIONS); a socket already gone
    (reset) keeps what it had."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for option, value in KEEPALIVE_OPTIONS:
            sock.setsockopt(socket.IPPROTO_TCP, option, value)
    except OSError:
        pass


class Ticket:
    """One accepted connection's place under the connection cap (Gate),
    given back once, when its client socket closes."""

    __slots__ = ("gate",)

    def __init__(self, gate: Gate | None) -> None:
        self.gate = gate

    def release(self) -> None:
        gate, self.gate = self.gate, None
        if gate is not None:
            gate.leave()


class Gate:
    """The connection cap (``--max-connections``; None: no cap): the
    connections accepted and not yet closed are counted, and when they reach
    `limit` every acceptor stops accepting (the listeners are not read: new
    clients wait in the kernel's backlog, not half-served) until one ends.
    The line that says so goes through log.THROTTLE."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.held = 0
        self.acceptors: list[_Acceptor] = []

    @property
    def full(self) -> bool:
        return self.limit is not None and self.held >= self.limit

    def enter(self) -> Ticket:
        if self.limit is None:
            return Ticket(None)
        self.held += 1
        if self.held == self.limit:
            for acceptor in self.acceptors:
                acceptor.update()
            log.THROTTLE.say(log.CONNECTION_CAP, limit=self.limit)
        return Ticket(self)

    def leave(self) -> None:
        self.held -= 1
        if self.limit is not None and self.held == self.limit - 1:
            for acceptor in self.acceptors:
                acceptor.update()


@dataclass
class Serving:
    """What every acceptor of a proxy shares: the connection cap, the listen
    backlog, the loop mark, and what judge_connection reports to the proxy
    (the proxy's own upstream refused; a client gone before its query)."""

    gate: Gate = field(default_factory=lambda: Gate(None))
    backlog: int = 100
    loop_mark: int = 0
    on_loop: Callable[[Any], None] | None = None
    on_gone: Callable[[Any, RedirectError], None] | None = None


async def _connect(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, target: Address
) -> Endpoint:
    """Connect non-blocking `sock` by waiting for it to become writable
    (loop.sock_connect on uvloop resolves the address in libuv's thread pool
    first); a loop without add_writer (Proactor) uses its sock_connect. The
    upstream is remembered for the loop check (the key) as soon as connect()
    has bound it: a redirect that sends it back hands it to this process's
    listener before it is connected."""
    fd = sock.fileno()
    connected = loop.create_future()

    def writable() -> None:
        if not connected.done():
            connected.set_result(None)

    try:
        loop.add_writer(fd, writable)
    except NotImplementedError:
        await loop.sock_connect(sock, target)
        return remember_upstream(sock)
    key = None
    try:
        code = sock.connect_ex(target)
        if code == 0 or code in CONNECTING:
            key = remember_upstream(sock)
        if code in CONNECTING:
            await connected
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            raise connect_failed(code, target)
    except BaseException:
        if key is not None:
            forget_upstream(key)
        raise
    finally:
        loop.remove_writer(fd)
    assert key is not None
    return key


def _reset_on_close(transports: Any) -> None:
    """SO_LINGER 0 on each asyncio transport's socket (gone: nothing)."""
    for transport in transports:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            backend.reset_on_close(sock)


# -- streams ----------------------------------------------------------------


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
        _reset_on_close(writer.transport for writer in writers)
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

    if not _own_acceptors():
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
        addresses += _listening(server.sockets)
        await server.start_serving()
        return server

    def accepted(sock: socket.socket, peer: Any, ticket: Ticket) -> None:
        callback = callback_for(peer)
        _connect_accepted(loop, sock, ticket, lambda: _StreamSide(callback, ticket))

    return _accepting(host, port, listener, reuse_port, serving, addresses, accepted)


def _own_acceptors() -> bool:
    """Whether the paths accept through _Acceptor here: everywhere but on
    Windows, whose Proactor loop cannot watch a listener (and whose
    listeners are asyncio's, without SO_REUSEADDR: make_listeners)."""
    return sys.platform != "win32"


def _connect_accepted(
    loop: asyncio.AbstractEventLoop,
    sock: socket.socket,
    ticket: Ticket,
    protocol: Callable[[], asyncio.BaseProtocol],
) -> None:
    """A transport for accepted `sock` (loop.connect_accepted_socket, in a
    task as asyncio's own server does it); a socket the loop cannot take
    (reset meanwhile) is closed and its place given back."""

    async def connect() -> None:
        try:
            await loop.connect_accepted_socket(protocol, sock)
        except Exception:  # noqa: BLE001 - a socket gone before its transport: closed
            ticket.release()
            sock.close()

    _keep(loop.create_task(connect()))


# The tasks started for accepted connections, held until done (the loop
# keeps only a weak reference to a task).
_tasks: set[asyncio.Task[Any]] = set()


def _keep(task: asyncio.Task[Any]) -> None:
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


# -- protocol ---------------------------------------------------------------


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
        _reset_on_close(
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
    if not _own_acceptors():

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
        addresses += _listening(server.sockets)
        await server.start_serving()
        return server

    def accepted(sock: socket.socket, peer: Any, ticket: Ticket) -> None:
        _connect_accepted(
            loop, sock, ticket, lambda: _ClientSide(handler, addresses, serving, ticket, peer)
        )

    return _accepting(host, port, listener, reuse_port, serving, addresses, accepted)


def _listening(listeners: Any) -> list[Address]:
    """The listeners' addresses, each also remembered for the loop guard."""
    addresses = []
    for sock in listeners:
        addresses.append(sock.getsockname())
        upstream.remember_listener(sock)
    return addresses


# -- splice -----------------------------------------------------------------

# Pipes of finished connections, empty, for the next ones: creating and
# sizing two pipes costs four system calls per connection.
_spare_pipes: list[SplicePipe] = []
SPARE_PIPES = 64


def _take_pipe() -> SplicePipe | None:
    """A spare pipe, or a new one; None (the plain copy) when none can be
    made (EMFILE, ENFILE)."""
    if _spare_pipes:
        return _spare_pipes.pop()
    try:
        return this_platform.open_splice_pipe()
    except OSError:
        return None


def _give_back(pipe: SplicePipe, empty: bool) -> None:
    if empty and len(_spare_pipes) < SPARE_PIPES:
        _spare_pipes.append(pipe)
    else:
        pipe.close()


class _Pump:
    """One direction of a SocketConnection: from `source` to `destination`
    through a pipe (os.splice) or, where splice is not possible, a buffer.
    It reads while its pipe has room and writes while the pipe holds data,
    each only while the socket is ready (add_reader/add_writer), so a slow
    destination stops the reading: back-pressure. At the source's end of
    stream, once everything is out, it shuts the destination's writing down
    (the half-close) and reports `finished(None)`; an error, `finished(error)`."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        source: socket.socket,
        destination: socket.socket,
        name: str,
        count: Count,
        finished: Callable[[BaseException | None], None],
    ) -> None:
        self.loop = loop
        self.source = source
        self.destination = destination
        self.source_fd = source.fileno()
        self.destination_fd = destination.fileno()
        self.name = name
        self.count = count
        self.finished = finished
        self.pipe = _take_pipe()
        self.buffer: memoryview | None = None
        if self.pipe is None:
            self.buffer = memoryview(bytearray(CHUNK_SIZE))
        self.pending = 0  # bytes read and not yet written
        self.offset = 0  # where they start in the buffer
        self.reading = False
        self.writing = False
        self.eof = False

    def start(self) -> None:
        self._read_on()

    def stop(self) -> None:
        """No more callbacks; the pipe goes back (empty) or is closed."""
        self._read_off()
        self._write_off()
        if self.pipe is not None:
            _give_back(self.pipe, self.pending == 0)
            self.pipe = None

    def _read_on(self) -> None:
        if not self.reading:
            self.reading = True
            self.loop.add_reader(self.source_fd, self._readable)

    def _read_off(self) -> None:
        if self.reading:
            self.reading = False
            self.loop.remove_reader(self.source_fd)

    def _write_on(self) -> None:
        if not self.writing:
            self.writing = True
            self.loop.add_writer(self.destination_fd, self._writable)

    def _write_off(self) -> None:
        if self.writing:
            self.writing = False
            self.loop.remove_writer(self.destination_fd)

    def _readable(self) -> None:
        pipe = self.pipe
        try:
            if pipe is not None:
                size = pipe.fill(self.source_fd, pipe.capacity - self.pending)
            else:
                assert self.buffer is not None
                size = self.source.recv_into(self.buffer)
        except (BlockingIOError, InterruptedError):
            if self.pending:
                self._read_off()  # the pipe is full: read again once it drains
            return
        except OSError as error:
            if pipe is not None and error.errno in SPLICE_NOT_POSSIBLE and not self.pending:
                _give_back(pipe, True)
                self.pipe = None
                self.buffer = memoryview(bytearray(CHUNK_SIZE))
                return  # still readable: the copy reads it next
            self._fail(error)
            return
        if not size:
            self.eof = True
            self._read_off()
            if not self.pending:
                self._end()
            return
        self.pending += size
        if not self.writing:
            self._writable()
        if self.pending and (self.pipe is None or self.pending >= self.pipe.capacity):
            self._read_off()

    def _writable(self) -> None:
        pipe = self.pipe
        try:
            if pipe is not None:
                size = pipe.drain(self.destination_fd, self.pending)
            else:
                assert self.buffer is not None
                size = self.destination.send(self.buffer[self.offset : self.offset + self.pending])
        except (BlockingIOError, InterruptedError):
            size = 0
        except OSError as error:
            self._fail(error)
            return
        if size:
            self.pending -= size
            self.offset += size
            self.count(self.name, size)
        if self.pending:
            self._write_on()
            return
        self.offset = 0
        self._write_off()
        if self.eof:
            self._end()
        else:
            self._read_on()

    def _end(self) -> None:
        try:
            self.destination.shutdown(socket.SHUT_WR)
        except OSError as error:
            self._fail(error)
            return
        self.finished(None)

    def _fail(self, error: OSError) -> None:
        self._read_off()
        self._write_off()
        self.finished(error)


class SocketConnection:
    """The splice path: the accepted socket and its upstream, non-blocking,
    one _Pump each way."""

    def __init__(self, sock: socket.socket, peer: Any, ticket: Ticket | None = None) -> None:
        self.client = sock
        self.peer = peer
        self.ticket = ticket
        self.upstream: socket.socket | None = None
        self.key: Endpoint | None = None
        self.pumps: tuple[_Pump, ...] = ()
        self.running = 0
        self.finished: asyncio.Future[BaseException | None] | None = None
        self.closed = False

    def peername(self) -> Any:
        return self.peer

    def sockets(self) -> list[Any]:
        return [self.client] if self.upstream is None else [self.client, self.upstream]

    async def open_upstream(
        self,
        redirect: RedirectInfo,
        *,
        loop_mark: int | None,
        mark_mask: int | None,
        source: Address | None = None,
    ) -> None:
        self.upstream, self.key = await connect_upstream(
            redirect, loop_mark=loop_mark, mark_mask=mark_mask, source=source
        )
        self.upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def relay(self, count: Count) -> BaseException | None:
        assert self.upstream is not None
        loop = asyncio.get_running_loop()
        self.finished = loop.create_future()
        self.pumps = (
            _Pump(loop, self.client, self.upstream, "up", count, self._pump_finished),
            _Pump(loop, self.upstream, self.client, "down", count, self._pump_finished),
        )
        self.running = len(self.pumps)
        for pump in self.pumps:
            pump.start()
        error = await self.finished
        self.abort()  # both ends are out (or broken): the sockets close
        return error

    def _pump_finished(self, error: BaseException | None) -> None:
        assert self.finished is not None
        if self.finished.done():
            return
        if error is not None:
            self.reset()  # the other direction ends too
            self.finished.set_result(error)
            return
        self.running -= 1
        if not self.running:
            self.finished.set_result(None)

    def reset(self) -> None:
        if not self.closed:
            backend.reset_on_close(self.client)
            if self.upstream is not None:
                backend.reset_on_close(self.upstream)
        self.abort()

    def abort(self) -> None:
        if self.closed:
            return
        self.closed = True
        for pump in self.pumps:
            pump.stop()
        self.client.close()
        if self.upstream is not None:
            self.upstream.close()
        if self.key is not None:
            forget_upstream(self.key)
            self.key = None
        if self.ticket is not None:
            self.ticket.release()


#: What an acceptor does with each connection it accepted (its socket,
#: non-blocking, its peer, and its place under the cap).
Accepted = Callable[[socket.socket, Any, Ticket], None]


class _Acceptor:
    """Accepts on one listening socket through loop.add_reader and hands
    each connection to `accepted`. It stops reading the listener while the
    connection cap is reached (serving.gate) and, for a second, after
    accept() ran out of a resource (ACCEPT_RESOURCE_ERRORS)."""

    def __init__(self, listener: socket.socket, accepted: Accepted, serving: Serving) -> None:
        self.loop = asyncio.get_running_loop()
        self.listener = listener
        self.fd = listener.fileno()
        self.accepted = accepted
        self.serving = serving
        self.gate = serving.gate
        self.closed = False
        self.resting = False  # for a second, after a resource error
        self.reading = False
        self.update()

    def update(self) -> None:
        """Read the listener or not, as the state says."""
        wanted = not (self.closed or self.resting or self.gate.full)
        if wanted and not self.reading:
            self.loop.add_reader(self.fd, self._ready)
        elif not wanted and self.reading:
            self.loop.remove_reader(self.fd)
        self.reading = wanted

    def _ready(self) -> None:
        gate = self.gate
        for _ in range(self.serving.backlog):  # as asyncio: at most a backlog per wakeup
            if not self.reading:
                return  # the cap reached meanwhile
            try:
                sock, peer = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue  # gone before it was accepted: the next one
            except OSError as error:
                if error.errno not in ACCEPT_RESOURCE_ERRORS:
                    raise
                say_accept_paused(self.listener.getsockname(), error)
                self.resting = True
                self.update()
                self.loop.call_later(ACCEPT_PAUSE_SECONDS, self._resume)
                return
            try:
                sock.setblocking(False)
            except OSError:
                sock.close()  # already reset by its client
                continue
            self.accepted(sock, peer, gate.enter())

    def _resume(self) -> None:
        self.resting = False
        self.update()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.update()
            self.listener.close()
            if self in self.gate.acceptors:
                self.gate.acceptors.remove(self)


class _Acceptors:
    #: Its accepted sockets have keepalive already (see _accepting).
    keepalive = True

    def __init__(self, acceptors: list[_Acceptor]) -> None:
        self.acceptors = acceptors
        self.sockets = [acceptor.listener for acceptor in acceptors]

    def close(self) -> None:
        for acceptor in self.acceptors:
            acceptor.close()

    async def wait_closed(self) -> None:
        return


def _accepting(
    host: str,
    port: int,
    listener: socket.socket | None,
    reuse_port: bool,
    serving: Serving,
    addresses: list[Address],
    accepted: Accepted,
) -> Listening:
    """An _Acceptor on each listener of (host, port) (make_listeners), or on
    bound socket `listener`; their addresses go to `addresses`."""
    listeners = (
        [listener] if listener is not None else make_listeners(host, port, reuse_port=reuse_port)
    )
    for sock in listeners:
        sock.listen(serving.backlog)
        sock.setblocking(False)
        # Linux gives an accepted socket its listener's keepalive options:
        # four system calls less per connection (the proxy sets the
        # upstream's).
        keep_alive(sock)
    addresses += _listening(listeners)
    acceptors = [_Acceptor(sock, accepted, serving) for sock in listeners]
    serving.gate.acceptors += acceptors
    return _Acceptors(acceptors)


async def serve_splice(
    handler: Handler,
    host: str,
    port: int,
    *,
    listener: socket.socket | None,
    reuse_port: bool,
    serving: Serving,
) -> Listening:
    """Accept on (host, port), or on bound socket `listener`, on the splice
    path; `handler` runs, in a task, for each connection whose redirect
    state could be read."""
    loop = asyncio.get_running_loop()
    addresses: list[Address] = []

    def accepted(sock: socket.socket, peer: Any, ticket: Ticket) -> None:
        try:
            # As asyncio's transports do: each write goes out at once.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            ticket.release()
            sock.close()  # already reset by its client
            return
        redirect = judge_connection(
            sock,
            peer,
            addresses,
            serving.loop_mark,
            on_loop=serving.on_loop,
            on_gone=serving.on_gone,
        )
        if redirect is None:
            ticket.release()
            sock.close()
            return
        _keep(loop.create_task(handler(SocketConnection(sock, peer, ticket), redirect)))

    return _accepting(host, port, listener, reuse_port, serving, addresses, accepted)


SERVERS = {"protocol": serve_protocol, "splice": serve_splice, "streams": serve_streams}
