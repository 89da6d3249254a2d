"""A free-threaded CPython for the free-threaded pass of .ci/run.

Debian trixie's python3.13 source package, fetched through a deb-src list of
this script's own (the machine's apt sources stay as they are, as in the
Windows lane), built from its upstream tarball with `./configure
--disable-gil` and installed under the cache folder
(WFPREDIRECT_FREETHREADED_CACHE, default ~/.cache/wfpredirect-freethreaded),
one folder per source version: a later run finds it and builds nothing.

Prints the path of the interpreter (bin/python3.13t). Run it alone:
`python3 tests/freethreaded/build_python.py`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

SUITE = "trixie"
PACKAGE = "python3.13"
MINOR = "3.13"

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
    sys.exit("build_python: no Debian mirror found in /etc/apt/sources.list(.d)")


def apt_options(folder: Path) -> list[str]:
    return [
        "-o",
        "Dir::Etc::sourcelist=/dev/null",
        "-o",
        f"Dir::Etc::sourceparts={folder / 'sources'}",
        "-o",
        f"Dir::State::Lists={folder / 'lists'}",
    ]


def fetch_source(apt: Path) -> tuple[str, Path]:
    """The source package's version and its upstream tarball, in `apt`."""
    shutil.rmtree(apt, ignore_errors=True)
    (apt / "sources").mkdir(parents=True)
    (apt / "lists" / "partial").mkdir(parents=True)
    (apt / "sources" / "freethreaded.sources").write_text(
        f"Types: deb-src\nURIs: {debian_mirror()}\nSuites: {SUITE}\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    )
    run(["apt-get", "-qq", *apt_options(apt), "update"], cwd=apt)
    run(["apt-get", "-qq", *apt_options(apt), "source", "--download-only", PACKAGE], cwd=apt)
    (description,) = apt.glob(f"{PACKAGE}_*.dsc")
    version = description.name.removeprefix(f"{PACKAGE}_").removesuffix(".dsc")
    (original,) = [
        path for path in apt.glob(f"{PACKAGE}_*.orig.tar.*") if path.suffix in (".gz", ".xz")
    ]
    return version, original


def installed(cache: Path) -> Path | None:
    """The interpreter of a finished installation in the cache, if any."""
    for folder in sorted(cache.glob(f"{PACKAGE}-*-freethreaded")):
        python = folder / "bin" / f"python{MINOR}t"
        if (folder / DONE).exists() and python.exists():
            return python
    return None


def build(cache: Path) -> Path:
    work = cache / "work"
    version, original = fetch_source(work / "apt")
    prefix = cache / f"{PACKAGE}-{version}-freethreaded"
    say(f"building {PACKAGE} {version} (from {SUITE}) with --disable-gil into {prefix}")
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
