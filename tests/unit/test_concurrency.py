"""Concurrency on plain sockets (no redirect needed, so it runs everywhere,
on free-threaded builds without the GIL too): see tests/concurrency.py."""

from __future__ import annotations

import socket

from concurrency import WORKERS, answers, hammer


def test_threads_query_and_set_while_another_closes() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    clients = [socket.create_connection(server.getsockname(), timeout=5) for _ in range(48)]
    accepted = [server.accept()[0] for _ in clients]
    stable = [socket.socket(), *accepted[:8], *clients[:8]]
    doomed = [*accepted[8:], *clients[8:], *(socket.socket() for _ in range(16))]
    upstream = socket.socket()
    # A syntactically valid record: the set succeeds with CAP_NET_RAW or
    # CAP_NET_ADMIN and is refused (RedirectPermissionError) without.
    records = b"WFPR\x01\x04\x00\x00\x00\x00\x00\x10\x1f\x90\x7f\x00\x00\x02"
    try:
        expected = {repr(answers(sock, records, upstream)) for sock in stable}
        report = hammer(stable, doomed, records, upstream)
    finally:
        for sock in [server, upstream, *clients, *accepted, *stable, *doomed]:
            sock.close()
    assert report.unexpected == []
    assert report.closed == len(doomed)
    assert report.calls == WORKERS * 200 * 18
    assert report.stable_answers <= expected
