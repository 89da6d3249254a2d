"""Type stubs for the native core (csrc/python). Import from wfpredirect."""

import sys
from collections.abc import Sequence
from typing import Any, Protocol

from ._records import Datagram, RedirectInfo, RedirectRecords

class _HasFileno(Protocol):
    def fileno(self) -> int: ...

_Socket = _HasFileno | int
_WritableBuffer = bytearray | memoryview
_ReadableBuffer = bytes | bytearray | memoryview
# (host, port) for IPv4, (host, port, flowinfo, scope_id) for IPv6.
_Address = tuple[str, int] | tuple[str, int, int, int]

BACKEND: str
SIO_QUERY_WFP_CONNECTION_REDIRECT_RECORDS: int
SIO_QUERY_WFP_CONNECTION_REDIRECT_CONTEXT: int
SIO_SET_WFP_CONNECTION_REDIRECT_RECORDS: int
IP_WFP_REDIRECT_RECORDS: int
IP_WFP_REDIRECT_CONTEXT: int
# Availability: Windows, Linux.
SO_ORIGINAL_DST: int
_DATAGRAM_STATE_ON_FIRST_ONLY: bool
DEFAULT_LOOP_MARK: int
DEFAULT_MARK_MASK: int
LOOP_MARK_VARIABLE: str
MARK_MASK_VARIABLE: str

def query_redirect_records(sock: _Socket, /) -> RedirectRecords: ...
def query_redirect_records_into(sock: _Socket, buffer: _WritableBuffer, /) -> int: ...
def query_redirect_context(sock: _Socket, /) -> bytes | None: ...
def query_redirect_context_into(sock: _Socket, buffer: _WritableBuffer, /) -> int: ...
def set_redirect_records(
    sock: _Socket,
    records: _ReadableBuffer,
    /,
    *,
    loop_mark: int | None = None,
    mark_mask: int | None = None,
) -> None: ...
def original_destination(sock: _Socket, /) -> _Address: ...
def query_redirect_info(
    sock: _Socket, listening_addresses: Sequence[_Address] = ()
) -> RedirectInfo: ...

# set_redirect_records on a socket the library has just made (no state check).
def _set_upstream_records(
    sock: _Socket, records: _ReadableBuffer, loop_mark: int | None, mark_mask: int | None, /
) -> None: ...

# The loop registry (wfpredirect/_loops.py): keys are (host, port).
def _remember_upstream(key: tuple[str, int], /) -> None: ...
def _forget_upstream(key: tuple[str, int], /) -> None: ...

# query_redirect_info's one pass with every fact it read: (info, peer, mark,
# error); `error` is the exception query_redirect_info would raise.
def _query_connection_state(
    sock: _Socket, /
) -> tuple[RedirectInfo, _Address | None, int | None, Exception | None]: ...
def decode_wfpsampler_context(context: _ReadableBuffer, /) -> tuple[_Address, _Address]: ...
def enable_datagram_records(sock: _Socket, /) -> None: ...
def recvmsg_redirect(sock: _Socket, bufsize: int, /) -> Datagram: ...
def recvmsg_redirect_into(
    sock: _Socket, buffer: _WritableBuffer, /
) -> tuple[
    int,
    _Address,
    RedirectRecords | None,
    bytes | None,
    _Address | None,
]: ...
def sendmsg_redirect(
    sock: _Socket,
    data: _ReadableBuffer,
    address: _Address,
    records: _ReadableBuffer | None = None,
    /,
    *,
    loop_mark: int | None = None,
    mark_mask: int | None = None,
) -> int: ...

if sys.platform == "linux":
    # Availability: Linux (the netfilter backend's own operation).
    def _prepare_datagram_reply_socket(sock: _Socket, /) -> None: ...

    # Availability: Linux: the native relay (wfpredirect/cli/_relay_native.py).
    # A pybind11 class: its metaclass at run time is pybind11's, a subclass
    # of type with no stub of its own (stubtest wants one declared).
    class RelayEngine(metaclass=type):  # noqa: UP050 - declared for stubtest (above)
        def __init__(
            self,
            listeners: Sequence[int],
            /,
            *,
            connect_timeout: float,
            keep_client_address: bool = False,
            loop_mark: int | None = None,
            mark_mask: int | None = None,
            backlog: int = 1024,
            splice: bool = True,
            idle_timeout: float | None = None,
            max_connections: int | None = None,
            max_pipes: int | None = None,
        ) -> None: ...
        @property
        def event_fd(self) -> int: ...
        def run(self) -> None: ...
        def close_listeners(self) -> None: ...
        def stop(self, grace: float, /) -> None: ...
        def events(self) -> list[tuple[Any, ...]]: ...
        def open_count(self) -> int: ...
        def counters(self) -> tuple[int, int, int]: ...
        def pipes(self) -> tuple[int, int, int]: ...

def _configure_marks(loop_text: str | None, mask_text: str | None) -> None: ...
def _resolve_marks(
    loop_mark: int | None, mark_mask: int | None, loop_name: str, mask_name: str
) -> tuple[int, int, str]: ...
def _parse_mark(text: str) -> int: ...
