"""Leaks: after a warm-up, 100k rounds of query and set calls (successes and
every error path) on a redirected connection, and 10k redirected connections
through the reference proxy, leave resident memory and open descriptors
flat. Marked `soak`: the sanitizer pass of
.ci/run leaves it out (its allocator makes RSS meaningless, and it is slow)."""

from __future__ import annotations

import contextlib
import gc
import os
import socket
import threading
import time
from typing import IO

import pytest

import wfpredirect
from netns import run_in_netns
from processes import running
from servers import Origin, exchange
from test_original_destination import IPV4_RULES, listen
from test_proxy import PROXY_READY, RELAY_LINE, RULES, proxy_command

WARM_UP = 10_000
ROUNDS = 100_000
# Allocator slack and pytest's own bookkeeping; a leak of even 32 bytes a
# round would grow RSS by 3 MiB.
RSS_MARGIN = 2 * 1024 * 1024


def resident_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.soak
def test_query_and_set_calls_do_not_leak() -> None:
    def body() -> dict[str, int]:
        listener = listen(socket.AF_INET, ("127.0.0.1", 15001))
        socket.create_connection(("127.0.0.2", 8080), timeout=5)
        conn, _ = listener.accept()
        upstream = socket.socket()
        unconnected = socket.socket()
        into = bytearray(64)
        small = bytearray(4)

        def round_of_calls() -> None:
            records = wfpredirect.query_redirect_records(conn)
            wfpredirect.set_redirect_records(upstream, records)
            wfpredirect.set_redirect_records(upstream.fileno(), records, loop_mark=0x80)
            wfpredirect.query_redirect_records_into(conn, into)
            wfpredirect.query_redirect_context(conn)
            wfpredirect.query_redirect_context_into(conn, into)
            wfpredirect.original_destination(conn)
            # The error paths build exceptions: they must not leak either.
            with contextlib.suppress(wfpredirect.NotRedirectedError):
                wfpredirect.query_redirect_records(unconnected)
            with contextlib.suppress(wfpredirect.BufferTooSmallError):
                wfpredirect.query_redirect_records_into(conn, small)
            with contextlib.suppress(ValueError):
                wfpredirect.set_redirect_records(upstream, b"not a record")

        for _ in range(WARM_UP):
            round_of_calls()
        gc.collect()
        before = (resident_bytes(), open_descriptors())
        for _ in range(ROUNDS):
            round_of_calls()
        gc.collect()
        after = (resident_bytes(), open_descriptors())
        return {
            "rss_before": before[0],
            "rss_after": after[0],
            "fds_before": before[1],
            "fds_after": after[1],
        }

    result = run_in_netns(body, nft_rules=IPV4_RULES)
    print(f"soak: {ROUNDS} rounds of 10 calls: {result}")
    assert result["fds_after"] == result["fds_before"]
    assert result["rss_after"] - result["rss_before"] < RSS_MARGIN, result


PROXY_WARM_UP = 1_000
PROXY_CONNECTIONS = 10_000
# The proxy is a whole asyncio program: its allocator and the event loop's
# own caches get more slack than the bare calls above.
PROXY_RSS_MARGIN = 4 * 1024 * 1024
RELAYED_TIMEOUT = 60


def process_resident_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def process_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# The proxy logs a connection as it starts closing it: its last sockets may
# still be open for a moment after the last line.
SETTLE_SECONDS = 5
SETTLE_STEP = 0.05


def settled_descriptors(pid: int, target: int = 0) -> int:
    """The proxy's open descriptors once they reach `target` (or stop
    falling, for target 0), within SETTLE_SECONDS."""
    lowest = process_descriptors(pid)
    deadline = time.monotonic() + SETTLE_SECONDS
    while time.monotonic() < deadline and lowest > target:
        time.sleep(SETTLE_STEP)
        count = process_descriptors(pid)
        if target == 0 and count == lowest:
            break
        lowest = min(lowest, count)
    return lowest


# Each relay path (what each keeps per connection differs).
@pytest.mark.soak
@pytest.mark.parametrize("relay", ["protocol", "streams", "native"])
def test_proxy_connections_do_not_leak(relay: str) -> None:
    """10k redirected connections through `python -m wfpredirect proxy`,
    after a warm-up: the proxy's RSS and open descriptors stay flat."""

    def body() -> dict[str, object]:
        origin = Origin(("127.0.0.2", 8080))
        relayed = 0
        all_relayed = threading.Condition()

        def count_relays(stream: IO[str]) -> None:
            nonlocal relayed
            for line in stream:
                if RELAY_LINE.fullmatch(line.rstrip("\n")):
                    with all_relayed:
                        relayed += 1
                        all_relayed.notify_all()

        def connections(count: int, total: int) -> None:
            for _ in range(count):
                with socket.create_connection(("127.0.0.2", 8080), timeout=10) as client:
                    assert exchange(client, b"soak\n") == b"origin soak\n"
            with all_relayed:
                assert all_relayed.wait_for(lambda: relayed == total, RELAYED_TIMEOUT), relayed

        with running(proxy_command("--relay", relay), ready=PROXY_READY) as proxy:
            assert proxy.stdout is not None
            threading.Thread(target=count_relays, args=(proxy.stdout,), daemon=True).start()
            connections(PROXY_WARM_UP, PROXY_WARM_UP)
            baseline = settled_descriptors(proxy.pid)
            before = (process_resident_bytes(proxy.pid), baseline)
            connections(PROXY_CONNECTIONS, PROXY_WARM_UP + PROXY_CONNECTIONS)
            after = (process_resident_bytes(proxy.pid), settled_descriptors(proxy.pid, baseline))
        origin.close()
        return {
            "rss_before": before[0],
            "rss_after": after[0],
            "fds_before": before[1],
            "fds_after": after[1],
            "origin_arrivals": len(origin.arrivals),
        }

    result = run_in_netns(body, nft_rules=RULES)
    print(f"proxy soak: {PROXY_CONNECTIONS} connections: {result}")
    assert result["origin_arrivals"] == PROXY_WARM_UP + PROXY_CONNECTIONS
    assert result["fds_after"] == result["fds_before"], result
    assert result["rss_after"] - result["rss_before"] < PROXY_RSS_MARGIN, result  # type: ignore[operator]
