"""query_redirect_info's one native pass (_core._query_connection_state) on
the real kernel: the same answers as the single queries for REDIRECT
(IPv4, IPv6, dual-stack), TPROXY, a connection that was not redirected, one
carrying the loop mark, and the error cases; and, under strace, exactly the
system calls each connection takes."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

import wfpredirect
from netns import run_in_netns
from rules import LOOPING_RULES
from servers import socket_mark
from support import NEUTRAL_DIRECTORY, require_tool
from test_original_destination import IPV4_RULES, IPV6_RULES, listen
from test_tproxy import TPROXY_RULES
from wfpredirect import NotRedirectedError, _core

PROBE = Path(__file__).resolve().parent / "syscall_probe.py"
FWMARK_ACCEPT = {"net.ipv4.tcp_fwmark_accept": "1"}


def route_tproxy() -> None:
    """TPROXY_RULES' routing: marked packets are delivered locally."""
    subprocess.run(["ip", "rule", "add", "fwmark", "1", "lookup", "100"], check=True)
    subprocess.run(
        ["ip", "route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", "100"], check=True
    )


def single_calls(sock: socket.socket) -> tuple[object, object, object]:
    """(records, context, original_destination) from the three single
    queries, None where one answers NotRedirectedError."""

    def value(query: Callable[[socket.socket], object]) -> object:
        try:
            return query(sock)
        except NotRedirectedError:
            return None

    return (
        value(wfpredirect.query_redirect_records),
        value(wfpredirect.query_redirect_context),
        value(wfpredirect.original_destination),
    )


def both(sock: socket.socket) -> dict[str, object]:
    """The fused answer beside what the single calls and the socket say."""
    info, peer, mark, error = _core._query_connection_state(sock)
    return {
        "info type": type(info).__name__,
        "fused": tuple(info),
        "single": single_calls(sock),
        "records type": type(info.records).__name__,
        "peer": peer,
        "mark": mark,
        "socket mark": socket_mark(sock),
        "error": error,
    }


def client_port(client: socket.socket) -> int:
    return int(client.getsockname()[1])


def test_redirect_ipv4() -> None:
    def body() -> tuple[dict[str, object], int]:
        listener = listen(socket.AF_INET, ("127.0.0.1", 15001))
        client = socket.create_connection(("127.0.0.2", 8080), timeout=5)
        conn, _ = listener.accept()
        return both(conn), client_port(client)

    result, port = run_in_netns(body, nft_rules=IPV4_RULES)
    records = result["single"][0]  # type: ignore[index]
    assert records is not None
    assert result == {
        "info type": "RedirectInfo",
        "fused": (records, None, ("127.0.0.2", 8080)),
        "single": (records, None, ("127.0.0.2", 8080)),
        "records type": "RedirectRecords",
        "peer": ("127.0.0.1", port),
        "mark": 0,
        "socket mark": 0,
        "error": None,
    }


def test_redirect_ipv6() -> None:
    def body() -> tuple[dict[str, object], int]:
        listener = listen(socket.AF_INET6, ("::1", 15001))
        client = socket.create_connection(("::1", 8080), timeout=5)
        conn, _ = listener.accept()
        return both(conn), client_port(client)

    result, port = run_in_netns(body, nft_rules=IPV6_RULES)
    records = result["single"][0]  # type: ignore[index]
    assert records is not None
    assert result == {
        "info type": "RedirectInfo",
        "fused": (records, None, ("::1", 8080, 0, 0)),
        "single": (records, None, ("::1", 8080, 0, 0)),
        "records type": "RedirectRecords",
        "peer": ("::1", port, 0, 0),
        "mark": 0,
        "socket mark": 0,
        "error": None,
    }


def test_redirect_ipv4_on_a_dual_stack_listener() -> None:
    """The peer comes back as IPv4, as the original destination does (the
    socket module would say ::ffff:127.0.0.1)."""

    def body() -> tuple[dict[str, object], int, object]:
        listener = listen(socket.AF_INET6, ("::", 15001), dual_stack=True)
        client = socket.create_connection(("127.0.0.2", 8080), timeout=5)
        conn, _ = listener.accept()
        return both(conn), client_port(client), conn.getpeername()

    result, port, socket_peer = run_in_netns(body, nft_rules=IPV4_RULES)
    records = result["single"][0]  # type: ignore[index]
    assert records is not None
    assert socket_peer == ("::ffff:127.0.0.1", port, 0, 0)
    assert result == {
        "info type": "RedirectInfo",
        "fused": (records, None, ("127.0.0.2", 8080)),
        "single": (records, None, ("127.0.0.2", 8080)),
        "records type": "RedirectRecords",
        "peer": ("127.0.0.1", port),
        "mark": 0,
        "socket mark": 0,
        "error": None,
    }


def test_tproxy_and_its_listener() -> None:
    def body() -> tuple[dict[str, object], int, dict[str, object], dict[str, object]]:
        route_tproxy()
        listener = listen(socket.AF_INET, ("0.0.0.0", 15001), transparent=True)
        client = socket.create_connection(("127.0.0.2", 8080), timeout=5)
        conn, _ = listener.accept()
        direct_client = socket.create_connection(("127.0.0.1", 15001), timeout=5)
        direct, _ = listener.accept()
        answers = both(conn), client_port(client), both(direct), both(listener)
        direct_client.close()
        return answers

    result, port, direct, listening = run_in_netns(body, nft_rules=TPROXY_RULES)
    records = result["single"][0]  # type: ignore[index]
    assert records is not None
    assert result == {
        "info type": "RedirectInfo",
        "fused": (records, None, ("127.0.0.2", 8080)),
        "single": (records, None, ("127.0.0.2", 8080)),
        "records type": "RedirectRecords",
        "peer": ("127.0.0.1", port),
        "mark": 0,
        "socket mark": 0,
        "error": None,
    }
    # On a transparent listener every connection looks redirected: to the
    # listener's own address here (query_redirect_info's listener rule
    # makes it not redirected).
    direct_records = direct["single"][0]  # type: ignore[index]
    assert direct["fused"] == direct["single"] == (direct_records, None, ("127.0.0.1", 15001))
    assert listening == {
        "info type": "RedirectInfo",
        "fused": (None, None, None),
        "single": (None, None, None),
        "records type": "NoneType",
        "peer": None,
        "mark": 0,
        "socket mark": 0,
        "error": None,
    }


def test_not_redirected_and_unconnected() -> None:
    def body() -> tuple[dict[str, object], int, dict[str, object]]:
        listener = listen(socket.AF_INET, ("127.0.0.1", 15001))
        client = socket.create_connection(("127.0.0.1", 15001), timeout=5)
        conn, _ = listener.accept()
        with socket.socket() as unconnected:
            return both(conn), client_port(client), both(unconnected)

    result, port, unconnected = run_in_netns(body, nft_rules=IPV4_RULES)
    assert result == {
        "info type": "RedirectInfo",
        "fused": (None, None, None),
        "single": (None, None, None),
        "records type": "NoneType",
        "peer": ("127.0.0.1", port),
        "mark": 0,
        "socket mark": 0,
        "error": None,
    }
    assert unconnected == {
        "info type": "RedirectInfo",
        "fused": (None, None, None),
        "single": (None, None, None),
        "records type": "NoneType",
        "peer": None,
        "mark": 0,
        "socket mark": 0,
        "error": None,
    }


def test_a_connection_carrying_the_loop_mark() -> None:
    """tcp_fwmark_accept=1: the accepted socket has its SYN's mark, which
    the record carries (masked) and the loop check reads."""

    def body() -> tuple[dict[str, object], int, str]:
        listener = listen(socket.AF_INET, ("127.0.0.1", 15001))
        marked = socket.socket()
        marked.setsockopt(socket.SOL_SOCKET, 36, wfpredirect.LOOP_MARK | 0x1)  # SO_MARK
        marked.connect(("127.0.0.2", 8080))
        conn, _ = listener.accept()
        try:
            wfpredirect.query_redirect_info(conn)
            raised = "nothing"
        except wfpredirect.RedirectLoopError as error:
            raised = type(error).__name__
        return both(conn), client_port(marked), raised

    result, port, raised = run_in_netns(body, nft_rules=LOOPING_RULES, sysctls=FWMARK_ACCEPT)
    records = result["single"][0]  # type: ignore[index]
    assert records is not None
    assert raised == "RedirectLoopError"
    assert result == {
        "info type": "RedirectInfo",
        "fused": (records, None, ("127.0.0.2", 8080)),
        "single": (records, None, ("127.0.0.2", 8080)),
        "records type": "RedirectRecords",
        "peer": ("127.0.0.1", port),
        "mark": 0x41,
        "socket mark": 0x41,
        "error": None,
    }


def test_an_error_is_the_single_query_s_own() -> None:
    """A failure comes back as the exception the single query that reports
    it raises (here original_destination on a UDP socket), for the caller to
    raise after its loop check; the peer and mark are read all the same.
    query_redirect_info raises the same, named after itself."""

    def body() -> tuple[object, ...]:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            state = _core._query_connection_state(udp)
            try:
                wfpredirect.original_destination(udp)
            except wfpredirect.RedirectError as error:
                single = (type(error).__name__, error.errno, str(error))
            try:
                wfpredirect.query_redirect_info(udp)
            except wfpredirect.RedirectError as error:
                info = (type(error).__name__, error.errno, str(error))
        error = state[3]
        assert isinstance(error, OSError)
        return (
            (*state[0], *state[1:3]),
            (type(error).__name__, error.errno, str(error)),
            single,
            info,
        )

    pieces, fused, single, info = run_in_netns(body)
    assert pieces == (None, None, None, None, 0)
    assert fused == single
    assert fused == (
        "RedirectError",
        92,
        "[Errno 92] original_destination: getsockopt(SO_ORIGINAL_DST): not a TCP socket "
        "(Protocol not available)",
    )
    # The public call names itself: its caller made no single query.
    assert info == (
        fused[0],
        fused[1],
        fused[2].replace("original_destination", "query_redirect_info"),
    )


def test_a_bad_socket_is_a_type_error_naming_query_redirect_info() -> None:
    with pytest.raises(TypeError) as caught:
        wfpredirect.query_redirect_info("not a socket")  # type: ignore[arg-type]
    assert str(caught.value).startswith(
        "query_redirect_info: sock must be a socket or an integer handle"
    )


# ---- the system calls, under strace -------------------------------------------

CALL = re.compile(r"^(\w+)\((\d+)(?:, (\w+), (\w+|0x[0-9a-f]+))?")
#: strace has no name for SO_ORIGINAL_DST (80) at SOL_IP or SOL_IPV6.
UNNAMED = {"0x50": "SO_ORIGINAL_DST"}


def traced_calls(scenario: str, rules: str, upstream: str = "public") -> list[tuple[str, ...]]:
    """The socket calls syscall_probe.py makes for one connection of
    `scenario`, with the records on a caller's socket (`upstream` "public":
    set_redirect_records) or on the library's own upstream ("library"):
    (call, "accepted" or "upstream"[, level, option]) each."""
    strace = require_tool("strace")

    def body() -> tuple[str, str]:
        if scenario == "tproxy":
            route_tproxy()
        with tempfile.TemporaryDirectory(prefix="wfpredirect-strace-") as scratch:
            trace = os.path.join(scratch, "trace")
            result = subprocess.run(
                [
                    strace,
                    "-qq",
                    "-e",
                    "trace=getsockname,getpeername,getsockopt,setsockopt",
                    "-o",
                    trace,
                    sys.executable,
                    str(PROBE),
                    scenario,
                    upstream,
                ],
                capture_output=True,
                text=True,
                check=True,
                cwd=NEUTRAL_DIRECTORY,
                timeout=60,
            )
            with open(trace) as lines:
                return result.stdout, lines.read()

    printed, trace = run_in_netns(body, nft_rules=rules)
    accepted, upstream, marker = printed.split()
    roles = {accepted: "accepted", upstream: "upstream", marker: "marker"}
    calls = []
    for line in trace.splitlines():
        found = CALL.match(line)
        if found is None:
            continue
        call, fd, level, option = found.groups()
        entry = (call, roles.get(fd, fd))
        if level is not None:
            entry += (level, UNNAMED.get(option, option))
        calls.append(entry)
    begin = calls.index(("getsockname", "marker"))
    end = calls.index(("getsockname", "marker"), begin + 1)
    return calls[begin + 1 : end]


REDIRECT_CALLS = [
    ("getsockname", "accepted"),
    ("getsockopt", "accepted", "SOL_IP", "SO_ORIGINAL_DST"),
    ("getpeername", "accepted"),
    ("getsockopt", "accepted", "SOL_SOCKET", "SO_MARK"),
    ("getsockopt", "upstream", "SOL_TCP", "TCP_INFO"),
    ("setsockopt", "upstream", "SOL_SOCKET", "SO_MARK"),
]


def test_a_redirected_connection_takes_four_reads_then_the_upstream_s_two() -> None:
    assert traced_calls("redirect-ipv4", IPV4_RULES) == REDIRECT_CALLS


def test_an_ipv6_redirected_connection_asks_ip6t_so_original_dst() -> None:
    assert traced_calls("redirect-ipv6", IPV6_RULES) == [
        ("getsockname", "accepted"),
        ("getsockopt", "accepted", "SOL_IPV6", "SO_ORIGINAL_DST"),
        *REDIRECT_CALLS[2:],
    ]


def test_tproxy_adds_ip_transparent_only() -> None:
    assert traced_calls("tproxy", TPROXY_RULES) == [
        ("getsockname", "accepted"),
        ("getsockopt", "accepted", "SOL_IP", "SO_ORIGINAL_DST"),
        ("getsockopt", "accepted", "SOL_IP", "IP_TRANSPARENT"),
        *REDIRECT_CALLS[2:],
    ]


#: The library's own upstream (create_upstream, open_upstream, the proxy) is
#: a socket it has just made, so it skips set_redirect_records' TCP_INFO check.
LIBRARY_UPSTREAM_CALLS = [call for call in REDIRECT_CALLS if call[-1] != "TCP_INFO"]


def test_the_library_s_own_upstream_takes_four_reads_then_one_call() -> None:
    assert LIBRARY_UPSTREAM_CALLS == [
        ("getsockname", "accepted"),
        ("getsockopt", "accepted", "SOL_IP", "SO_ORIGINAL_DST"),
        ("getpeername", "accepted"),
        ("getsockopt", "accepted", "SOL_SOCKET", "SO_MARK"),
        ("setsockopt", "upstream", "SOL_SOCKET", "SO_MARK"),
    ]
    assert traced_calls("redirect-ipv4", IPV4_RULES, "library") == LIBRARY_UPSTREAM_CALLS


def test_the_library_s_own_ipv6_upstream_skips_the_state_check_too() -> None:
    assert traced_calls("redirect-ipv6", IPV6_RULES, "library") == [
        ("getsockname", "accepted"),
        ("getsockopt", "accepted", "SOL_IPV6", "SO_ORIGINAL_DST"),
        *LIBRARY_UPSTREAM_CALLS[2:],
    ]


def test_a_connection_not_redirected_takes_five_reads_and_no_upstream_call() -> None:
    assert traced_calls("direct", IPV4_RULES) == [
        ("getsockname", "accepted"),
        ("getsockopt", "accepted", "SOL_IP", "SO_ORIGINAL_DST"),
        ("getsockopt", "accepted", "SOL_IP", "IP_TRANSPARENT"),
        ("getpeername", "accepted"),
        ("getsockopt", "accepted", "SOL_SOCKET", "SO_MARK"),
    ]
