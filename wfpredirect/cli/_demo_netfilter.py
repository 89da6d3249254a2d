"""The demo on Linux, as root: this process moves into a new network
namespace of its own (so everything it creates vanishes with it), captures
the origin's traffic (wfpredirect.Capture: an nftables table that goes with
the process holding it), starts an HTTP origin, shows one connection's
redirect state and the loop that the records prevent, hands the capture to
``python -m wfpredirect proxy --capture``, then drives HTTP clients through
the proxy and checks every answer."""

from __future__ import annotations

import ctypes
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from .._backend_netfilter import SO_MARK
from .._capture import Capture
from .._capture_routes import capture_tables
from .._errors import UnsupportedError
from .._marks import LOOP_MARK
from .._nftables import Nftables, load_library
from .._socket import RedirectSocket
from . import _proxy_log as proxy_log
from ._doctor_netfilter import process_status

CLONE_NEWNET = 0x40000000  # linux/sched.h
PR_SET_PDEATHSIG = 1  # linux/prctl.h
CAP_SYS_ADMIN = 21  # linux/capability.h: unshare(CLONE_NEWNET)

ORIGIN = ("127.0.0.2", 8080)
PROXY = ("127.0.0.1", 15001)
# Before each line of the proxy's log, relayed into the demo's output.
PROXY_LOG_PREFIX = "proxy | "
REQUESTS = 20
CLIENTS = 4
STEPS = 6
CAPTURE = f"tcp:{ORIGIN[0]}:{ORIGIN[1]}"

_output_lock = threading.Lock()


def say(line: str = "", indent: int = 0) -> None:
    """One whole line at a time: clients and the proxy's log print at once."""
    with _output_lock:
        sys.stdout.write(" " * indent + line + "\n")
        sys.stdout.flush()


def step(number: int, text: str) -> None:
    say(f"[{number}/{STEPS}] {text}")


class Interrupted(Exception):
    """SIGINT or SIGTERM: unwind, cleaning up on the way."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _interrupt(signum: int, frame: object) -> None:
    raise Interrupted(signum)


def _missing_requirements() -> list[str]:
    problems = []
    if not int(process_status()["CapEff"], 16) >> CAP_SYS_ADMIN & 1:
        problems.append(
            "the demo needs root: it creates a network namespace and loads an nft rule. "
            f"Run it as: sudo {sys.executable} -m wfpredirect demo"
        )
    if shutil.which("ip") is None:
        problems.append("the command 'ip' is missing: apt-get install iproute2")
    try:
        load_library()
    except UnsupportedError as error:
        problems.append(str(error.strerror))
    return problems


def _enter_new_network_namespace() -> str:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"unshare(CLONE_NEWNET): {os.strerror(error)}")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    return os.readlink("/proc/self/ns/net")


def _die_with_the_demo() -> None:
    """In each child: SIGTERM when the demo dies, even by SIGKILL, so no
    process keeps the namespace alive. (Run before any thread exists.)"""
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@contextmanager
def _child(command: list[str], ready: str) -> Iterator[subprocess.Popen[str]]:
    """Start `command`, wait for its line starting with `ready`; stop it at the end."""
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        preexec_fn=_die_with_the_demo,
        cwd="/",
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not proxy_log.message(line).startswith(ready):
            raise RuntimeError(f"{command[2:4]} did not start: {line!r}")
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _make_site(directory: Path) -> dict[str, bytes]:
    pages = {}
    for number in range(REQUESTS):
        body = f"page {number} from the origin\n".encode() * (number * 50 + 1)
        (directory / f"page{number:02}.txt").write_bytes(body)
        pages[f"/page{number:02}.txt"] = body
    return pages


def _show_one_connection() -> None:
    """Accept one redirected connection here, show its redirect state, and
    open its upstream twice: without the records, then with them."""
    with ExitStack() as stack:
        listener = stack.enter_context(RedirectSocket(socket.AF_INET, socket.SOCK_STREAM))
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(PROXY)
        listener.listen()
        listener.settimeout(5)
        stack.enter_context(socket.create_connection(ORIGIN, timeout=5))
        connection, peer = listener.accept()
        stack.enter_context(connection)
        destination = connection.original_destination
        records = connection.redirect_records
        assert destination is not None and records is not None
        say(
            f"a client connected to {ORIGIN[0]} port {ORIGIN[1]}; a listener on port "
            f"{PROXY[1]} accepted it, from {peer[0]} port {peer[1]}",
            6,
        )
        say(f"original destination: {destination[0]} port {destination[1]}", 6)
        say(
            f"redirect records: {len(records)} bytes, {records.hex()} (on Linux the "
            "package's own format: the original destination and the inbound mark)",
            6,
        )
        say(
            f"redirect context: {connection.redirect_context!r} "
            "(netfilter keeps no driver context)",
            6,
        )

        stack.enter_context(socket.create_connection(destination[:2], timeout=5))
        came_back, _ = listener.accept()
        stack.enter_context(came_back)
        looped_to = came_back.original_destination
        assert looped_to is not None
        say(
            "upstream WITHOUT the records: the rule redirected it back into the proxy "
            f"(it arrived for {looped_to[0]} port {looped_to[1]} again): a loop",
            6,
        )

        upstream = stack.enter_context(connection.create_upstream(timeout=5))
        upstream.sendall(b"GET /page00.txt HTTP/1.0\r\n\r\n")
        status = upstream.makefile("rb").readline().decode().strip()
        mark = upstream.getsockopt(socket.SOL_SOCKET, SO_MARK)
        say(
            f"upstream WITH the records: mark {mark:#x}, which the rule lets pass; "
            f"the origin answered {status!r}",
            6,
        )


def _relay_proxy_log(proxy: subprocess.Popen[str]) -> threading.Thread:
    def relay() -> None:
        assert proxy.stdout is not None
        for line in proxy.stdout:
            say(f"{PROXY_LOG_PREFIX}{line.rstrip()}", 6)

    thread = threading.Thread(target=relay, daemon=True)
    thread.start()
    return thread


def _fetch(path: str) -> bytes:
    connection = http.client.HTTPConnection(*ORIGIN, timeout=10)
    try:
        connection.request("GET", path)
        return connection.getresponse().read()
    finally:
        connection.close()


def _drive_clients(pages: dict[str, bytes]) -> int:
    """Fetch every page through the proxy, CLIENTS at a time; how many were right."""

    def check(path: str) -> bool:
        body = _fetch(path)
        correct = body == pages[path]
        say(
            f"GET http://{ORIGIN[0]}:{ORIGIN[1]}{path}: {len(body)} bytes, "
            f"{'correct' if correct else 'WRONG'}",
            6,
        )
        return correct

    with ThreadPoolExecutor(CLIENTS) as pool:
        return sum(pool.map(check, pages))


def _demo(site: Path, stack: ExitStack, keep_running: bool) -> int:
    namespace = _enter_new_network_namespace()
    step(
        1,
        f"a network namespace of this process alone, {namespace}: only a loopback "
        "interface; it disappears when the demo ends",
    )
    capture = stack.enter_context(Capture(CAPTURE, tcp_port=PROXY[1]))
    step(
        2,
        f"a capture (wfpredirect.Capture) sends connections for {ORIGIN[0]}:{ORIGIN[1]} to "
        f"port {PROXY[1]}, except those carrying the loop mark {LOOP_MARK:#x}: an nftables "
        "table that the kernel removes with the process holding it",
    )
    for line in capture.ruleset.splitlines():
        say(line, 6)
    pages = _make_site(site)
    origin = stack.enter_context(
        _child(
            [
                sys.executable,
                "-u",
                "-m",
                "http.server",
                str(ORIGIN[1]),
                "--bind",
                ORIGIN[0],
                "--directory",
                str(site),
            ],
            ready="Serving HTTP",
        )
    )
    step(
        3,
        f"the origin: Python's HTTP server on {ORIGIN[0]} port {ORIGIN[1]} "
        f"(pid {origin.pid}), {len(pages)} pages",
    )

    step(4, "one redirected connection, accepted here with RedirectSocket:")
    _show_one_connection()

    proxy_command = [
        sys.executable,
        "-m",
        "wfpredirect",
        "proxy",
        "--listen",
        f"{PROXY[0]}:{PROXY[1]}",
        "--summary-interval",
        "0",
        "--grace",
        "1",
        "--capture",
        CAPTURE,
    ]
    # The proxy takes the capture over: a table of its own, that goes with it.
    capture.close()
    proxy = stack.enter_context(
        _child(proxy_command, ready=proxy_log.LISTENING.line(host=PROXY[0], port=PROXY[1]))
    )
    step(5, f"the proxy: {' '.join(['python', *proxy_command[1:]])} (pid {proxy.pid})")
    log = _relay_proxy_log(proxy)

    step(
        6,
        f"{len(pages)} HTTP requests to {ORIGIN[0]}:{ORIGIN[1]}, {CLIENTS} at a time, "
        "each relayed by the proxy:",
    )
    correct = _drive_clients(pages)
    say(f"{correct} of {len(pages)} answers correct")
    if keep_running:
        # The announcement is inside the try: a signal sent the moment it is read
        # still ends the demo the normal way.
        try:
            say(
                f"still running, for clients of your own: nsenter --net=/proc/{os.getpid()}"
                f"/ns/net curl http://{ORIGIN[0]}:{ORIGIN[1]}/page01.txt ; Ctrl-C (or "
                "SIGTERM) ends the demo and removes everything"
            )
            while True:
                time.sleep(3600)
        except Interrupted:
            pass
    proxy.send_signal(signal.SIGTERM)
    proxy.wait(timeout=10)
    log.join(timeout=10)
    say(f"the proxy stopped with exit status {proxy.returncode}")
    nftables = Nftables()
    try:
        left = len(capture_tables(nftables))
    finally:
        nftables.close()
    say(f"capture tables left in the namespace: {left} (the proxy's went with it)")
    return 0 if correct == len(pages) and proxy.returncode == 0 else 1


def run_netfilter_demo(keep_running: bool) -> int:
    problems = _missing_requirements()
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1
    say("wfpredirect demo: a transparent proxy in a throw-away network namespace")
    previous: dict[int, Any] = {
        signum: signal.signal(signum, _interrupt) for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        with tempfile.TemporaryDirectory(prefix="wfpredirect-demo-") as site, ExitStack() as stack:
            try:
                status = _demo(Path(site), stack, keep_running)
            finally:
                # No second signal may cut the cleanup short.
                for signum in previous:
                    signal.signal(signum, signal.SIG_IGN)
    except Interrupted as interruption:
        say(
            f"interrupted by {interruption}: the proxy and the origin are stopped, the "
            "namespace goes with this process"
        )
        return 128 + interruption.signum
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    say("done: the proxy and the origin are stopped, the namespace goes with this process")
    return status
