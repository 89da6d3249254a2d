"""wfpredirect: carry a redirected connection's redirect state to the proxy's
own upstream connection.

One API over two kernels: the Windows Filtering Platform's redirect records
and context (``BACKEND == "winsock"``), and Linux netfilter with socket marks
(``BACKEND == "netfilter"``). Elsewhere (``"unsupported"``) the package
imports and every operation raises :class:`UnsupportedError`.
"""

from __future__ import annotations

try:
    from . import _core
except ImportError as _error:
    from ._source_tree import core_import_error, running_this_package

    _problem = core_import_error(_error)
    if _problem is not _error and running_this_package():
        # `python -m wfpredirect` in such a tree: the message, not a traceback.
        raise SystemExit(str(_problem)) from None
    raise _problem from _error
from ._capture import Capture
from ._capture_targets import CaptureTarget
from ._core import (
    BACKEND,
    IP_WFP_REDIRECT_CONTEXT,
    IP_WFP_REDIRECT_RECORDS,
    SIO_QUERY_WFP_CONNECTION_REDIRECT_CONTEXT,
    SIO_QUERY_WFP_CONNECTION_REDIRECT_RECORDS,
    SIO_SET_WFP_CONNECTION_REDIRECT_RECORDS,
    decode_wfpsampler_context,
    enable_datagram_records,
    original_destination,
    query_redirect_context,
    query_redirect_context_into,
    query_redirect_records,
    query_redirect_records_into,
    recvmsg_redirect,
    recvmsg_redirect_into,
    sendmsg_redirect,
    set_redirect_records,
)
from ._datagrams import datagram_reply_socket
from ._errors import (
    BufferTooSmallError,
    NotRedirectedError,
    RedirectError,
    RedirectPermissionError,
    UnsupportedError,
)
from ._info import query_redirect_info
from ._loops import RedirectLoopError
from ._marks import DEFAULT_LOOP_MARK, DEFAULT_MARK_MASK, LOOP_MARK, MARK_MASK
from ._records import Datagram, RedirectInfo, RedirectRecords
from ._socket import RedirectSocket

# Availability: Windows, Linux.
if hasattr(_core, "SO_ORIGINAL_DST"):
    SO_ORIGINAL_DST: int = _core.SO_ORIGINAL_DST

__version__ = "0.1.0"

__all__ = [
    "BACKEND",
    "DEFAULT_LOOP_MARK",
    "DEFAULT_MARK_MASK",
    "IP_WFP_REDIRECT_CONTEXT",
    "IP_WFP_REDIRECT_RECORDS",
    "LOOP_MARK",
    "MARK_MASK",
    "SIO_QUERY_WFP_CONNECTION_REDIRECT_CONTEXT",
    "SIO_QUERY_WFP_CONNECTION_REDIRECT_RECORDS",
    "SIO_SET_WFP_CONNECTION_REDIRECT_RECORDS",
    "BufferTooSmallError",
    "Capture",
    "CaptureTarget",
    "Datagram",
    "NotRedirectedError",
    "RedirectError",
    "RedirectInfo",
    "RedirectLoopError",
    "RedirectPermissionError",
    "RedirectRecords",
    "RedirectSocket",
    "UnsupportedError",
    "datagram_reply_socket",
    "decode_wfpsampler_context",
    "enable_datagram_records",
    "original_destination",
    "query_redirect_context",
    "query_redirect_context_into",
    "query_redirect_info",
    "query_redirect_records",
    "query_redirect_records_into",
    "recvmsg_redirect",
    "recvmsg_redirect_into",
    "sendmsg_redirect",
    "set_redirect_records",
]
if hasattr(_core, "SO_ORIGINAL_DST"):
    __all__.append("SO_ORIGINAL_DST")
