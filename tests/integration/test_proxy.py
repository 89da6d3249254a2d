"""``python -m wfpredirect proxy`` relaying real HTTP: curl through an nft
redirect to a Python HTTP origin, in a fresh network namespace."""

from __future__ import annotations

import importlib.util
import json
import logging
import random
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import processes
from netns import run_in_netns
from processes import messages, running
from rules import LOOPING_RULES, redirect
from support import NEUTRAL_DIRECTORY, require_tool, unavailable
from wfpredirect.cli import _proxy_log as proxy_log
from wfpredirect.cli._proxy_log import message

HERE = Path(__file__).resolve().parent
RULES = redirect("ip", "127.0.0.2", 8080, 15001)
PROXY_READY = proxy_log.LISTENING.line(host="127.0.0.1", port=15001)
ORIGIN = "http://127.0.0.2:8080"
MIB = 1 << 20
PARALLEL = 200
# The proxy closes a connection it refuses: curl reports an empty reply (52)
# or, when its request had already arrived, a reset (56).
CURL_NO_REPLY = (52, 56)

# One line per relayed connection.
RELAY_LINE = proxy_log.RELAYED.pattern

# Every test here runs the proxy each of these ways: the default (the native
# relay on Linux) alone, on uvloop and with two SO_REUSEPORT workers; the
# protocol path on asyncio and on uvloop's transports; the streams path.
PROXY_WAYS = {
    "native": (),
    "native-uvloop": ("--loop", "uvloop"),
    "native-workers": ("--workers", "2"),
    "protocol": ("--relay", "protocol"),
    "uvloop-protocol": ("--loop", "uvloop", "--relay", "protocol"),
    "streams": ("--relay", "streams"),
}
# The way of the test running now (the body runs in a fork, which keeps it).
_way: tuple[str, ...] = ()


@pytest.fixture(autouse=True, params=list(PROXY_WAYS))
def proxy_way(request: pytest.FixtureRequest) -> Iterator[str]:
    global _way
    if "uvloop" in request.param and importlib.util.find_spec("uvloop") is None:
        unavailable("uvloop is not installed (.ci/run installs it)")
    _way = PROXY_WAYS[request.param]
    yield request.param
    _way = ()


def proxy_command(*extra: str) -> list[str]:
    """The proxy command (processes.proxy_command) on this run's relay way."""
    return processes.proxy_command(*_way, *extra)


def origin_command(directory: Path, host: str = "127.0.0.2") -> list[str]:
    return [sys.executable, str(HERE / "http_origin.py"), str(directory), host, "8080"]


def relay_lines(output: str) -> list[dict[str, str]]:
    """The relayed connections' lines, each from a client on 127.0.0.1."""
    lines = [match.groupdict() for match in map(RELAY_LINE.fullmatch, messages(output)) if match]
    assert all(line["client"].startswith("127.0.0.1:") for line in lines), lines
    return lines


def stop(process: subprocess.Popen[str], stop_signal: int = signal.SIGTERM) -> tuple[int, str]:
    """`stop_signal`, then the exit status and the rest of stdout. The proxy
    writes nothing to stderr on the way (no traceback from asyncio's own
    callbacks when connections are cut)."""
    process.send_signal(stop_signal)
    output, errors = process.communicate(timeout=10)
    assert errors == "", errors
    return process.returncode, output


@pytest.fixture()
def site(tmp_path: Path) -> Path:
    require_tool("curl")
    site = tmp_path / "site"
    site.mkdir()
    (site / "big.bin").write_bytes(random.Random(5).randbytes(MIB))
    for number in range(PARALLEL):
        (site / f"file{number:03}.txt").write_text(f"file {number}\n" * (number + 1))
    return site


def test_a_1_mib_body_arrives_intact(site: Path, tmp_path: Path) -> None:
    def body() -> dict[str, object]:
        with (
            running(origin_command(site), ready="ready"),
            running(proxy_command(), ready=PROXY_READY) as proxy,
        ):
            curl = subprocess.run(
                [
                    "curl",
                    "-sS",
                    "--fail",
                    "--max-time",
                    "30",
                    "-D",
                    str(tmp_path / "headers"),
                    "-o",
                    str(tmp_path / "big.out"),
                    f"{ORIGIN}/big.bin",
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            status, output = stop(proxy)
        headers = (tmp_path / "headers").read_bytes()
        return {
            "curl": (curl.returncode, curl.stderr),
            "intact": (tmp_path / "big.out").read_bytes() == (site / "big.bin").read_bytes(),
            "relayed": [
                (line["target"], int(line["down"]), line["outcome"]) for line in relay_lines(output)
            ],
            "expected_down": len(headers) + MIB,
            "exit": status,
        }

    result = run_in_netns(body, nft_rules=RULES)
    assert result["relayed"] == [("127.0.0.2:8080", result["expected_down"], "closed")]
    assert {key: result[key] for key in ("curl", "intact", "exit")} == {
        "curl": (0, ""),
        "intact": True,
        "exit": 0,
    }


def test_200_parallel_transfers(site: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()

    def body() -> dict[str, object]:
        transfers: list[str] = []
        for number in range(PARALLEL):
            transfers += ["-o", str(out / f"file{number:03}.txt"), f"{ORIGIN}/file{number:03}.txt"]
        with (
            running(origin_command(site), ready="ready") as origin,
            running(proxy_command(), ready=PROXY_READY) as proxy,
        ):
            curl = subprocess.run(
                [
                    "curl",
                    "-sS",
                    "--no-progress-meter",
                    "--fail",
                    "--max-time",
                    "60",
                    "--parallel",
                    "--parallel-immediate",
                    "--parallel-max",
                    str(PARALLEL),
                    *transfers,
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            status, output = stop(proxy)
            origin.send_signal(signal.SIGTERM)
            _, origin_log = origin.communicate(timeout=10)
        wrong = [
            number
            for number in range(PARALLEL)
            if (out / f"file{number:03}.txt").read_text() != f"file {number}\n" * (number + 1)
        ]
        lines = relay_lines(output)
        return {
            "curl": (curl.returncode, curl.stderr),
            "wrong": wrong,
            "relayed": sorted({(line["target"], line["outcome"]) for line in lines}),
            "connections": len(lines),
            "origin_requests": len(re.findall(r'"GET /file\d{3}\.txt HTTP/1\.1" 200', origin_log)),
            "final": messages(output)[-1].split(": ", 1)[1],
            "final_expected": (
                f"0 open, {len(lines)} relayed, 0 refused, 0 failed, "
                f"{sum(int(line['up']) for line in lines)} bytes up, "
                f"{sum(int(line['down']) for line in lines)} bytes down"
            ),
            "exit": status,
        }

    result = run_in_netns(body, nft_rules=RULES)
    assert result.pop("final") == result.pop("final_expected")
    assert result == {
        "curl": (0, ""),
        "wrong": [],
        "relayed": [("127.0.0.2:8080", "closed")],
        "connections": PARALLEL,
        "origin_requests": PARALLEL,
        "exit": 0,
    }


def test_no_loop_and_a_direct_connection_is_refused(site: Path) -> None:
    """The upstream carries the loop mark, so the rule lets it reach the
    origin: the proxy sees exactly one connection per client, never its own.
    A connection addressed to the proxy itself is refused, not relayed."""

    def body() -> dict[str, object]:
        with (
            running(origin_command(site), ready="ready") as origin,
            running(proxy_command(), ready=PROXY_READY) as proxy,
        ):
            relayed = subprocess.run(
                ["curl", "-sS", "--max-time", "10", f"{ORIGIN}/file007.txt"],
                capture_output=True,
                text=True,
                check=False,
            )
            direct = subprocess.run(
                ["curl", "-sS", "--max-time", "10", "http://127.0.0.1:15001/file007.txt"],
                capture_output=True,
                text=True,
                check=False,
            )
            status, output = stop(proxy)
            origin.send_signal(signal.SIGTERM)
            _, origin_log = origin.communicate(timeout=10)
        lines = messages(output)
        return {
            "relayed": (relayed.returncode, relayed.stdout),
            "direct": (direct.returncode in CURL_NO_REPLY, direct.stdout),
            "relay_lines": [(line["target"], line["outcome"]) for line in relay_lines(output)],
            "refused": [
                re.sub(r":\d+", ":PORT", line) for line in lines if line.startswith("refused")
            ],
            "origin_requests": origin_log.count('"GET /file007.txt HTTP/1.1" 200'),
            "exit": status,
        }

    assert run_in_netns(body, nft_rules=RULES) == {
        "relayed": (0, "file 7\n" * 8),
        "direct": (True, ""),
        "relay_lines": [("127.0.0.2:8080", "closed")],
        "refused": ["refused 127.0.0.1:PORT: not redirected (addressed to the proxy itself)"],
        "origin_requests": 1,
        "exit": 0,
    }


def serve_once(listener: socket.socket, handler: object) -> threading.Thread:
    """Accept one connection on `listener` and run handler(connection) in a thread."""

    def serve() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.settimeout(10)
            handler(connection)  # type: ignore[operator]

    thread = threading.Thread(target=serve)
    thread.start()
    return thread


def origin_listener() -> socket.socket:
    listener = socket.create_server(("127.0.0.2", 8080))
    listener.settimeout(10)
    return listener


def read_all(connection: socket.socket) -> bytes:
    chunks = []
    while chunk := connection.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def read_to_the_end(connection: socket.socket) -> tuple[bytes, str]:
    """What arrives until the peer closes, and how it closed: "end" (an
    end of stream) or "reset"."""
    chunks = []
    try:
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        return b"".join(chunks), "reset"
    return b"".join(chunks), "end"


LINGER_NOW = struct.pack("ii", 1, 0)


def test_a_reset_is_passed_on_as_a_reset() -> None:
    """A side that resets its connection (close with SO_LINGER 0) mid-way:
    the other side gets a reset too, not an end of stream that would pass
    for a complete transfer; the line says which error ended it."""

    def body() -> dict[str, object]:
        seen: dict[str, tuple[bytes, str]] = {}
        with running(proxy_command(), ready=PROXY_READY) as proxy:
            listener = origin_listener()
            heard = threading.Event()

            def origin_reads(connection: socket.socket) -> None:
                first = connection.recv(65536)
                heard.set()
                data, how = read_to_the_end(connection)
                seen["origin, client reset"] = (first + data, how)

            origin = serve_once(listener, origin_reads)
            client = socket.create_connection(("127.0.0.2", 8080), timeout=10)
            client.sendall(b"half a request")
            assert heard.wait(10)
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_NOW)
            client.close()
            origin.join()

            answered = threading.Event()

            def origin_resets(connection: socket.socket) -> None:
                connection.recv(65536)
                connection.sendall(b"half an answer")
                assert answered.wait(10)
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_NOW)

            origin = serve_once(listener, origin_resets)
            client = socket.create_connection(("127.0.0.2", 8080), timeout=10)
            client.sendall(b"a request")
            first = client.recv(65536)
            answered.set()
            data, how = read_to_the_end(client)
            seen["client, origin reset"] = (first + data, how)
            origin.join()
            client.close()
            listener.close()
            status, output = stop(proxy)
        return {
            "seen": seen,
            "relayed": [
                (line["up"], line["down"], line["outcome"]) for line in relay_lines(output)
            ],
            "exit": status,
        }

    reset = "ended by ConnectionResetError(104, 'Connection reset by peer')"
    assert run_in_netns(body, nft_rules=RULES) == {
        "seen": {
            "origin, client reset": (b"half a request", "reset"),
            "client, origin reset": (b"half an answer", "reset"),
        },
        "relayed": [("14", "0", reset), ("9", "14", reset)],
        "exit": 0,
    }


def test_half_close_in_each_direction() -> None:
    """Client first: the origin answers only after the client's end of
    stream, so the proxy must pass the half-close on. Origin first: the
    client sends after the origin's end of stream, so the proxy must keep
    the other direction open."""

    def body() -> dict[str, object]:
        received: dict[str, bytes] = {}
        with running(proxy_command(), ready=PROXY_READY) as proxy:
            listener = origin_listener()

            def answer_after_eof(connection: socket.socket) -> None:
                request = read_all(connection)
                connection.sendall(b"got %d bytes" % len(request))

            origin = serve_once(listener, answer_after_eof)
            client = socket.create_connection(("127.0.0.2", 8080), timeout=10)
            client.sendall(b"x" * 100_000)
            client.shutdown(socket.SHUT_WR)
            received["client first"] = read_all(client)
            client.close()
            origin.join()

            def speak_first(connection: socket.socket) -> None:
                connection.sendall(b"hello, then end of stream")
                connection.shutdown(socket.SHUT_WR)
                received["origin heard"] = read_all(connection)

            origin = serve_once(listener, speak_first)
            client = socket.create_connection(("127.0.0.2", 8080), timeout=10)
            received["origin first"] = read_all(client)
            client.sendall(b"late words")
            client.shutdown(socket.SHUT_WR)
            origin.join()
            client.close()
            listener.close()
            status, output = stop(proxy)
        return {
            "received": received,
            "relayed": [
                (line["up"], line["down"], line["outcome"]) for line in relay_lines(output)
            ],
            "exit": status,
        }

    assert run_in_netns(body, nft_rules=RULES) == {
        "received": {
            "client first": b"got 100000 bytes",
            "origin heard": b"late words",
            "origin first": b"hello, then end of stream",
        },
        "relayed": [("100000", "16", "closed"), ("10", "25", "closed")],
        "exit": 0,
    }


#: How long a test waits for a summary line that says what it expects
#: (summaries come every 0.2 s there, when the totals changed).
SUMMARY_WAIT_SECONDS = 20


def test_sigterm_stops_cleanly_within_the_grace_period() -> None:
    """SIGTERM with a connection open: the proxy stops listening, gives the
    connection its grace period, cuts it, closes both ends, prints its final
    summary and exits 0; nothing is left listening. Summaries come
    when the totals changed, not while it sits idle."""

    def body() -> dict[str, object]:
        with running(
            proxy_command("--grace", "1", "--summary-interval", "0.2"), ready=PROXY_READY
        ) as proxy:
            assert proxy.stdout is not None
            listener = origin_listener()
            origin_saw: dict[str, tuple[bytes, str]] = {}
            relaying = threading.Event()

            def hold(connection: socket.socket) -> None:
                first = connection.recv(65536)
                relaying.set()
                data, how = read_to_the_end(connection)  # until the proxy cuts it
                origin_saw["data"] = (first + data, how)

            origin = serve_once(listener, hold)
            client = socket.create_connection(("127.0.0.2", 8080), timeout=10)
            client.sendall(b"partial request")
            assert relaying.wait(10)
            # The next summary counts the open connection. Bounded: without
            # that summary the proxy is killed, and the test fails instead
            # of waiting on its output for ever.
            watchdog = threading.Timer(SUMMARY_WAIT_SECONDS, proxy.kill)
            watchdog.start()
            try:
                while True:
                    summary = message(proxy.stdout.readline())
                    assert summary, "no summary counted the open connection"
                    counted = proxy_log.SUMMARY.pattern.fullmatch(summary.rstrip())
                    if counted and counted["open"] == "1":
                        break
            finally:
                watchdog.cancel()
            # Five intervals in which nothing changes: no summary says so.
            time.sleep(1.0)
            pid = proxy.pid
            status, output = stop(proxy)
            client_saw = read_to_the_end(client)
            origin.join()
            client.close()
            listener.close()
            process_gone = not Path(f"/proc/{pid}").exists()
        refused = subprocess.run(
            ["curl", "-sS", "--max-time", "5", "http://127.0.0.1:15001/"],
            capture_output=True,
            text=True,
            check=False,
        )
        lines = [line for line in messages(output) if not proxy_log.SUMMARY.pattern.fullmatch(line)]
        return {
            "exit": status,
            "summary": re.sub(r", \d+ bytes/s$", ", N bytes/s", summary.rstrip()),
            "summaries_while_idle": len(messages(output)) - len(lines),
            "stopping": lines[0],
            "relayed": [
                (line["up"], line["down"], line["outcome"]) for line in relay_lines(output)
            ],
            "final": re.sub(r"after \d+\.\d s", "after N s", lines[-1]),
            "client_saw": client_saw,
            "origin_saw": origin_saw["data"],
            "process_gone": process_gone,
            "listening_after": refused.returncode,
        }

    assert run_in_netns(body, nft_rules=RULES) == {
        "exit": 0,
        "summary": "summary: 1 open, 0 relayed, 0 refused, 0 failed, 15 bytes up, "
        "0 bytes down, N bytes/s",
        "summaries_while_idle": 0,
        "stopping": "stopping: 1 open connections get 1 s",
        "relayed": [("15", "0", "cut at shutdown")],
        "final": "stopped after N s: 0 open, 1 relayed, 0 refused, 0 failed, "
        "15 bytes up, 0 bytes down",
        # A cut connection is reset on both sides: neither takes it for complete.
        "client_saw": (b"", "reset"),
        "origin_saw": (b"partial request", "reset"),
        "process_gone": True,
        "listening_after": 7,  # curl: could not connect
    }


def test_a_rule_without_the_loop_exemption_is_named_and_the_loop_ends(proxy_way: str) -> None:
    """The upstream comes back into the proxy: that connection is refused at
    once with the rule to add, so the loop ends at its first turn instead of
    exhausting the descriptors."""

    def body() -> dict[str, object]:
        with running(proxy_command(), ready=PROXY_READY) as proxy:
            curl = subprocess.run(
                ["curl", "-sS", "--max-time", "10", f"{ORIGIN}/"],
                capture_output=True,
                text=True,
                check=False,
            )
            open_descriptors = len(list(Path(f"/proc/{proxy.pid}/fd").iterdir()))
            status, output = stop(proxy)
        lines = [
            re.sub(r"(127\.0\.0\.1[: ](?:port )?)\d+", r"\1PORT", line) for line in messages(output)
        ]
        return {
            "curl failed": curl.returncode in CURL_NO_REPLY,
            "loop lines": [line for line in lines if "came back" in line],
            "relayed": [line for line in lines if " -> " in line],
            # A loop would take them to the limit (1024); the native path
            # keeps a few more than the others (its epoll, two eventfds,
            # the emptied pipes it reuses).
            "descriptors bounded": open_descriptors < 32,
            "exit": status,
        }

    # Workers recognise each other's upstreams by the loop mark, which an
    # accepted connection shows only with tcp_fwmark_accept (docs/linux.md).
    sysctls = {"net.ipv4.tcp_fwmark_accept": "1"} if proxy_way.endswith("workers") else {}
    result = run_in_netns(body, nft_rules=LOOPING_RULES, sysctls=sysctls)
    relayed = result.pop("relayed")
    assert result == {
        "curl failed": True,
        "loop lines": [
            "refused 127.0.0.1 port PORT: the proxy's own upstream connection came back: the "
            "redirect rule does not skip the loop mark 0x40 (or the upstream carried no "
            "records): put "
            "`meta mark & 0x40 == 0x40 return` (nft) or "
            "`iptables -t nat -I OUTPUT -m mark --mark 0x40/0x40 -j RETURN` (iptables) before it"
        ],
        "descriptors bounded": True,
        "exit": 0,
    }
    # The client's own connection, relayed until its upstream was refused.
    assert len(relayed) == 1 and relayed[0].startswith("127.0.0.1:PORT -> 127.0.0.2:8080: ")  # type: ignore[index]


def test_transparent_relays_what_a_tcp_tproxy_rule_diverts(site: Path) -> None:
    """A TCP TPROXY rule hands a connection only to an IP_TRANSPARENT
    listener: with --transparent the proxy gets it and relays it to the
    origin; without, the rule finds no listener and the client reaches the
    origin itself, unseen by the proxy."""
    from test_tproxy import TPROXY_RULES

    def attempt(*flags: str) -> dict[str, object]:
        command = [*proxy_command(*flags)]
        command[command.index("127.0.0.1:15001")] = "0.0.0.0:15001"
        with running(command, ready="listening on 0.0.0.0 port 15001") as proxy:
            fetched = subprocess.run(
                ["curl", "-sS", "--max-time", "10", f"{ORIGIN}/file001.txt"],
                capture_output=True,
                text=True,
                check=False,
            )
            status, output = stop(proxy)
        return {
            "curl": (fetched.returncode, fetched.stdout),
            "relayed": [(line["target"], line["outcome"]) for line in relay_lines(output)],
            "exit": status,
        }

    def body() -> dict[str, object]:
        subprocess.run(["ip", "rule", "add", "fwmark", "1", "lookup", "100"], check=True)
        subprocess.run(
            ["ip", "route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", "100"], check=True
        )
        with running(origin_command(site), ready="ready"):
            return {"transparent": attempt("--transparent"), "plain": attempt()}

    assert run_in_netns(body, nft_rules=TPROXY_RULES) == {
        "transparent": {
            "curl": (0, "file 1\nfile 1\n"),
            "relayed": [("127.0.0.2:8080", "closed")],
            "exit": 0,
        },
        "plain": {"curl": (0, "file 1\nfile 1\n"), "relayed": [], "exit": 0},
    }


def test_json_log_one_object_a_line(site: Path) -> None:
    """--log-format json: every line is one JSON object whose message is
    the text line its event and fields make."""

    def body() -> list[dict[str, object]]:
        with (
            running(origin_command(site), ready="ready"),
            running(proxy_command("--log-format", "json")) as proxy,
        ):
            assert proxy.stdout is not None
            # Listening, privileges, capacity: read from the buffer that
            # communicate() would pass over.
            first = [proxy.stdout.readline() for _ in range(3)]
            for url in (f"{ORIGIN}/file007.txt", "http://127.0.0.1:15001/file007.txt"):
                subprocess.run(["curl", "-sS", "--max-time", "10", url], capture_output=True)
            status, output = stop(proxy)
        assert status == 0
        return [json.loads(line) for line in [*first, *output.splitlines()]]

    entries = run_in_netns(body, nft_rules=RULES)
    for entry in entries:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", str(entry.pop("time")))
        kind = proxy_log.EVENTS[str(entry["event"])]
        fields = {name: entry[name] for name in kind.fields}
        assert entry == {
            "level": logging.getLevelName(kind.level),
            "event": kind.event,
            "message": kind.line(**fields),
            **fields,
        }
    assert [entry["event"] for entry in entries] == [
        "listening",
        "privileges",
        "capacity",
        "relayed",
        "refused",
        "stopping",
        "stopped",
    ]
    relayed = entries[3]
    assert (relayed["target"], relayed["outcome"], relayed["up"] > 0) == (
        "127.0.0.2:8080",
        "closed",
        True,
    )
    assert (entries[-1]["relayed"], entries[-1]["refused"]) == (1, 1)


def test_quiet_logs_only_warnings_with_time_and_level(site: Path) -> None:
    """--quiet: a relayed connection says nothing; a refused one is a
    WARNING line with the time in UTC."""

    def body() -> dict[str, object]:
        with (
            running(origin_command(site), ready="ready"),
            running(proxy_command("--quiet")) as proxy,
        ):
            direct = 7  # curl: could not connect (the proxy is not listening yet)
            for _ in range(100):
                direct = subprocess.run(
                    ["curl", "-sS", "--max-time", "10", "http://127.0.0.1:15001/"],
                    capture_output=True,
                ).returncode
                if direct != 7:
                    break
                time.sleep(0.1)
            relayed = subprocess.run(
                ["curl", "-sS", "--max-time", "10", f"{ORIGIN}/file007.txt"],
                capture_output=True,
                text=True,
            )
            status, output = stop(proxy)
        return {
            "direct": direct in CURL_NO_REPLY,
            "relayed": (relayed.returncode, relayed.stdout),
            "lines": [
                re.sub(
                    r"^\S+Z WARNING refused 127\.0\.0\.1:\d+:", "TIME WARNING refused PEER:", line
                )
                for line in output.splitlines()
            ],
            "exit": status,
        }

    assert run_in_netns(body, nft_rules=RULES) == {
        "direct": True,
        "relayed": (0, "file 7\n" * 8),
        "lines": ["TIME WARNING refused PEER: not redirected (addressed to the proxy itself)"],
        "exit": 0,
    }


# What a client can push through a proxy whose origin does not read: the
# kernel's buffers on the way (each socket's autotuned to tcp_wmem/tcp_rmem
# maxima, a few MiB, and a 1 MiB pipe) but not the proxy's memory.
PUSH_LIMIT = 256 * MIB
BUFFERED_AT_MOST = 64 * MIB
# No send has gone through for this long: everything on the way is full.
STALLED_SECONDS = 0.5


def test_a_slow_origin_slows_the_client() -> None:
    """Back-pressure: with the origin not reading, the client's sends stall
    after what the buffers on the way hold; then the origin reads all of it,
    and the proxy counts exactly that."""

    def body() -> dict[str, object]:
        with running(proxy_command(), ready=PROXY_READY) as proxy:
            listener = origin_listener()
            stalled = threading.Event()
            received: list[int] = []

            def read_when_stalled(connection: socket.socket) -> None:
                assert stalled.wait(60)
                received.append(len(read_all(connection)))

            origin = serve_once(listener, read_when_stalled)
            client = socket.create_connection(("127.0.0.2", 8080), timeout=10)
            client.setblocking(False)
            block = bytes(MIB)
            pushed = 0
            while pushed < PUSH_LIMIT:
                _, writable, _ = select.select([], [client], [], STALLED_SECONDS)
                if not writable:
                    break
                try:
                    pushed += client.send(block)
                except BlockingIOError:
                    continue
            stalled.set()
            client.setblocking(True)
            client.shutdown(socket.SHUT_WR)
            origin.join()
            client.close()
            listener.close()
            status, output = stop(proxy)
        return {
            "bounded": pushed < BUFFERED_AT_MOST,
            "origin got all": received == [pushed],
            "counted": [int(line["up"]) for line in relay_lines(output)] == [pushed],
            "exit": status,
        }

    assert run_in_netns(body, nft_rules=RULES) == {
        "bounded": True,
        "origin got all": True,
        "counted": True,
        "exit": 0,
    }


def test_a_port_in_use_is_an_error(proxy_way: str) -> None:
    """Another socket on the port: the proxy (each worker) says so and
    exits 1, on every way; with workers, the parent names each one, which
    it does not replace (it never listened)."""

    def body() -> tuple[int, list[str], list[str]]:
        with socket.create_server(("127.0.0.1", 15001)):
            result = subprocess.run(
                proxy_command(),
                capture_output=True,
                text=True,
                check=False,
                timeout=30,
                cwd=NEUTRAL_DIRECTORY,
            )
        lines = sorted(re.sub(r"pid \d+", "pid N", line) for line in messages(result.stdout))
        return result.returncode, lines, sorted(set(result.stderr.splitlines()))

    workers = proxy_way.endswith("workers")
    assert run_in_netns(body) == (
        1,
        [
            f"worker {number} (pid N) exited with status 1: it never listened, so the proxy stops"
            for number in range(2 if workers else 0)
        ],
        [
            "wfpredirect proxy: [Errno 98] error while attempting to bind on address "
            "('127.0.0.1', 15001): address already in use"
        ],
    )
