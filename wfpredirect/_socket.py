"""RedirectSocket: a socket.socket that knows its redirect state."""

from __future__ import annotations

import socket

from . import _upstream as upstream
from ._addresses import Address
from ._core import enable_datagram_records as _enable_datagram_records
from ._core import recvmsg_redirect as _recvmsg_redirect
from ._core import recvmsg_redirect_into as _recvmsg_redirect_into
from ._core import sendmsg_redirect as _sendmsg_redirect
from ._core import set_redirect_records as _set_redirect_records
from ._info import query_redirect_info
from ._loops import Endpoint, forget_upstream, remember_upstream
from ._records import Datagram, RedirectInfo, RedirectRecords


class RedirectSocket(socket.socket):
    """A ``socket.socket`` whose accepted connections know their redirect state.

    ``accept()`` returns a ``RedirectSocket``. Its ``redirect_records``,
    ``redirect_context`` and ``original_destination`` are queried on first
    use, cached, and ``None`` when the connection was not redirected. A
    connection addressed to the listener itself (as every connection on an
    IP_TRANSPARENT listener looks redirected) counts as not redirected.
    """

    __slots__ = ("_info", "_listener_address", "_listening_address", "_upstream_key")

    def __init__(
        self,
        family: int = -1,
        type: int = -1,
        proto: int = -1,
        fileno: int | None = None,
    ) -> None:
        super().__init__(family, type, proto, fileno)
        self._listening_address: Address | None = None  # this socket's, when it listens
        self._listener_address: Address | None = None  # the listener that accepted this one
        self._info: RedirectInfo | None = None
        # Set while this socket is an open upstream (loop detection).
        self._upstream_key: Endpoint | None = None

    def close(self) -> None:
        self._forget_upstream()
        super().close()

    def detach(self) -> int:
        self._forget_upstream()
        return super().detach()

    def _forget_upstream(self) -> None:
        key, self._upstream_key = self._upstream_key, None
        if key is not None:
            forget_upstream(key)

    def accept(self) -> tuple[RedirectSocket, Address]:
        fd, address = self._accept()  # type: ignore[attr-defined]
        sock = RedirectSocket(self.family, self.type, self.proto, fileno=fd)
        # The same timeout rule as socket.socket.accept().
        if socket.getdefaulttimeout() is None and self.gettimeout():
            sock.setblocking(True)
        if self._listening_address is None:
            self._listening_address = self.getsockname()
            upstream.remember_listener(self)
        sock._listener_address = self._listening_address
        return sock, address

    @property
    def redirect_info(self) -> RedirectInfo:
        """The connection's whole redirect state, queried on first use."""
        if self._info is None:
            listeners = [] if self._listener_address is None else [self._listener_address]
            self._info = query_redirect_info(self, listeners)
        return self._info

    @property
    def original_destination(self) -> Address | None:
        """Where the connection was originally addressed, or None."""
        return self.redirect_info.original_destination

    @property
    def redirect_records(self) -> RedirectRecords | None:
        """The connection's redirect records, or None."""
        return self.redirect_info.records

    @property
    def redirect_context(self) -> bytes | None:
        """The connection's redirect context, or None (not redirected, or
        redirected without a context)."""
        return self.redirect_info.context

    def set_redirect_records(
        self,
        records: bytes | bytearray | memoryview,
        *,
        loop_mark: int | None = None,
        mark_mask: int | None = None,
    ) -> None:
        """Attach `records` to this (new, unconnected) socket."""
        _set_redirect_records(self, records, loop_mark=loop_mark, mark_mask=mark_mask)

    def enable_datagram_records(self) -> None:
        """Deliver each datagram's redirect state with it (a UDP socket)."""
        _enable_datagram_records(self)

    def recvmsg_redirect(self, bufsize: int) -> Datagram:
        """Receive one datagram and its redirect state."""
        return _recvmsg_redirect(self, bufsize)

    def recvmsg_redirect_into(
        self, buffer: bytearray | memoryview
    ) -> tuple[int, Address, RedirectRecords | None, bytes | None, Address | None]:
        """Receive one datagram into `buffer`: (nbytes, address, records,
        context, original_destination)."""
        return _recvmsg_redirect_into(self, buffer)

    def sendmsg_redirect(
        self,
        data: bytes | bytearray | memoryview,
        address: tuple[str, int] | tuple[str, int, int, int],
        records: bytes | bytearray | memoryview | None = None,
        *,
        loop_mark: int | None = None,
        mark_mask: int | None = None,
    ) -> int:
        """Send one datagram to `address`, carrying `records` with it alone."""
        return _sendmsg_redirect(
            self, data, address, records, loop_mark=loop_mark, mark_mask=mark_mask
        )

    def create_upstream(
        self,
        address: Address | None = None,
        *,
        timeout: float | None = None,
        source_address: Address | None = None,
        loop_mark: int | None = None,
        mark_mask: int | None = None,
    ) -> RedirectSocket:
        """Open the proxy's upstream connection for this accepted connection.

        The new socket gets this connection's redirect records BEFORE it
        binds or connects, so the redirect rule lets it pass instead of
        sending it back into the proxy. It connects to `address`, or to the
        original destination. `timeout` (seconds) applies to the new socket
        when given; `source_address` is bound before connecting; `loop_mark`
        and `mark_mask` are ``set_redirect_records``'s. It refuses to connect
        to a listening address of this process's redirect servers, its own
        listener's included (errno ELOOP). The policy is
        ``wfpredirect.aio.open_upstream``'s.
        """
        function = "create_upstream"
        infos = None
        if address is not None:
            infos = socket.getaddrinfo(address[0], address[1], type=socket.SOCK_STREAM)
        attempts = upstream.Attempts(
            function,
            # Only asked when needed: an address given is checked for a loop
            # before anything is queried.
            self.original_destination if address is None else None,
            address,
            infos,
            lambda: self.redirect_records,
            loop_mark=loop_mark,
            mark_mask=mark_mask,
            timeout=timeout,
            local_address=source_address,
            listeners=[] if self._listener_address is None else [self._listener_address],
            factory=RedirectSocket,
        )
        for sock, target in attempts:
            with attempts.connecting(sock) as attempt:
                sock.connect(target)
            if not attempt.connected:
                continue
            assert isinstance(sock, RedirectSocket)
            sock._upstream_key = remember_upstream(sock)
            return sock
        raise attempts.error()
