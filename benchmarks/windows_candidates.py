"""The Windows candidates of bench_calls.py: the real stack, without a WFP
callout driver, so every call ends in an error (the error paths are what is
timed, and the table says which error). Against the library:
(c) ctypes WSAIoctl / getsockopt on ws2_32, with the library's retry of an
    ambiguous WSAEINVAL at the 64 KiB cap (docs/design.md, "Windows facts"),
(d) socket.getsockopt(SO_ORIGINAL_DST), the only stdlib path
    (socket.ioctl rejects the WFP codes).
original_destination in the library also tries the redirect context after
SO_ORIGINAL_DST fails (its documented fallback); the others stop there."""

from __future__ import annotations

import ctypes
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from timing import LIBRARY, Candidate, error_path_runner

import wfpredirect

OPERATIONS = (
    "original_destination",
    "query_redirect_records",
    "query_redirect_records_into",
    "set_redirect_records",
)
SOL_IP = 0xFFFB  # Windows' level for SO_ORIGINAL_DST on IPv4
SO_ORIGINAL_DST = 0x300F
WSAEINVAL = 10022
FIRST_BUFFER = 1024
CAP = 65536
#: Not a record from a callout driver (there is none): what set is given.
SOME_RECORDS = bytes(64)

_DWORD = ctypes.c_uint32
_SOCKET = ctypes.c_size_t


def _ws2() -> Any:
    library = ctypes.WinDLL("ws2_32")  # type: ignore[attr-defined]
    library.WSAIoctl.argtypes = [
        _SOCKET,
        _DWORD,
        ctypes.c_void_p,
        _DWORD,
        ctypes.c_void_p,
        _DWORD,
        ctypes.POINTER(_DWORD),
        ctypes.c_void_p,
        ctypes.c_void_p,
    ]
    library.WSAIoctl.restype = ctypes.c_int
    library.getsockopt.argtypes = [
        _SOCKET,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_int),
    ]
    library.getsockopt.restype = ctypes.c_int
    library.WSAGetLastError.restype = ctypes.c_int
    return library


def _winsock_error(ws2: Any, call: str) -> OSError:
    error = ws2.WSAGetLastError()
    return OSError(None, f"{call} failed", None, error)


def ctypes_functions() -> dict[str, Callable[..., Any]]:
    ws2 = _ws2()

    def query(sock: socket.socket, code: int) -> bytes:
        returned = _DWORD()
        buffer = ctypes.create_string_buffer(FIRST_BUFFER)
        if (
            ws2.WSAIoctl(
                sock.fileno(),
                code,
                None,
                0,
                buffer,
                FIRST_BUFFER,
                ctypes.byref(returned),
                None,
                None,
            )
            == 0
        ):
            return buffer.raw[: returned.value]
        error = _winsock_error(ws2, "WSAIoctl")
        if getattr(error, "winerror", None) != WSAEINVAL or returned.value != 0:
            raise error
        buffer = ctypes.create_string_buffer(CAP)
        if (
            ws2.WSAIoctl(
                sock.fileno(), code, None, 0, buffer, CAP, ctypes.byref(returned), None, None
            )
            != 0
        ):
            raise _winsock_error(ws2, "WSAIoctl")
        return buffer.raw[: returned.value]

    def query_redirect_records(sock: socket.socket) -> bytes:
        return query(sock, wfpredirect.SIO_QUERY_WFP_CONNECTION_REDIRECT_RECORDS)

    def query_redirect_records_into(sock: socket.socket, buffer: bytearray) -> int:
        records = query(sock, wfpredirect.SIO_QUERY_WFP_CONNECTION_REDIRECT_RECORDS)
        buffer[: len(records)] = records
        return len(records)

    def set_redirect_records(sock: socket.socket, records: bytes) -> None:
        returned = _DWORD()
        if (
            ws2.WSAIoctl(
                sock.fileno(),
                wfpredirect.SIO_SET_WFP_CONNECTION_REDIRECT_RECORDS,
                records,
                len(records),
                None,
                0,
                ctypes.byref(returned),
                None,
                None,
            )
            != 0
        ):
            raise _winsock_error(ws2, "WSAIoctl")

    def original_destination(sock: socket.socket) -> bytes:
        address = ctypes.create_string_buffer(16)
        size = ctypes.c_int(16)
        if ws2.getsockopt(sock.fileno(), SOL_IP, SO_ORIGINAL_DST, address, ctypes.byref(size)):
            raise _winsock_error(ws2, "getsockopt(SO_ORIGINAL_DST)")
        return address.raw

    return {
        "original_destination": original_destination,
        "query_redirect_records": query_redirect_records,
        "query_redirect_records_into": query_redirect_records_into,
        "set_redirect_records": set_redirect_records,
    }


def stdlib_original_destination(sock: socket.socket) -> bytes:
    return sock.getsockopt(SOL_IP, SO_ORIGINAL_DST, 16)


@dataclass
class LoopbackConnection:
    listener: socket.socket
    client: socket.socket
    accepted: socket.socket
    upstream: socket.socket

    def close(self) -> None:
        for sock in (self.upstream, self.accepted, self.client, self.listener):
            sock.close()


def loopback_connection() -> LoopbackConnection:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    client = socket.create_connection(listener.getsockname(), timeout=5)
    accepted, _ = listener.accept()
    return LoopbackConnection(listener, client, accepted, socket.socket())


def outcome(function: Callable[..., Any], args: tuple[Any, ...]) -> str:
    """How one call ends: "ok", or the exception's class and code."""
    try:
        function(*args)
    except OSError as error:
        code = getattr(error, "winerror", None) or error.errno
        return f"{type(error).__name__} {code}"
    except ValueError as error:
        return f"ValueError ({error})"
    return "ok"


def candidates(connection: LoopbackConnection) -> dict[str, list[Candidate]]:
    ctypes_calls = ctypes_functions()
    operations: dict[str, list[Candidate]] = {}
    for operation in OPERATIONS:
        if operation == "set_redirect_records":
            args: tuple[Any, ...] = (connection.upstream, SOME_RECORDS)
        elif operation == "query_redirect_records_into":
            args = (connection.accepted, bytearray(FIRST_BUFFER))
        else:
            args = (connection.accepted,)
        functions: dict[str, Callable[..., Any]] = {
            LIBRARY: getattr(wfpredirect, operation),
            "ctypes": ctypes_calls[operation],
        }
        if operation == "original_destination":
            functions["stdlib"] = stdlib_original_destination
        found = []
        for name, function in functions.items():
            ending = outcome(function, args)
            # The same loop whatever the outcome: a try costs nothing when
            # nothing is raised, and a call may end differently later.
            found.append(Candidate(name, error_path_runner(function, args), ending))
        operations[operation] = found
    return operations
