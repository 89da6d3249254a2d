"""Run a benchmark script inside Windows CPython under Wine, with the
Windows lane's tools (tests/windows/windows_lane.py; cached in
~/.cache/wfpredirect-windows-lane, fetched there the first time).

The checkout's sdist is built into a win_amd64 wheel by MSVC inside the
Windows CPython of --python (the release build, or with --emulated the test
build whose emulated callout driver bench_windows_calls.py needs), as the
lane builds it; the wheel is installed into that interpreter, and the
script runs there from this checkout (its results land in this checkout's
benchmarks/results/), in a Wine prefix of its own, stopped at the end. The
script's output is printed; its exit status is this one's.

Usage: python benchmarks/wine_run.py [--python 3.11] [--emulated]
    [--sdist FILE] SCRIPT [ARGUMENTS...]
Needs Wine, mingw-w64's binutils and `build` (as the lane does).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "windows"))

import windows_lane  # noqa: E402


def make_sdist(folder: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--outdir", str(folder), str(REPO)],
        check=True,
        capture_output=True,
        timeout=windows_lane.TOOL_TIMEOUT,
    )
    (sdist,) = folder.glob("wfpredirect-*.tar.gz")
    return sdist


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--python",
        default="3.11",
        choices=sorted(windows_lane.INTERPRETERS),
        help="the Windows CPython (default 3.11)",
    )
    parser.add_argument(
        "--emulated", action="store_true", help="the test build with the emulated callout"
    )
    parser.add_argument("--sdist", type=Path, help="the sdist to build (default: made now)")
    parser.add_argument("script", type=Path, help="the script to run, in this checkout")
    parser.add_argument("arguments", nargs=argparse.REMAINDER, help="the script's arguments")
    options = parser.parse_args()
    for tool in ("wine", "wineserver", "x86_64-w64-mingw32-objdump"):
        if shutil.which(tool) is None:
            parser.error(f"needs {tool} (Wine and mingw-w64's binutils, as the Windows lane)")
    script = options.script.resolve()
    cache = windows_lane.cache_folder()
    with tempfile.TemporaryDirectory(prefix="wfpredirect-wine-run-") as name:
        work = Path(name)
        wine = windows_lane.create_prefix(work / "prefix")
        try:
            msvc = windows_lane.prepare_msvc(cache)
            sdist = options.sdist.resolve() if options.sdist else make_sdist(work / "sdist")
            python = windows_lane.build_python(cache, options.python, work / "python", msvc, wine)
            wheel = windows_lane.build_wheel(
                python, msvc, sdist, work / "wheel", emulated_callout=options.emulated
            )
            python.run(
                "-m",
                "pip",
                "install",
                "-q",
                "--no-index",
                "--no-deps",
                windows_lane.windows_path(wheel),
            )
            # From a folder of its own, so that nothing but the installed
            # package can be imported as wfpredirect.
            result = windows_lane.run_wine(
                python.command(windows_lane.windows_path(script), *options.arguments),
                env=wine,
                cwd=work,
                check=False,
            )
        finally:
            windows_lane.stop_prefix(wine)
    print(result.stdout, end="")
    print(result.stderr, end="", file=sys.stderr)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
