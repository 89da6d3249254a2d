"""The datagram calls' errors on Linux: wrong sockets, bad arguments,
timeouts, non-blocking sockets, signals, guard bytes around caller buffers.
Loopback of this host only; nothing here needs a redirect."""

from __future__ import annotations

import errno
import os
import signal
import socket
import threading

import pytest

import wfpredirect
from record_format import encode


def test_enable_on_a_tcp_socket() -> None:
    with socket.socket() as tcp, pytest.raises(wfpredirect.RedirectError) as caught:
        wfpredirect.enable_datagram_records(tcp)
    assert caught.value.errno == errno.ENOPROTOOPT
    assert str(caught.value) == (
        "[Errno 92] enable_datagram_records: getsockopt(SO_PROTOCOL): not a UDP socket "
        "(Protocol not available)"
    )


def test_enable_on_bad_handles() -> None:
    closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closed.close()
    read_end, write_end = os.pipe()
    try:
        answers = []
        for handle in (-1, closed, read_end):
            with pytest.raises(wfpredirect.RedirectError) as caught:
                wfpredirect.enable_datagram_records(handle)
            answers.append((caught.value.errno, str(caught.value)))
        with pytest.raises(TypeError) as wrong_type:
            wfpredirect.enable_datagram_records(None)  # type: ignore[arg-type]
    finally:
        os.close(read_end)
        os.close(write_end)
    bad_descriptor = (
        errno.EBADF,
        "[Errno 9] enable_datagram_records: getsockopt(SO_PROTOCOL) (Bad file descriptor)",
    )
    assert answers == [
        bad_descriptor,
        bad_descriptor,
        (
            errno.ENOTSOCK,
            "[Errno 88] enable_datagram_records: getsockopt(SO_PROTOCOL) "
            "(Socket operation on non-socket)",
        ),
    ]
    assert str(wrong_type.value).startswith("enable_datagram_records: ")


def test_receive_a_plain_datagram(datagram_pair: tuple[socket.socket, socket.socket]) -> None:
    receiver, sender = datagram_pair
    sender.sendto(b"plain", receiver.getsockname())
    datagram = wfpredirect.recvmsg_redirect(receiver, 100)
    assert datagram == wfpredirect.Datagram(b"plain", sender.getsockname(), None, None, None)
    assert type(datagram) is wfpredirect.Datagram


def test_receive_cuts_a_long_datagram_as_recvfrom_does(
    datagram_pair: tuple[socket.socket, socket.socket],
) -> None:
    receiver, sender = datagram_pair
    sender.sendto(b"0123456789", receiver.getsockname())
    sender.sendto(b"next", receiver.getsockname())
    assert wfpredirect.recvmsg_redirect(receiver, 4).data == b"0123"
    assert wfpredirect.recvmsg_redirect(receiver, 0).data == b""


def test_receive_into_writes_only_inside_the_buffer(
    datagram_pair: tuple[socket.socket, socket.socket],
) -> None:
    receiver, sender = datagram_pair
    sender.sendto(b"abcdefghijklmnopqrst", receiver.getsockname())
    storage = bytearray(b"\xcc" * 12)
    nbytes, address, records, context, destination = wfpredirect.recvmsg_redirect_into(
        receiver, memoryview(storage)[2:10]
    )
    assert (nbytes, address, records, context, destination) == (
        8,
        sender.getsockname(),
        None,
        None,
        None,
    )
    assert storage == b"\xcc\xccabcdefgh\xcc\xcc"


def test_receive_argument_errors(datagram_pair: tuple[socket.socket, socket.socket]) -> None:
    receiver, _ = datagram_pair
    with pytest.raises(ValueError, match=r"^recvmsg_redirect: negative buffer size$"):
        wfpredirect.recvmsg_redirect(receiver, -1)
    with pytest.raises(TypeError):
        wfpredirect.recvmsg_redirect(receiver, "10")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^recvmsg_redirect_into: the buffer must be writable"):
        wfpredirect.recvmsg_redirect_into(receiver, b"read-only")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^recvmsg_redirect: "):
        wfpredirect.recvmsg_redirect("socket", 10)  # type: ignore[arg-type]


def test_timeout_and_non_blocking(datagram_pair: tuple[socket.socket, socket.socket]) -> None:
    receiver, _ = datagram_pair
    receiver.settimeout(0.05)
    with pytest.raises(TimeoutError) as timed_out:
        wfpredirect.recvmsg_redirect(receiver, 10)
    assert str(timed_out.value) == "[Errno 110] recvmsg_redirect: timed out"
    receiver.setblocking(False)
    with pytest.raises(BlockingIOError) as empty:
        wfpredirect.recvmsg_redirect_into(receiver, bytearray(10))
    assert empty.value.errno == errno.EAGAIN
    assert str(empty.value) == (
        "[Errno 11] recvmsg_redirect_into: recvmsg (Resource temporarily unavailable)"
    )


def test_signals_while_blocked(datagram_pair: tuple[socket.socket, socket.socket]) -> None:
    """A handler that returns lets the call go on (PEP 475); one that raises
    ends it with its exception."""
    receiver, sender = datagram_pair
    receiver.setblocking(True)
    handled: list[int] = []

    class Stop(Exception):
        pass

    def note(signum: int, _frame: object) -> None:
        handled.append(signum)

    def stop(_signum: int, _frame: object) -> None:
        raise Stop

    previous = signal.signal(signal.SIGALRM, note)
    try:
        # The datagram is sent only after the handler ran.
        def send_after_signal() -> None:
            while not handled:
                threading.Event().wait(0.01)
            sender.sendto(b"after", receiver.getsockname())

        thread = threading.Thread(target=send_after_signal)
        thread.start()
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        datagram = wfpredirect.recvmsg_redirect(receiver, 10)
        thread.join()
        signal.signal(signal.SIGALRM, stop)
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with pytest.raises(Stop):
            wfpredirect.recvmsg_redirect(receiver, 10)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert (handled, datagram.data) == ([signal.SIGALRM], b"after")


def test_send_plain_and_with_a_record(datagram_pair: tuple[socket.socket, socket.socket]) -> None:
    receiver, sender = datagram_pair
    destination = receiver.getsockname()
    assert wfpredirect.sendmsg_redirect(sender, b"one", destination) == 3
    record = encode(("127.0.0.3", 5353), mark=0x20)
    assert wfpredirect.sendmsg_redirect(sender, bytearray(b"two"), destination, record) == 3
    assert (
        wfpredirect.sendmsg_redirect(
            sender, memoryview(b"three"), destination, wfpredirect.RedirectRecords(record)
        )
        == 5
    )
    assert [receiver.recv(10) for _ in range(3)] == [b"one", b"two", b"three"]


@pytest.mark.parametrize(
    ("address", "records", "error", "message"),
    [
        (
            "127.0.0.1",
            None,
            TypeError,
            "sendmsg_redirect: the address must be a (host, port) or (host, port, flowinfo, "
            "scope_id) tuple, not str",
        ),
        (
            ("localhost", 53),
            None,
            ValueError,
            "sendmsg_redirect: the address host must be a numeric IPv4 or IPv6 address (resolve "
            "names with socket.getaddrinfo first), not 'localhost'",
        ),
        ((b"127.0.0.1", 53), None, TypeError, "sendmsg_redirect: the address host must be a str"),
        (
            ("127.0.0.1", 65536),
            None,
            OverflowError,
            "sendmsg_redirect: the address port must be 0-65535",
        ),
        (("127.0.0.1", "53"), None, TypeError, "sendmsg_redirect: the address port must be an int"),
        (
            ("127.0.0.1", 53, 0, 0),
            None,
            ValueError,
            "sendmsg_redirect: a (host, port, flowinfo, scope_id) address needs an IPv6 host",
        ),
        (
            ("::1", 53, 1 << 20, 0),
            None,
            OverflowError,
            "sendmsg_redirect: the address flowinfo must be 0-1048575",
        ),
        (
            ("127.0.0.1", 53),
            b"",
            ValueError,
            "sendmsg_redirect: records must be 1 to 65536 bytes, not 0",
        ),
        (
            ("127.0.0.1", 53),
            bytes(65537),
            ValueError,
            "sendmsg_redirect: records must be 1 to 65536 bytes, not 65537",
        ),
        (("127.0.0.1", 53), "records", TypeError, "sendmsg_redirect: "),
        (("127.0.0.1", 53), b"not a record", ValueError, "sendmsg_redirect: "),
    ],
)
def test_send_argument_errors(
    datagram_pair: tuple[socket.socket, socket.socket],
    address: object,
    records: object,
    error: type[Exception],
    message: str,
) -> None:
    _, sender = datagram_pair
    with pytest.raises(error) as caught:
        wfpredirect.sendmsg_redirect(sender, b"x", address, records)  # type: ignore[arg-type]
    assert str(caught.value).startswith(message)
    if message.endswith(": "):
        assert len(str(caught.value)) > len(message)


def test_foreign_record_is_named() -> None:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender,
        pytest.raises(ValueError) as caught,
    ):
        wfpredirect.sendmsg_redirect(sender, b"x", ("127.0.0.1", 9), b"not a record")
    with pytest.raises(ValueError) as reference:
        wfpredirect.set_redirect_records(socket.socket(), b"not a record")
    # The same record check as set_redirect_records, named for this call.
    assert str(caught.value) == str(reference.value).replace(
        "set_redirect_records", "sendmsg_redirect"
    )


def test_reply_socket_binds_the_original_destination() -> None:
    first = wfpredirect.datagram_reply_socket(("127.0.0.1", 0))
    port = first.getsockname()[1]
    second = wfpredirect.datagram_reply_socket(("127.0.0.1", port), peer=("127.0.0.1", 9))
    try:
        assert (first.type, second.getsockname(), second.getpeername()) == (
            socket.SOCK_DGRAM,
            ("127.0.0.1", port),
            ("127.0.0.1", 9),
        )
        assert first.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1
        assert first.getsockopt(socket.SOL_IP, 19) == 1  # IP_TRANSPARENT
    finally:
        first.close()
        second.close()


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        (("x",), TypeError, "original_destination must be a (host, port) tuple, not 'x'"),
        ((("127.0.0.1",),), TypeError, "original_destination must be a (host, port) tuple, "
         "not ('127.0.0.1',)"),
        ((("localhost", 53),), ValueError, "original_destination must be an IP address and a "
         "port (0 to 65535), not ('localhost', 53)"),
        ((("127.0.0.1", 70000),), ValueError, "original_destination must be an IP address and "
         "a port (0 to 65535), not ('127.0.0.1', 70000)"),
        ((("127.0.0.1", 0), "peer"), TypeError, "peer must be a (host, port) tuple, not 'peer'"),
    ],
)  # fmt: skip
def test_reply_socket_names_a_bad_address(
    arguments: tuple[object, ...], error: type[Exception], message: str
) -> None:
    *destination, peer = arguments if len(arguments) == 2 else (*arguments, None)
    with pytest.raises(error) as caught:
        wfpredirect.datagram_reply_socket(*destination, peer=peer)  # type: ignore[arg-type]
    assert str(caught.value) == f"datagram_reply_socket: {message}"


def test_reply_socket_bind_failure_is_a_redirect_error_naming_the_call() -> None:
    """An origin's socket bound without SO_REUSEADDR takes the address: the
    reply socket cannot bind it, and says which call failed, with its code."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as origin:
        origin.bind(("127.0.0.1", 0))
        address = origin.getsockname()
        with pytest.raises(wfpredirect.RedirectError) as caught:
            wfpredirect.datagram_reply_socket(address)
    assert (caught.value.errno, str(caught.value)) == (
        errno.EADDRINUSE,
        f"[Errno {errno.EADDRINUSE}] datagram_reply_socket: bind({address!r}): "
        "Address already in use",
    )
    assert isinstance(caught.value.__cause__, OSError)


def test_recvmsg_redirect_names_itself_for_a_size_too_large() -> None:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock,
        pytest.raises(OverflowError) as caught,
    ):
        wfpredirect.recvmsg_redirect(sock, 2**63)
    assert str(caught.value) == "recvmsg_redirect: bufsize is too large"
