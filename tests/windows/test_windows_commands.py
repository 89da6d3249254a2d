"""``wfpredirect doctor`` and ``wfpredirect demo`` as a Windows user runs
them: the exit status and the text, inside Windows CPython.

What the WFP IOCTLs answer on a plain loopback connection decides the
report: WSAEOPNOTSUPP under Wine (and behind a layered provider), a
not-redirected code on Windows itself and with the emulated callout. The
test asks the same question first, independently of the doctor, and then
expects that report line for line.
"""

from __future__ import annotations

import ctypes
import platform
import socket
import subprocess
import sys

import pytest

import wfpredirect
from support import NEUTRAL_DIRECTORY

pytestmark = pytest.mark.skipif(
    sys.platform != "win32", reason="needs Windows CPython (the Windows lane runs it in Wine)"
)

IOCTLS_UNSUPPORTED = [
    "1 problem:",
    "- WFP redirect IOCTLs: this transport does not support the WFP IOCTLs (WSAEOPNOTSUPP): "
    "a layered service provider in the way, or Wine",
    "  what to do: run on Windows 8.1 / Server 2012 R2 or later without layered providers "
    "(netsh winsock show catalog)",
]


def run(command: str) -> tuple[int, list[str]]:
    completed = subprocess.run(
        [sys.executable, "-m", "wfpredirect", command],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
        cwd=NEUTRAL_DIRECTORY,
        timeout=120,
    )
    assert completed.stderr == ""
    return completed.returncode, completed.stdout.splitlines()


def records_answer() -> OSError:
    """What a records query answers on a loopback connection here."""
    with (
        socket.create_server(("127.0.0.1", 0)) as listener,
        socket.create_connection(listener.getsockname(), timeout=5),
    ):
        accepted, _ = listener.accept()
        with accepted:
            try:
                wfpredirect.query_redirect_records(accepted)
            except OSError as error:
                return error
    raise AssertionError("a plain loopback connection reported redirect records")


def expected_report() -> tuple[int, list[str], list[str]]:
    """The report's rows (up to the blank line) and problems, as the
    machine's answers make them."""
    answer = records_answer()
    rows = [
        "backend              winsock",
        f"wfpredirect          {wfpredirect.__version__}",
        f"python               {platform.python_version()} ({sys.executable})",
        f"Windows              {platform.platform()} (build {platform.version()})",
    ]
    if isinstance(answer, wfpredirect.UnsupportedError):
        rows.append(f"WFP redirect IOCTLs  not supported: {answer}")
        problems = IOCTLS_UNSUPPORTED
    else:
        assert isinstance(answer, wfpredirect.NotRedirectedError), answer
        rows.append(
            f"WFP redirect IOCTLs  answer (a test connection: not redirected, winerror "
            f"{answer.winerror})"
        )
        problems = []
    return (1 if problems else 0), rows, problems


def test_doctor_reports_what_this_windows_offers() -> None:
    status, lines = run("doctor")
    expected_status, rows, problems = expected_report()
    assert status == expected_status, lines
    assert lines[: len(rows)] == rows
    # Then SO_ORIGINAL_DST (its text depends on the build), administrator,
    # and the two fixed rows.
    assert lines[len(rows)].startswith("SO_ORIGINAL_DST      ")
    admin = "yes" if ctypes.windll.shell32.IsUserAnAdmin() else "no: "
    assert lines[len(rows) + 1].startswith(f"administrator        {admin}")
    assert lines[len(rows) + 2 : len(rows) + 5] == [
        "marks                not used on Windows (the callout driver reads the records)",
        "redirect             needs a WFP callout driver that redirects connections to the "
        "proxy (for example Microsoft's WFPSampler)",
        "",
    ]
    assert lines[len(rows) + 5 :] == (problems or ["no problems found"])


def test_demo_explains_the_driver_then_runs_the_doctor() -> None:
    status, lines = run("demo")
    doctor_status, doctor_lines = run("doctor")
    assert status == doctor_status
    assert lines[0] == "wfpredirect demo on Windows"
    assert "    python -m wfpredirect proxy --listen 127.0.0.1:15001" in lines
    marker = lines.index("What this machine offers (python -m wfpredirect doctor):")
    assert lines[marker + 1 :] == ["", *doctor_lines]


@pytest.mark.parametrize("flag", ["--transparent", "--keep-client-address"])
def test_proxy_refuses_what_only_linux_has(flag: str) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "wfpredirect", "proxy", "--listen", "127.0.0.1:0", flag],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
        cwd=NEUTRAL_DIRECTORY,
        timeout=120,
    )
    assert (completed.returncode, completed.stdout, completed.stderr) == (
        2,
        "",
        "wfpredirect proxy: --transparent and --keep-client-address are Linux's "
        "(IP_TRANSPARENT: a TPROXY listener, an upstream bound to the client's address)\n",
    )


def test_capture_is_refused_with_where_to_read_why() -> None:
    """--capture installs nftables rules: on Windows there is nothing to
    install without a callout driver."""
    completed = subprocess.run(
        [sys.executable, "-m", "wfpredirect", "proxy", "--listen", "127.0.0.1:15001",
         "--capture", "tcp:127.0.0.2:8080"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False,
        cwd=NEUTRAL_DIRECTORY, timeout=120,
    )  # fmt: skip
    assert (completed.returncode, completed.stdout, completed.stderr) == (
        2,
        "",
        "wfpredirect proxy: --capture: Windows has no rules to install without a callout "
        "driver (see docs/windows.md)\n",
    )
