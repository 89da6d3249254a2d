"""Concurrency on redirected connections in a network namespace: the stable
connections keep answering their exact records while others close under the
threads (see tests/concurrency.py)."""

from __future__ import annotations

import socket

from concurrency import ROUNDS, WORKERS, answers, hammer
from netns import run_in_netns
from record_format import encode
from test_original_destination import IPV4_RULES, listen


def test_threads_on_redirected_connections_while_another_closes() -> None:
    def body() -> tuple[object, ...]:
        listener = listen(socket.AF_INET, ("127.0.0.1", 15001))
        clients = [socket.create_connection(("127.0.0.2", 8080), timeout=5) for _ in range(40)]
        accepted = [listener.accept()[0] for _ in clients]
        stable, doomed = accepted[:8], [*accepted[8:], *clients]
        upstream = socket.socket()
        records = encode(("127.0.0.2", 8080), mark=0x20)
        expected = {repr(answers(sock, records, upstream)) for sock in stable}
        report = hammer(stable, doomed, records, upstream)
        return expected, report.stable_answers, report.unexpected, report.calls, report.closed

    expected, seen, unexpected, calls, closed = run_in_netns(body, nft_rules=IPV4_RULES)
    record = encode(("127.0.0.2", 8080))
    assert expected == {
        repr(
            [
                ("ok", record),
                ("ok", None),
                ("ok", ("127.0.0.2", 8080)),
                ("ok", record),
                ("ok", 0),
                ("ok", None),
            ]
        )
    }
    assert seen == expected
    assert unexpected == []
    assert (calls, closed) == (WORKERS * ROUNDS * 18, 72)
