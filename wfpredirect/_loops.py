"""The loop the records prevent, recognised when it happens anyway: a
connection whose peer is the local address of an upstream connection this
process opened is that upstream coming back, because the redirect does not
let it pass (Linux: a rule without the loop-mark exemption; Windows: a
callout driver that ignores the records).

Every upstream that create_upstream and open_upstream open is remembered by
its local address until it closes; query_redirect_info checks each accepted
connection's peer against them before anything else. On Linux an accepted
connection carrying LOOP_MARK (net.ipv4.tcp_fwmark_accept=1 gives it its
SYN's mark) is an upstream coming back too, from whichever process. The
peer and the mark come from query_redirect_info's one native pass, so the
check makes no system call of its own.
"""

from __future__ import annotations

import errno
import threading
from collections import Counter
from typing import TYPE_CHECKING

from ._addresses import host_ip
from ._backend import backend
from ._errors import RedirectError
from ._marks import LOOP_MARK

if TYPE_CHECKING:
    from ._core import _Address, _HasFileno


class RedirectLoopError(RedirectError):
    """The connection is this process's own upstream connection, redirected
    back into it (errno ELOOP): the redirect must let connections carrying
    the records pass. The message says what is missing."""


Endpoint = tuple[str, int]

_lock = threading.Lock()
# Local (host, port) of each open upstream; a Counter, as two upstreams to
# different destinations may share one.
_open: Counter[Endpoint] = Counter()


def _endpoint(address: tuple[object, ...]) -> Endpoint:
    """(host, port), an IPv4-mapped host as IPv4 (a dual-stack listener
    reports an IPv4 upstream's address that way)."""
    host = str(address[0])
    if ":" in host:  # only an IPv6 host can be IPv4-mapped or scoped
        host = str(host_ip(host))
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


def check_not_looped(peer: _Address | None, mark: int | None, function: str) -> None:
    """RedirectLoopError naming `function` when the accepted connection from
    `peer` (None: it has none) is a proxy's upstream coming back: one this
    process opened and has not closed (`peer` is that upstream's local
    address), or on Linux one whose `mark` (None where there is none)
    carries this process's loop mark (an accepted socket has its SYN's mark
    where net.ipv4.tcp_fwmark_accept=1; elsewhere its mark is 0)."""
    marked = bool(LOOP_MARK) and mark is not None and mark & LOOP_MARK == LOOP_MARK
    # The peer is worth comparing only while an upstream is open, or for
    # the message; without one the connection is not connected, and the
    # queries say so themselves.
    # One read of the registry's size needs no lock (it is as current as
    # the lock's own answer would be once released).
    if peer is None or (not marked and not _open):
        return
    try:
        endpoint = _endpoint(peer)
    except ValueError:
        return
    with _lock:
        ours = endpoint in _open
    if ours or marked:
        whose = (
            "this process's own upstream connection"
            if ours
            else f"a proxy's upstream connection (it carries the loop mark {LOOP_MARK:#x})"
        )
        raise RedirectLoopError(
            errno.ELOOP,
            f"{function}: the connection from {endpoint[0]} port {endpoint[1]} is {whose} coming "
            f"back: {missing_exemption(LOOP_MARK)}",
        )
