"""What the unsupported backend (neither Linux nor Windows) answers: see
_backend. Every redirect call raises UnsupportedError."""

from __future__ import annotations

import contextlib
import errno
import socket
import struct
from typing import Any

# What only Linux has (IP_TRANSPARENT) is refused as on Windows.
from ._backend_winsock import make_transparent as make_transparent
from ._backend_winsock import transparent_listener as transparent_listener
from ._errors import UnsupportedError


def prepare_reply_socket(sock: socket.socket) -> None:
    raise UnsupportedError(
        errno.EOPNOTSUPP,
        "datagram_reply_socket: connection redirection is supported on Windows and Linux only",
    )


def missing_exemption(loop_mark: int) -> str:
    return "the redirect let the proxy's upstream connection back in"


def reset_on_close(sock: Any) -> None:
    """POSIX's struct linger {int l_onoff; int l_linger;}: on, zero seconds."""
    with contextlib.suppress(OSError, ValueError):  # gone (uvloop: ValueError)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
