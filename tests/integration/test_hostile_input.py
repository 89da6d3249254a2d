"""Hostile input through the public API (issue 6): every call gives the
documented exception, with the exact errno and a message naming the call,
and writes nothing outside a caller's buffer. The rows not covered by
test_error_table.py, test_arguments.py and test_datagram_errors.py."""

from __future__ import annotations

import array
import errno
import mmap
import os
import socket
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest

import wfpredirect
from netns import run_in_netns
from record_format import encode
from test_original_destination import IPV4_RULES, listen

GUARD = 0xA5
DESTINATION = ("127.0.0.1", 9)
RECORD = encode(("127.0.0.2", 8080), mark=0x10)


def outcome(call: Callable[[], object]) -> tuple[str, object, str]:
    """(class, errno, message) of a call that raises, or ("ok", value, "")."""
    try:
        return ("ok", call(), "")
    except Exception as error:  # noqa: BLE001 - the class is what is compared
        return (type(error).__name__, getattr(error, "errno", None), str(error))


# ---- The socket argument of the datagram calls (test_arguments.py covers
# the connection calls with the same values).

DATAGRAM_CALLS: list[tuple[str, Callable[[Any], object]]] = [
    ("enable_datagram_records", wfpredirect.enable_datagram_records),
    ("recvmsg_redirect", lambda s: wfpredirect.recvmsg_redirect(s, 16)),
    ("recvmsg_redirect_into", lambda s: wfpredirect.recvmsg_redirect_into(s, bytearray(16))),
    ("sendmsg_redirect", lambda s: wfpredirect.sendmsg_redirect(s, b"x", DESTINATION)),
    (
        "sendmsg_redirect",
        lambda s: wfpredirect.sendmsg_redirect(s, b"x", DESTINATION, RECORD),
    ),
]


@pytest.mark.parametrize(("name", "call"), DATAGRAM_CALLS)
@pytest.mark.parametrize(
    ("sock", "message"),
    [
        ("3", "sock must be a socket or an integer handle, not str"),
        (None, "sock must be a socket or an integer handle, not NoneType"),
        (3.0, "sock must be a socket or an integer handle, not float"),
        (object(), "sock must be a socket or an integer handle, not object"),
        (False, "sock must be a socket or an integer handle, not bool"),
    ],
)
def test_datagram_calls_refuse_non_sockets(
    name: str, call: Callable[[Any], object], sock: object, message: str
) -> None:
    assert outcome(lambda: call(sock)) == ("TypeError", None, f"{name}: {message}")


def test_datagram_calls_on_bad_handles() -> None:
    closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closed.close()
    read_end, write_end = os.pipe()
    try:
        answers = {
            (label, index): outcome(lambda call=call, handle=handle: call(handle))
            for label, handle in (("-1", -1), ("closed", closed), ("pipe", read_end))
            for index, (_, call) in enumerate(DATAGRAM_CALLS)
        }
    finally:
        os.close(read_end)
        os.close(write_end)
    for (label, index), answer in answers.items():
        name = DATAGRAM_CALLS[index][0]
        if label == "pipe":
            expected = (
                "RedirectError",
                errno.ENOTSOCK,
                f"[Errno 88] {name}: getsockopt(SO_PROTOCOL) (Socket operation on non-socket)",
            )
        else:
            expected = (
                "RedirectError",
                errno.EBADF,
                f"[Errno 9] {name}: getsockopt(SO_PROTOCOL) (Bad file descriptor)",
            )
        assert answer == expected, (label, name)


def test_datagram_calls_on_a_connected_tcp_socket_touch_no_stream_data() -> None:
    """The datagram calls check the protocol first: a connected TCP socket
    keeps its unread bytes and sends nothing."""
    with (
        socket.create_server(("127.0.0.1", 0)) as server,
        socket.create_connection(server.getsockname(), timeout=5) as client,
    ):
        accepted, _ = server.accept()
        with accepted:
            client.sendall(b"stream")
            answers = [outcome(lambda call=call: call(accepted)) for _, call in DATAGRAM_CALLS]
            accepted.settimeout(5)
            unread = accepted.recv(16)
            accepted.setblocking(False)
            client.setblocking(False)
            with pytest.raises(BlockingIOError):
                client.recv(16)  # nothing was written into the stream
    assert unread == b"stream"
    assert answers == [
        (
            "RedirectError",
            errno.ENOPROTOOPT,
            f"[Errno 92] {name}: getsockopt(SO_PROTOCOL): not a UDP socket "
            "(Protocol not available)",
        )
        for name, _ in DATAGRAM_CALLS
    ]


def test_recvmsg_bufsize_of_the_wrong_type_names_the_call() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        answers = [
            outcome(lambda size=size: wfpredirect.recvmsg_redirect(sock, size))
            for size in (1.5, "16", None)
        ]
    assert answers == [
        ("TypeError", None, "recvmsg_redirect: bufsize must be an int, not float"),
        ("TypeError", None, "recvmsg_redirect: bufsize must be an int, not str"),
        ("TypeError", None, "recvmsg_redirect: bufsize must be an int, not NoneType"),
    ]


# ---- Caller buffers of every _into call.


def read_only_buffers() -> list[tuple[object, str]]:
    return [
        (b"x" * 16, "bytes"),
        (memoryview(b"x" * 16), "memoryview"),
        (memoryview(bytearray(16)).toreadonly(), "memoryview"),
    ]


def test_recvmsg_into_refuses_read_only_and_strided_buffers(
    datagram_pair: tuple[socket.socket, socket.socket],
) -> None:
    receiver, sender = datagram_pair
    sender.sendto(b"kept", receiver.getsockname())
    name = "recvmsg_redirect_into"
    answers = [
        outcome(lambda buffer=buffer: wfpredirect.recvmsg_redirect_into(receiver, buffer))
        for buffer, _ in read_only_buffers()
    ]
    strided = bytearray(b"\xcc" * 16)
    answers.append(
        outcome(lambda: wfpredirect.recvmsg_redirect_into(receiver, memoryview(strided)[::2]))
    )
    answers.append(outcome(lambda: wfpredirect.recvmsg_redirect_into(receiver, "text")))
    assert answers == [
        *(
            (
                "TypeError",
                None,
                f"{name}: the buffer must be writable (read-only buffer given), not {kind}",
            )
            for _, kind in read_only_buffers()
        ),
        (
            "TypeError",
            None,
            f"{name}: the buffer must be C-contiguous (strided buffer given), not memoryview",
        ),
        ("TypeError", None, f"{name}: the buffer must be a writable bytes-like object, not str"),
    ]
    # None of them received: the datagram is still there, the buffer intact.
    assert (strided, receiver.recv(16)) == (bytearray(b"\xcc" * 16), b"kept")


def test_recvmsg_into_a_zero_length_window(
    datagram_pair: tuple[socket.socket, socket.socket],
) -> None:
    """Like recv_into with an empty buffer: the datagram is taken and cut
    to nothing, and no byte around the window changes."""
    receiver, sender = datagram_pair
    sender.sendto(b"dropped", receiver.getsockname())
    sender.sendto(b"next", receiver.getsockname())
    guarded = bytearray([GUARD] * 32)
    answer = wfpredirect.recvmsg_redirect_into(receiver, memoryview(guarded)[16:16])
    assert answer == (0, sender.getsockname(), None, None, None)
    assert guarded == bytearray([GUARD] * 32)
    assert receiver.recv(16) == b"next"


@pytest.mark.parametrize("name", ["query_redirect_records_into", "query_redirect_context_into"])
def test_query_into_refuses_read_only_buffers(name: str) -> None:
    call = getattr(wfpredirect, name)
    with socket.socket() as sock:
        answers = [
            outcome(lambda buffer=buffer: call(sock, buffer)) for buffer, _ in read_only_buffers()
        ]
        with mmap.mmap(-1, 64, access=mmap.ACCESS_READ) as mapped:
            answers.append(outcome(lambda: call(sock, mapped)))
    assert answers == [
        *(
            (
                "TypeError",
                None,
                f"{name}: the buffer must be writable (read-only buffer given), not {kind}",
            )
            for _, kind in read_only_buffers()
        ),
        (
            "TypeError",
            None,
            f"{name}: the buffer must be writable (read-only buffer given), not mmap.mmap",
        ),
    ]


def test_query_into_calls_on_redirected_connection_with_guard_bytes() -> None:
    """Every buffer size from 0 to past the record, each a window inside
    guard bytes: the records land exactly in the window or not at all
    (BufferTooSmallError), the context call writes nothing."""

    def body() -> dict[str, object]:
        listener = listen(socket.AF_INET, ("127.0.0.1", 15001))
        socket.create_connection(("127.0.0.2", 8080), timeout=5)
        conn, _ = listener.accept()
        records = bytes(wfpredirect.query_redirect_records(conn))
        results = []
        for size in range(len(records) + 3):
            guarded = bytearray([GUARD] * (size + 32))
            window = memoryview(guarded)[16 : 16 + size]
            answer = outcome(
                lambda window=window: wfpredirect.query_redirect_records_into(conn, window)
            )
            context_guarded = bytearray([GUARD] * (size + 32))
            context = outcome(
                lambda size=size, context_guarded=context_guarded: (
                    wfpredirect.query_redirect_context_into(
                        conn, memoryview(context_guarded)[16 : 16 + size]
                    )
                )
            )
            results.append((size, answer, bytes(guarded), context, bytes(context_guarded)))
        mapped = mmap.mmap(-1, 64)
        written = wfpredirect.query_redirect_records_into(conn, mapped)
        doubles = array.array("d", [0.5] * 8)
        written_doubles = wfpredirect.query_redirect_records_into(conn, doubles)
        return {
            "records": records,
            "results": results,
            "mmap": (written, mapped[:]),
            "doubles": (written_doubles, doubles.tobytes()),
        }

    result = run_in_netns(body, nft_rules=IPV4_RULES)
    records = result["records"]
    assert isinstance(records, bytes) and len(records) == 18
    for size, answer, guarded, context, context_guarded in result["results"]:  # type: ignore[attr-defined]
        assert context == ("ok", 0, "")
        assert context_guarded == bytes([GUARD] * (size + 32))
        if size < len(records):
            assert answer == (
                "BufferTooSmallError",
                errno.ENOBUFS,
                f"[Errno 105] query_redirect_records_into: the buffer holds {size} bytes, "
                f"the answer needs {len(records)}",
            )
            assert guarded == bytes([GUARD] * (size + 32))
        else:
            assert answer == ("ok", len(records), "")
            expected = bytes([GUARD] * 16) + records + bytes([GUARD] * (size - len(records) + 16))
            assert guarded == expected
    assert result["mmap"] == (18, records + bytes(64 - 18))
    assert result["doubles"] == (18, records + array.array("d", [0.5] * 8).tobytes()[18:])


# ---- query_redirect_context raises exactly as query_redirect_records does.


def test_context_raises_as_records_do() -> None:
    """Only a redirected connection without a context answers None; for
    everything else both queries give the same class, errno and message."""

    def body() -> dict[str, object]:
        listener = listen(socket.AF_INET, ("127.0.0.1", 15001))
        direct_server = listen(socket.AF_INET, ("127.0.0.1", 9000))
        direct = socket.create_connection(("127.0.0.1", 9000), timeout=5)
        direct_accepted, _ = direct_server.accept()
        socket.create_connection(("127.0.0.2", 8080), timeout=5)
        redirected, _ = listener.accept()
        unconnected = socket.socket()
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        read_end, write_end = os.pipe()
        closed = socket.socket()
        closed.close()
        handles: dict[str, object] = {
            "pipe": read_end,
            "listening": listener,
            "unconnected": unconnected,
            "unredirected client": direct,
            "unredirected accepted": direct_accepted,
            "udp": udp,
            "closed": closed,
            "-1": -1,
        }
        answers = {}
        for label, handle in handles.items():
            answers[label] = [
                outcome(lambda call=call, handle=handle: call(handle))
                for call in (
                    wfpredirect.query_redirect_records,
                    wfpredirect.query_redirect_context,
                    lambda h: wfpredirect.query_redirect_records_into(h, bytearray(64)),
                    lambda h: wfpredirect.query_redirect_context_into(h, bytearray(64)),
                )
            ]
        answers["redirected"] = [
            outcome(lambda: wfpredirect.query_redirect_context(redirected)),
            outcome(lambda: wfpredirect.query_redirect_context_into(redirected, bytearray(0))),
        ]
        os.close(read_end)
        os.close(write_end)
        return answers

    answers = run_in_netns(body, nft_rules=IPV4_RULES)
    assert answers.pop("redirected") == [("ok", None, ""), ("ok", 0, "")]
    names = [
        "query_redirect_records",
        "query_redirect_context",
        "query_redirect_records_into",
        "query_redirect_context_into",
    ]
    for label, results in answers.items():
        classes = {result[0] for result in results}
        codes = {result[1] for result in results}
        messages = {
            result[2].replace(name, "CALL") for result, name in zip(results, names, strict=True)
        }
        assert len(classes) == len(codes) == len(messages) == 1, (label, results)
        assert classes <= {"NotRedirectedError", "RedirectError"}, (label, results)
    expected_classes = {
        "pipe": ("RedirectError", errno.ENOTSOCK),
        "listening": ("NotRedirectedError", errno.ENOENT),
        "unconnected": ("NotRedirectedError", errno.ENOENT),
        "unredirected client": ("NotRedirectedError", errno.ENOENT),
        "unredirected accepted": ("NotRedirectedError", errno.ENOENT),
        "udp": ("RedirectError", errno.ENOPROTOOPT),
        "closed": ("RedirectError", errno.EBADF),
        "-1": ("RedirectError", errno.EBADF),
    }
    assert {label: results[0][:2] for label, results in answers.items()} == expected_classes
    # The connecting side's conntrack entry names its peer: not a redirect.
    assert answers["unredirected client"][0][2] == (
        "[Errno 2] query_redirect_records: the connection was not redirected: "
        "SO_ORIGINAL_DST equals the peer address (the socket made the connection)"
    )
    assert answers["unredirected accepted"][1][2] == (
        "[Errno 2] query_redirect_context: the connection was not redirected: "
        "SO_ORIGINAL_DST equals the local address"
    )


# ---- Records: wrong sizes, types, foreign and corrupted, for both calls
# that take them.

CORRUPTIONS: list[tuple[object, str, str]] = [
    (b"", "ValueError", "records must be 1 to 65536 bytes, not 0"),
    (bytearray(), "ValueError", "records must be 1 to 65536 bytes, not 0"),
    (bytes(65537), "ValueError", "records must be 1 to 65536 bytes, not 65537"),
    (bytes(1 << 20), "ValueError", "records must be 1 to 65536 bytes, not 1048576"),
    (18, "TypeError", "records must be a bytes-like object, not int"),
    ([1, 2, 3], "TypeError", "records must be a bytes-like object, not list"),
    (
        memoryview(RECORD * 2)[::2],
        "TypeError",
        "records must be a C-contiguous bytes-like object, not memoryview",
    ),
    # A Windows record (what a WFP stack hands out) given to Linux.
    (
        bytes(range(256)) * 4,
        "ValueError",
        "records are not a wfpredirect netfilter record (no WFPR magic)",
    ),
    (bytes(65536), "ValueError", "records are not a wfpredirect netfilter record (no WFPR magic)"),
    (
        RECORD[:17],
        "ValueError",
        "records are too short to be a netfilter record (truncated or foreign)",
    ),
    (
        RECORD + b"\0",
        "ValueError",
        "records have the wrong length for their IP version (truncated or corrupt)",
    ),
    (
        RECORD[:4] + b"\x00" + RECORD[5:],
        "ValueError",
        "records use another version of the netfilter record format",
    ),
    (
        RECORD[:4] + b"\xff" + RECORD[5:],
        "ValueError",
        "records use another version of the netfilter record format",
    ),
    (
        RECORD[:5] + b"\x00" + RECORD[6:],
        "ValueError",
        "records name an IP version other than 4 or 6 (corrupt)",
    ),
    (
        RECORD[:6] + b"\x80" + RECORD[7:],
        "ValueError",
        "records have unknown flags set (corrupt)",
    ),
    (
        RECORD[:7] + b"\x01" + RECORD[8:],
        "ValueError",
        "records have unknown flags set (corrupt)",
    ),
    (
        RECORD[:5] + b"\x06" + RECORD[6:],
        "ValueError",
        "records have the wrong length for their IP version (truncated or corrupt)",
    ),
    (
        encode(("::1", 8080, 0, 0))[:37],
        "ValueError",
        "records have the wrong length for their IP version (truncated or corrupt)",
    ),
    (
        encode(("::1", 8080, 0, 0))[:5] + b"\x04" + encode(("::1", 8080, 0, 0))[6:],
        "ValueError",
        "records have the wrong length for their IP version (truncated or corrupt)",
    ),
]


@pytest.mark.parametrize(("records", "kind", "message"), CORRUPTIONS)
def test_bad_records_for_both_calls(records: object, kind: str, message: str) -> None:
    with (
        socket.socket() as fresh,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender,
    ):
        answers = [
            outcome(lambda: wfpredirect.set_redirect_records(fresh, records)),  # type: ignore[arg-type]
            outcome(lambda: wfpredirect.sendmsg_redirect(sender, b"x", DESTINATION, records)),  # type: ignore[arg-type]
        ]
        mark = fresh.getsockopt(socket.SOL_SOCKET, 36)
    assert answers == [
        (kind, None, f"set_redirect_records: {message}"),
        (kind, None, f"sendmsg_redirect: {message}"),
    ]
    assert mark == 0  # nothing was set


def test_valid_records_in_any_buffer_type() -> None:
    """A record is any C-contiguous bytes-like object: RedirectRecords,
    bytearray, memoryview slices, array, read-only mmap."""
    with mmap.mmap(-1, len(RECORD)) as writable:
        writable[:] = RECORD
        holders: list[object] = [
            wfpredirect.RedirectRecords(RECORD),
            bytearray(RECORD),
            memoryview(b"pad" + RECORD)[3:],
            array.array("B", RECORD),
            writable,
        ]
        marks = []
        for holder in holders:
            with socket.socket() as fresh:
                try:
                    wfpredirect.set_redirect_records(fresh, holder)  # type: ignore[arg-type]
                except wfpredirect.RedirectPermissionError:
                    pytest.skip("set_redirect_records needs CAP_NET_RAW or CAP_NET_ADMIN")
                marks.append(fresh.getsockopt(socket.SOL_SOCKET, 36))
    assert marks == [0x50] * len(holders)


def test_set_redirect_records_refuses_a_socket_records_cannot_go_on() -> None:
    """Records go on a new IPv4 or IPv6 socket before it connects. Anything
    else is refused before SO_MARK is touched, naming the state: a connected
    socket (its connection was made without them), a listening one, AF_UNIX."""

    def body() -> dict[str, object]:
        records = encode(("127.0.0.2", 8080), mark=0x30)
        listener = socket.create_server(("127.0.0.1", 0))
        connected = socket.create_connection(listener.getsockname(), timeout=5)
        accepted, _ = listener.accept()
        local, _ = socket.socketpair()
        answers = {}
        for name, sock in (
            ("connected", connected),
            ("accepted", accepted),
            ("listening", listener),
            ("AF_UNIX", local),
        ):
            answers[name] = outcome(partial(wfpredirect.set_redirect_records, sock, records))
            assert sock.getsockopt(socket.SOL_SOCKET, 36) == 0  # SO_MARK untouched
        for sock in (connected, accepted, listener, local):
            sock.close()
        return answers

    connected = (
        "RedirectError",
        errno.EISCONN,
        "[Errno 106] set_redirect_records: the socket is already connected: set records before "
        "connect (this connection was made without them) (Transport endpoint is already connected)",
    )
    assert run_in_netns(body) == {
        "connected": connected,
        "accepted": connected,
        "listening": (
            "RedirectError",
            errno.EINVAL,
            "[Errno 22] set_redirect_records: the socket is listening: records go on the "
            "proxy's new upstream socket, before it connects (Invalid argument)",
        ),
        "AF_UNIX": (
            "RedirectError",
            errno.EAFNOSUPPORT,
            "[Errno 97] set_redirect_records: not an IPv4 or IPv6 socket: records go on the "
            "proxy's IPv4 or IPv6 upstream socket (Address family not supported by protocol)",
        ),
    }
