"""What the reference proxy's relay paths share: how the bytes of one
connection move between the client and its upstream (``wfpredirect proxy
--relay``) is one file per path (docs/design.md, "Relay paths"):

- ``protocol`` (_relay_protocol): asyncio Protocols, one per side;
- ``streams`` (_relay_streams): asyncio streams;
- ``native`` (Linux; _relay_native): the whole connection in the C++ core.

This module has the contract the proxy relies on (``Connection``,
``Listening``), the listeners, the acceptors under the connection cap, and
the upstream's connect. Which paths this platform has, and which ``auto``
picks, is the platform's ``relay_paths`` (_platform).

Every path keeps the same behaviour: back-pressure (a slow reader slows its
writer), a half-close passed on (shutdown of one direction
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
from typing import Any, Protocol

from .. import _upstream as upstream
from .._addresses import Address
from .._backend import backend
from .._errors import RedirectError
from .._loops import Endpoint, forget_upstream, remember_upstream
from .._records import RedirectInfo
from . import _proxy_log as log
from ._platform import this_platform

#: Every relay path's name; ``auto`` is the platform's first (this_platform.relay_paths).
#: ``native`` (Linux) is _relay_native's: the whole connection in the core.
RELAY_PATHS = ("protocol", "streams", "native")

#: Bytes read per step (streams), and what the protocol path holds before
#: relaying starts.
CHUNK_SIZE = 65536
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


def reset_transports(transports: Any) -> None:
    """SO_LINGER 0 on each asyncio transport's socket (gone: nothing)."""
    for transport in transports:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            backend.reset_on_close(sock)


def own_acceptors() -> bool:
    """Whether the paths accept through _Acceptor here: everywhere but on
    Windows, whose Proactor loop cannot watch a listener (and whose
    listeners are asyncio's, without SO_REUSEADDR: make_listeners)."""
    return sys.platform != "win32"


def connect_accepted(
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

    keep_task(loop.create_task(connect()))


# The tasks started for accepted connections, held until done (the loop
# keeps only a weak reference to a task).
_tasks: set[asyncio.Task[Any]] = set()


def keep_task(task: asyncio.Task[Any]) -> None:
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


def listening_addresses(listeners: Any) -> list[Address]:
    """The listeners' addresses, each also remembered for the loop guard."""
    addresses = []
    for sock in listeners:
        addresses.append(sock.getsockname())
        upstream.remember_listener(sock)
    return addresses


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
    #: Its accepted sockets have keepalive already (see accepting).
    keepalive = True

    def __init__(self, acceptors: list[_Acceptor]) -> None:
        self.acceptors = acceptors
        self.sockets = [acceptor.listener for acceptor in acceptors]

    def close(self) -> None:
        for acceptor in self.acceptors:
            acceptor.close()

    async def wait_closed(self) -> None:
        return


def accepting(
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
    addresses += listening_addresses(listeners)
    acceptors = [_Acceptor(sock, accepted, serving) for sock in listeners]
    serving.gate.acceptors += acceptors
    return _Acceptors(acceptors)
