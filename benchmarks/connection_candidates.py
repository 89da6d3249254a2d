"""One accepted connection as a proxy handles it (issue 16): its whole
redirect state (``query_redirect_info``), then the records on the new
upstream socket. Linux, on the benchmark's redirected IPv4 connection, no
upstream open.

- wfpredirect, as the proxy: query_redirect_info, then the records on the
  library's own upstream as create_upstream, open_upstream and the proxy set
  them (_upstream.prepare: _core._set_upstream_records, which knows its new
  socket is unconnected and skips set_redirect_records' TCP_INFO check):
  the floor's 5 system calls;
- wfpredirect, public calls: query_redirect_info then the public
  set_redirect_records on a caller's socket, which checks that socket's
  state (TCP_INFO): 6 system calls;
- wfpredirect, three single calls: what query_redirect_info did before the
  fused pass (its loop check's own SO_MARK read, then original_destination,
  query_redirect_records and query_redirect_context, each resolving the
  redirect again), reproduced here from the public single calls;
- the C loops (native/floor.c): the floor, the 4 reads that carry the whole
  state plus the upstream's SO_MARK (5 calls); the public calls' 6, which
  add set_redirect_records' TCP_INFO state check; and the old path's calls
  (13).
"""

from __future__ import annotations

import ctypes
import socket
import threading
from collections.abc import Callable
from typing import Any

from timing import FLOOR, LIBRARY, Candidate, native_loop_runner, python_runner

import wfpredirect
from wfpredirect import LOOP_MARK, MARK_MASK, NotRedirectedError, RedirectInfo
from wfpredirect._core import _set_upstream_records

OPERATION = "per connection"
#: The proxy's own path; LIBRARY ("wfpredirect") is the public calls.
AS_THE_PROXY = "wfpredirect, as the proxy"
THREE_QUERIES = "wfpredirect, three single calls"
PUBLIC_CALLS = "C loop, the public calls' 6"
OLD_CALLS = "C loop, the old 13 calls"
SO_MARK = 36  # asm-generic/socket.h

#: How many system calls each candidate makes per connection.
SYSTEM_CALLS = {
    AS_THE_PROXY: 5,
    LIBRARY: 6,
    THREE_QUERIES: 13,
    FLOOR: 5,
    PUBLIC_CALLS: 6,
    OLD_CALLS: 13,
}
#: What each Python candidate is, for the table.
DESCRIPTIONS = {
    AS_THE_PROXY: "query_redirect_info + the library's own upstream records",
    LIBRARY: "query_redirect_info + set_redirect_records (public calls)",
    THREE_QUERIES: "the three single queries + set_redirect_records (before)",
}


def as_the_proxy(accepted: socket.socket, upstream: socket.socket) -> RedirectInfo:
    """What the proxy, create_upstream and open_upstream do: the records go
    on the library's own new upstream (as _upstream.prepare sets them)."""
    info = wfpredirect.query_redirect_info(accepted)
    if info.records is not None:
        _set_upstream_records(upstream, info.records, None, None)
    return info


def fused(accepted: socket.socket, upstream: socket.socket) -> RedirectInfo:
    """The public calls, on a socket the caller made."""
    info = wfpredirect.query_redirect_info(accepted)
    if info.records is not None:
        wfpredirect.set_redirect_records(upstream, info.records)
    return info


_lock = threading.Lock()
_open: dict[tuple[str, int], int] = {}


def _unless_not_redirected(query: Callable[[socket.socket], Any], sock: socket.socket) -> Any:
    try:
        return query(sock)
    except NotRedirectedError:
        return None


def three_queries(accepted: socket.socket, upstream: socket.socket) -> RedirectInfo:
    """The previous query_redirect_info (no listening addresses, no
    upstream open), then set_redirect_records."""
    mark = accepted.getsockopt(socket.SOL_SOCKET, SO_MARK)
    marked = bool(LOOP_MARK) and mark & LOOP_MARK == LOOP_MARK
    with _lock:
        upstreams_open = bool(_open)
    if marked or upstreams_open:
        raise RuntimeError("the benchmark's connection is not a loop")
    destination = _unless_not_redirected(wfpredirect.original_destination, accepted)
    records = _unless_not_redirected(wfpredirect.query_redirect_records, accepted)
    context = (
        None
        if records is None
        else _unless_not_redirected(wfpredirect.query_redirect_context, accepted)
    )
    info = RedirectInfo(records, context, destination)
    if info.records is not None:
        wfpredirect.set_redirect_records(upstream, info.records)
    return info


def candidates(connection: Any, floor: ctypes.CDLL) -> list[Candidate]:
    """Every candidate, after checking that the Python ones give the same
    RedirectInfo and set the same upstream mark."""
    accepted, upstream = connection.accepted, connection.upstream
    results = []
    for function in (as_the_proxy, fused, three_queries):
        upstream.setsockopt(socket.SOL_SOCKET, SO_MARK, 0)
        info = function(accepted, upstream)
        results.append((info, upstream.getsockopt(socket.SOL_SOCKET, SO_MARK)))
    if any(result != results[0] for result in results) or results[0][0].records is None:
        raise RuntimeError(f"{OPERATION}: the fused and the single calls differ: {results}")
    info, mark = results[0]
    assert info.records is not None
    expected_mark = (int.from_bytes(info.records[8:12], "big") & MARK_MASK) | LOOP_MARK
    if mark != expected_mark:
        raise RuntimeError(f"{OPERATION}: the upstream mark is {mark:#x}, not {expected_mark:#x}")
    fd, up = accepted.fileno(), upstream.fileno()
    found = [
        Candidate(AS_THE_PROXY, python_runner(as_the_proxy, (accepted, upstream))),
        Candidate(LIBRARY, python_runner(fused, (accepted, upstream))),
        Candidate(THREE_QUERIES, python_runner(three_queries, (accepted, upstream))),
        Candidate(FLOOR, native_loop_runner(floor.floor_connection, fd, up, expected_mark)),
        Candidate(
            PUBLIC_CALLS, native_loop_runner(floor.floor_connection_checked, fd, up, expected_mark)
        ),
        Candidate(
            OLD_CALLS,
            native_loop_runner(floor.floor_connection_three_queries, fd, up, expected_mark),
        ),
    ]
    for candidate in found:
        what = DESCRIPTIONS.get(candidate.name)
        calls = f"{SYSTEM_CALLS[candidate.name]} system calls"
        candidate.outcome = f"ok, {calls}: {what}" if what else f"ok, {calls}"
    return found
