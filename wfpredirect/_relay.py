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
  splice is not possible (no pipe from the backend, or the kernel answers
  EINVAL) a plain recv/send copy through one buffer. Needs a loop with
  add_reader (the selector loops, uvloop).

Which paths this platform has, and which ``auto`` picks, is the backend's
``relay_paths``. Every path keeps the same behaviour: back-pressure (a slow
reader slows its writer), a half-close passed on (shutdown of one direction
reaches the other end while the other direction goes on), the exact byte
counts of the log line, and a reset passed on: a connection that breaks
(an error on either side) or is cut at shutdown is closed with RST on both
sides, never with the end of stream a finished one gets. The
proxy around them (timeouts, log lines, the graceful stop) is path-blind:
see ``Connection``.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, cast

from . import _upstream as upstream
from ._addresses import Address
from ._backend import SplicePipe, backend
from ._loops import Endpoint, forget_upstream, remember_upstream
from ._records import RedirectInfo
from .aio import judge_connection, open_upstream

#: Every relay path's name; ``auto`` is the backend's first (backend.relay_paths).
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

logger = logging.getLogger("wfpredirect.relay")

#: What a path counts as it delivers: ("up" or "down", bytes).
Count = Callable[[str, int], None]


class Connection(Protocol):
    """One accepted, redirected connection on some relay path; the proxy
    calls open_upstream once, then relay once, or abort at any time."""

    def peername(self) -> Any: ...
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
    """The path for ``--relay requested`` here ("auto": the backend's
    first); ValueError saying what this platform has otherwise."""
    paths = backend.relay_paths
    if requested == "auto":
        return paths[0]
    if requested not in paths:
        raise ValueError(
            f"--relay {requested} is not available here: this platform has "
            f"{', '.join(paths)} (auto: {paths[0]})"
        )
    return requested


def make_listeners(host: str, port: int, *, reuse_port: bool = False) -> list[socket.socket]:
    """The splice path's TCP sockets, bound to every address of `host` as
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
    address): accepting pauses for ACCEPT_PAUSE_SECONDS."""
    logger.error(
        "accept() on %s: %s; accepting again in %g s", listener, error, ACCEPT_PAUSE_SECONDS
    )


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
        self, handler: Handler, listening_addresses: list[Address], loop_mark: int
    ) -> None:
        super().__init__("up")
        ProtocolConnection(self)
        self.handler = handler
        self.listening_addresses = listening_addresses
        self.loop_mark = loop_mark
        self.task: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        redirect = judge_connection(
            transport.get_extra_info("socket"),
            transport.get_extra_info("peername"),
            self.listening_addresses,
            self.loop_mark,
        )
        if redirect is None:
            # Not from inside connection_made: uvloop leaves the socket open then.
            asyncio.get_running_loop().call_soon(cast("asyncio.Transport", transport).abort)
            return
        self.task = asyncio.ensure_future(self.handler(self.connection, redirect))


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
    backlog: int,
    reuse_port: bool,
    loop_mark: int,
) -> Listening:
    """The protocol path's server on (host, port), or on bound socket
    `listener`; `handler` runs, in a task, for each connection whose
    redirect state could be read."""
    loop = asyncio.get_running_loop()
    addresses: list[Address] = []

    def client() -> _ClientSide:
        return _ClientSide(handler, addresses, loop_mark)

    if listener is not None:
        server = await loop.create_server(
            client, sock=listener, backlog=backlog, start_serving=False
        )
    else:
        server = await loop.create_server(
            client, host, port, backlog=backlog, reuse_port=reuse_port or None, start_serving=False
        )
    # Not serving until the listening addresses are known (start_redirect_server's rule).
    addresses += _listening(server.sockets)
    await server.start_serving()
    return server


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
        return backend.open_splice_pipe()
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

    def __init__(self, sock: socket.socket, peer: Any) -> None:
        self.client = sock
        self.peer = peer
        self.upstream: socket.socket | None = None
        self.key: Endpoint | None = None
        self.pumps: tuple[_Pump, ...] = ()
        self.running = 0
        self.finished: asyncio.Future[BaseException | None] | None = None
        self.closed = False

    def peername(self) -> Any:
        return self.peer

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


class _Acceptor:
    """Accepts on one listening socket through loop.add_reader and starts
    `handler` in a task for each redirected connection."""

    def __init__(
        self,
        listener: socket.socket,
        handler: Handler,
        addresses: list[Address],
        *,
        backlog: int,
        loop_mark: int,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.listener = listener
        self.fd = listener.fileno()
        self.handler = handler
        self.addresses = addresses
        self.backlog = backlog
        self.loop_mark = loop_mark
        self.closed = False
        self.loop.add_reader(self.fd, self._ready)

    def _ready(self) -> None:
        for _ in range(self.backlog):  # as asyncio: at most a backlog per wakeup
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
                self.loop.remove_reader(self.fd)
                self.loop.call_later(ACCEPT_PAUSE_SECONDS, self._resume)
                return
            self._accepted(sock, peer)

    def _resume(self) -> None:
        if not self.closed:
            self.loop.add_reader(self.fd, self._ready)

    def _accepted(self, sock: socket.socket, peer: Any) -> None:
        try:
            sock.setblocking(False)
            # As asyncio's transports do: each write goes out at once.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            sock.close()  # already reset by its client
            return
        redirect = judge_connection(sock, peer, self.addresses, self.loop_mark)
        if redirect is None:
            sock.close()
            return
        self.loop.create_task(self.handler(SocketConnection(sock, peer), redirect))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.loop.remove_reader(self.fd)
            self.listener.close()


class _Acceptors:
    def __init__(self, acceptors: list[_Acceptor]) -> None:
        self.acceptors = acceptors
        self.sockets = [acceptor.listener for acceptor in acceptors]

    def close(self) -> None:
        for acceptor in self.acceptors:
            acceptor.close()

    async def wait_closed(self) -> None:
        return


async def serve_splice(
    handler: Handler,
    host: str,
    port: int,
    *,
    listener: socket.socket | None,
    backlog: int,
    reuse_port: bool,
    loop_mark: int,
) -> Listening:
    """Accept on (host, port), or on bound socket `listener`, on the splice
    path; `handler` runs, in a task, for each connection whose redirect
    state could be read."""
    listeners = (
        [listener] if listener is not None else make_listeners(host, port, reuse_port=reuse_port)
    )
    for sock in listeners:
        sock.listen(backlog)
        sock.setblocking(False)
    addresses = _listening(listeners)
    return _Acceptors(
        [
            _Acceptor(sock, handler, addresses, backlog=backlog, loop_mark=loop_mark)
            for sock in listeners
        ]
    )


SERVERS = {"protocol": serve_protocol, "splice": serve_splice}
