"""Bad arguments: each gives the documented exception naming the call,
before any system call."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import wfpredirect
from support import linux_only

SOCKET_CALLS: list[tuple[str, Callable[[Any], object]]] = [
    ("query_redirect_records", wfpredirect.query_redirect_records),
    ("query_redirect_context", wfpredirect.query_redirect_context),
    ("original_destination", wfpredirect.original_destination),
    (
        "query_redirect_records_into",
        lambda s: wfpredirect.query_redirect_records_into(s, bytearray(64)),
    ),
    (
        "query_redirect_context_into",
        lambda s: wfpredirect.query_redirect_context_into(s, bytearray(64)),
    ),
    ("set_redirect_records", lambda s: wfpredirect.set_redirect_records(s, b"x" * 18)),
]


class FilenoReturns:
    def __init__(self, value: object) -> None:
        self.value = value

    def fileno(self) -> object:
        return self.value


class FilenoRaises:
    def fileno(self) -> int:
        raise RuntimeError("no descriptor")


@pytest.fixture()
def tcp() -> Iterator[socket.socket]:
    with socket.socket() as sock:
        yield sock


@pytest.mark.parametrize(("name", "call"), SOCKET_CALLS)
@pytest.mark.parametrize(
    ("sock", "message"),
    [
        ("3", "sock must be a socket or an integer handle, not str"),
        (None, "sock must be a socket or an integer handle, not NoneType"),
        (3.0, "sock must be a socket or an integer handle, not float"),
        (object(), "sock must be a socket or an integer handle, not object"),
        (True, "sock must be a socket or an integer handle, not bool"),
        (FilenoReturns("3"), "sock.fileno() must return an integer, not str"),
        (FilenoReturns(False), "sock.fileno() must return an integer, not bool"),
    ],
)
def test_not_a_socket_is_a_type_error(
    name: str, call: Callable[[Any], object], sock: object, message: str
) -> None:
    with pytest.raises(TypeError) as caught:
        call(sock)
    assert str(caught.value) == f"{name}: {message}"


@linux_only
@pytest.mark.parametrize(("name", "call"), SOCKET_CALLS)
def test_out_of_range_handle_is_an_overflow_error(name: str, call: Callable[[Any], object]) -> None:
    for value in (2**31, -(2**31) - 1, 2**70):
        with pytest.raises(OverflowError) as caught:
            call(value)
        assert str(caught.value) == f"{name}: the socket handle is out of range"


@pytest.mark.parametrize(("name", "call"), SOCKET_CALLS)
def test_a_fileno_that_raises_is_a_type_error_naming_the_call(
    name: str, call: Callable[[Any], object]
) -> None:
    """What fileno() raised is kept as the cause; an OSError (with its code) is itself."""
    with pytest.raises(TypeError) as caught:
        call(FilenoRaises())
    assert str(caught.value) == f"{name}: sock.fileno() raised RuntimeError: no descriptor"
    assert repr(caught.value.__cause__) == "RuntimeError('no descriptor')"


@pytest.mark.parametrize("name", ["query_redirect_records_into", "query_redirect_context_into"])
def test_read_only_buffer_is_a_type_error(name: str, tcp: socket.socket) -> None:
    call = getattr(wfpredirect, name)
    for buffer, kind in ((b"x" * 64, "bytes"), (memoryview(b"x" * 64), "memoryview")):
        with pytest.raises(TypeError) as caught:
            call(tcp, buffer)
        assert str(caught.value) == (
            f"{name}: the buffer must be writable (read-only buffer given), not {kind}"
        )


@pytest.mark.parametrize("name", ["query_redirect_records_into", "query_redirect_context_into"])
def test_strided_buffer_is_a_type_error(name: str, tcp: socket.socket) -> None:
    strided = memoryview(bytearray(64))[::2]
    with pytest.raises(TypeError) as caught:
        getattr(wfpredirect, name)(tcp, strided)
    assert str(caught.value) == (
        f"{name}: the buffer must be C-contiguous (strided buffer given), not memoryview"
    )


@pytest.mark.parametrize("name", ["query_redirect_records_into", "query_redirect_context_into"])
def test_non_buffer_is_a_type_error(name: str, tcp: socket.socket) -> None:
    with pytest.raises(TypeError) as caught:
        getattr(wfpredirect, name)(tcp, "text")
    assert str(caught.value) == f"{name}: the buffer must be a writable bytes-like object, not str"


def test_released_memoryview_is_a_value_error(tcp: socket.socket) -> None:
    view = memoryview(bytearray(64))
    view.release()
    with pytest.raises(ValueError, match="released memoryview"):
        wfpredirect.query_redirect_records_into(tcp, view)


def assert_set_refuses(
    tcp: socket.socket, records: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as caught:
        wfpredirect.set_redirect_records(tcp, records)  # type: ignore[arg-type]
    assert str(caught.value) == f"set_redirect_records: {message}"


@pytest.mark.parametrize(
    ("records", "error", "message"),
    [
        (b"", ValueError, "records must be 1 to 65536 bytes, not 0"),
        (bytearray(65537), ValueError, "records must be 1 to 65536 bytes, not 65537"),
        ("WFPR", TypeError, "records must be a bytes-like object, not str"),
        (None, TypeError, "records must be a bytes-like object, not NoneType"),
        (
            memoryview(b"x" * 40)[::2],
            TypeError,
            "records must be a C-contiguous bytes-like object, not memoryview",
        ),
    ],
)
def test_records_that_no_backend_takes(
    records: object, error: type[Exception], message: str, tcp: socket.socket
) -> None:
    """Checked before any system call, so the same on every backend."""
    assert_set_refuses(tcp, records, error, message)


@linux_only
@pytest.mark.parametrize(
    ("records", "error", "message"),
    [
        (b"x" * 18, ValueError, "records are not a wfpredirect netfilter record (no WFPR magic)"),
        (
            b"WFPR",
            ValueError,
            "records are too short to be a netfilter record (truncated or foreign)",
        ),
        (
            b"WFPR\x02\x04" + bytes(12),
            ValueError,
            "records use another version of the netfilter record format",
        ),
        (
            b"WFPR\x01\x05" + bytes(12),
            ValueError,
            "records name an IP version other than 4 or 6 (corrupt)",
        ),
        (b"WFPR\x01\x04\x02" + bytes(11), ValueError, "records have unknown flags set (corrupt)"),
        (
            b"WFPR\x01\x04" + bytes(13),
            ValueError,
            "records have the wrong length for their IP version (truncated or corrupt)",
        ),
        (
            b"WFPR\x01\x06" + bytes(12),
            ValueError,
            "records have the wrong length for their IP version (truncated or corrupt)",
        ),
    ],
)
def test_records_that_are_not_a_netfilter_record(
    records: object, error: type[Exception], message: str, tcp: socket.socket
) -> None:
    assert_set_refuses(tcp, records, error, message)


@linux_only
@pytest.mark.parametrize(
    ("keywords", "error", "message"),
    [
        ({"loop_mark": "0x40"}, TypeError, "loop_mark must be an int or None"),
        ({"mark_mask": True}, TypeError, "mark_mask must be an int or None"),
        ({"loop_mark": -1}, ValueError, "loop_mark must be between 0 and 0xffffffff"),
        ({"mark_mask": 2**32}, ValueError, "mark_mask must be between 0 and 0xffffffff"),
        (
            {"loop_mark": 0},
            ValueError,
            "loop_mark is 0: the loop mark must be non-zero, or the upstream connection is "
            "redirected back into the proxy",
        ),
        (
            {"loop_mark": 0x100},
            ValueError,
            "loop_mark 0x100 is not inside WFPREDIRECT_MARK_MASK (MARK_MASK) 0xf0: the loop mark "
            "must only use bits of the mark mask",
        ),
        (
            {"mark_mask": 0x0F},
            ValueError,
            "WFPREDIRECT_LOOP_MARK (LOOP_MARK) 0x40 is not inside mark_mask 0xf: the loop mark "
            "must only use bits of the mark mask",
        ),
    ],
)
def test_bad_mark_keywords(
    keywords: dict[str, object], error: type[Exception], message: str, tcp: socket.socket
) -> None:
    record = b"WFPR\x01\x04\x00\x00" + bytes(4) + b"\x1f\x90" + bytes([127, 0, 0, 2])
    with pytest.raises(error) as caught:
        wfpredirect.set_redirect_records(tcp, record, **keywords)  # type: ignore[arg-type]
    assert str(caught.value) == f"set_redirect_records: {message}"


@linux_only
def test_pipe_is_not_a_socket() -> None:
    read_end, write_end = os.pipe()
    try:
        for name, call in SOCKET_CALLS[:5]:
            with pytest.raises(wfpredirect.RedirectError) as caught:
                call(read_end)
            assert type(caught.value) is wfpredirect.RedirectError
            assert caught.value.errno == 88  # ENOTSOCK
            assert str(caught.value) == (
                f"[Errno 88] {name}: getsockname (Socket operation on non-socket)"
            )
    finally:
        os.close(read_end)
        os.close(write_end)
