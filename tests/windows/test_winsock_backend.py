"""The winsock backend on real Windows sockets (a GitHub Windows runner).

Without a WFP callout driver redirecting to us, only the error paths can be
exercised: an unredirected connection must give NotRedirectedError or
UnsupportedError (the transport may not support the IOCTL), never a crash or
another class, with the raw code kept in `winerror`.
"""

from __future__ import annotations

import errno
import socket
import sys
from collections.abc import Iterator

import pytest

import wfpredirect

pytestmark = pytest.mark.skipif(sys.platform != "win32", reason="needs real Windows sockets")

# Winsock and WFP codes an unredirected connection may answer with.
NOT_REDIRECTED_OR_UNSUPPORTED = {10022, 0x80320008, 1168, 10045, 10057}


@pytest.fixture()
def connected_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname(), timeout=5)
    accepted, _ = listener.accept()
    listener.close()
    yield accepted, client
    accepted.close()
    client.close()


@pytest.mark.parametrize(
    "query",
    ["query_redirect_records", "query_redirect_context", "original_destination"],
)
def test_unredirected_connection(
    connected_pair: tuple[socket.socket, socket.socket], query: str
) -> None:
    accepted, _ = connected_pair
    with pytest.raises((wfpredirect.NotRedirectedError, wfpredirect.UnsupportedError)) as caught:
        getattr(wfpredirect, query)(accepted)
    assert caught.value.winerror in NOT_REDIRECTED_OR_UNSUPPORTED
    assert str(caught.value).startswith(f"[WinError {caught.value.winerror}] {query}: ")


def test_into_on_unredirected_connection(
    connected_pair: tuple[socket.socket, socket.socket],
) -> None:
    accepted, _ = connected_pair
    buffer = bytearray(b"\xaa" * 64)
    with pytest.raises((wfpredirect.NotRedirectedError, wfpredirect.UnsupportedError)):
        wfpredirect.query_redirect_records_into(accepted, memoryview(buffer)[8:56])
    assert buffer == bytearray(b"\xaa" * 64)


def test_no_transparent_bind_for_a_datagram_reply_socket() -> None:
    """datagram_reply_socket is Linux's (IP_TRANSPARENT): here it says what
    to do instead, with WSAEOPNOTSUPP."""
    with pytest.raises(wfpredirect.UnsupportedError) as caught:
        wfpredirect.datagram_reply_socket(("127.0.0.1", 0))
    assert (caught.value.winerror, str(caught.value)) == (
        10045,
        "[WinError 10045] datagram_reply_socket: Windows has no transparent bind "
        "(IP_TRANSPARENT): answer a redirected flow from the socket that received it",
    )


def test_closed_socket_is_a_redirect_error() -> None:
    closed = socket.socket()
    closed.close()
    with pytest.raises(wfpredirect.RedirectError) as caught:
        wfpredirect.query_redirect_records(closed)
    assert caught.value.winerror in {10038, 10045}  # WSAENOTSOCK (Wine: WSAEOPNOTSUPP)


def test_redirect_socket_properties_are_none(
    connected_pair: tuple[socket.socket, socket.socket],
) -> None:
    accepted, _ = connected_pair
    with wfpredirect.RedirectSocket(fileno=accepted.detach()) as sock:
        try:
            destination = sock.original_destination
        except wfpredirect.UnsupportedError as error:
            assert error.winerror == 10045  # the transport has no WFP IOCTLs
            return
        assert destination is None


def test_no_transparent_bind_for_an_upstream() -> None:
    """open_upstream(transparent=True), which --keep-client-address uses,
    is Linux's: WSAEOPNOTSUPP before anything connects."""
    import asyncio

    from wfpredirect.aio import open_upstream

    redirect = wfpredirect.RedirectInfo(None, None, ("127.0.0.1", 9))

    async def connect() -> None:
        await open_upstream(redirect, local_addr=("127.0.0.1", 0), transparent=True)

    with pytest.raises(wfpredirect.UnsupportedError) as caught:
        asyncio.run(connect())
    assert (caught.value.winerror, str(caught.value)) == (
        10045,
        "[WinError 10045] open_upstream: transparent=True is Linux's (IP_TRANSPARENT): "
        "Windows cannot bind an upstream connection to an address it does not have",
    )


def test_reset_on_close_sets_windows_linger_struct(
    connected_pair: tuple[socket.socket, socket.socket],
) -> None:
    """Windows' struct linger (two u_shorts) on, with a zero timeout: the
    abortive close by which the proxy passes a broken connection on. (Wine
    keeps the option but closes gracefully: docs/design.md, "What Wine 8
    (Debian's wine64) answers"; on Linux the reset itself is tested through
    the proxy.) A socket already closed is left alone."""
    from wfpredirect._backend import backend

    accepted, _ = connected_pair
    assert accepted.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 4) == b"\x00\x00\x00\x00"
    backend.reset_on_close(accepted)
    assert accepted.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 4) == b"\x01\x00\x00\x00"
    accepted.close()
    backend.reset_on_close(accepted)  # closed: nothing, no error


def test_a_capture_is_refused_with_where_to_read_why() -> None:
    """Nothing to install on Windows without a callout driver (docs/windows.md)."""
    capture = wfpredirect.Capture("tcp:127.0.0.2:8080", tcp_port=15001)
    with pytest.raises(wfpredirect.UnsupportedError) as refused:
        capture.install()
    assert refused.value.errno == errno.EOPNOTSUPP
    assert refused.value.strerror == (
        "a capture installs nftables rules: Linux only (Windows has nothing to install "
        "without a callout driver: see docs/windows.md)"
    )
    assert not capture.installed
