"""The native module declares itself GIL-free (it keeps no shared mutable
state): on a free-threaded build importing it leaves the GIL off, and on
every build its functions give the same answers from many threads at once.

.ci/run's free-threaded pass sets WFPREDIRECT_FREE_THREADED=1: there the
GIL-free check must run, and on a build with the GIL it fails under
WFPREDIRECT_STRICT=1 instead of skipping. Elsewhere it skips on such a build."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import sysconfig
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

import wfpredirect
from support import NEUTRAL_DIRECTORY, unavailable
from test_wfpsampler_context import sockaddr_in, sockaddr_in6

FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
# Set by .ci/run's free-threaded pass, which must not skip for want of one.
FREE_THREADED_PASS = os.environ.get("WFPREDIRECT_FREE_THREADED") == "1"
NEEDS_FREE_THREADED = "needs a free-threaded build (such as 3.14t)"
THREADS = 8
ROUNDS = 1000

# A module that does not declare itself GIL-free turns the GIL back on at
# import, with a RuntimeWarning; -W error makes that fail too.
GIL_PROBE = "import sys, wfpredirect; print(sys._is_gil_enabled())"


def test_import_leaves_the_gil_off() -> None:
    if not FREE_THREADED:
        if FREE_THREADED_PASS:
            unavailable(f"this is the free-threaded pass and {sys.executable} has the GIL")
        pytest.skip(NEEDS_FREE_THREADED)
    # Without PYTHON_GIL (the free-threaded pass sets it to 0, which would
    # keep the GIL off whatever the module declares).
    environment = {k: v for k, v in os.environ.items() if k != "PYTHON_GIL"}
    completed = subprocess.run(
        [sys.executable, "-W", "error", "-c", GIL_PROBE],
        capture_output=True,
        text=True,
        check=True,
        cwd=NEUTRAL_DIRECTORY,
        env=environment,
    )
    assert completed.stdout == "False\n"


def outcome(call: Callable[..., object], *arguments: object) -> tuple[str, object]:
    """What a call gave: ("ok", its value) or (the error's class, its errno)."""
    try:
        return ("ok", call(*arguments))
    except wfpredirect.RedirectError as error:
        return (type(error).__name__, error.errno)


def test_threads_get_the_single_threaded_answers() -> None:
    contexts = [
        sockaddr_in("192.0.2.7", 443) + sockaddr_in("127.0.0.1", 15001),
        sockaddr_in6("2001:db8::1", 8443, 5, 3) + sockaddr_in6("::1", 15001),
    ]

    def answers(sock: socket.socket) -> list[tuple[str, object]]:
        return [
            *(outcome(wfpredirect.decode_wfpsampler_context, context) for context in contexts),
            outcome(wfpredirect.query_redirect_records, sock),
            outcome(wfpredirect.query_redirect_context, sock),
            outcome(wfpredirect.original_destination, sock),
        ]

    with socket.socket() as sock:
        expected = answers(sock)
    start = threading.Barrier(THREADS)

    def hammer(_: int) -> set[str]:
        # Each thread has its own unconnected socket: not redirected.
        with socket.socket() as sock:
            start.wait()
            return {repr(answers(sock)) for _ in range(ROUNDS)}

    with ThreadPoolExecutor(THREADS) as pool:
        seen = set().union(*pool.map(hammer, range(THREADS)))
    assert seen == {repr(expected)}
