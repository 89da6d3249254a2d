"""RedirectSocket: a socket.socket that knows its redirect state."""

from __future__ import annotations

import errno
import ipaddress
import socket
from typing import Any

from ._core import enable_datagram_records as _enable_datagram_records
from ._core import original_destination, query_redirect_context, query_redirect_records
from ._core import recvmsg_redirect as _recvmsg_redirect
from ._core import recvmsg_redirect_into as _recvmsg_redirect_into
from ._core import sendmsg_redirect as _sendmsg_redirect
from ._core import set_redirect_records as _set_redirect_records
from ._errors import NotRedirectedError, RedirectError
from ._records import Datagram, RedirectRecords

Address = tuple[Any, ...]

_UNKNOWN: Any = object()


def _same_host(listener_host: str, host: str) -> bool:
    listener_ip = ipaddress.ip_address(listener_host.split("%")[0])
    ip = ipaddress.ip_address(host.split("%")[0])
    if listener_ip.is_unspecified:
        return True
    if isinstance(listener_ip, ipaddress.IPv6Address) and listener_ip.ipv4_mapped:
        listener_ip = listener_ip.ipv4_mapped
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return listener_ip == ip


def is_listener_address(listener: Address | None, address: Address) -> bool:
    """Whether `address` is where `listener` accepts (a wildcard listener
    accepts on every address of its port)."""
    if listener is None:
        return False
    return listener[1] == address[1] and _same_host(listener[0], address[0])


class RedirectSocket(socket.socket):
    """A ``socket.socket`` whose accepted connections know their redirect state.

    ``accept()`` returns a ``RedirectSocket``. Its ``redirect_records``,
    ``redirect_context`` and ``original_destination`` are queried on first
    use, cached, and ``None`` when the connection was not redirected. A
    connection addressed to the listener itself (as every connection on an
    IP_TRANSPARENT listener looks redirected) counts as not redirected.
    """

    __slots__ = ("_context", "_destination", "_listener_address", "_listening_address", "_records")

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
        self._records: RedirectRecords | None = _UNKNOWN
        self._context: bytes | None = _UNKNOWN
        self._destination: Address | None = _UNKNOWN

    def accept(self) -> tuple[RedirectSocket, Address]:
        fd, address = self._accept()  # type: ignore[attr-defined]
        sock = RedirectSocket(self.family, self.type, self.proto, fileno=fd)
        # The same timeout rule as socket.socket.accept().
        if socket.getdefaulttimeout() is None and self.gettimeout():
            sock.setblocking(True)
        if self._listening_address is None:
            self._listening_address = self.getsockname()
        sock._listener_address = self._listening_address
        return sock, address

    @property
    def original_destination(self) -> Address | None:
        """Where the connection was originally addressed, or None."""
        if self._destination is _UNKNOWN:
            try:
                destination = original_destination(self)
            except NotRedirectedError:
                destination = None
            if destination is not None and is_listener_address(self._listener_address, destination):
                destination = None
            self._destination = destination
        return self._destination

    @property
    def redirect_records(self) -> RedirectRecords | None:
        """The connection's redirect records, or None."""
        if self._records is _UNKNOWN:
            try:
                records: RedirectRecords | None = query_redirect_records(self)
            except NotRedirectedError:
                records = None
            if (
                records is not None
                and self._listener_address is not None
                and self.original_destination is None
            ):
                records = None
            self._records = records
        return self._records

    @property
    def redirect_context(self) -> bytes | None:
        """The connection's redirect context, or None (not redirected, or
        redirected without a context)."""
        if self._context is _UNKNOWN:
            try:
                context = query_redirect_context(self)
            except NotRedirectedError:
                context = None
            if context is not None and self.redirect_records is None:
                context = None
            self._context = context
        return self._context

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
        address: tuple[str, int] | None = None,
        *,
        timeout: float | None = None,
        source_address: tuple[str, int] | None = None,
    ) -> RedirectSocket:
        """Open the proxy's upstream connection for this accepted connection.

        The new socket gets this connection's redirect records BEFORE it
        binds or connects, so the redirect rule lets it pass instead of
        sending it back into the proxy. It connects to `address`, or to the
        original destination. `timeout` (seconds) applies to the new socket
        when given; `source_address` is bound before connecting. It refuses
        to connect to its own listener's address (errno ELOOP).
        """
        records = self.redirect_records
        if address is None:
            destination = self.original_destination
            if destination is None:
                raise NotRedirectedError(
                    errno.ENOENT,
                    "create_upstream: the connection was not redirected and no address was given",
                )
            family = socket.AF_INET if len(destination) == 2 else socket.AF_INET6
            candidates = [(family, destination)]
        else:
            candidates = [
                (info[0], info[4])
                for info in socket.getaddrinfo(address[0], address[1], type=socket.SOCK_STREAM)
            ]
        failures: list[OSError] = []
        for family, target in candidates:
            if is_listener_address(self._listener_address, target):
                raise RedirectError(
                    errno.ELOOP,
                    f"create_upstream: refusing to connect to {target[0]}:{target[1]}, "
                    "the proxy's own listening address (a redirect loop)",
                )
            upstream = RedirectSocket(family, socket.SOCK_STREAM)
            try:
                if records is not None:
                    upstream.set_redirect_records(records)
                if timeout is not None:
                    upstream.settimeout(timeout)
                if source_address is not None:
                    upstream.bind(source_address)
                upstream.connect(target)
                return upstream
            except RedirectError:
                upstream.close()
                raise
            except OSError as error:
                upstream.close()
                failures.append(error)
        if len(failures) == 1:
            raise failures[0]
        raise OSError(f"create_upstream: every address of {address!r} failed: {failures!r}")
