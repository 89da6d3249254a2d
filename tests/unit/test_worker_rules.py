"""The rules the --workers parent follows (wfpredirect.cli._workers), apart
from the processes (tests/integration/test_workers.py runs those)."""

from __future__ import annotations

import pytest

from support import linux_only
from wfpredirect.cli._workers import describe, exit_status, report_interval, restart_delay


def test_a_replacement_waits_1_s_doubling_to_30_s_and_again_1_s_after_a_steady_minute() -> None:
    delays = []
    previous = None
    for uptime in [0.5] * 7 + [60.0, 3.0]:
        previous = restart_delay(previous, uptime)
        delays.append(previous)
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 1.0, 2.0]


@pytest.mark.parametrize(
    ("summary_interval", "reported"), [(0.0, 1.0), (0.1, 0.1), (0.5, 0.5), (60.0, 1.0)]
)
def test_a_worker_reports_at_least_each_second(summary_interval: float, reported: float) -> None:
    assert report_interval(summary_interval) == reported


@linux_only
@pytest.mark.parametrize(
    ("wait_status", "ended", "status"),
    [
        (0x0000, "exited with status 0", 1),  # a failure that said nothing: 1
        (0x0100, "exited with status 1", 1),
        (0x0300, "exited with status 3", 3),
        (0x0009, "killed by SIGKILL", 137),
        (0x000F, "killed by SIGTERM", 143),
        (0x008B, "killed by SIGSEGV (core dumped)", 139),
    ],
)
def test_how_a_worker_ended_and_the_status_it_gives(
    wait_status: int, ended: str, status: int
) -> None:
    assert (describe(wait_status), exit_status(wait_status)) == (ended, status)
