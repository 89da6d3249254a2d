"""RedirectRecords: the opaque value one connection hands to the next."""

from __future__ import annotations


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
