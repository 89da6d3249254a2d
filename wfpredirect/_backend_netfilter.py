"""What the netfilter backend (Linux) does its own way: see _backend."""

from __future__ import annotations

import contextlib
import socket
import struct
import sys
from typing import Any

from ._errors import CAPABILITY_ADVICE, RedirectPermissionError

# asm-generic/socket.h; socket.SO_MARK exists from Python 3.12.
SO_MARK = 36
# linux/in.h; socket.IP_TRANSPARENT exists from Python 3.11 on Linux only.
IP_TRANSPARENT = 19
#: struct linger {int l_onoff; int l_linger;}: on, zero seconds.
_LINGER_NOW = struct.pack("ii", 1, 0)


def make_transparent(sock: socket.socket, function: str) -> None:
    """IP_TRANSPARENT on `sock` (at SOL_IP: for IPv6 sockets too), so that it
    may bind an address this host does not have, such as a client's."""
    try:
        sock.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
    except OSError as error:
        raise transparent_error(error, function) from error


def transparent_error(error: OSError, function: str) -> OSError:
    """What make_transparent raises for setsockopt(IP_TRANSPARENT)'s `error`."""
    if isinstance(error, PermissionError):
        return RedirectPermissionError(
            error.errno,
            f"{function}: cannot bind a client's address: setsockopt(IP_TRANSPARENT): "
            f"{error.strerror}: {CAPABILITY_ADVICE}",
        )
    return error


def prepare_reply_socket(sock: socket.socket) -> None:
    if sys.platform == "linux":  # always here; says so to the type checker
        from ._core import _prepare_datagram_reply_socket

        _prepare_datagram_reply_socket(sock)


def transparent_listener(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """A TCP socket bound to (host, port) with IP_TRANSPARENT, so that a
    TPROXY rule can hand it connections addressed elsewhere: the family
    comes from `host` ("::" or an IPv6 address: IPv6). With `reuse_port`,
    SO_REUSEPORT too (each ``--workers`` process binds its own)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # IP_TRANSPARENT at SOL_IP sets the flag for IPv6 sockets too.
        sock.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # type: ignore[attr-defined,unused-ignore]
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def missing_exemption(loop_mark: int) -> str:
    mark = f"{loop_mark:#x}"
    return (
        f"the redirect rule does not skip the loop mark {mark} (or the upstream carried no "
        "records): put "
        f"`meta mark & {mark} == {mark} return` (nft) or "
        f"`iptables -t nat -I OUTPUT -m mark --mark {mark}/{mark} -j RETURN` (iptables) "
        "before it"
    )


def reset_on_close(sock: Any) -> None:
    with contextlib.suppress(OSError, ValueError):  # gone (uvloop: ValueError)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_NOW)
