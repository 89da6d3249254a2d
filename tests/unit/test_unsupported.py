"""The "unsupported" backend (macOS and every other platform): the package
imports and every operation raises UnsupportedError."""

from __future__ import annotations

import errno
import socket

import pytest

import wfpredirect

pytestmark = pytest.mark.skipif(
    wfpredirect.BACKEND != "unsupported", reason="this platform has a backend"
)


@pytest.mark.parametrize(
    "call",
    [
        wfpredirect.query_redirect_records,
        wfpredirect.query_redirect_context,
        wfpredirect.original_destination,
        lambda s: wfpredirect.query_redirect_records_into(s, bytearray(64)),
        lambda s: wfpredirect.query_redirect_context_into(s, bytearray(64)),
        lambda s: wfpredirect.set_redirect_records(s, b"records"),
        wfpredirect.enable_datagram_records,
        lambda s: wfpredirect.recvmsg_redirect(s, 64),
        lambda s: wfpredirect.recvmsg_redirect_into(s, bytearray(64)),
        lambda s: wfpredirect.sendmsg_redirect(s, b"data", ("127.0.0.1", 9)),
        lambda s: wfpredirect.sendmsg_redirect(s, b"data", ("127.0.0.1", 9), b"records"),
        lambda s: wfpredirect.datagram_reply_socket(("127.0.0.1", 0)),
    ],
)
def test_every_operation_is_unsupported(call: object) -> None:
    with socket.socket() as sock, pytest.raises(wfpredirect.UnsupportedError) as caught:
        call(sock)  # type: ignore[operator]
    assert caught.value.errno == errno.EOPNOTSUPP
    assert "connection redirection is supported on Windows and Linux only" in str(caught.value)
