"""query_redirect_info: a connection's whole redirect state as one
RedirectInfo (defined in _records, as the native core builds it).

The public function is the native one itself (csrc/python/operations.cpp):
the one pass over the system calls, the loop check against the registry of
_loops, the listener rule of _addresses, then the first failure, with no
Python in between on the common path.
"""

from __future__ import annotations

from ._core import query_redirect_info
from ._records import NOT_REDIRECTED

__all__ = ["NOT_REDIRECTED", "query_redirect_info"]
