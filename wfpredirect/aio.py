"""asyncio integration: a server whose connection callback receives each
connection's redirect state, the upstream connection that carries it, and a
datagram endpoint that does the same for UDP flows.

Works on the selector loops (Linux), the Proactor loop (Windows) and uvloop:
the redirect state is read from the transport's socket inside the
connection callback, the one point every loop shares.
"""

from __future__ import annotations

import asyncio
import errno
import inspect
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from . import _upstream as upstream
from ._addresses import Address
from ._aio_datagrams import (
    DatagramFlow,
    RedirectDatagramEndpoint,
    RedirectDatagramProtocol,
    create_redirect_datagram_endpoint,
)
from ._errors import RedirectError
from ._info import query_redirect_info
from ._loops import (
    Endpoint,
    RedirectLoopError,
    forget_upstream,
    missing_exemption,
    remember_upstream,
)
from ._marks import LOOP_MARK
from ._records import RedirectInfo

__all__ = [
    "ClientConnectedCallback",
    "DatagramFlow",
    "RedirectDatagramEndpoint",
    "RedirectDatagramProtocol",
    "RedirectInfo",
    "create_redirect_datagram_endpoint",
    "open_upstream",
    "start_redirect_server",
]

#: Where start_redirect_server reports a connection it refused or closed:
#: the proxy's own upstream coming back, or one whose redirect state could
#: not be read.
logger = logging.getLogger("wfpredirect.aio")

ClientConnectedCallback = Callable[
    [asyncio.StreamReader, asyncio.StreamWriter, RedirectInfo], Awaitable[None] | None
]


async def start_redirect_server(
    client_connected_cb: ClientConnectedCallback,
    host: str | list[str] | None = None,
    port: int | None = None,
    **kw: Any,
) -> asyncio.Server:
    """Like ``asyncio.start_server``; the callback (a function or a
    coroutine function) receives ``(reader, writer, redirect)``, where
    `redirect` is the connection's :class:`RedirectInfo`.

    A connection that is this process's own upstream connection coming
    back (the redirect lets it loop: see RedirectLoopError) is refused at
    once and logged on the ``wfpredirect.aio`` logger with the rule the
    redirect lacks for `loop_mark` (a keyword: default LOOP_MARK); the
    callback does not see it.

    A connection whose redirect state cannot be read (a query answering an
    error outside the documented ones) is closed and logged, with the error
    and its code, on the ``wfpredirect.aio`` logger; the callback does not see
    it. One whose client went away before the query (ENOTCONN, ECONNRESET)
    is closed too, and logged there at DEBUG only.

    A connection addressed to one of the server's own listening addresses
    (every connection on a TPROXY listener looks redirected) gets a
    RedirectInfo with every field None, like one that was not redirected.
    The other keywords (``backlog``, ``sock``, ``reuse_address``,
    ``start_serving``...) are ``asyncio.start_server``'s.
    """
    start_serving = kw.pop("start_serving", True)
    loop_mark = kw.pop("loop_mark", None)
    loop_mark = LOOP_MARK if loop_mark is None else loop_mark
    listening_addresses: list[Address] = []
    connected = redirect_stream_callback(client_connected_cb, listening_addresses, loop_mark)

    # Not serving until the listening addresses are known, so that no
    # connection is judged without them.
    server = await asyncio.start_server(connected, host, port, start_serving=False, **kw)
    for sock in server.sockets:
        listening_addresses.append(sock.getsockname())
        upstream.remember_listener(sock)
    if start_serving:
        await server.start_serving()
    return server


def redirect_stream_callback(
    client_connected_cb: ClientConnectedCallback,
    listening_addresses: list[Address],
    loop_mark: int,
    *,
    on_loop: Callable[[Any], None] | None = None,
    on_gone: Callable[[Any, RedirectError], None] | None = None,
    peer: Any = None,
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    """start_redirect_server's callback for asyncio's streams: each
    connection judged (judge_connection, with `on_loop` and `on_gone`), then
    handed to `client_connected_cb` with its RedirectInfo. The proxy's
    streams path gives it to each connection it accepts itself, with the
    `peer` accept() gave (a client reset before its transport was made has
    no peer name on it)."""

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The query runs here, on the transport's socket: the one point every
        # loop shares. (On the Proactor loop this is after AcceptEx and the
        # loop's SO_UPDATE_ACCEPT_CONTEXT; whether the query needs that
        # update is not known: ebpf-for-windows' tests query an AcceptEx
        # socket without it.)
        redirect = judge_connection(
            writer.get_extra_info("socket"),
            peer or writer.get_extra_info("peername"),
            listening_addresses,
            loop_mark,
            on_loop=on_loop,
            on_gone=on_gone,
        )
        if redirect is None:
            writer.transport.abort()
            return
        outcome = client_connected_cb(reader, writer, redirect)
        if not inspect.isawaitable(outcome):
            return
        # The callback runs in a task of its own, so that cancelling it (a
        # server cutting its connections at shutdown) ends it alone: on
        # Python 3.11 and 3.12 asyncio's done-callback on the task that runs
        # `connected` asks a cancelled task for its exception and prints a
        # CancelledError traceback.
        handler = asyncio.ensure_future(outcome)
        try:
            await asyncio.wait({handler})
        except asyncio.CancelledError:
            # This task itself cancelled (asyncio.run ending while it had
            # not yet seen its handler finish): the handler goes, and this
            # task ends rather than raise, for the same done-callback.
            handler.cancel()
            return
        if not handler.cancelled():
            handler.result()  # an error is asyncio's to report, as before

    return connected


#: The errors of a redirect state query on a connection its client has
#: already ended (a reset before the query): the client went away, nothing
#: is wrong (Winsock's codes are errno values on Windows).
GONE_ERRORS = frozenset(
    code
    for code in (
        errno.ENOTCONN,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.EPIPE,
        getattr(errno, "WSAENOTCONN", None),
        getattr(errno, "WSAECONNRESET", None),
        getattr(errno, "WSAECONNABORTED", None),
    )
    if code is not None
)


def judge_connection(
    sock: Any,
    peer: Any,
    listening_addresses: list[Address],
    loop_mark: int,
    *,
    on_loop: Callable[[Any], None] | None = None,
    on_gone: Callable[[Any, RedirectError], None] | None = None,
) -> RedirectInfo | None:
    """The redirect state of accepted connection `sock` (from address
    `peer`), or None when it must be closed at once: the proxy's own
    upstream coming back, a client gone before its state could be read, or
    a state that could not be read (each logged on the ``wfpredirect.aio``
    logger, as start_redirect_server documents). `on_loop(peer)` is called
    after the loop's line; `on_gone(peer, error)` instead of the gone
    client's (DEBUG) line."""
    try:
        return query_redirect_info(sock, listening_addresses)
    except RedirectLoopError:
        # The proxy's own upstream came back: refuse it at once, so the
        # loop ends here instead of opening upstream after upstream.
        say_loop_refused(peer, loop_mark)
        if on_loop is not None:
            on_loop(peer)
    except RedirectError as error:
        if error.errno in GONE_ERRORS:
            # Reset by its client before the query (a port scan, a client
            # that gave up): an everyday event, not the proxy's problem.
            if on_gone is not None:
                on_gone(peer, error)
            else:
                say_gone(peer, error)
            return None
        # An answer outside the documented ones (a layered provider, a
        # driver's own code): neither redirected nor not, so the
        # connection cannot be handled by either rule. Say so, with the
        # code, and close it; the server goes on.
        say_unreadable(peer, error)
    return None


def say_loop_refused(peer: Any, loop_mark: int) -> None:
    """judge_connection's line for the proxy's own upstream coming back
    from `peer` (the native relay says it too)."""
    logger.error(
        "refused %s: the proxy's own upstream connection came back: %s",
        _peer(peer),
        missing_exemption(loop_mark),
    )


def say_unreadable(peer: Any, error: object) -> None:
    """judge_connection's line for a connection from `peer` whose redirect
    state could not be read (the native relay says it too)."""
    logger.error(
        "closed the connection from %s: its redirect state could not be read: %s",
        _peer(peer),
        error,
    )


def say_gone(peer: Any, error: object) -> None:
    """judge_connection's (DEBUG) line for a client from `peer` that went
    away before its redirect state was read."""
    logger.debug(
        "closed the connection from %s: it went away before its redirect state was read: %s",
        _peer(peer),
        error,
    )


class _UpstreamProtocol(asyncio.StreamReaderProtocol):
    """asyncio's stream protocol that forgets its upstream (loop detection)
    when the connection ends, on every event loop."""

    def __init__(self, reader: asyncio.StreamReader, key: Endpoint) -> None:
        super().__init__(reader)
        self._upstream_key: Endpoint | None = key

    def connection_lost(self, exc: Exception | None) -> None:
        key, self._upstream_key = self._upstream_key, None
        if key is not None:
            forget_upstream(key)
        super().connection_lost(exc)


async def _open_stream(
    sock: socket.socket, key: Endpoint, limit: int = 2**16, **kw: Any
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """asyncio.open_connection(sock=sock) with _UpstreamProtocol."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    protocol = _UpstreamProtocol(reader, key)
    transport, _ = await loop.create_connection(lambda: protocol, sock=sock, **kw)
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)


def _peer(peer: Any) -> str:
    return "an unknown peer" if peer is None else f"{peer[0]} port {peer[1]}"


async def open_upstream(
    redirect: RedirectInfo,
    *,
    address: Address | None = None,
    local_addr: Address | None = None,
    transparent: bool = False,
    loop_mark: int | None = None,
    mark_mask: int | None = None,
    **kw: Any,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open the proxy's upstream connection for a redirected connection:
    ``(reader, writer)`` like ``asyncio.open_connection``.

    The new socket gets ``redirect.records`` (when there are any) BEFORE it
    binds or connects, so the redirect lets it pass instead of sending it
    back into the proxy. It connects to `address`, or to the original
    destination (NotRedirectedError when there is neither). `local_addr` is
    bound before connecting; with `transparent` (Linux) the socket gets
    IP_TRANSPARENT first, so that `local_addr` may be an address this host
    does not have, such as the client's, ``(host, 0)``: the origin then sees
    the client's address (RedirectPermissionError without CAP_NET_ADMIN or
    CAP_NET_RAW; the replies must be routed to this host: docs, "Keeping
    the client's address"). `loop_mark` and `mark_mask` are
    ``set_redirect_records``'s. It refuses to connect to a listening address
    of this process's redirect servers (errno ELOOP), as
    ``RedirectSocket.create_upstream`` does; the other keywords (``limit``, ``ssl``,
    ``server_hostname``...) go to ``asyncio.open_connection``. Cancel it, or
    wrap it in ``asyncio.wait_for``, to bound the connect time.
    """
    if not isinstance(redirect, RedirectInfo):
        raise TypeError(
            "open_upstream: redirect must be a RedirectInfo (the third argument of the "
            f"start_redirect_server callback), not {type(redirect).__name__}"
        )
    function = "open_upstream"
    loop = asyncio.get_running_loop()
    infos = None
    if address is not None:
        infos = await loop.getaddrinfo(address[0], address[1], type=socket.SOCK_STREAM)
    attempts = upstream.Attempts(
        function,
        redirect.original_destination,
        address,
        infos,
        lambda: redirect.records,
        loop_mark=loop_mark,
        mark_mask=mark_mask,
        timeout=0.0,
        local_address=local_addr,
        transparent=transparent,
    )
    for sock, target in attempts:
        with attempts.connecting(sock) as attempt:
            await loop.sock_connect(sock, target)
        if not attempt.connected:
            continue
        key = remember_upstream(sock)
        try:
            return await _open_stream(sock, key, **kw)
        except BaseException:
            forget_upstream(key)
            sock.close()
            raise
    raise attempts.error()
