"""``wfpredirect doctor`` off Linux (on Linux, tests/integration/test_doctor.py
runs it in a network namespace): Windows' own checks, and the unsupported
backend's one problem."""

from __future__ import annotations

import subprocess
import sys

import pytest

import wfpredirect
from support import NEUTRAL_DIRECTORY

pytestmark = pytest.mark.skipif(
    sys.platform.startswith("linux"), reason="on Linux the integration test runs the doctor"
)


def doctor() -> tuple[int, list[str]]:
    completed = subprocess.run(
        [sys.executable, "-m", "wfpredirect", "doctor"],
        capture_output=True,
        text=True,
        check=False,
        cwd=NEUTRAL_DIRECTORY,
        timeout=60,
    )
    assert completed.stderr == ""
    return completed.returncode, completed.stdout.splitlines()


def fields(lines: list[str]) -> dict[str, str]:
    return {
        name.strip(): value.strip()
        for name, _, value in (line.partition("  ") for line in lines[: lines.index("")])
    }


def test_the_report_names_the_backend_and_its_checks() -> None:
    status, lines = doctor()
    report = fields(lines)
    assert report["backend"] == wfpredirect.BACKEND
    if wfpredirect.BACKEND == "winsock":
        assert set(report) >= {"Windows", "WFP redirect IOCTLs", "SO_ORIGINAL_DST", "administrator"}
        if status == 0:
            assert lines[-1] == "no problems found"
        else:
            assert status == 1
            assert any(line.endswith(("1 problem:", "problems:")) for line in lines)
    else:
        assert status == 1
        assert lines[-2:] == [
            f"- platform: no backend for {sys.platform}: every wfpredirect call raises "
            "UnsupportedError",
            "  what to do: run the proxy on Linux (netfilter) or Windows (WFP)",
        ]
