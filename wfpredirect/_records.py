"""The values the native core returns: RedirectRecords, the opaque value one
connection hands to the next, RedirectInfo and Datagram."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from ._addresses import Address


class RedirectRecords(bytes):
    """The redirect records of a connection, exactly as the backend produced
    them: an immutable bytes-like value (``bytes(r)``, ``len``, ``==``,
    ``hash``, the buffer protocol).

    Pass it unchanged to :func:`wfpredirect.set_redirect_records`. On Windows
    it is the WFP redirect record; on Linux the package's own versioned blob
    (original destination and inbound mark), which only this package reads.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return f"RedirectRecords({bytes(self)!r})"


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


#: The state of a connection that was not redirected (query_redirect_info's
#: answer for a connection to one of its listening addresses).
NOT_REDIRECTED = RedirectInfo(None, None, None)


class Datagram(NamedTuple):
    """One received datagram and its redirect state
    (:func:`wfpredirect.recvmsg_redirect`).

    ``records``, ``context`` and ``original_destination`` are None when the
    datagram carried none: on Windows only a flow's first datagram carries
    them; on Linux a datagram addressed to the receiving socket itself.
    """

    data: bytes
    address: tuple[Any, ...]
    records: RedirectRecords | None
    context: bytes | None
    original_destination: tuple[Any, ...] | None
