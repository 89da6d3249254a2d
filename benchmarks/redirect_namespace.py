"""The benchmark's own network namespace (Linux), set up the way
tests/integration/netns.py does it for the tests: unshare(CLONE_NEWNET), the
loopback up, an nft redirect. Only loopback addresses exist in there, and
the rule matches 127.0.0.2 only, so no traffic can leave the machine.

Unlike the tests, the benchmark moves its own process (a script, not a
pytest worker) into the namespace, so that callgrind workers started from it
share the namespace and its rule.
"""

from __future__ import annotations

import ctypes
import os
import socket
import subprocess
from dataclasses import dataclass

CLONE_NEWNET = 0x40000000  # linux/sched.h
CLONE_NEWUSER = 0x10000000  # linux/sched.h

#: What clients connect to, and where the rule sends it: one pair per
#: worker, so that parallel callgrind workers do not share a listener.
ORIGINAL_HOST = "127.0.0.2"
ORIGINAL_PORT = 8080
LISTEN_HOST = "127.0.0.1"
LISTEN_PORT = 15001
WORKER_SLOTS = 4

#: The package's default LOOP_MARK (docs/design.md, "The loop that records prevent").
LOOP_MARK = 0x40


def redirect_rules() -> str:
    """127.0.0.2:8080+i -> :15001+i, skipping the loop mark (nft 1.0.6 wants a
    newline before each closing brace)."""
    lines = "\n".join(
        f"    ip daddr {ORIGINAL_HOST} tcp dport {ORIGINAL_PORT + slot} "
        f"redirect to :{LISTEN_PORT + slot}"
        for slot in range(WORKER_SLOTS)
    )
    return f"""table ip wfpr_bench {{
  chain out {{
    type nat hook output priority -100;
    meta mark & {LOOP_MARK:#x} == {LOOP_MARK:#x} return
{lines}
  }}
}}
"""


def _unshare(flags: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(flags) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"unshare({flags:#x}): {os.strerror(error)}")


def enter_redirect_namespace(rules: str | None = None) -> str:
    """Move this process into a new network namespace with the redirect rule
    (redirect_rules(), or `rules`) loaded; returns how ("root" or "user
    namespace"). As root a plain network namespace; otherwise a user
    namespace owning it, where the kernel allows that."""
    if os.geteuid() == 0:
        _unshare(CLONE_NEWNET)
        how = "network namespace (root)"
    else:
        uid, gid = os.geteuid(), os.getegid()
        _unshare(CLONE_NEWUSER | CLONE_NEWNET)
        with open("/proc/self/setgroups", "w") as setgroups:
            setgroups.write("deny")
        with open("/proc/self/uid_map", "w") as uid_map:
            uid_map.write(f"0 {uid} 1")
        with open("/proc/self/gid_map", "w") as gid_map:
            gid_map.write(f"0 {gid} 1")
        how = "user + network namespace"
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["nft", "-f", "-"], input=(rules or redirect_rules()).encode(), check=True)
    return how


@dataclass
class RedirectedConnection:
    """A connection to 127.0.0.2 that the rule redirected to our listener:
    `accepted` is the proxy's side, `upstream` a new socket to set records on."""

    listener: socket.socket
    client: socket.socket
    accepted: socket.socket
    upstream: socket.socket

    def close(self) -> None:
        for sock in (self.upstream, self.accepted, self.client, self.listener):
            sock.close()


def redirected_connection(slot: int = 0) -> RedirectedConnection:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((LISTEN_HOST, LISTEN_PORT + slot))
    listener.listen()
    client = socket.create_connection((ORIGINAL_HOST, ORIGINAL_PORT + slot), timeout=5)
    accepted, _ = listener.accept()
    upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    return RedirectedConnection(listener, client, accepted, upstream)
