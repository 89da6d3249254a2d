"""The loop the records prevent, recognised when it happens anyway: a
connection whose peer is the local address of an upstream connection this
process opened is that upstream coming back, because the redirect does not
let it pass (Linux: a rule without the loop-mark exemption; Windows: a
callout driver that ignores the records).

Every upstream that create_upstream and open_upstream open is remembered by
its local address until it closes, in the native registry
(csrc/python/loops.cpp); query_redirect_info checks each accepted
connection's peer against it before anything else. On Linux an accepted
connection carrying LOOP_MARK (net.ipv4.tcp_fwmark_accept=1 gives it its
SYN's mark) is an upstream coming back too, from whichever process. The
peer and the mark come from query_redirect_info's one native pass, so the
check makes no system call of its own; this module words the error.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from ._addresses import host_ip
from ._backend import backend
from ._core import _forget_upstream, _remember_upstream
from ._errors import RedirectError
from ._marks import LOOP_MARK

if TYPE_CHECKING:
    from ._core import _Address, _HasFileno


class RedirectLoopError(RedirectError):
    """The connection is this process's own upstream connection, redirected
    back into it (errno ELOOP): the redirect must let connections carrying
    the records pass. The message says what is missing."""


Endpoint = tuple[str, int]


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
    _remember_upstream(key)
    return key


def forget_upstream(key: Endpoint) -> None:
    _forget_upstream(key)


def missing_exemption(loop_mark: int) -> str:
    """What the redirect lacks, for the active loop mark (the backend's words)."""
    return backend.missing_exemption(loop_mark)


def loop_error(peer: _Address, ours: bool, function: str) -> RedirectLoopError:
    """The RedirectLoopError naming `function` for an accepted connection
    from `peer` that is a proxy's upstream coming back: one this process
    opened and has not closed (`ours`: `peer` is that upstream's local
    address), or else one that carries this process's loop mark (Linux: an
    accepted socket has its SYN's mark where net.ipv4.tcp_fwmark_accept=1).
    query_redirect_info decides; this words it."""
    endpoint = _endpoint(peer)
    whose = (
        "this process's own upstream connection"
        if ours
        else f"a proxy's upstream connection (it carries the loop mark {LOOP_MARK:#x})"
    )
    return RedirectLoopError(
        errno.ELOOP,
        f"{function}: the connection from {endpoint[0]} port {endpoint[1]} is {whose} coming "
        f"back: {missing_exemption(LOOP_MARK)}",
    )
