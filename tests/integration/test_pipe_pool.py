"""The native relay's pipe pool (csrc/core/netfilter/relay_engine.hpp): a
connection at rest holds its two sockets and no pipe, as /proc shows the
proxy's descriptors; a big transfer goes through splice, with one pipe
taken from the pool and given back once drained; with the pool used up, or
with none, or in the plain copy, every byte still arrives."""

from __future__ import annotations

import os
import random
import socket
import sys
import threading
from collections import Counter
from typing import Any

import pytest

from netns import run_in_netns
from processes import running
from test_relay_native import (
    READY,
    RULES,
    EchoOrigin,
    connected,
    engine_on,
    native_proxy,
    receive,
    stop,
    wait_for_events,
)
from wfpredirect.cli import _proxy_log as proxy_log

if sys.platform != "linux":
    pytest.skip("the native relay is Linux's", allow_module_level=True)

#: Idle relayed connections held at once: each must cost the proxy its two
#: sockets and nothing else.
IDLE = 100
#: What the download origin sends each client: enough that the reads
#: through the shared buffer (64 KiB) fill it and turn to splice.
DOWNLOAD = random.Random(5).randbytes(16 << 20)


class IdleOrigin(EchoOrigin):
    """The echo origin, for IDLE connections and a probe."""

    MAX_ACCEPTS = IDLE + 1


def descriptors(pid: int | str) -> Counter[str]:
    """The process's open descriptors by kind: "pipe", "socket", ... (what
    /proc/PID/fd's links name before the colon, "file" for paths)."""
    kinds: Counter[str] = Counter()
    directory = f"/proc/{pid}/fd"
    for name in os.listdir(directory):
        try:
            target = os.readlink(f"{directory}/{name}")
        except FileNotFoundError:  # listdir's own descriptor, closed since
            continue
        kinds["file" if target.startswith("/") else target.split(":")[0]] += 1
    return kinds


class DownloadOrigin:
    """127.0.0.2:8080 sends DOWNLOAD to each client once it has read the
    client's first byte, then closes; `count` connections at most."""

    def __init__(self, count: int) -> None:
        self.server = socket.create_server(("127.0.0.2", 8080))
        self.server.settimeout(30)
        self.threads = [threading.Thread(target=self._serve, daemon=True) for _ in range(count)]
        for thread in self.threads:
            thread.start()

    def _serve(self) -> None:
        connection, _ = self.server.accept()
        with connection:
            connection.settimeout(30)
            connection.recv(1)
            connection.sendall(DOWNLOAD)

    def close(self) -> None:
        for thread in self.threads:
            thread.join(30)
        self.server.close()


def download() -> bytes:
    """DOWNLOAD, through the redirect, read to its end."""
    with socket.create_connection(("127.0.0.2", 8080), timeout=30) as client:
        client.sendall(b"g")
        chunks = []
        while chunk := client.recv(1 << 20):
            chunks.append(chunk)
    return b"".join(chunks)


def test_idle_connections_hold_no_pipe_and_a_download_splices_through_one() -> None:
    """The proxy's pipes, from /proc: its standard streams only (the test
    reads them through pipes) with IDLE connections held; one download
    later, one more pipe (the pool's spare, kept for the next), the same
    with the IDLE connections still held; each connection two sockets."""

    def body() -> dict[str, object]:
        counts: dict[str, object] = {}
        with running(native_proxy(), ready=READY) as proxy:
            # Its descriptors once it has said its last start line (the
            # engine and its thread make none after).
            assert proxy.stdout is not None
            for _ in range(10):
                if proxy_log.CAPACITY.pattern.fullmatch(proxy.stdout.readline().rstrip("\n")):
                    break
            origin = IdleOrigin()
            start = descriptors(proxy.pid)
            counts["at start"] = start["pipe"]
            held = [connected() for _ in range(IDLE)]
            during = descriptors(proxy.pid)
            counts["idle"] = during["pipe"]
            counts["sockets per idle connection"] = (during["socket"] - start["socket"]) / IDLE
            origin.close()  # its listener: the held connections go on
            downloads = DownloadOrigin(1)
            counts["download arrived whole"] = download() == DOWNLOAD
            downloads.close()
            # Every connection answers still.
            counts["answered after"] = all(
                client.sendall(b"more") is None and receive(client, 4) == b"more" for client in held
            )
            counts["after the download"] = descriptors(proxy.pid)["pipe"]
            for client in held:
                client.close()
            status, _ = stop(proxy)
            counts["exit"] = status
        return counts

    assert run_in_netns(body, nft_rules=RULES) == {
        # stdout and stderr.
        "at start": 2,
        "idle": 2,
        "sockets per idle connection": 2.0,
        "download arrived whole": True,
        "answered after": True,
        "after the download": 2 + 2,
        "exit": 0,
    }


def engine_download(count: int, **settings: Any) -> dict[str, object]:
    """`count` downloads at once through an engine with `settings`, then
    IDLE idle connections: the bytes, the pool, this process's pipes."""
    origin = DownloadOrigin(count)
    engine, thread = engine_on(15001, **settings)
    before = descriptors("self")["pipe"]
    results: list[bool] = []
    clients = [
        threading.Thread(target=lambda: results.append(download() == DOWNLOAD))
        for _ in range(count)
    ]
    for client in clients:
        client.start()
    for client in clients:
        client.join(60)
    wait_for_events(engine, count)
    origin.close()
    spare, in_use, spliced = engine.pipes()
    echo = IdleOrigin()
    held = [connected() for _ in range(IDLE)]
    idle = engine.pipes()
    pipes_while_idle = descriptors("self")["pipe"] - before
    for client in held:
        client.close()
    engine.stop(0)
    thread.join(10)
    echo.close()
    return {
        "whole": results == [True] * count,
        "pool": (spare, in_use),
        "spliced": spliced,
        "pool while idle": idle,
        "pipe descriptors while idle": pipes_while_idle,
        "stopped": not thread.is_alive(),
    }


@pytest.mark.parametrize(
    ("count", "settings", "pool"),
    [
        # One download: one pipe, given back, kept as the pool's spare.
        (1, {}, 1),
        # Two at once with a pool of one: the one without a pipe copies.
        (2, {"max_pipes": 1}, 1),
        # No pool, or the plain copy: no pipe ever.
        (2, {"max_pipes": 0}, 0),
        (1, {"splice": False}, 0),
    ],
    ids=["one download", "pool of one", "no pool", "plain copy"],
)
def test_the_engine_s_pool(count: int, settings: dict[str, Any], pool: int) -> None:
    result = run_in_netns(lambda: engine_download(count, **settings), nft_rules=RULES)
    spliced = result.pop("spliced")
    # With a pipe, most of a download goes through splice (all but the
    # reads before it streamed); never more than was sent; without, none.
    assert isinstance(spliced, int) and spliced <= count * len(DOWNLOAD)
    assert spliced >= len(DOWNLOAD) // 2 if pool else spliced == 0
    assert result == {
        "whole": True,
        "pool": (pool, 0),
        "pool while idle": (pool, 0, spliced),
        "pipe descriptors while idle": 2 * pool,
        "stopped": True,
    }
