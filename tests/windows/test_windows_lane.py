"""The Windows lane: the sdist built into a win_amd64 wheel by MSVC inside
the official Windows CPython (3.10, 3.11, 3.12 and 3.13) under Wine, installed
into a fresh copy of that interpreter, and the Windows suite run there; on
3.11 and 3.13 also the test build with the emulated callout.

What it proves and what it cannot is on the Windows page (docs/windows.md); how it is
prepared is in windows_lane.py. Run it alone with
`pytest tests/windows/test_windows_lane.py` (WFPREDIRECT_SDIST names the
sdist to build; without it the checkout's own is made first).
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import windows_lane
from support import require_tool, unavailable

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="drives Windows CPython under Wine from Linux"
)

REPO = Path(__file__).resolve().parents[2]

# What the lane runs inside Windows CPython: against the release wheel, and
# against the test build with the emulated callout (records present).
WINDOWS_COMMON = ["tests/windows/test_winsock_backend.py", "tests/windows/test_windows_commands.py"]
WINDOWS_SUITE = ["tests/unit", *WINDOWS_COMMON]
EMULATED_SUITE = ["tests/windows/test_emulated_callout.py", *WINDOWS_COMMON]


def collected(*paths: str) -> int:
    """How many tests pytest collects in `paths`, parametrized cases
    counted: here, where they skip, the same cases as inside Windows."""
    # Run from tests/, so that `python -m` puts no source tree of the
    # package first on sys.path.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--collect-only",
            "-q",
            "-p",
            "no:cacheprovider",
            *(str(REPO / path) for path in paths),
        ],
        cwd=REPO / "tests",
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return sum(1 for line in result.stdout.splitlines() if "::" in line)


# The only reasons a test may skip there: behaviour that is Linux's, or
# another build's. A skip for "needs Windows" would mean the lane proved
# nothing about it.
ALLOWED_SKIPS = {
    "tests the netfilter backend, which is Linux's",
    "needs a free-threaded build (such as 3.14t)",
    "this platform has a backend",
    # The embeddable build's ._pth file (tests/unit/test_source_tree.py).
    "this interpreter puts no current directory on sys.path for -m",
}

# The DLLs a module may import on a user's machine: Windows' own (the
# Universal CRT's api-ms-win-crt-* sets are part of Windows 10 and later,
# and CPython's installer brings them to 8.1), and CPython's (the
# interpreter and the compiler runtime it ships beside python.exe).
# MSVCP140.dll, the C++ standard library, is in neither.
WINDOWS_DLLS = {"kernel32.dll", "ws2_32.dll"}
CPYTHON_DLLS = {"vcruntime140.dll", "vcruntime140_1.dll"}
UNIVERSAL_CRT = re.compile(r"api-ms-win-crt-[a-z]+-l1-1-0\.dll")


@dataclass(frozen=True)
class BuiltWheel:
    version: str
    path: Path  # the release build
    emulated: Path | None  # the test build with the emulated callout, where it runs


# Every interpreter gets the release build and the unit suite; those marked
# in windows_lane.INTERPRETERS also get the test build with the emulated
# callout (each build is about half a minute of MSVC under Wine).
VERSIONS = sorted(windows_lane.INTERPRETERS)
EMULATED_VERSIONS = [v for v in VERSIONS if windows_lane.INTERPRETERS[v].emulated_callout]


@pytest.fixture(scope="session")
def lane_tools() -> None:
    for tool in ("wine", "wineserver", "x86_64-w64-mingw32-objdump", "apt-get"):
        require_tool(tool)


@pytest.fixture(scope="session")
def sdist(tmp_path_factory: pytest.TempPathFactory, lane_tools: None) -> Path:
    """The sdist every check uses (.ci/run names it), else one made now."""
    configured = os.environ.get("WFPREDIRECT_SDIST")
    if configured:
        return Path(configured).resolve()
    output = tmp_path_factory.mktemp("sdist")
    result = subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--outdir", str(output), str(REPO)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        unavailable(f"no WFPREDIRECT_SDIST and `python -m build --sdist` failed:\n{result.stderr}")
    (made,) = output.glob("wfpredirect-*.tar.gz")
    return made


@pytest.fixture(scope="session")
def lane(
    wine_environment: dict[str, str], lane_tools: None
) -> Iterator[tuple[Path, windows_lane.Msvc]]:
    cache = windows_lane.cache_folder()
    yield cache, windows_lane.prepare_msvc(cache)


# The builds of a session, by version: the release and the emulated tests
# share one.
_builds: dict[str, BuiltWheel] = {}


def build_for(
    version: str,
    tmp_path_factory: pytest.TempPathFactory,
    lane: tuple[Path, windows_lane.Msvc],
    sdist: Path,
    wine_environment: dict[str, str],
) -> BuiltWheel:
    if version not in _builds:
        cache, msvc = lane
        folder = tmp_path_factory.mktemp(f"windows-build-{version}")
        python = windows_lane.build_python(
            cache, version, folder / "python", msvc, wine_environment
        )
        wheel = windows_lane.build_wheel(python, msvc, sdist, folder / "wheel")
        emulated = None
        if version in EMULATED_VERSIONS:
            emulated = windows_lane.build_wheel(
                python, msvc, sdist, folder / "emulated", emulated_callout=True
            )
        _builds[version] = BuiltWheel(version, wheel, emulated)
    return _builds[version]


@pytest.fixture(scope="session", params=VERSIONS)
def built_wheel(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    lane: tuple[Path, windows_lane.Msvc],
    sdist: Path,
    wine_environment: dict[str, str],
) -> BuiltWheel:
    return build_for(request.param, tmp_path_factory, lane, sdist, wine_environment)


@pytest.fixture(scope="session", params=EMULATED_VERSIONS)
def emulated_build(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    lane: tuple[Path, windows_lane.Msvc],
    sdist: Path,
    wine_environment: dict[str, str],
) -> BuiltWheel:
    """A version's builds where the emulated callout's test build is made too."""
    return build_for(request.param, tmp_path_factory, lane, sdist, wine_environment)


def core_module(wheel: Path, folder: Path) -> Path:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if re.fullmatch(r"wfpredirect/_core\..*\.pyd", n)]
        archive.extract(name, folder)
    return folder / name


def test_the_wheel_is_cpython_s_win_amd64(built_wheel: BuiltWheel, sdist: Path) -> None:
    tag = "cp" + built_wheel.version.replace(".", "")
    project = sdist.name.removesuffix(".tar.gz")
    assert built_wheel.path.name == f"{project}-{tag}-{tag}-win_amd64.whl"
    with zipfile.ZipFile(built_wheel.path) as archive:
        assert f"wfpredirect/_core.{tag}-win_amd64.pyd" in archive.namelist()


def test_the_module_needs_no_visual_cpp_redistributable(
    built_wheel: BuiltWheel, tmp_path: Path
) -> None:
    module = core_module(built_wheel.path, tmp_path)
    imports = {name.lower() for name in windows_lane.dll_imports(module)}
    interpreter = "python" + built_wheel.version.replace(".", "") + ".dll"
    shipped = WINDOWS_DLLS | CPYTHON_DLLS | {interpreter}
    foreign = {n for n in imports if n not in shipped and not UNIVERSAL_CRT.fullmatch(n)}
    assert foreign == set(), f"_core imports DLLs that neither Windows nor CPython ships: {imports}"
    # It does link Winsock and the interpreter (a parse that found nothing
    # would pass the check above).
    assert {"ws2_32.dll", interpreter} <= imports


def test_only_the_test_build_has_the_emulated_callout(
    emulated_build: BuiltWheel, tmp_path: Path
) -> None:
    assert emulated_build.emulated is not None
    release = core_module(emulated_build.path, tmp_path / "release").read_bytes()
    test_build = core_module(emulated_build.emulated, tmp_path / "emulated").read_bytes()
    # The private functions' names are in the module's strings only when
    # the emulated callout is compiled in.
    assert b"_emulated_callout_add" not in release
    assert b"_emulated_callout_add" in test_build


def suite_in_fresh_python(
    version: str,
    wheel: Path,
    suite: list[str],
    lane: tuple[Path, windows_lane.Msvc],
    sdist: Path,
    wine_environment: dict[str, str],
    folder: Path,
) -> windows_lane.SuiteResult:
    """`suite` run by pytest in a fresh Windows CPython with `wheel` installed."""
    cache, _ = lane
    python = windows_lane.install_wheel(cache, version, wheel, folder / "python", wine_environment)
    work = folder / "work"
    work.mkdir()
    return windows_lane.run_suite(python, sdist, work, suite, {})


def test_the_suite_passes_inside_windows_cpython(
    built_wheel: BuiltWheel,
    lane: tuple[Path, windows_lane.Msvc],
    sdist: Path,
    wine_environment: dict[str, str],
    tmp_path: Path,
) -> None:
    result = suite_in_fresh_python(
        built_wheel.version,
        built_wheel.path,
        WINDOWS_SUITE,
        lane,
        sdist,
        wine_environment,
        tmp_path,
    )
    assert result.failed == [], result.output
    assert result.returncode == 0, result.output
    assert f"platform win32 -- Python {built_wheel.version}." in result.output
    unexpected = {test: why for test, why in result.skipped.items() if why not in ALLOWED_SKIPS}
    assert unexpected == {}, result.output
    # Every Windows test ran: the backend's and the commands' files passed whole.
    windows_tests = [t for t in result.passed if t.startswith("tests.windows.")]
    assert len(windows_tests) == collected(*WINDOWS_COMMON), result.output


def test_records_present_inside_windows_cpython(
    emulated_build: BuiltWheel,
    lane: tuple[Path, windows_lane.Msvc],
    sdist: Path,
    wine_environment: dict[str, str],
    tmp_path: Path,
) -> None:
    """The whole flow with records present, against the emulated callout:
    nothing there may skip."""
    assert emulated_build.emulated is not None
    result = suite_in_fresh_python(
        emulated_build.version,
        emulated_build.emulated,
        EMULATED_SUITE,
        lane,
        sdist,
        wine_environment,
        tmp_path,
    )
    assert result.failed == [], result.output
    assert result.returncode == 0, result.output
    assert result.skipped == {}, result.output
    emulated_tests = [t for t in result.passed if t.startswith("tests.windows.test_emulated")]
    assert len(emulated_tests) == collected("tests/windows/test_emulated_callout.py"), result.output


def test_a_crashed_wineserver_reruns_the_command_once(tmp_path: Path) -> None:
    """run_wine's policy, with a stand-in for a Wine program: the first run
    reports what Wine's loader prints when the server dies, the second is
    clean; a command that crashes every time fails the lane."""
    require_tool("wineserver")
    count = tmp_path / "runs"
    flaky = [
        sys.executable,
        "-c",
        "import pathlib, sys\n"
        f"runs = pathlib.Path({str(count)!r})\n"
        "n = len(runs.read_text()) if runs.exists() else 0\n"
        "runs.write_text('x' * (n + 1))\n"
        f"print({windows_lane.WINESERVER_CRASHED!r} if n == 0 else '', file=sys.stderr)\n"
        "print(f'run {n + 1}')\n",
    ]
    environment = windows_lane.wine_environment(tmp_path / "prefix")
    result = windows_lane.run_wine(flaky, env=environment)
    assert (result.returncode, result.stdout, count.read_text()) == (0, "run 2\n", "xx")

    crashing = [
        sys.executable,
        "-c",
        f"import sys; print({windows_lane.WINESERVER_CRASHED!r}, file=sys.stderr)",
    ]
    with pytest.raises(windows_lane.LaneError, match="its wineserver crashed, twice"):
        windows_lane.run_wine(crashing, env=environment)


def test_a_hung_wine_command_is_stopped_and_run_once_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_tool("wineserver")
    monkeypatch.setattr(windows_lane, "WINE_TIMEOUT", 1)
    hanging = [sys.executable, "-c", "import time; time.sleep(30)"]
    environment = windows_lane.wine_environment(tmp_path / "prefix")
    with pytest.raises(windows_lane.LaneError, match="it ran past 1 s, twice"):
        windows_lane.run_wine(hanging, env=environment)


def test_a_fetched_tarball_whose_digest_differs_fails_naming_its_address(tmp_path: Path) -> None:
    """The "url" header source's check (3.12's tarball from Ubuntu's
    archive), on a local file: its digest is taken and compared."""
    tarball = tmp_path / "served" / "python3.12_3.12.3.orig.tar.xz"
    tarball.parent.mkdir()
    tarball.write_bytes(b"not the release tarball")
    address = tarball.as_uri()
    digest = hashlib.sha256(b"not the release tarball").hexdigest()
    fetched = windows_lane.download_checked(address, digest, tmp_path / "good")
    assert fetched.read_bytes() == b"not the release tarball"
    pinned = windows_lane.UBUNTU_PYTHON_3_12_SHA256
    with pytest.raises(windows_lane.LaneError) as raised:
        windows_lane.download_checked(address, pinned, tmp_path / "bad")
    assert str(raised.value) == f"{address} has sha256 {digest}, not the pinned {pinned}"


def test_wine_run_runs_a_benchmark_inside_windows_cpython(
    sdist: Path, lane: tuple[Path, windows_lane.Msvc], tmp_path: Path
) -> None:
    """benchmarks/wine_run.py as docs/performance.md shows it: the sdist's
    wheel built by MSVC inside Windows CPython 3.11, and
    bench_windows_relay.py run there under Wine, on a small load."""
    result = subprocess.run(
        [
            sys.executable,
            "benchmarks/wine_run.py",
            "--sdist",
            str(sdist),
            "benchmarks/bench_windows_relay.py",
            *("--rounds", "1", "--connections", "3", "--download-mib", "1"),
            *("--output", windows_lane.windows_path(tmp_path)),
        ],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
        timeout=windows_lane.TOOL_TIMEOUT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].endswith("on the Proactor loop (Wine, not Windows)"), result.stdout
    assert lines[1].startswith("CPython 3.11."), result.stdout
    assert (tmp_path / "windows_relay-wine.txt").read_text() == result.stdout
