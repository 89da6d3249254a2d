"""Programs under test, run as real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from support import NEUTRAL_DIRECTORY
from wfpredirect.cli._proxy_log import message


def proxy_command(*extra: str) -> list[str]:
    """``python -m wfpredirect proxy`` on 127.0.0.1:15001 without summaries,
    with `extra` arguments."""
    return [
        sys.executable,
        "-m",
        "wfpredirect",
        "proxy",
        "--listen",
        "127.0.0.1:15001",
        "--summary-interval",
        "0",
        *extra,
    ]


def messages(output: str) -> list[str]:
    """The lines of `output` (a proxy's log), each without its time and level."""
    return [message(line) for line in output.splitlines()]


@contextmanager
def running(
    command: list[str], env: dict[str, str] | None = None, ready: str | None = None
) -> Iterator[subprocess.Popen[str]]:
    """Start `command`; wait for its first line on stdout to start with
    `ready` (after the time and level of a proxy's log line); stop it at the end."""
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=NEUTRAL_DIRECTORY,
    )
    try:
        if ready is not None:
            assert process.stdout is not None
            line = process.stdout.readline()
            if not message(line).startswith(ready):
                raise AssertionError(line, process.stderr.read() if process.stderr else "")
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
