"""The Windows core (csrc/core) proven without Windows.

The portable suites (scripted WFP stack, context decoder) build with the
system g++ and run natively; the conformance program builds with mingw-w64
and runs under Wine against real ws2_32 sockets (docs/design.md, "Testing on
machines without Windows"). Each program prints the check sites it reached;
every CHECK written in its sources must be among them, so a suite that
silently shrinks fails, with no count typed twice.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import windows_lane
from support import require_tool

# Cross-compiling with mingw-w64 and running under Wine is how Linux proves
# the Windows core; on Windows itself test_winsock_backend.py runs instead.
pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="proves the Windows core from Linux (mingw, Wine)"
)

REPO = Path(__file__).resolve().parents[2]
CORE = REPO / "csrc" / "core"
HERE = Path(__file__).resolve().parent

CXXFLAGS = ["-std=c++17", "-Wall", "-Wextra", "-Werror"]

# The shared sources these programs need (csrc/core/common); the Windows
# backend (csrc/core/wfp), whose WFP logic (connections.cpp, datagrams.cpp,
# errors.cpp) has no Winsock header and so also builds natively against the scripted
# stack.
PORTABLE_CORE = [
    CORE / "common" / name
    for name in ("wfpsampler_context.cpp", "socket_address.cpp", "control_messages.cpp")
]
WFP_PORTABLE = [CORE / "wfp" / name for name in ("connections.cpp", "datagrams.cpp", "errors.cpp")]
WINDOWS_CORE = sorted((CORE / "wfp").glob("*.cpp"))
SUITES = [
    HERE / name
    for name in (
        "checks.cpp",
        "scripted_stack.cpp",
        "scripted_stack_suite.cpp",
        "context_decoder_suite.cpp",
        "control_messages_suite.cpp",
        "datagram_suite.cpp",
        "windows_addresses.cpp",
    )
]


# What valgrind exits with when it found an error (the program itself
# exits 0 or 1).
VALGRIND_ERROR_EXIT = 99

# Building and running the conformance program take seconds; these bounds only stop a hung tool.
BUILD_TIMEOUT = 300
RUN_TIMEOUT = 300


def build(command: list[str | Path]) -> None:
    result = subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, timeout=BUILD_TIMEOUT
    )
    assert result.returncode == 0, f"build failed:\n{result.stdout}{result.stderr}"


def check_sites(sources: list[Path]) -> set[tuple[str, range]]:
    """Every CHECK(...) written in `sources`: (file name, the lines its call
    spans), the lines a compiler may report as its __LINE__."""
    sites = set()
    for source in sources:
        lines = source.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, start=1):
            if not re.search(r"\bCHECK\(", line) or line.lstrip().startswith("#define"):
                continue
            last = number
            depth = line.count("(") - line.count(")")
            while depth > 0 and last < len(lines):
                depth += lines[last].count("(") - lines[last].count(")")
                last += 1
            sites.add((source.name, range(number, last + 1)))
    return sites


def assert_all_checks_pass(result: subprocess.CompletedProcess[str], sources: list[Path]) -> None:
    """No check failed, and every check site of the program's sources was
    reached (the program prints each site it reached)."""
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    lines = result.stdout.splitlines()
    assert lines, output
    count = re.fullmatch(r"(\d+) checks passed, 0 failed", lines[-1].strip())
    assert count is not None, output
    reached = {
        (name, int(line))
        for name, line in re.findall(r"^reached (\S+):(\d+)\s*$", result.stdout, re.MULTILINE)
    }
    sites = check_sites(sources)
    assert sites, "no CHECK in the sources"
    never_reached = sorted(
        f"{name}:{span.start}"
        for name, span in sites
        if not any((name, line) in reached for line in span)
    )
    assert never_reached == [], output
    assert int(count.group(1)) >= len(sites)


def test_portable_suites_pass_natively(tmp_path: Path) -> None:
    compiler = require_tool("g++")
    program = tmp_path / "windows_core_native"
    # The sanitizers catch any write outside a caller's buffer.
    sanitizers = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
    sources = [HERE / "native_main.cpp", *SUITES, *PORTABLE_CORE, *WFP_PORTABLE]
    build([compiler, *CXXFLAGS, *sanitizers, "-o", program, *sources])
    # LeakSanitizer needs ptrace, which containers often forbid.
    environment = {**os.environ, "ASAN_OPTIONS": "detect_leaks=0"}
    result = subprocess.run(
        [str(program)], capture_output=True, text=True, env=environment, timeout=RUN_TIMEOUT
    )
    assert_all_checks_pass(result, sources)


def test_portable_suites_pass_under_valgrind(tmp_path: Path) -> None:
    """The same program without sanitizers, under valgrind's memcheck:
    uninitialised reads (which AddressSanitizer does not see), invalid
    accesses and leaks fail it."""
    compiler = require_tool("g++")
    valgrind = require_tool("valgrind")
    program = tmp_path / "windows_core_native"
    sources = [HERE / "native_main.cpp", *SUITES, *PORTABLE_CORE, *WFP_PORTABLE]
    build([compiler, *CXXFLAGS, "-g", "-O1", "-o", program, *sources])
    result = subprocess.run(
        [
            valgrind,
            "--quiet",
            f"--error-exitcode={VALGRIND_ERROR_EXIT}",
            "--leak-check=full",
            "--errors-for-leak-kinds=definite,indirect",
            str(program),
        ],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    assert result.returncode != VALGRIND_ERROR_EXIT, result.stderr
    assert_all_checks_pass(result, sources)


def test_conformance_passes_under_wine(tmp_path: Path, wine_environment: dict[str, str]) -> None:
    compiler = require_tool("x86_64-w64-mingw32-g++")
    program = tmp_path / "conformance.exe"
    sources = [HERE / "conformance.cpp", *SUITES, *PORTABLE_CORE, *WINDOWS_CORE]
    build([compiler, *CXXFLAGS, "-static", "-o", program, *sources, "-lws2_32"])
    result = windows_lane.run_wine(["wine", program], env=wine_environment, check=False)
    assert_all_checks_pass(result, sources)
