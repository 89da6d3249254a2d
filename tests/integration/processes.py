"""Programs under test, run as real processes."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

from support import NEUTRAL_DIRECTORY


@contextmanager
def running(
    command: list[str], env: dict[str, str] | None = None, ready: str | None = None
) -> Iterator[subprocess.Popen[str]]:
    """Start `command`; wait for the line `ready` on its stdout; stop it at the end."""
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
            assert line.startswith(ready), (line, process.stderr.read() if process.stderr else "")
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
