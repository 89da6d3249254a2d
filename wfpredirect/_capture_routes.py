"""The policy route that UDP captures need: a datagram TPROXY diverts carries
ROUTE_MARK, and a routing rule sends that mark to a table whose one route
delivers everything locally (the kernel's tproxy documentation,
Documentation/networking/tproxy.rst).

A routing rule cannot be owned by a netlink socket the way a table can, so
the rule is kept in step with the capture tables instead: sync_routes() adds
it while some capture table in the namespace diverts UDP and removes it
otherwise. Every capture calls it when it starts and when it ends, so the
rule of a process killed with ``kill -9`` (which matches nothing once that
process's table has gone: no datagram carries the mark any more) is removed
at the next start. It is made with the ``ip`` command (iproute2).
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess

from ._capture_rules import UDP_PREROUTING
from ._errors import RedirectError, RedirectPermissionError
from ._nftables import Nftables

#: The mark TPROXY sets, and the rule's fwmark: bit 0x1, the usual TPROXY
#: routing mark, outside DEFAULT_MARK_MASK (0xF0) so it never travels in records.
ROUTE_MARK = 0x1
#: The rule's priority: before the main table's rule (32766).
RULE_PRIORITY = 31000
#: The routing table of the local route: a number no distribution assigns
#: (iproute2's rt_tables names 0 and 253-255).
ROUTE_TABLE = 31000
#: The prefix of every capture table's name.
TABLE_PREFIX = "wfpredirect_"
# (the `ip` family flag, the route that covers every address)
_FAMILIES = (("-4", "0.0.0.0/0"), ("-6", "::/0"))


def _ip(*arguments: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["ip", *arguments], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise RedirectError(
            errno.ENOENT, "a UDP capture needs the command 'ip': apt-get install iproute2"
        ) from None


def _ip_checked(*arguments: str) -> None:
    result = _ip(*arguments)
    if result.returncode != 0:
        problem = result.stderr.strip() or f"exit status {result.returncode}"
        # ip says the kernel's refusal in words only (RTNETLINK answers: ...).
        if "Operation not permitted" in problem:
            raise RedirectPermissionError(errno.EPERM, f"ip {' '.join(arguments)}: {problem}")
        raise RedirectError(errno.EINVAL, f"ip {' '.join(arguments)}: {problem}")


def capture_tables(nftables: Nftables) -> dict[str, set[str]]:
    """Every capture table in this namespace and its chains (each has at
    least one)."""
    listing = nftables.run_json("list chains inet")
    tables: dict[str, set[str]] = {}
    for item in listing.get("nftables", []):
        chain = item.get("chain")
        if chain and chain["table"].startswith(TABLE_PREFIX):
            tables.setdefault(chain["table"], set()).add(chain["name"])
    return tables


def _ipv6_available() -> bool:
    return os.path.isdir("/proc/sys/net/ipv6")


def _rules(family: str) -> list[str]:
    listing = _ip(family, "rule", "list", "pref", str(RULE_PRIORITY))
    return [line for line in listing.stdout.splitlines() if line.strip()]


def sync_routes(nftables: Nftables) -> None:
    """The rule and the route present when a capture table diverts UDP,
    gone otherwise (also a duplicate or a stale one)."""
    needed = any(UDP_PREROUTING in chains for chains in capture_tables(nftables).values())
    if not needed and shutil.which("ip") is None:
        return  # a TCP capture works without iproute2 (and none made a rule)
    for family, everything in _FAMILIES:
        if family == "-6" and not _ipv6_available():
            continue
        rules = _rules(family)
        keep = 1 if needed else 0
        for _ in rules[keep:]:
            _ip_checked(family, "rule", "del", "pref", str(RULE_PRIORITY))
        if needed:
            if not rules:
                _ip_checked(
                    family, "rule", "add", "pref", str(RULE_PRIORITY),
                    "fwmark", f"{ROUTE_MARK:#x}/{ROUTE_MARK:#x}", "lookup", str(ROUTE_TABLE),
                )  # fmt: skip
            _ip_checked(
                family, "route", "replace", "local", everything, "dev", "lo",
                "table", str(ROUTE_TABLE),
            )  # fmt: skip
        elif _ip(family, "route", "list", "table", str(ROUTE_TABLE)).stdout.strip():
            _ip_checked(family, "route", "flush", "table", str(ROUTE_TABLE))
