"""RedirectInfo: a connection's whole redirect state as one value."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple, TypeVar

from ._addresses import Address, is_listener_address
from ._core import original_destination, query_redirect_context, query_redirect_records
from ._errors import NotRedirectedError, UnsupportedError
from ._loops import check_not_looped
from ._records import RedirectRecords

if TYPE_CHECKING:
    from ._core import _Socket

T = TypeVar("T")


class RedirectInfo(NamedTuple):
    """The redirect state of one accepted connection; each field is None
    when absent (a connection that was not redirected has all three None).

    ``records`` go unchanged to the upstream socket; ``context`` is the
    callout driver's bytes (always None on Linux); ``original_destination``
    is ``(host, port)`` or ``(host, port, flowinfo, scope_id)``.
    """

    records: RedirectRecords | None
    context: bytes | None
    original_destination: Address | None


#: The state of a connection that was not redirected.
NOT_REDIRECTED = RedirectInfo(None, None, None)


def _unless_not_redirected(query: Callable[[_Socket], T], sock: _Socket) -> T | None:
    try:
        return query(sock)
    except NotRedirectedError:
        return None


def query_redirect_info(sock: _Socket, listening_addresses: Sequence[Address] = ()) -> RedirectInfo:
    """The whole redirect state of accepted connection `sock` (any accepted
    socket, or ``writer.get_extra_info("socket")`` of an asyncio
    transport), by the rules RedirectSocket and wfpredirect.aio apply.

    Each field is None when absent; a connection that was not redirected
    gives ``RedirectInfo(None, None, None)``. A connection addressed to one
    of the proxy's own `listening_addresses` (every connection on a TPROXY
    listener looks redirected) counts as not redirected. An original
    destination that cannot be known (Windows without SO_ORIGINAL_DST, a
    driver whose context is not WFPSampler's) is None while the records and
    context still travel. Any other failure raises, as the single queries
    do (RedirectError naming the call, with the OS code). A connection that
    is one of this process's own upstream connections (create_upstream,
    open_upstream) coming back raises RedirectLoopError, saying what the
    redirect lacks.
    """
    check_not_looped(sock, "query_redirect_info")
    try:
        destination = _unless_not_redirected(original_destination, sock)
    except UnsupportedError:
        # Windows without SO_ORIGINAL_DST, and a driver whose context is not
        # WFPSampler's layout: the records and context still travel.
        destination = None
    if destination is not None and any(
        is_listener_address(listener, destination) for listener in listening_addresses
    ):
        return NOT_REDIRECTED
    records = _unless_not_redirected(query_redirect_records, sock)
    # Without records there is no redirect, so no context either.
    context = None if records is None else _unless_not_redirected(query_redirect_context, sock)
    return RedirectInfo(records, context, destination)
