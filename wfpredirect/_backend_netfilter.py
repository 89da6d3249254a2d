"""What the netfilter backend (Linux) does its own way: see _backend."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from ._core import enable_datagram_records
from ._errors import CAPABILITY_ADVICE, RedirectPermissionError
from ._marks import marks_problem, resolve_marks

if TYPE_CHECKING:
    from ._core import _HasFileno
    from ._doctor import Finding

# asm-generic/socket.h; socket.SO_MARK exists from Python 3.12.
SO_MARK = 36


def doctor_checks() -> list[Finding]:
    from ._doctor_netfilter import checks

    return checks()


def run_demo(keep_running: bool) -> int:
    from ._demo_netfilter import run_netfilter_demo

    return run_netfilter_demo(keep_running)


def proxy_problem(loop_mark: int | None, mark_mask: int | None, udp: bool) -> str:
    """The marks must work, and this process must be allowed what every
    connection will need, asked once on throw-away sockets before anything
    listens: SO_MARK for the upstream connections, and with `udp`
    IP_TRANSPARENT for the flows."""
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
    return ""


def missing_exemption(loop_mark: int) -> str:
    mark = f"{loop_mark:#x}"
    return (
        f"the redirect rule does not skip the loop mark {mark} (or the upstream carried no "
        "records): put "
        f"`meta mark & {mark} == {mark} return` (nft) or "
        f"`iptables -t nat -I OUTPUT -m mark --mark {mark}/{mark} -j RETURN` (iptables) "
        "before it"
    )


def carries_loop_mark(sock: _HasFileno, loop_mark: int) -> bool:
    """Whether accepted `sock` carries `loop_mark`, as a proxy's upstream
    SYN does (an accepted socket has its SYN's mark where
    net.ipv4.tcp_fwmark_accept=1; elsewhere its mark is 0)."""
    if not loop_mark:
        return False
    try:
        mark = sock.getsockopt(socket.SOL_SOCKET, SO_MARK)  # type: ignore[attr-defined]
    except OSError:
        return False
    return bool(mark & loop_mark == loop_mark)
