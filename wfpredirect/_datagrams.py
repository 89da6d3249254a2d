"""Datagram helpers built on the native calls."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

from ._backend import backend


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
    host = str(original_destination[0]).split("%")[0]
    family = socket.AF_INET if ipaddress.ip_address(host).version == 4 else socket.AF_INET6
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        backend.prepare_reply_socket(sock)
        sock.bind(original_destination)
        if peer is not None:
            sock.connect(peer)
    except BaseException:
        sock.close()
        raise
    return sock
