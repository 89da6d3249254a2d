"""docs/design.md's error table, row by row, on real sockets in a fresh network
namespace with a NAT rule loaded (so connection tracking runs)."""

from __future__ import annotations

import socket

import wfpredirect
from netns import run_in_netns
from test_original_destination import IPV4_RULES, listen

QUERIES = ("query_redirect_records", "query_redirect_context", "original_destination")


def outcomes(sock: object) -> list[tuple[str, int, str]]:
    """(class, errno, message) of each query on `sock`."""
    results = []
    for name in QUERIES:
        try:
            getattr(wfpredirect, name)(sock)
            results.append(("no error", 0, ""))
        except OSError as error:
            results.append((type(error).__name__, error.errno, str(error)))
    return results


def expect(cls: str, code: int, text: str) -> list[tuple[str, int, str]]:
    return [(cls, code, f"[Errno {code}] {name}: {text}") for name in QUERIES]


def test_bad_handles() -> None:
    closed = socket.socket()
    closed.close()
    assert outcomes(-1) == expect("RedirectError", 9, "getsockname (Bad file descriptor)")
    assert outcomes(closed) == expect("RedirectError", 9, "getsockname (Bad file descriptor)")


def test_socket_states() -> None:
    def body() -> dict[str, object]:
        listener = listen(socket.AF_INET, ("127.0.0.1", 15001))
        unconnected = socket.socket()
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.connect(("127.0.0.2", 8080))
        unix_a, _unix_b = socket.socketpair()
        return {
            "listening": outcomes(listener),
            "unconnected": outcomes(unconnected),
            "udp": outcomes(udp),
            "unix": outcomes(unix_a),
        }

    result = run_in_netns(body, nft_rules=IPV4_RULES)
    no_entry = (
        "the connection was not redirected: "
        "getsockopt(SO_ORIGINAL_DST): no NAT entry for the connection"
    )
    assert result["listening"] == expect("NotRedirectedError", 2, no_entry)
    assert result["unconnected"] == expect("NotRedirectedError", 2, no_entry)
    assert result["udp"] == expect(
        "RedirectError",
        92,
        "getsockopt(SO_ORIGINAL_DST): not a TCP socket (Protocol not available)",
    )
    assert result["unix"] == expect(
        "RedirectError", 92, "getsockname: not an IPv4 or IPv6 socket (Protocol not available)"
    )


def test_redirect_socket_properties_on_error_rows() -> None:
    def body() -> tuple[object, ...]:
        listener = listen(socket.AF_INET, ("127.0.0.1", 15001))
        udp = wfpredirect.RedirectSocket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            _ = udp.original_destination  # raises: not a TCP socket
        except wfpredirect.RedirectError as error:
            udp_error = (type(error).__name__, error.errno)
        return (
            listener.original_destination,
            listener.redirect_records,
            listener.redirect_context,
            udp_error,
        )

    assert run_in_netns(body, nft_rules=IPV4_RULES) == (None, None, None, ("RedirectError", 92))
