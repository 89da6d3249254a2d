"""Threads querying and setting redirect state on many sockets while another
thread closes some of them and opens new descriptors (which reuse the closed
numbers). Nothing may crash, and the only errors are OSError and ValueError.
Descriptor numbers get reused, so exact answers are judged only on the
sockets that stay open.

Used by tests/unit/test_concurrency.py (plain sockets, runs everywhere,
free-threaded builds included) and tests/integration/test_concurrent_redirects.py
(redirected connections in a network namespace).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import wfpredirect

WORKERS = 8
ROUNDS = 200
# Seconds between two closes, so that they fall among the workers' calls.
CLOSE_INTERVAL = 0.002


def answers(sock: object, records: bytes, target: object) -> list[tuple[str, object]]:
    """Every query on `sock` and a set on `target`: ("ok", value) or
    (class, errno)."""
    into = bytearray(64)
    calls: list[Callable[[], object]] = [
        lambda: bytes(wfpredirect.query_redirect_records(sock)),  # type: ignore[arg-type]
        lambda: wfpredirect.query_redirect_context(sock),  # type: ignore[arg-type]
        lambda: wfpredirect.original_destination(sock),  # type: ignore[arg-type]
        lambda: bytes(into[: wfpredirect.query_redirect_records_into(sock, into)]),  # type: ignore[arg-type]
        lambda: wfpredirect.query_redirect_context_into(sock, into),  # type: ignore[arg-type]
        lambda: wfpredirect.set_redirect_records(target, records),  # type: ignore[arg-type]
    ]
    results: list[tuple[str, object]] = []
    for call in calls:
        try:
            results.append(("ok", call()))
        except (OSError, ValueError) as error:
            results.append((type(error).__name__, getattr(error, "errno", None)))
    return results


@dataclass
class Report:
    """What the threads saw: answers on the stable sockets, anything that
    was not OSError/ValueError anywhere, and how many calls ran."""

    stable_answers: set[str] = field(default_factory=set)
    unexpected: list[str] = field(default_factory=list)
    calls: int = 0
    closed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def hammer(
    stable: Sequence[socket.socket],
    doomed: Sequence[socket.socket],
    records: bytes,
    upstream: socket.socket,
) -> Report:
    """Run WORKERS threads over `stable` and `doomed` (as objects and as raw
    descriptor numbers) while one more thread closes `doomed` one by one and
    opens and closes sockets and pipes to reuse their numbers. The stable
    sockets' records go to `upstream` (setting them on a stable socket would
    change its mark, and so its own records); a doomed socket gets its own."""
    report = Report()
    doomed_numbers = [sock.fileno() for sock in doomed]
    start = threading.Barrier(WORKERS + 1)
    finished = threading.Event()
    workers_done = threading.Event()

    def worker(index: int) -> None:
        start.wait()
        seen: set[str] = set()
        calls = 0
        try:
            for round_number in range(ROUNDS):
                sock = stable[(index + round_number) % len(stable)]
                seen.add(repr(answers(sock, records, upstream)))
                victim = (index * 7 + round_number) % len(doomed)
                answers(doomed[victim], records, doomed[victim])
                number = doomed_numbers[victim]
                answers(number, records, number)
                calls += 18
        except BaseException as error:  # noqa: BLE001 - reported, not swallowed
            with report.lock:
                report.unexpected.append(repr(error))
        with report.lock:
            report.stable_answers |= seen
            report.calls += calls

    def reuse_numbers() -> None:
        """New descriptors take the numbers just freed, then free them."""
        reused = [socket.socket(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)]
        read_end, write_end = os.pipe()
        for extra in reused:
            extra.close()
        os.close(read_end)
        os.close(write_end)

    def closer() -> None:
        start.wait()
        # Spread over the workers' run, then keep reusing numbers until
        # they are done.
        for sock in doomed:
            sock.close()
            report.closed += 1
            reuse_numbers()
            time.sleep(CLOSE_INTERVAL)
        while not workers_done.wait(0):
            reuse_numbers()
        finished.set()

    workers = [threading.Thread(target=worker, args=(index,)) for index in range(WORKERS)]
    closing = threading.Thread(target=closer)
    for thread in [*workers, closing]:
        thread.start()
    for thread in workers:
        thread.join()
    workers_done.set()
    closing.join()
    assert finished.is_set()
    return report
