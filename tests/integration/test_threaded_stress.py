"""A threaded stress on real redirected connections, for free-threaded builds
above all (it runs on every build): THREADS threads query a few hundred
connections REDIRECTed in a network namespace and set records on fresh
sockets, for a bounded time and number of rounds, while one more thread
closes most of the connections under them.

Every answer is exact. Each connection has an original destination of its
own (its own port), learnt single-threaded first; no connection is accepted
during the stress, so a descriptor number freed by a close can only be taken
by a fresh unconnected socket of a worker. An answer on a connection is then
one of: its own records and destination; RedirectError with EBADF (closed
before the call read its descriptor); or the not-redirected answer of a
fresh socket that took the number (query_redirect_info's NOT_REDIRECTED,
NotRedirectedError with ENOENT from the others). The last two only on
connections that are closed.
"""

from __future__ import annotations

import errno
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable

import wfpredirect
from netns import run_in_netns
from servers import socket_mark
from test_original_destination import listen
from wfpredirect import NotRedirectedError, RedirectError, RedirectInfo

THREADS = 16
CONNECTIONS = 400
# The first STABLE connections stay open; the closer closes all the others.
STABLE = 40
FIRST_PORT = 20000
# Bounds: the workers stop at whichever comes first.
SECONDS = 5.0
ROUNDS = 20_000
# The closer closes the doomed connections over this share of SECONDS, so
# that the workers meet open, closing and closed connections alike.
CLOSING_SHARE = 0.6
# What set_redirect_records puts on a socket it prepares: the default loop mark.
LOOP_MARK = 0x40

RULES = f"""table ip wfpr {{
  chain out {{
    type nat hook output priority -100;
    meta mark & {LOOP_MARK:#x} == {LOOP_MARK:#x} return
    ip daddr 127.0.0.2 tcp dport {FIRST_PORT}-{FIRST_PORT + CONNECTIONS - 1} redirect to :15001
  }}
}}
"""

# query_redirect_info's answer for a socket that is not a redirected connection.
NOT_REDIRECTED = RedirectInfo(None, None, None)

# At most this many unexpected answers are kept for the report.
KEPT = 20


def records_of(sock: socket.socket) -> bytes:
    return bytes(wfpredirect.query_redirect_records(sock))


def set_then_mark(sock: socket.socket, records: bytes) -> int:
    """set_redirect_records on a fresh socket, then the mark it gave it."""
    wfpredirect.set_redirect_records(sock, records)
    return socket_mark(sock)


def judge(
    call: Callable[..., object],
    arguments: tuple[object, ...],
    exact: object,
    gone: object,
    closable: bool,
) -> tuple[str, str | None]:
    """("exact" | "closed" | "reused", None), or ("unexpected", what came)."""
    try:
        answer = call(*arguments)
    except NotRedirectedError as error:
        if closable and error.errno == errno.ENOENT:
            return "reused", None
        return "unexpected", repr(error)
    except RedirectError as error:
        if closable and error.errno == errno.EBADF:
            return "closed", None
        return "unexpected", repr(error)
    except BaseException as error:  # noqa: BLE001 - reported, not swallowed
        return "unexpected", repr(error)
    if answer == exact:
        return "exact", None
    if closable and gone is not None and answer == gone:
        return "reused", None
    return "unexpected", repr(answer)


def stress() -> dict[str, object]:
    listener = listen(socket.AF_INET, ("127.0.0.1", 15001))
    clients: list[socket.socket] = []
    accepted: list[socket.socket] = []
    for index in range(CONNECTIONS):
        clients.append(socket.create_connection(("127.0.0.2", FIRST_PORT + index), timeout=5))
        accepted.append(listener.accept()[0])
    listener.close()

    # The single-threaded answers, each connection's own.
    expected = []
    for sock in accepted:
        info = wfpredirect.query_redirect_info(sock)
        assert info.records is not None
        expected.append((info, bytes(info.records), info.original_destination))
    ports = sorted(destination[1] for _, _, destination in expected)  # type: ignore[index]
    with socket.socket() as fresh:
        wfpredirect.set_redirect_records(fresh, expected[0][1])
        mark = socket_mark(fresh)

    doomed = accepted[STABLE:]
    start = threading.Barrier(THREADS + 1)
    lock = threading.Lock()
    tally: Counter[str] = Counter()
    unexpected: list[str] = []
    rounds: list[int] = []

    def worker(index: int) -> None:
        counts: Counter[str] = Counter()
        kept: list[str] = []
        start.wait()
        deadline = time.monotonic() + SECONDS
        done = 0
        while done < ROUNDS and time.monotonic() < deadline:
            # Alternately a stable connection and one that may be closing.
            number = (index * 37 + done * 7) % CONNECTIONS
            if done % 2 == 0:
                number %= STABLE
            sock = accepted[number]
            info, records, destination = expected[number]
            closable = number >= STABLE
            outcomes = [
                judge(wfpredirect.query_redirect_info, (sock,), info, NOT_REDIRECTED, closable),
                judge(wfpredirect.original_destination, (sock,), destination, None, closable),
                judge(records_of, (sock,), records, None, closable),
            ]
            with socket.socket() as fresh:
                outcomes.append(judge(set_then_mark, (fresh, records), mark, None, False))
            for kind, what in outcomes:
                counts[f"{'doomed' if closable else 'stable'} {kind}"] += 1
                if what is not None and len(kept) < KEPT:
                    kept.append(f"connection {number}: {what}")
            done += 1
        with lock:
            tally.update(counts)
            unexpected.extend(kept)
            rounds.append(done)

    closed = 0

    def closer() -> None:
        nonlocal closed
        start.wait()
        pause = SECONDS * CLOSING_SHARE / len(doomed)
        for sock in doomed:
            sock.close()
            closed += 1
            time.sleep(pause)

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(THREADS)]
    threads.append(threading.Thread(target=closer))
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    for sock in [*accepted, *clients]:
        sock.close()
    return {
        "ports": ports,
        "mark": mark,
        "tally": dict(tally),
        "unexpected": unexpected,
        "rounds": rounds,
        "closed": closed,
        "elapsed": elapsed,
    }


def test_threads_query_and_set_while_connections_close() -> None:
    report = run_in_netns(stress, nft_rules=RULES)
    print(report["tally"], f"rounds {sum(report['rounds'])}", f"{report['elapsed']:.1f} s")
    # Every connection was redirected, each from its own port.
    assert report["ports"] == list(range(FIRST_PORT, FIRST_PORT + CONNECTIONS))
    assert report["mark"] & LOOP_MARK == LOOP_MARK
    assert report["unexpected"] == []
    assert report["closed"] == CONNECTIONS - STABLE
    rounds = report["rounds"]
    assert len(rounds) == THREADS and all(count > 0 for count in rounds)
    tally = report["tally"]
    assert isinstance(tally, dict)
    assert set(tally) <= {
        "stable exact",
        "doomed exact",
        "doomed closed",
        "doomed reused",
    }
    # Both sides of the race were met: open connections answered, closed
    # ones refused.
    assert tally["stable exact"] == 4 * sum(rounds) - tally.get("doomed exact", 0) - tally.get(
        "doomed closed", 0
    ) - tally.get("doomed reused", 0)
    assert tally.get("doomed exact", 0) > 0
    assert tally.get("doomed closed", 0) > 0
