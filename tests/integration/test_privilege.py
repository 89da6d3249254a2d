"""SO_MARK needs CAP_NET_RAW or CAP_NET_ADMIN: either alone is enough, and
without both set_redirect_records raises RedirectPermissionError."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from netns import run_in_netns
from record_format import encode
from rules import redirect
from support import NEUTRAL_DIRECTORY, require_root, require_tool, unavailable

# linux/capability.h
CAP_NET_ADMIN = 12
CAP_NET_RAW = 13

PROBE = """
import json, socket, wfpredirect
record = bytes.fromhex(%r)
with socket.socket() as sock:
    try:
        wfpredirect.set_redirect_records(sock, record)
        print(json.dumps(["ok", sock.getsockopt(socket.SOL_SOCKET, 36)]))
    except wfpredirect.RedirectPermissionError as error:
        print(json.dumps([type(error).__name__, error.errno, str(error),
                          isinstance(error, PermissionError)]))
"""


def require_both_capabilities() -> None:
    """Dropping one capability must leave the other: a container that grants
    only one of them (Docker's default grants CAP_NET_RAW alone) cannot tell
    whether either alone is enough."""
    with open("/proc/self/status", encoding="ascii") as status:
        bounding = next(int(line.split()[1], 16) for line in status if line.startswith("CapBnd:"))
    missing = [
        name
        for name, bit in (("CAP_NET_ADMIN", CAP_NET_ADMIN), ("CAP_NET_RAW", CAP_NET_RAW))
        if not bounding >> bit & 1
    ]
    if missing:
        unavailable(f"the capability bounding set lacks {' and '.join(missing)}")


def without_capabilities(capabilities: str) -> list[str]:
    """setpriv dropping `capabilities` ("-net_raw,-net_admin") from the
    command that follows, bounding and inheritable sets both."""
    return [
        require_tool("setpriv"),
        f"--bounding-set={capabilities}",
        f"--inh-caps={capabilities}",
    ]


def run_without(capabilities: str) -> list[object]:
    require_root()
    record = encode(("127.0.0.2", 8080), mark=0x10).hex()
    completed = subprocess.run(
        [
            *without_capabilities(capabilities),
            sys.executable,
            "-c",
            PROBE % record,
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=NEUTRAL_DIRECTORY,
    )
    return json.loads(completed.stdout)  # type: ignore[no-any-return]


def test_without_both_capabilities() -> None:
    assert run_without("-net_raw,-net_admin") == [
        "RedirectPermissionError",
        1,
        "[Errno 1] set_redirect_records: setsockopt(SO_MARK) needs CAP_NET_RAW or "
        "CAP_NET_ADMIN (Operation not permitted)",
        True,
    ]


@pytest.mark.parametrize("dropped", ["-net_raw", "-net_admin"])
def test_either_capability_is_enough(dropped: str) -> None:
    require_both_capabilities()
    assert run_without(dropped) == ["ok", 0x10 | 0x40]


DATAGRAM_PROBE = """
import json, socket, wfpredirect
record = bytes.fromhex(%r)
answers = []
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
    for call in (lambda: wfpredirect.enable_datagram_records(sock),
                 lambda: wfpredirect.sendmsg_redirect(sock, b"x", ("127.0.0.1", 9), record)):
        try:
            call()
            answers.append("ok")
        except wfpredirect.RedirectPermissionError as error:
            answers.append([error.errno, str(error)])
print(json.dumps(answers))
"""


def test_datagram_calls_without_both_capabilities() -> None:
    require_root()
    record = encode(("127.0.0.3", 5353), mark=0x20).hex()
    completed = subprocess.run(
        [
            *without_capabilities("-net_raw,-net_admin"),
            sys.executable,
            "-c",
            DATAGRAM_PROBE % record,
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=NEUTRAL_DIRECTORY,
    )
    assert json.loads(completed.stdout) == [
        [
            1,
            "[Errno 1] enable_datagram_records: setsockopt(IP_TRANSPARENT) needs CAP_NET_RAW "
            "or CAP_NET_ADMIN (Operation not permitted)",
        ],
        [
            1,
            "[Errno 1] sendmsg_redirect: sendmsg: an SO_MARK control message needs CAP_NET_RAW "
            "or CAP_NET_ADMIN (Operation not permitted)",
        ],
    ]


def test_the_proxy_without_both_capabilities_stops_at_start() -> None:
    """Before anything listens: exit status 2, what is missing and what to
    do, and no "listening" line (it used to start and fail every connection)."""
    require_root()

    def body() -> tuple[int, str, str]:
        completed = subprocess.run(
            [
                *without_capabilities("-net_raw,-net_admin"),
                sys.executable,
                "-m",
                "wfpredirect",
                "proxy",
                "--listen",
                "127.0.0.1:15001",
                "--udp",
                "127.0.0.1:15001",
            ],
            capture_output=True,
            text=True,
            check=False,
            cwd=NEUTRAL_DIRECTORY,
            timeout=30,
        )
        return completed.returncode, completed.stdout, completed.stderr

    assert run_in_netns(body) == (
        2,
        "",
        "wfpredirect proxy: cannot mark the upstream connections (setsockopt(SO_MARK): "
        "Operation not permitted), so none could carry its records: run the proxy as root, "
        "or give it CAP_NET_ADMIN (systemd: AmbientCapabilities=CAP_NET_ADMIN; or setcap "
        "cap_net_admin+ep on its interpreter)\n",
    )


UPSTREAM_PROBE = """
import asyncio, json, socket, wfpredirect
from wfpredirect.aio import open_upstream
listener = wfpredirect.RedirectSocket(socket.AF_INET, socket.SOCK_STREAM)
listener.bind(("127.0.0.1", 15001))
listener.listen()
client = socket.create_connection(("127.0.0.2", 8080), timeout=5)
accepted, _ = listener.accept()
answers = []
for call in (accepted.create_upstream,
             lambda: asyncio.run(open_upstream(accepted.redirect_info))):
    try:
        call()
        answers.append("ok")
    except wfpredirect.RedirectPermissionError as error:
        answers.append([error.errno, str(error)])
print(json.dumps(answers))
"""


def test_upstream_errors_name_the_upstream_call() -> None:
    """Without the capabilities the records cannot be set: the error names
    create_upstream or open_upstream, the call the proxy made."""
    require_root()

    def body() -> object:
        completed = subprocess.run(
            [
                *without_capabilities("-net_raw,-net_admin"),
                sys.executable,
                "-c",
                UPSTREAM_PROBE,
            ],
            capture_output=True,
            text=True,
            check=True,
            cwd=NEUTRAL_DIRECTORY,
            timeout=30,
        )
        return json.loads(completed.stdout)

    assert run_in_netns(body, nft_rules=redirect("ip", "127.0.0.2", 8080, 15001)) == [
        [
            1,
            f"[Errno 1] {call}: setsockopt(SO_MARK) needs CAP_NET_RAW or CAP_NET_ADMIN "
            "(Operation not permitted)",
        ]
        for call in ("create_upstream", "open_upstream")
    ]
