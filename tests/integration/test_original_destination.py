"""The original destination of REDIRECTed connections, IPv4, IPv6 and
dual-stack, on the real kernel in a fresh network namespace."""

from __future__ import annotations

import socket

import pytest

import wfpredirect
from netns import run_in_netns
from rules import redirect
from servers import Origin, exchange
from wfpredirect import NotRedirectedError, RedirectSocket

IPV4_RULES = redirect("ip", "127.0.0.2", 8080, 15001)
IPV6_RULES = redirect("ip6", "::1", 8080, 15001)


def listen(
    family: int,
    address: tuple[object, ...],
    dual_stack: bool = False,
    transparent: bool = False,
) -> RedirectSocket:
    listener = RedirectSocket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if transparent:  # a TPROXY listener
        listener.setsockopt(socket.SOL_IP, socket.IP_TRANSPARENT, 1)
    if family == socket.AF_INET6:
        listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if dual_stack else 1)
    listener.bind(address)
    listener.listen()
    listener.settimeout(5)
    return listener


def test_ipv4_original_destination() -> None:
    def body() -> tuple[object, ...]:
        listener = listen(socket.AF_INET, ("127.0.0.1", 15001))
        client = socket.create_connection(("127.0.0.2", 8080), timeout=5)
        conn, _ = listener.accept()
        return (
            wfpredirect.original_destination(conn),
            wfpredirect.original_destination(conn.fileno()),
            conn.original_destination,
            conn.getsockname(),
            client.getpeername(),
        )

    native, by_fd, cached, local, client_peer = run_in_netns(body, nft_rules=IPV4_RULES)
    assert native == ("127.0.0.2", 8080)
    assert by_fd == ("127.0.0.2", 8080)
    assert cached == ("127.0.0.2", 8080)
    assert local == ("127.0.0.1", 15001)
    assert client_peer == ("127.0.0.2", 8080)


def test_ipv6_original_destination() -> None:
    def body() -> tuple[object, ...]:
        listener = listen(socket.AF_INET6, ("::1", 15001))
        socket.create_connection(("::1", 8080), timeout=5)
        conn, _ = listener.accept()
        return wfpredirect.original_destination(conn), conn.getsockname()

    original, local = run_in_netns(body, nft_rules=IPV6_RULES)
    assert original == ("::1", 8080, 0, 0)
    assert local == ("::1", 15001, 0, 0)


def test_dual_stack_listener_reports_each_family() -> None:
    def body() -> tuple[object, ...]:
        listener = listen(socket.AF_INET6, ("::", 15001), dual_stack=True)
        origin_v4 = Origin(("127.0.0.2", 8080))
        results = []
        for target in (("127.0.0.2", 8080), ("::1", 8080)):
            family = socket.AF_INET if ":" not in target[0] else socket.AF_INET6
            client = socket.socket(family, socket.SOCK_STREAM)
            client.settimeout(5)
            client.connect(target)
            conn, _ = listener.accept()
            results.append((conn.getsockname()[0], conn.original_destination))
        # The IPv4 connection's upstream is an AF_INET socket reaching the
        # IPv4 origin.
        client = socket.create_connection(("127.0.0.2", 8080), timeout=5)
        conn, _ = listener.accept()
        upstream = conn.create_upstream(timeout=5)
        answer = exchange(upstream, b"dual\n")
        client.close()
        return results, upstream.family, answer, len(origin_v4.arrivals)

    results, upstream_family, answer, arrivals = run_in_netns(
        body, nft_rules=IPV4_RULES + IPV6_RULES
    )
    assert results == [
        ("::ffff:127.0.0.1", ("127.0.0.2", 8080)),
        ("::1", ("::1", 8080, 0, 0)),
    ]
    assert upstream_family == socket.AF_INET
    assert answer == b"origin dual\n"
    assert arrivals == 1


def test_direct_connection_is_not_redirected() -> None:
    def body() -> tuple[object, ...]:
        listener = listen(socket.AF_INET, ("127.0.0.1", 15001))
        socket.create_connection(("127.0.0.1", 15001), timeout=5)
        conn, _ = listener.accept()
        errors = []
        for call in (
            wfpredirect.original_destination,
            wfpredirect.query_redirect_records,
            wfpredirect.query_redirect_context,
        ):
            try:
                call(conn)
            except NotRedirectedError as error:
                errors.append((error.errno, str(error)))
        return errors, conn.original_destination, conn.redirect_records, conn.redirect_context

    errors, destination, records, context = run_in_netns(body, nft_rules=IPV4_RULES)
    assert errors == [
        (
            2,
            f"[Errno 2] {name}: the connection was not redirected: "
            "SO_ORIGINAL_DST equals the local address",
        )
        for name in ("original_destination", "query_redirect_records", "query_redirect_context")
    ]
    assert (destination, records, context) == (None, None, None)


@pytest.mark.parametrize("family", ["ip", "ip6"])
def test_create_upstream_refuses_the_listener_address(family: str) -> None:
    def body() -> tuple[int, str]:
        host = "127.0.0.1" if family == "ip" else "::1"
        af = socket.AF_INET if family == "ip" else socket.AF_INET6
        listener = listen(af, (host, 15001))
        target = "127.0.0.2" if family == "ip" else "::1"
        socket.create_connection((target, 8080), timeout=5)
        conn, _ = listener.accept()
        try:
            conn.create_upstream((host, 15001))
        except wfpredirect.RedirectError as error:
            return error.errno, str(error)
        return 0, "connected"

    rules = IPV4_RULES if family == "ip" else IPV6_RULES
    code, message = run_in_netns(body, nft_rules=rules)
    host = "127.0.0.1" if family == "ip" else "::1"
    assert code == 40  # ELOOP
    assert message == (
        f"[Errno 40] create_upstream: refusing to connect to {host}:15001, "
        "the proxy's own listening address (a redirect loop)"
    )
