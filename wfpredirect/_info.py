"""query_redirect_info: a connection's whole redirect state as one
RedirectInfo (defined in _records, as the native core builds it)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ._addresses import Address, is_listener_address
from ._core import _query_connection_state
from ._loops import check_not_looped
from ._records import RedirectInfo

if TYPE_CHECKING:
    from ._core import _Socket


#: The state of a connection that was not redirected.
NOT_REDIRECTED = RedirectInfo(None, None, None)


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
    do: RedirectError naming the query that failed (original_destination,
    query_redirect_records or query_redirect_context), with the OS code. A
    connection that is one of this process's own upstream connections
    (create_upstream, open_upstream) coming back raises RedirectLoopError,
    saying what the redirect lacks.

    One native pass makes the fewest system calls the answer needs (Linux:
    getsockname, SO_ORIGINAL_DST, getpeername and SO_MARK; Windows: each WFP
    query once), where the three single queries would each resolve the
    redirect again.
    """
    info, peer, mark, error = _query_connection_state(sock)
    if peer is not None and not isinstance(sock, int):
        check_not_looped(peer, mark, "query_redirect_info")
    # A failure after the original destination was known does not count for
    # a listener's own address: the single queries never got that far.
    destination = info.original_destination
    if (
        destination is not None
        and listening_addresses
        and any(is_listener_address(listener, destination) for listener in listening_addresses)
    ):
        return NOT_REDIRECTED
    if error is not None:
        raise error
    return info
