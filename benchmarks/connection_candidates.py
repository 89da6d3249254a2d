"""One accepted connection as a proxy handles it (issue 16): its whole
redirect state (``query_redirect_info``), then the records on the new
upstream socket (``set_redirect_records``). Linux, on the benchmark's
redirected IPv4 connection, no upstream open.

- wfpredirect: the fused native pass behind query_redirect_info;
- wfpredirect, three single calls: what query_redirect_info did before it
  (its loop check's own SO_MARK read, then original_destination,
  query_redirect_records and query_redirect_context, each resolving the
  redirect again), reproduced here from the public single calls;
- the C loops (native/floor.c): the floor, the 4 reads that carry the whole
  state plus the upstream's SO_MARK (5 calls); the library's own calls, which
  add set_redirect_records' TCP_INFO state check (6); and the old path's
  calls (13).
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

OPERATION = "per connection"
THREE_QUERIES = "wfpredirect, three single calls"
LIBRARY_CALLS = "C loop, the library's 6 calls"
OLD_CALLS = "C loop, the old 13 calls"
SO_MARK = 36  # asm-generic/socket.h

#: How many system calls each candidate makes per connection.
SYSTEM_CALLS = {LIBRARY: 6, THREE_QUERIES: 13, FLOOR: 5, LIBRARY_CALLS: 6, OLD_CALLS: 13}


def fused(accepted: socket.socket, upstream: socket.socket) -> RedirectInfo:
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
    """Every candidate, after checking that the two Python ones give the
    same RedirectInfo and set the same upstream mark."""
    accepted, upstream = connection.accepted, connection.upstream
    results = []
    for function in (fused, three_queries):
        upstream.setsockopt(socket.SOL_SOCKET, SO_MARK, 0)
        info = function(accepted, upstream)
        results.append((info, upstream.getsockopt(socket.SOL_SOCKET, SO_MARK)))
    if results[0] != results[1] or results[0][0].records is None:
        raise RuntimeError(f"{OPERATION}: the fused and the single calls differ: {results}")
    info, mark = results[0]
    assert info.records is not None
    expected_mark = (int.from_bytes(info.records[8:12], "big") & MARK_MASK) | LOOP_MARK
    if mark != expected_mark:
        raise RuntimeError(f"{OPERATION}: the upstream mark is {mark:#x}, not {expected_mark:#x}")
    fd, up = accepted.fileno(), upstream.fileno()
    found = [
        Candidate(LIBRARY, python_runner(fused, (accepted, upstream))),
        Candidate(THREE_QUERIES, python_runner(three_queries, (accepted, upstream))),
        Candidate(FLOOR, native_loop_runner(floor.floor_connection, fd, up, expected_mark)),
        Candidate(
            LIBRARY_CALLS, native_loop_runner(floor.floor_connection_checked, fd, up, expected_mark)
        ),
        Candidate(
            OLD_CALLS,
            native_loop_runner(floor.floor_connection_three_queries, fd, up, expected_mark),
        ),
    ]
    for candidate in found:
        candidate.outcome = f"ok, {SYSTEM_CALLS[candidate.name]} system calls"
    return found
