"""The loop the records prevent, recognised when it happens anyway: a
connection whose peer is the local address of an upstream connection this
process opened is that upstream coming back, because the redirect does not
let it pass (Linux: a rule without the loop-mark exemption; Windows: a
callout driver that ignores the records).

Every upstream that create_upstream and open_upstream open is remembered by
its local address until it closes; query_redirect_info checks each accepted
connection's peer against them before anything else.
"""

from __future__ import annotations

import errno
import ipaddress
import threading
from collections import Counter
from typing import TYPE_CHECKING

from ._core import BACKEND
from ._errors import RedirectError
from ._marks import LOOP_MARK

if TYPE_CHECKING:
    from ._core import _HasFileno


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
    """What the redirect lacks, for the active loop mark."""
    if BACKEND == "winsock":
        return (
            "the callout driver redirected it although it carries the redirect records: "
            "the driver must let such connections pass (FwpsQueryConnectionRedirectState)"
        )
    mark = f"{loop_mark:#x}"
    return (
        f"the redirect rule does not skip the loop mark {mark} (or the upstream carried no "
        "records): put "
        f"`meta mark & {mark} == {mark} return` (nft) or "
        f"`iptables -t nat -I OUTPUT -m mark --mark {mark}/{mark} -j RETURN` (iptables) "
        "before it"
    )


def check_not_looped(sock: _HasFileno | int, function: str) -> None:
    """RedirectLoopError naming `function` when accepted connection `sock`
    is one of this process's open upstreams coming back."""
    with _lock:
        if not _open:
            return
    if isinstance(sock, int):
        return
    try:
        peer = _endpoint(sock.getpeername())  # type: ignore[attr-defined]
    except (OSError, ValueError):
        return  # not connected: the queries say so themselves
    with _lock:
        looped = peer in _open
    if looped:
        raise RedirectLoopError(
            errno.ELOOP,
            f"{function}: the connection from {peer[0]} port {peer[1]} is this process's own "
            f"upstream connection coming back: {missing_exemption(LOOP_MARK)}",
        )
