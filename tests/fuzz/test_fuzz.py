"""Bounded fuzzing runs: libFuzzer harnesses (clang) on the C++ parsers of
untrusted bytes, and atheris harnesses on the Python entry points, each
seeded from its corpus in tests/fuzz/corpus/ (copied, so the checkout is
never written) and run for a few seconds. A crash, a sanitizer report or a
broken invariant fails the test, with the input libFuzzer saved."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support import NEUTRAL_DIRECTORY, require_tool, unavailable

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the fuzz runs use clang's libFuzzer on Linux"
)

HERE = Path(__file__).resolve().parent
CORE = HERE.parents[1] / "csrc" / "core"
CORPUS = HERE / "corpus"

# Every portable core source a harness may reach; the linker drops the rest.
CORE_SOURCES = [
    CORE / "netfilter" / "record.cpp",
    CORE / "common" / "wfpsampler_context.cpp",
    CORE / "common" / "socket_address.cpp",
    CORE / "common" / "control_messages.cpp",
    CORE / "wfp" / "datagrams.cpp",
    # wfp/datagrams asks the socket's family through wfp/connections, and
    # classifies with wfp/errors.
    CORE / "wfp" / "connections.cpp",
    CORE / "wfp" / "errors.cpp",
]
CXXFLAGS = ["-std=c++17", "-g", "-O1", "-Wall", "-Wextra", "-Werror"]
SANITIZERS = ["-fsanitize=fuzzer,address,undefined", "-fno-sanitize-recover=all"]

# Seconds each harness runs (WFPREDIRECT_FUZZ_SECONDS overrides, for a
# longer run by hand), and the fewest inputs a run must have tried: far
# below what any run reaches, it only catches a harness that stopped early.
FUZZ_SECONDS = int(os.environ.get("WFPREDIRECT_FUZZ_SECONDS", "8"))
ATHERIS_SECONDS = int(os.environ.get("WFPREDIRECT_FUZZ_SECONDS", "5"))
MIN_EXECUTIONS = 1000
BUILD_TIMEOUT = 300

LIBFUZZER_HARNESSES = [
    "netfilter_record",
    "wfpsampler_context",
    "control_messages",
    "wfp_receive_datagram",
]
# atheris target -> the corpus it starts from.
ATHERIS_TARGETS = {
    "context": "wfpsampler_context",
    "set_records": "netfilter_record",
    "send_records": "netfilter_record",
}


def fuzz(
    label: str, command: list[str], corpus: str, workdir: Path, seconds: int, **kwargs: object
) -> int:
    """Run a libFuzzer-style `command` on a copy of corpus `corpus`; return
    how many inputs it executed."""
    copy = workdir / "corpus"
    shutil.copytree(CORPUS / corpus, copy)
    result = subprocess.run(
        [
            *command,
            f"-max_total_time={seconds}",
            "-print_final_stats=1",
            f"-artifact_prefix={workdir}/",
            str(copy),
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 120,
        check=False,
        **kwargs,  # type: ignore[arg-type]
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    match = re.search(r"stat::number_of_executed_units: (\d+)", output)
    assert match is not None, output[-6000:]
    executions = int(match.group(1))
    print(f"{label}: {executions} inputs in {seconds} s")
    assert executions >= MIN_EXECUTIONS, output[-6000:]
    return executions


@pytest.mark.parametrize("harness", LIBFUZZER_HARNESSES)
def test_libfuzzer_harness(harness: str, tmp_path: Path) -> None:
    compiler = require_tool("clang++")
    program = tmp_path / f"fuzz_{harness}"
    build = subprocess.run(
        [
            compiler,
            *CXXFLAGS,
            *SANITIZERS,
            "-o",
            str(program),
            str(HERE / f"fuzz_{harness}.cpp"),
            *map(str, CORE_SOURCES),
        ],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    fuzz(harness, [str(program)], harness, tmp_path, FUZZ_SECONDS, cwd=tmp_path)


@pytest.mark.parametrize("target", sorted(ATHERIS_TARGETS))
def test_atheris_harness(target: str, tmp_path: Path) -> None:
    if importlib.util.find_spec("atheris") is None:
        unavailable("atheris is not installed (pip install --group fuzz)")
    command = [sys.executable, str(HERE / "atheris_entry_points.py"), target]
    # From a neutral directory: the installed package, not the checkout.
    fuzz(
        f"atheris {target}",
        command,
        ATHERIS_TARGETS[target],
        tmp_path,
        ATHERIS_SECONDS,
        cwd=NEUTRAL_DIRECTORY,
    )
