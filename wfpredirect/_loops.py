"""The loop the records prevent, recognised when it happens anyway: a
connection whose peer is the local address of an upstream connection this
process opened is that upstream coming back, because the redirect does not
let it pass (Linux: a rule without the loop-mark exemption; Windows: a
callout driver that ignores the records).

Every upstream that create_upstream and open_upstream open is remembered by
its local address until it closes; query_redirect_info checks each accepted
connection's peer against them before anything else. On Linux an accepted
connection carrying LOOP_MARK (net.ipv4.tcp_fwmark_accept=1 gives it its
SYN's mark) is an upstream coming back too, from whichever process.
"""

from __future__ import annotations

import errno
import ipaddress
import threading
from collections import Counter
from typing import TYPE_CHECKING

from ._backend import backend
from ._errors import RedirectError
from ._marks import LOOP_MARK

if TYPE_CHECKING:
    from ._core import _HasFileno


class RedirectLoopError(RedirectError):
    """The connection is this process's own upstream connection, redirected
    back into it (errno ELOOP): the redirect must let connections carrying
    the records pass. The message says what is missing."""


Endpoint = tuple[str, int]

# asm-generic/socket.h; socket.SO_MARK exists from Python 3.12.
SO_MARK = 36

_lock = threading.Lock()
# Local (host, port) of each open upstream; a Counter, as two upstreams to
# different destinations may share one.
_open: Counter[Endpoint] = Counter()


def _endpoint(address: tuple[object, ...]) -> Endpoint:
    """(host, port), an IPv4-mapped host as IPv4 (a dual-stack listener
    reports an IPv4 upstream's address that way)."""
    host = str(address[0]).split("%")[0]
    ip = ipaddress.ip_address(host)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        host = str(ip.ipv4_mapped)
    return host, int(address[1])  # type: ignore[call-overload]


def remember_upstream(sock: _HasFileno) -> Endpoint:
    """Remember connected upstream `sock` until forget_upstream(its key)."""
    key = _endpoint(sock.getsockname())  # type: ignore[attr-defined]
    with _lock:
        _open[key] += 1
    return key


def forget_upstream(key: Endpoint) -> None:
    with _lock:
        _open[key] -= 1
        if _open[key] <= 0:
            del _open[key]


def missing_exemption(loop_mark: int) -> str:
    """What the redirect lacks, for the active loop mark (the backend's words)."""
    return backend.missing_exemption(loop_mark)


def check_not_looped(sock: _HasFileno | int, function: str) -> None:
    """RedirectLoopError naming `function` when accepted connection `sock`
    is a proxy's upstream coming back: one this process opened and has not
    closed (its peer is that upstream's local address), or on Linux one that
    carries this process's loop mark."""
    if isinstance(sock, int):
        return
    marked = backend.carries_loop_mark(sock, LOOP_MARK)
    with _lock:
        upstreams_open = bool(_open)
    # The peer is worth asking for only while an upstream is open, or for
    # the message.
    if not marked and not upstreams_open:
        return
    try:
        peer = _endpoint(sock.getpeername())  # type: ignore[attr-defined]
    except (OSError, ValueError):
        return  # not connected: the queries say so themselves
    with _lock:
        ours = peer in _open
    if ours or marked:
        whose = (
            "this process's own upstream connection"
            if ours
            else f"a proxy's upstream connection (it carries the loop mark {LOOP_MARK:#x})"
        )
        raise RedirectLoopError(
            errno.ELOOP,
            f"{function}: the connection from {peer[0]} port {peer[1]} is {whose} coming "
            f"back: {missing_exemption(LOOP_MARK)}",
        )
