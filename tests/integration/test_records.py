"""Redirect records on the real kernel: the loop they prevent, chains of
proxies, the mark mask, the _into calls."""

from __future__ import annotations

import array
import socket
from collections.abc import Callable
from functools import partial

import wfpredirect
from netns import run_in_netns
from record_format import decode
from rules import redirect
from servers import Origin, exchange, socket_mark
from test_original_destination import IPV4_RULES, IPV6_RULES, listen
from wfpredirect import BufferTooSmallError, RedirectRecords

FWMARK_ACCEPT = {"net.ipv4.tcp_fwmark_accept": "1"}


def test_upstream_without_records_loops_and_with_records_reaches_origin() -> None:
    def body() -> dict[str, object]:
        origin = Origin(("127.0.0.2", 8080))
        listener = listen(socket.AF_INET, ("127.0.0.1", 15001))
        socket.create_connection(("127.0.0.2", 8080), timeout=5)
        conn, _ = listener.accept()
        destination = conn.original_destination

        # What a proxy without records does: the kernel sends it back in.
        plain = socket.create_connection(destination, timeout=5)
        looped, _ = listener.accept()
        looped_destination = looped.original_destination
        plain.close()

        upstream = conn.create_upstream(timeout=5)
        answer = exchange(upstream, b"hello\n")
        return {
            "destination": destination,
            "looped": looped_destination,
            "answer": answer,
            "upstream_mark": socket_mark(upstream),
            "origin": [(a.local, a.request) for a in origin.arrivals],
        }

    result = run_in_netns(body, nft_rules=IPV4_RULES)
    assert result == {
        "destination": ("127.0.0.2", 8080),
        "looped": ("127.0.0.2", 8080),
        "answer": b"origin hello\n",
        "upstream_mark": 0x40,
        "origin": [(("127.0.0.2", 8080), b"hello\n")],
    }


def test_ipv6_upstream_with_records_reaches_origin() -> None:
    def body() -> tuple[object, ...]:
        origin = Origin(("::1", 8080, 0, 0), family=socket.AF_INET6)
        listener = listen(socket.AF_INET6, ("::1", 15001))
        socket.create_connection(("::1", 8080), timeout=5)
        conn, _ = listener.accept()
        records = wfpredirect.query_redirect_records(conn)
        upstream = conn.create_upstream(timeout=5)
        return decode(records), exchange(upstream, b"six\n"), len(origin.arrivals)

    record, answer, arrivals = run_in_netns(body, nft_rules=IPV6_RULES)
    assert record == {"destination": ("::1", 8080, 0, 0), "mark": 0, "transparent": False}
    assert answer == b"origin six\n"
    assert arrivals == 1


def test_records_value_and_into_calls() -> None:
    def body() -> dict[str, object]:
        listener = listen(socket.AF_INET, ("127.0.0.1", 15001))
        socket.create_connection(("127.0.0.2", 8080), timeout=5)
        conn, _ = listener.accept()
        records = wfpredirect.query_redirect_records(conn)

        exact = bytearray(len(records))
        written_exact = wfpredirect.query_redirect_records_into(conn, exact)

        # A slice of a larger buffer: nothing written outside it.
        guarded = bytearray(b"\xaa" * 64)
        window = memoryview(guarded)[8:40]
        written_window = wfpredirect.query_redirect_records_into(conn, window)

        typed = array.array("I", [0xDEADBEEF] * 8)
        written_typed = wfpredirect.query_redirect_records_into(conn, typed)

        small = bytearray(b"\x55" * 17)
        try:
            wfpredirect.query_redirect_records_into(conn, small)
        except BufferTooSmallError as error:
            too_small = (error.required, error.errno, str(error), bytes(small))

        empty = bytearray()
        try:
            wfpredirect.query_redirect_records_into(conn, empty)
        except BufferTooSmallError as error:
            too_small_empty = error.required

        context = bytearray(b"\x11" * 4)
        written_context = wfpredirect.query_redirect_context_into(conn, context)
        return {
            "records": records,
            "type": type(records).__name__,
            "exact": (written_exact, bytes(exact)),
            "window": (written_window, bytes(guarded)),
            "typed": (written_typed, typed.tobytes()),
            "too_small": too_small,
            "too_small_empty": too_small_empty,
            "context": wfpredirect.query_redirect_context(conn),
            "context_into": (written_context, bytes(context)),
        }

    result = run_in_netns(body, nft_rules=IPV4_RULES)
    records = result["records"]
    assert result["type"] == "RedirectRecords"
    assert isinstance(records, RedirectRecords)
    assert decode(records) == {"destination": ("127.0.0.2", 8080), "mark": 0, "transparent": False}
    assert len(records) == 18
    assert records == bytes(records) and hash(records) == hash(bytes(records))
    assert result["exact"] == (18, bytes(records))
    assert result["window"] == (18, b"\xaa" * 8 + bytes(records) + b"\xaa" * (64 - 8 - 18))
    untouched = array.array("I", [0xDEADBEEF] * 8).tobytes()
    assert result["typed"] == (18, bytes(records) + untouched[18:])
    assert result["too_small"] == (
        18,
        105,  # ENOBUFS
        "[Errno 105] query_redirect_records_into: the buffer holds 17 bytes, the answer needs 18",
        b"\x55" * 17,
    )
    assert result["too_small_empty"] == 18
    assert result["context"] is None
    assert result["context_into"] == (0, b"\x11" * 4)


def test_foreign_mark_bits_do_not_reach_the_upstream() -> None:
    def body() -> dict[str, object]:
        origin = Origin(("127.0.0.2", 8080))
        listener = listen(socket.AF_INET, ("127.0.0.1", 15001))
        client = socket.socket()
        # 0x1: a TPROXY routing mark; 0x20: a bit of an earlier proxy in the
        # chain (inside MARK_MASK 0xf0); 0x10000: someone else's bit.
        client.setsockopt(socket.SOL_SOCKET, 36, 0x10021)
        client.settimeout(5)
        client.connect(("127.0.0.2", 8080))
        conn, _ = listener.accept()
        records = conn.redirect_records
        upstream = conn.create_upstream(timeout=5)
        answer = exchange(upstream, b"mask\n")
        return {
            "inbound_mark": socket_mark(conn),
            "record_mark": decode(records)["mark"],
            "upstream_mark": socket_mark(upstream),
            "origin_marks": [a.mark for a in origin.arrivals],
            "answer": answer,
        }

    result = run_in_netns(body, nft_rules=IPV4_RULES, sysctls=FWMARK_ACCEPT)
    assert result == {
        "inbound_mark": 0x10021,
        "record_mark": 0x20,
        "upstream_mark": 0x60,
        "origin_marks": [0x60],
        "answer": b"origin mask\n",
    }


def test_keyword_marks_override_the_configuration() -> None:
    def body() -> tuple[object, ...]:
        listener = listen(socket.AF_INET, ("127.0.0.1", 15001))
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, 36, 0x0F23)
        client.settimeout(5)
        client.connect(("127.0.0.2", 8080))
        conn, _ = listener.accept()
        records = wfpredirect.query_redirect_records(conn)
        marks = []
        for loop_mark, mark_mask in ((None, None), (0x100, 0xFF0), (0x100, 0xF00), (0x80, None)):
            fresh = socket.socket()
            wfpredirect.set_redirect_records(
                fresh, records, loop_mark=loop_mark, mark_mask=mark_mask
            )
            marks.append(socket_mark(fresh))
        return decode(records)["mark"], marks

    record_mark, marks = run_in_netns(
        body, nft_rules=redirect("ip", "127.0.0.2", 8080, 15001), sysctls=FWMARK_ACCEPT
    )
    assert record_mark == 0x20  # 0x0f23 & MARK_MASK 0xf0
    assert marks == [0x60, 0x120, 0x100, 0xA0]


def test_create_upstream_takes_the_mark_keywords() -> None:
    """The same keywords as open_upstream: the upstream carries loop_mark,
    and the rule that skips it lets it reach the origin."""

    def body() -> dict[str, object]:
        origin = Origin(("127.0.0.2", 8080))
        listener = listen(socket.AF_INET, ("127.0.0.1", 15001))
        socket.create_connection(("127.0.0.2", 8080), timeout=5)
        conn, _ = listener.accept()
        upstream = conn.create_upstream(timeout=5, loop_mark=0x80, mark_mask=0xF0)
        return {
            "answer": exchange(upstream, b"marked\n"),
            "upstream_mark": socket_mark(upstream),
            "origin": [a.request for a in origin.arrivals],
        }

    rules = redirect("ip", "127.0.0.2", 8080, 15001, loop_mark=0x80)
    assert run_in_netns(body, nft_rules=rules) == {
        "answer": b"origin marked\n",
        "upstream_mark": 0x80,
        "origin": [b"marked\n"],
    }


def test_the_library_s_own_upstream_gets_the_public_call_s_marks_and_errors() -> None:
    """_core._set_upstream_records, which create_upstream, open_upstream and
    the proxy use on the socket they have just made, marks it as
    set_redirect_records does, with the same errors (named after it); it
    only skips the check of the socket's state."""
    from wfpredirect import _core

    def outcome(call: Callable[[], None]) -> str:
        try:
            call()
        except (OSError, ValueError, TypeError) as error:
            return f"{type(error).__name__}: {error}"
        return "nothing"

    def body() -> tuple[object, ...]:
        listener = listen(socket.AF_INET, ("127.0.0.1", 15001))
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, 36, 0x0F23)
        client.settimeout(5)
        client.connect(("127.0.0.2", 8080))
        conn, _ = listener.accept()
        records = wfpredirect.query_redirect_records(conn)
        marks = []
        for loop_mark, mark_mask in ((None, None), (0x100, 0xFF0), (0x80, None)):
            public, own = socket.socket(), socket.socket()
            wfpredirect.set_redirect_records(
                public, records, loop_mark=loop_mark, mark_mask=mark_mask
            )
            _core._set_upstream_records(own, bytearray(records), loop_mark, mark_mask)
            marks.append((socket_mark(public), socket_mark(own)))
        errors = []
        for value, loop_mark, mark_mask in (
            (b"", None, None),
            (b"WFPR", None, None),
            (records, 1 << 32, None),
            ("text", None, None),
        ):
            public, own = socket.socket(), socket.socket()
            errors.append(
                (
                    outcome(
                        partial(
                            wfpredirect.set_redirect_records,
                            public,
                            value,
                            loop_mark=loop_mark,
                            mark_mask=mark_mask,
                        )
                    ),
                    outcome(partial(_core._set_upstream_records, own, value, loop_mark, mark_mask)),
                )
            )
        # The one difference: the state of a connected socket is not asked.
        connected = (
            outcome(lambda: wfpredirect.set_redirect_records(client, records)),
            outcome(lambda: _core._set_upstream_records(client, records, None, None)),
        )
        return marks, errors, connected

    marks, errors, connected = run_in_netns(
        body, nft_rules=redirect("ip", "127.0.0.2", 8080, 15001), sysctls=FWMARK_ACCEPT
    )
    assert marks == [(0x60, 0x60), (0x120, 0x120), (0xA0, 0xA0)]
    expected = [
        "ValueError: set_redirect_records: records must be 1 to 65536 bytes, not 0",
        "ValueError: set_redirect_records: records are too short to be a netfilter record "
        "(truncated or foreign)",
        "ValueError: set_redirect_records: loop_mark must be between 0 and 0xffffffff",
        "TypeError: set_redirect_records: records must be a bytes-like object, not str",
    ]
    assert errors == [(text, text) for text in expected]
    assert connected == (
        "RedirectError: [Errno 106] set_redirect_records: the socket is already connected: set "
        "records before connect (this connection was made without them) (Transport endpoint is "
        "already connected)",
        "nothing",
    )
