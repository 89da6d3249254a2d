"""What a Python user writes today on Linux, without wfpredirect: the same
system calls and the same results as the library, for the path the
benchmark times (a redirected IPv4 connection; no TPROXY, no IPv6).

(c) ctypes: libc's getsockname/getsockopt/setsockopt on fresh ctypes
    structures, as the ctypes tutorial would have it.
(d) the standard library: socket.getsockopt/setsockopt/getsockname and
    struct.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct
from collections.abc import Callable
from typing import Any

from timing import FLOOR, LIBRARY, REFERENCE, Candidate, Runner, native_loop_runner, python_runner

import wfpredirect
from wfpredirect import LOOP_MARK, MARK_MASK, RedirectRecords

SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h, level SOL_IP
SOL_IP = 0
SOL_SOCKET = 1
SO_MARK = 36  # asm-generic/socket.h; socket.SO_MARK exists from Python 3.12
TCP_INFO = 11  # linux/tcp.h
TCP_CLOSE = 7  # linux/tcp_states.h: a socket neither listening nor connected
SOCKADDR_IN_SIZE = 16

#: The package's IPv4 netfilter record (csrc/core/netfilter/record.hpp):
#: magic, version 1, IP version 4, flags, zero, mark, port, address.
RECORD_V4 = struct.Struct("!4sBBBBIH4s")
MAGIC = b"WFPR"


class NotRedirected(OSError):
    """The stand-in for NotRedirectedError in the hand-written candidates."""


# ---- (d) the standard library ---------------------------------------------


def stdlib_original_destination(sock: socket.socket) -> tuple[str, int]:
    local = sock.getsockname()
    raw = sock.getsockopt(SOL_IP, SO_ORIGINAL_DST, SOCKADDR_IN_SIZE)
    destination = (socket.inet_ntoa(raw[4:8]), int.from_bytes(raw[2:4], "big"))
    if destination == local:
        raise NotRedirected("SO_ORIGINAL_DST equals the local address")
    return destination


def _stdlib_record_fields(sock: socket.socket) -> tuple[Any, ...]:
    local = sock.getsockname()
    raw = sock.getsockopt(SOL_IP, SO_ORIGINAL_DST, SOCKADDR_IN_SIZE)
    port = int.from_bytes(raw[2:4], "big")
    address = raw[4:8]
    if (socket.inet_ntoa(address), port) == local:
        raise NotRedirected("SO_ORIGINAL_DST equals the local address")
    mark = sock.getsockopt(SOL_SOCKET, SO_MARK)
    return (MAGIC, 1, 4, 0, 0, mark & MARK_MASK, port, address)


def stdlib_query_redirect_records(sock: socket.socket) -> RedirectRecords:
    return RedirectRecords(RECORD_V4.pack(*_stdlib_record_fields(sock)))


def stdlib_query_redirect_records_into(sock: socket.socket, buffer: bytearray) -> int:
    fields = _stdlib_record_fields(sock)
    if len(buffer) < RECORD_V4.size:
        raise OSError("the buffer is smaller than the records")
    RECORD_V4.pack_into(buffer, 0, *fields)
    return RECORD_V4.size


def stdlib_set_redirect_records(sock: socket.socket, records: bytes) -> None:
    if len(records) != RECORD_V4.size:
        raise ValueError("not an IPv4 netfilter record")
    magic, version, ip_version, flags, zero, mark, _, _ = RECORD_V4.unpack(records)
    if magic != MAGIC or version != 1 or ip_version != 4 or flags & ~1 or zero:
        raise ValueError("not an IPv4 netfilter record")
    # Records go on a new socket: its TCP state first, as the library checks.
    if sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] != TCP_CLOSE:
        raise OSError(errno.EISCONN, "not a new socket")
    sock.setsockopt(SOL_SOCKET, SO_MARK, (mark & MARK_MASK) | LOOP_MARK)


# ---- (c) ctypes --------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_socklen_t = ctypes.c_uint32


class _SockaddrIn(ctypes.Structure):
    _fields_ = [
        ("sin_family", ctypes.c_ushort),
        ("sin_port", ctypes.c_ubyte * 2),  # network byte order
        ("sin_addr", ctypes.c_ubyte * 4),
        ("sin_zero", ctypes.c_ubyte * 8),
    ]


_getsockname = _libc.getsockname
_getsockname.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(_socklen_t)]
_getsockname.restype = ctypes.c_int
_getsockopt = _libc.getsockopt
_getsockopt.argtypes = [
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_void_p,
    ctypes.POINTER(_socklen_t),
]
_getsockopt.restype = ctypes.c_int
_setsockopt = _libc.setsockopt
_setsockopt.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p, _socklen_t]
_setsockopt.restype = ctypes.c_int


def _raise_errno(call: str) -> None:
    error = ctypes.get_errno()
    raise OSError(error, f"{call}: {os.strerror(error)}")


def _ctypes_original(fd: int) -> _SockaddrIn:
    local = _SockaddrIn()
    size = _socklen_t(ctypes.sizeof(local))
    if _getsockname(fd, ctypes.byref(local), ctypes.byref(size)) != 0:
        _raise_errno("getsockname")
    original = _SockaddrIn()
    size.value = ctypes.sizeof(original)
    if _getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, ctypes.byref(original), ctypes.byref(size)) != 0:
        _raise_errno("getsockopt(SO_ORIGINAL_DST)")
    if bytes(original.sin_port) == bytes(local.sin_port) and bytes(original.sin_addr) == bytes(
        local.sin_addr
    ):
        raise NotRedirected("SO_ORIGINAL_DST equals the local address")
    return original


def ctypes_original_destination(sock: socket.socket) -> tuple[str, int]:
    original = _ctypes_original(sock.fileno())
    return (socket.inet_ntoa(bytes(original.sin_addr)), int.from_bytes(original.sin_port, "big"))


def _ctypes_record(sock: socket.socket) -> bytes:
    fd = sock.fileno()
    original = _ctypes_original(fd)
    mark = ctypes.c_uint32()
    size = _socklen_t(ctypes.sizeof(mark))
    if _getsockopt(fd, SOL_SOCKET, SO_MARK, ctypes.byref(mark), ctypes.byref(size)) != 0:
        _raise_errno("getsockopt(SO_MARK)")
    return RECORD_V4.pack(
        MAGIC,
        1,
        4,
        0,
        0,
        mark.value & MARK_MASK,
        int.from_bytes(original.sin_port, "big"),
        bytes(original.sin_addr),
    )


def ctypes_query_redirect_records(sock: socket.socket) -> RedirectRecords:
    return RedirectRecords(_ctypes_record(sock))


def ctypes_query_redirect_records_into(sock: socket.socket, buffer: bytearray) -> int:
    record = _ctypes_record(sock)
    if len(buffer) < len(record):
        raise OSError("the buffer is smaller than the records")
    buffer[: len(record)] = record
    return len(record)


def ctypes_set_redirect_records(sock: socket.socket, records: bytes) -> None:
    if len(records) != RECORD_V4.size:
        raise ValueError("not an IPv4 netfilter record")
    magic, version, ip_version, flags, zero, mark, _, _ = RECORD_V4.unpack(records)
    if magic != MAGIC or version != 1 or ip_version != 4 or flags & ~1 or zero:
        raise ValueError("not an IPv4 netfilter record")
    state = ctypes.c_uint8()
    size = _socklen_t(1)
    if _getsockopt(
        sock.fileno(), socket.IPPROTO_TCP, TCP_INFO, ctypes.byref(state), ctypes.byref(size)
    ):
        _raise_errno("getsockopt(TCP_INFO)")
    if state.value != TCP_CLOSE:
        raise OSError(errno.EISCONN, "not a new socket")
    value = ctypes.c_uint32((mark & MARK_MASK) | LOOP_MARK)
    if _setsockopt(sock.fileno(), SOL_SOCKET, SO_MARK, ctypes.byref(value), ctypes.sizeof(value)):
        _raise_errno("setsockopt(SO_MARK)")


STDLIB: dict[str, Callable[..., Any]] = {
    "original_destination": stdlib_original_destination,
    "query_redirect_records": stdlib_query_redirect_records,
    "query_redirect_records_into": stdlib_query_redirect_records_into,
    "set_redirect_records": stdlib_set_redirect_records,
}
CTYPES: dict[str, Callable[..., Any]] = {
    "original_destination": ctypes_original_destination,
    "query_redirect_records": ctypes_query_redirect_records,
    "query_redirect_records_into": ctypes_query_redirect_records_into,
    "set_redirect_records": ctypes_set_redirect_records,
}


# ---- the candidates of one operation -----------------------------------------

OPERATIONS = (
    "original_destination",
    "query_redirect_records",
    "query_redirect_records_into",
    "set_redirect_records",
)


def arguments(operation: str, connection: Any) -> tuple[Any, ...]:
    """The arguments each candidate of `operation` is called with."""
    if operation == "set_redirect_records":
        return (connection.upstream, wfpredirect.query_redirect_records(connection.accepted))
    if operation == "query_redirect_records_into":
        return (connection.accepted, bytearray(64))
    return (connection.accepted,)


def python_functions(operation: str, capi_reference: Any) -> dict[str, Callable[..., Any]]:
    """The Python-callable candidates, by name, in table order."""
    return {
        LIBRARY: getattr(wfpredirect, operation),
        REFERENCE: getattr(capi_reference, operation),
        "stdlib": STDLIB[operation],
        "ctypes": CTYPES[operation],
    }


def floor_runner(operation: str, connection: Any, floor: ctypes.CDLL) -> Runner:
    if operation == "set_redirect_records":
        records = wfpredirect.query_redirect_records(connection.accepted)
        mark = (int.from_bytes(records[8:12], "big") & MARK_MASK) | LOOP_MARK
        return native_loop_runner(
            floor.floor_set_redirect_records, connection.upstream.fileno(), mark
        )
    loop = (
        "floor_query_redirect_records" if "records" in operation else "floor_original_destination"
    )
    return native_loop_runner(getattr(floor, loop), connection.accepted.fileno())


def _result(operation: str, function: Callable[..., Any], args: tuple[Any, ...]) -> object:
    """What one call produced, in a comparable form."""
    if operation == "query_redirect_records_into":
        args = (args[0], bytearray(64))
        count = function(*args)
        return (count, bytes(args[1][:count]))
    if operation == "set_redirect_records":
        args[0].setsockopt(SOL_SOCKET, SO_MARK, 0)
        function(*args)
        return args[0].getsockopt(SOL_SOCKET, SO_MARK)
    result = function(*args)
    return (type(result).__name__, result)


def candidates(
    operation: str, connection: Any, floor: ctypes.CDLL, capi_reference: Any
) -> list[Candidate]:
    """Every candidate of `operation`, after checking that each produces
    the library's result (the same tuple, the same RedirectRecords, the
    same bytes written, the same mark set)."""
    args = arguments(operation, connection)
    functions = python_functions(operation, capi_reference)
    expected = _result(operation, functions[LIBRARY], args)
    for name, function in functions.items():
        got = _result(operation, function, args)
        if got != expected:
            raise RuntimeError(f"{operation}: {name} gives {got!r}, the library {expected!r}")
    found = [Candidate(name, python_runner(function, args)) for name, function in functions.items()]
    found.insert(2, Candidate(FLOOR, floor_runner(operation, connection, floor)))
    return found
