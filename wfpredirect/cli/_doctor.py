"""``python -m wfpredirect doctor``: what this machine offers a transparent
proxy, and for each problem what to do. The checks are the platform's
(_platform: _doctor_netfilter, _doctor_winsock); this module runs and prints
them."""

from __future__ import annotations

import platform
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from .._core import BACKEND


@dataclass
class Finding:
    """One line of the report; a problem comes with what to do about it."""

    name: str
    value: str
    problem: str = ""
    what_to_do: str = ""


@contextmanager
def loopback_connection() -> Iterator[socket.socket]:
    """The accepted end of a loopback TCP connection that nothing redirected."""
    with (
        socket.create_server(("127.0.0.1", 0)) as listener,
        socket.create_connection(listener.getsockname(), timeout=5),
    ):
        accepted, _ = listener.accept()
        with accepted:
            yield accepted


def test_connection_error(query: Callable[[socket.socket], object]) -> Exception | None:
    """What `query` raises on the accepted end of a loopback connection
    nothing redirected (an OSError, or ValueError for invalid marks); None
    when it answers."""
    try:
        with loopback_connection() as accepted:
            query(accepted)
    except (OSError, ValueError) as error:
        return error
    return None


def query_failed(name: str, error: Exception) -> Finding:
    """A query that fails in a way no machine should."""
    return Finding(
        name,
        f"failed: {error}",
        problem="the query does not work here",
        what_to_do="report this with the output of this command",
    )


def run_doctor(checks: Callable[[], list[Finding]]) -> int:
    """Print the report, the platform's `checks` after what every platform
    says; exit status 0 without problems, else 1."""
    from .. import __version__

    findings = [
        Finding("backend", BACKEND),
        Finding("wfpredirect", __version__),
        Finding("python", f"{platform.python_version()} ({sys.executable})"),
        *checks(),
    ]
    width = max(len(finding.name) for finding in findings)
    for finding in findings:
        print(f"{finding.name:<{width}}  {finding.value}")
    problems = [finding for finding in findings if finding.problem]
    print()
    if not problems:
        print("no problems found")
        return 0
    print(f"{len(problems)} problem{'s' if len(problems) > 1 else ''}:")
    for finding in problems:
        print(f"- {finding.name}: {finding.problem}")
        print(f"  what to do: {finding.what_to_do}")
    return 1
