"""What the winsock backend (Windows, WFP) does its own way: see _backend.
The marks are netfilter's; this backend ignores them."""

from __future__ import annotations

import contextlib
import errno
import socket
import struct
from typing import Any

from ._errors import UnsupportedError

WSAEOPNOTSUPP = 10045  # winerror.h
#: struct linger {u_short l_onoff; u_short l_linger;} (winsock2.h): on, zero seconds.
_LINGER_NOW = struct.pack("HH", 1, 0)


def make_transparent(sock: socket.socket, function: str) -> None:
    raise _unsupported(
        f"{function}: transparent=True is Linux's (IP_TRANSPARENT): Windows cannot bind "
        "an upstream connection to an address it does not have"
    )


def _unsupported(message: str) -> UnsupportedError:
    """UnsupportedError with WSAEOPNOTSUPP, as the native calls raise it."""
    error = UnsupportedError(WSAEOPNOTSUPP, message)
    setattr(error, "winerror", WSAEOPNOTSUPP)  # noqa: B010 - Windows-only in the stubs
    return error


def prepare_reply_socket(sock: socket.socket) -> None:
    raise _unsupported(
        "datagram_reply_socket: Windows has no transparent bind (IP_TRANSPARENT): answer a "
        "redirected flow from the socket that received it"
    )


def transparent_listener(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    raise UnsupportedError(errno.EOPNOTSUPP, "transparent_listener: IP_TRANSPARENT is Linux's")


def missing_exemption(loop_mark: int) -> str:
    return (
        "the callout driver redirected it although it carries the redirect records: "
        "the driver must let such connections pass (FwpsQueryConnectionRedirectState)"
    )


def reset_on_close(sock: Any) -> None:
    with contextlib.suppress(OSError, ValueError):  # gone (uvloop: ValueError)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_NOW)
