"""The COMMAND that tests/integration/test_recipes.py gives examples/namespace.sh:
inside the case's namespace, it starts the proxy as WFPR_PROXY says, waits
until it listens, runs WFPR_CLIENT in WFPR_CLIENT_NETNS, stops the proxy and
writes what happened, as JSON, to the file named by its argument.

Usage: python recipe_driver.py RESULT.json
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

from wfpredirect.cli import _proxy_log as proxy_log

# What the sanitizer pass of .ci/run preloads (support.SANITIZER_VARIABLES;
# this file runs on its own): the proxy needs it, the client's tools do not.
SANITIZER_VARIABLES = ("LD_PRELOAD", "PYTHONMALLOC", "ASAN_OPTIONS", "UBSAN_OPTIONS")


def namespace_inode(name: str) -> int:
    """The namespace's inode: /proc/PID/ns/net of each process in it names it."""
    return os.stat(f"/run/netns/{name}").st_ino


def wait_until_listening(proxy: subprocess.Popen[str], udp: bool) -> list[str]:
    """The proxy's lines up to the one that says it listens (for UDP too,
    with --udp); stops early when the proxy ends."""
    assert proxy.stdout is not None
    waiting_for = [proxy_log.LISTENING.pattern]
    if udp:
        waiting_for.append(proxy_log.LISTENING_UDP.pattern)
    lines = []
    while waiting_for and (line := proxy.stdout.readline()):
        lines.append(line.rstrip("\n"))
        if waiting_for[0].fullmatch(line.rstrip("\n")):
            waiting_for.pop(0)
    return lines


def main() -> None:
    result_file = Path(sys.argv[1])
    proxy_command = shlex.split(os.environ["WFPR_PROXY"])
    client_namespace = os.environ["WFPR_CLIENT_NETNS"]
    namespaces = sorted({os.environ["WFPR_NETNS"], client_namespace})
    proxy = subprocess.Popen(
        proxy_command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd="/"
    )
    try:
        lines = wait_until_listening(proxy, "--udp" in proxy_command)
        client_environment = {
            name: value for name, value in os.environ.items() if name not in SANITIZER_VARIABLES
        }
        # The client needs only the system's curl or python3. Nothing in the
        # checkout (the sanitizer pass's tool wrappers come first on PATH):
        # an unprivileged client (--exempt owner) cannot enter a 0700 one.
        checkout = Path(__file__).resolve().parents[2]
        client_environment["PATH"] = os.pathsep.join(
            folder
            for folder in os.environ.get("PATH", os.defpath).split(os.pathsep)
            if not Path(folder).resolve().is_relative_to(checkout)
        )
        client = subprocess.run(
            [
                "nsenter",
                f"--net=/run/netns/{client_namespace}",
                "--",
                *shlex.split(os.environ["WFPR_CLIENT"]),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            env=client_environment,
            check=False,
        )
    finally:
        proxy.send_signal(signal.SIGTERM)
        rest, _ = proxy.communicate(timeout=20)
    result = {
        "client": [client.returncode, client.stdout, client.stderr],
        "proxy exit": proxy.returncode,
        "proxy lines": lines + rest.splitlines(),
        "namespace inodes": {name: namespace_inode(name) for name in namespaces},
    }
    result_file.write_text(json.dumps(result), encoding="utf-8")


if __name__ == "__main__":
    main()
