"""``wfpredirect proxy --capture``: the proxy's own capture (wfpredirect.Capture),
checked against its listeners before anything starts, installed once they
listen and removed when it stops (the kernel removes it with the process
in any case)."""

from __future__ import annotations

import ipaddress
import socket
import warnings
from collections.abc import Sequence

from .._capture import Capture, leftover_advice
from .._capture_targets import CaptureTarget
from .._core import BACKEND
from . import _proxy_log as log

#: --capture where there is nothing to install (Windows: no callout driver).
ELSEWHERE = {
    "winsock": "--capture: Windows has no rules to install without a callout driver "
    "(see docs/windows.md)",
    "unsupported": "--capture: Linux only (nftables)",
}
BINDV6ONLY = "/proc/sys/net/ipv6/bindv6only"


def _families(host: str) -> set[int]:
    """The IP versions a listener on `host` receives: an IPv6 wildcard takes
    IPv4 too unless net.ipv6.bindv6only is set."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        try:
            found = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except OSError:
            return set()
        return {6 if family == socket.AF_INET6 else 4 for family, *_ in found}
    if address == ipaddress.IPv6Address("::") and not _v6_only():
        return {4, 6}
    return {address.version}


def _v6_only() -> bool:
    try:
        with open(BINDV6ONLY) as setting:
            return setting.read().strip() == "1"
    except OSError:
        return False


def capture_problem(
    targets: Sequence[CaptureTarget],
    interface: str | None,
    listen: tuple[str, int],
    udp: tuple[str, int] | None,
    user: str | None = None,
) -> str:
    """Why these --capture options cannot work with these listeners ("" when
    they can): each target needs a listener of its protocol and family."""
    if not targets:
        return "--capture-interface needs --capture" if interface is not None else ""
    if BACKEND != "netfilter":
        return ELSEWHERE.get(BACKEND, ELSEWHERE["unsupported"])
    udp_targets = [target for target in targets if target.protocol == "udp"]
    if udp_targets and user is not None:
        return (
            f"--capture {udp_targets[0]} with --user: the UDP capture's routing rule is made "
            "by the command ip, which runs without the proxy's capabilities once it is "
            f"{user}: leave --user out (the proxy still keeps only the capabilities it needs)"
        )
    listeners = {"tcp": ("--listen", listen), "udp": ("--udp", udp)}
    for target in targets:
        option, address = listeners[target.protocol]
        version = "IPv4" if target.version == 4 else "IPv6"
        if address is None:
            return (
                f"--capture {target}: no {target.protocol.upper()} listener: add one with "
                f"{option} {'0.0.0.0' if target.version == 4 else '[::]'}:PORT"
            )
        host, port = address
        if port == 0:
            return f"--capture {target}: {option} needs a fixed port, not 0"
        if target.version not in _families(host):
            wildcard = "0.0.0.0" if target.version == 4 else "[::]"
            return (
                f"--capture {target}: no {version} {target.protocol.upper()} listener "
                f"({option} {host}): give {option} {wildcard}:{port}"
            )
    return ""


def install_capture(
    targets: Sequence[CaptureTarget],
    interface: str | None,
    listen: tuple[str, int],
    udp: tuple[str, int] | None,
    loop_mark: int | None,
) -> Capture:
    """The capture installed, its lines said (OSError when the system refuses)."""
    capture = Capture(
        targets,
        tcp_port=listen[1],
        udp_port=None if udp is None else udp[1],
        loop_mark=loop_mark,
        interface=interface,
    )
    with warnings.catch_warnings():
        # The warning's text is said as a log line instead.
        warnings.simplefilter("ignore", RuntimeWarning)
        capture.install()
    return capture


def capture_lines(capture: Capture) -> list[str]:
    """What the proxy says about its capture among its start lines."""
    targets = ",".join(str(target) for target in capture.settings.targets)
    lines: list[str] = [log.CAPTURING.line(targets=targets, table=capture.table)]
    if not capture.owned:
        lines.append(
            log.CAPTURE_NOT_OWNED.line(table=capture.table, command=leftover_advice(capture.table))
        )
    return lines


def remove_capture(capture: Capture) -> list[str]:
    """Remove the capture; the line to say when that failed (none otherwise)."""
    try:
        capture.close()
    except OSError as error:
        return [log.CAPTURE_NOT_REMOVED.line(table=capture.table, error=error)]
    return []
