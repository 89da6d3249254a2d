"""A free-threaded CPython for the free-threaded pass of .ci/run.

CPython 3.14's upstream tarball as Ubuntu's archive carries it (the
python3.14 source package of Ubuntu 26.04; Debian's suites list python3.14
too, but their pool does not serve its files here), fetched directly and
checked against its pinned sha256, built with `./configure --disable-gil`
and installed under the cache folder (WFPREDIRECT_FREETHREADED_CACHE,
default ~/.cache/wfpredirect-freethreaded), one folder per source version:
a later run finds it and builds nothing.

Prints the path of the interpreter (bin/python3.14t). Run it alone:
`python3 tests/freethreaded/build_python.py`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

# 3.14 is the first CPython whose free-threaded build is supported (PEP 779)
# rather than experimental.
PACKAGE = "python3.14"
MINOR = "3.14"
VERSION = "3.14.4"
SOURCE = f"http://archive.ubuntu.com/ubuntu/pool/main/p/{PACKAGE}/{PACKAGE}_{VERSION}.orig.tar.xz"
# From Ubuntu resolute's main/source/Sources.gz (Checksums-Sha256), and the
# file's own when fetched.
SOURCE_SHA256 = "d923c51303e38e249136fc1bdf3568d56ecb03214efdef48516176d3d7faaef8"
DOWNLOAD_TIMEOUT = 300

# A stamp in a finished installation: a folder without it was left half made.
DONE = ".prepared"


def cache_folder() -> Path:
    configured = os.environ.get("WFPREDIRECT_FREETHREADED_CACHE")
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "wfpredirect-freethreaded"


def say(line: str) -> None:
    print(f"build_python: {line}", file=sys.stderr, flush=True)


def run(command: list[str | Path], cwd: Path, log: Path | None = None) -> None:
    if log is None:
        subprocess.run(command, cwd=cwd, check=True)
        return
    with log.open("a") as output:
        completed = subprocess.run(command, cwd=cwd, stdout=output, stderr=subprocess.STDOUT)
    if completed.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-40:]
        sys.exit(f"build_python: {' '.join(map(str, command))} failed:\n" + "\n".join(tail))


def fetch_source(folder: Path) -> Path:
    """CPython's source tarball, saved in `folder` and checked."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    target = folder / SOURCE.rsplit("/", 1)[1]
    with urllib.request.urlopen(SOURCE, timeout=DOWNLOAD_TIMEOUT) as answer:
        target.write_bytes(answer.read())
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    if digest != SOURCE_SHA256:
        sys.exit(f"build_python: {SOURCE} has sha256 {digest}, not the pinned {SOURCE_SHA256}")
    return target


def installed(cache: Path) -> Path | None:
    """The interpreter of a finished installation in the cache, if any."""
    for folder in sorted(cache.glob(f"{PACKAGE}-*-freethreaded")):
        python = folder / "bin" / f"python{MINOR}t"
        if (folder / DONE).exists() and python.exists():
            return python
    return None


def build(cache: Path) -> Path:
    work = cache / "work"
    original = fetch_source(work / "download")
    prefix = cache / f"{PACKAGE}-{VERSION}-freethreaded"
    say(f"building CPython {VERSION} with --disable-gil into {prefix}")
    shutil.rmtree(prefix, ignore_errors=True)
    source = work / "source"
    shutil.rmtree(source, ignore_errors=True)
    source.mkdir()
    with tarfile.open(original) as archive:
        archive.extractall(source, filter="tar")
    (tree,) = source.iterdir()
    log = work / "build.log"
    log.write_text("")
    jobs = str(min(os.cpu_count() or 1, 2))
    # Without CPython's own test suite (neither built nor installed, nor
    # byte-compiled three times over by `make install`).
    configure = ["--disable-gil", "--disable-test-modules", "--with-ensurepip=no"]
    run(["./configure", *configure, f"--prefix={prefix}"], cwd=tree, log=log)
    run(["nice", "-n", "10", "make", f"-j{jobs}"], cwd=tree, log=log)
    run(["nice", "-n", "10", "make", "install"], cwd=tree, log=log)
    python = prefix / "bin" / f"python{MINOR}t"
    # The modules venv, pip and the tests need: a build without one of
    # them (its -dev package missing) would only say so in its log.
    run(
        [
            python,
            "-c",
            "import ssl, ctypes, zlib, bz2, lzma, sqlite3, ensurepip, venv, sys;"
            "assert not sys._is_gil_enabled()",
        ],
        cwd=work,
    )
    (prefix / DONE).write_text("")
    shutil.rmtree(work)
    return python


def main() -> None:
    cache = cache_folder()
    cache.mkdir(parents=True, exist_ok=True)
    python = installed(cache)
    if python is None:
        started = time.monotonic()
        python = build(cache)
        say(f"built in {time.monotonic() - started:.0f} s")
    else:
        say(f"cached: {python}")
    print(python)


if __name__ == "__main__":
    main()
