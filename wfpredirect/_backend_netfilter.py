"""What the netfilter backend (Linux) does its own way: see _backend."""

from __future__ import annotations

import socket
import sys
from typing import TYPE_CHECKING

from ._core import enable_datagram_records
from ._errors import CAPABILITY_ADVICE, RedirectPermissionError
from ._marks import marks_problem, resolve_marks

if TYPE_CHECKING:
    from ._doctor import Finding

# asm-generic/socket.h; socket.SO_MARK exists from Python 3.12.
SO_MARK = 36
# linux/in.h; socket.IP_TRANSPARENT exists from Python 3.11 on Linux only.
IP_TRANSPARENT = 19


def doctor_checks() -> list[Finding]:
    from ._doctor_netfilter import checks

    return checks()


def run_demo(keep_running: bool) -> int:
    from ._demo_netfilter import run_netfilter_demo

    return run_netfilter_demo(keep_running)


def proxy_problem(
    loop_mark: int | None, mark_mask: int | None, udp: bool, transparent: bool
) -> str:
    """The marks must work, and this process must be allowed what every
    connection will need, asked once on throw-away sockets before anything
    listens: SO_MARK for the upstream connections, and with `udp` or
    `transparent` IP_TRANSPARENT (for the flows, for the listener)."""
    problem = marks_problem(loop_mark, mark_mask)
    if problem:
        return problem
    try:
        with socket.socket() as probe:
            mark, _, _ = resolve_marks(loop_mark, mark_mask)
            probe.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
    except PermissionError as error:
        return (
            f"cannot mark the upstream connections (setsockopt(SO_MARK): {error.strerror}), "
            f"so none could carry its records: {CAPABILITY_ADVICE}"
        )
    if udp:
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                enable_datagram_records(probe)
        except RedirectPermissionError as error:
            return f"cannot receive redirected UDP flows ({error}): {CAPABILITY_ADVICE}"
    if transparent:
        try:
            with socket.socket() as probe:
                probe.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
        except PermissionError as error:
            return (
                f"cannot listen for a TPROXY rule (setsockopt(IP_TRANSPARENT): "
                f"{error.strerror}): {CAPABILITY_ADVICE}"
            )
    return ""


def prepare_reply_socket(sock: socket.socket) -> None:
    if sys.platform == "linux":  # always here; says so to the type checker
        from ._core import _prepare_datagram_reply_socket

        _prepare_datagram_reply_socket(sock)


def transparent_listener(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port) with IP_TRANSPARENT, so that a
    TPROXY rule can hand it connections addressed elsewhere: the family
    comes from `host` ("::" or an IPv6 address: IPv6)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # IP_TRANSPARENT at SOL_IP sets the flag for IPv6 sockets too.
        sock.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def missing_exemption(loop_mark: int) -> str:
    mark = f"{loop_mark:#x}"
    return (
        f"the redirect rule does not skip the loop mark {mark} (or the upstream carried no "
        "records): put "
        f"`meta mark & {mark} == {mark} return` (nft) or "
        f"`iptables -t nat -I OUTPUT -m mark --mark {mark}/{mark} -j RETURN` (iptables) "
        "before it"
    )
