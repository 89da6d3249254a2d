"""Datagram helpers built on the native calls."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from typing import Any

from ._backend import backend
from ._errors import RedirectError


def datagram_reply_socket(
    original_destination: tuple[Any, ...], *, peer: tuple[Any, ...] | None = None
) -> socket.socket:
    """A UDP socket bound to a datagram's `original_destination`, so that
    replies reach the client from the address it sent to, as UDP clients
    require.

    Linux: IP_TRANSPARENT (the address need not be local) and SO_REUSEADDR
    (every flow to that destination gets its own socket). Give `peer` (the
    client's address) to connect the socket to it: it then receives only
    that client's datagrams and never takes another socket's. Note that a
    TPROXY rule hands a datagram to the socket that matches it exactly, so
    from then on the client's later datagrams to that destination arrive on
    this socket, not on the proxy's listening one: read it too.

    Windows has no transparent bind: UnsupportedError, saying what happens
    instead.
    """
    family = _family(original_destination, "original_destination")
    if peer is not None:
        _family(peer, "peer")
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        backend.prepare_reply_socket(sock)
        for call, address in (("bind", original_destination), ("connect", peer)):
            if address is None:
                continue
            try:
                getattr(sock, call)(address)
            except OSError as error:
                # The library's error, naming the call and keeping the code.
                raise RedirectError(
                    error.errno, f"datagram_reply_socket: {call}({address!r}): {error.strerror}"
                ) from error
    except BaseException:
        sock.close()
        raise
    return sock


def _family(address: object, name: str) -> socket.AddressFamily:
    """The family of `address`, a (host, port[, ...]) tuple of an IP address:
    TypeError naming datagram_reply_socket's argument `name` when it is no
    such tuple, ValueError when its host is no IP address or its port is
    out of range."""
    if not (
        isinstance(address, tuple)
        and len(address) >= 2
        and isinstance(address[0], str)
        and isinstance(address[1], int)
    ):
        raise TypeError(
            f"datagram_reply_socket: {name} must be a (host, port) tuple, not {address!r}"
        )
    host, port = address[0], address[1]
    version: int = 0
    with contextlib.suppress(ValueError):
        version = ipaddress.ip_address(host.split("%")[0]).version
    if not version or not 0 <= port <= 65535:
        raise ValueError(
            f"datagram_reply_socket: {name} must be an IP address and a port "
            f"(0 to 65535), not {address!r}"
        )
    return socket.AF_INET if version == 4 else socket.AF_INET6
