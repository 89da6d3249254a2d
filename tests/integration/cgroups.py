"""A bound on the processes a test starts: a pids cgroup (v1) of its own.

``with pids_cgroup(10) as group: subprocess.Popen(..., preexec_fn=group.enter)``
puts the started process, and everything it forks, under pids.max = 10 (a
fork beyond it fails with EAGAIN). At the end the group must be empty: what
is left is killed, the group removed, and the test fails naming it.
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from support import unavailable

#: Where the v1 pids controller is mounted.
PIDS_ROOT = Path("/sys/fs/cgroup/pids")
#: How long what is killed at the end may take to leave the group (seconds).
_EMPTIED_WITHIN = 10.0
_names = itertools.count()


class PidsGroup:
    def __init__(self, path: Path) -> None:
        self.path = path

    def enter(self) -> None:
        """Move the calling process into the group (a preexec_fn)."""
        (self.path / "cgroup.procs").write_text(f"{os.getpid()}\n")

    def procs(self) -> list[int]:
        """The processes alive in the group now (an ended one, not yet waited
        for, is no longer listed, though pids.current still counts it)."""
        return [int(pid) for pid in (self.path / "cgroup.procs").read_text().split()]


@contextmanager
def pids_cgroup(limit: int) -> Iterator[PidsGroup]:
    if not (PIDS_ROOT / "cgroup.procs").is_file():
        unavailable(f"no cgroup v1 pids controller at {PIDS_ROOT}")
    path = PIDS_ROOT / f"wfpredirect-test-{os.getpid()}-{next(_names)}"
    path.mkdir()
    group = PidsGroup(path)
    left: list[int] = []
    try:
        (path / "pids.max").write_text(f"{limit}\n")
        yield group
    finally:
        left = group.procs()
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + _EMPTIED_WITHIN
        while group.procs() and time.monotonic() < deadline:
            time.sleep(0.05)
        path.rmdir()
    assert left == [], f"processes left behind in the test's cgroup: {left}"
