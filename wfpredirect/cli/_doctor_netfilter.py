"""The doctor's checks on Linux: kernel, privileges, tools, kernel features,
the marks and the rules that already use their bits."""

from __future__ import annotations

import errno
import fcntl
import os
import platform
import re
import shutil
import socket
import struct
import subprocess
import sys

from .._capture_routes import TABLE_PREFIX
from .._core import original_destination
from .._errors import CAPABILITY_ADVICE, NotRedirectedError
from .._marks import LOOP_MARK, MARK_MASK, marks_problem
from ._doctor import Finding, query_failed, test_connection_error

CAP_NET_ADMIN = 12  # linux/capability.h
CAP_NET_RAW = 13
SO_RCVMARK = 75  # asm-generic/socket.h, Linux 5.19
TCP_FWMARK_ACCEPT = "/proc/sys/net/ipv4/tcp_fwmark_accept"

# A rule that sets a mark: nft prints "meta mark set 0x00000040", "ct mark
# set ...", iptables-save "--set-xmark 0x40/0xffffffff", "--set-mark 0x40".
MARK_SETTING = re.compile(r"(?:mark set|--set-x?mark|--or-mark|--tproxy-mark)\b(?P<rest>.*)")
HEX_NUMBER = re.compile(r"0x[0-9a-fA-F]+")


def process_status() -> dict[str, str]:
    """/proc/self/status as {field: value}."""
    with open("/proc/self/status", encoding="ascii") as status:
        return dict(line.rstrip("\n").split(":\t", 1) for line in status if ":\t" in line)


def _privileges() -> Finding:
    status = process_status()
    effective_uid = status["Uid"].split()[1]
    capabilities = int(status["CapEff"], 16)
    held = [
        name
        for name, bit in (("CAP_NET_ADMIN", CAP_NET_ADMIN), ("CAP_NET_RAW", CAP_NET_RAW))
        if capabilities >> bit & 1
    ]
    value = f"uid {effective_uid}, " + (
        " and ".join(held) if held else "neither CAP_NET_ADMIN nor CAP_NET_RAW"
    )
    if held:
        return Finding("privileges", value)
    return Finding(
        "privileges",
        value,
        problem="set_redirect_records (SO_MARK) will raise RedirectPermissionError",
        what_to_do=CAPABILITY_ADVICE,
    )


# SIOCGIFFLAGS (linux/sockios.h) asks this network namespace for an
# interface's flags (/sys shows the namespace it was mounted in); IFF_UP is
# linux/if.h's. struct ifreq: the name, then the flags, padded to 40 bytes.
SIOCGIFFLAGS = 0x8913
IFF_UP = 0x1
IFREQ = struct.Struct("16sH22x")


def _loopback_down() -> bool:
    """Whether `lo` is down (as in a new network namespace); False when its
    state cannot be read."""
    if sys.platform == "win32":  # for the type checker: this module is Linux's
        return False
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            answer = fcntl.ioctl(probe, SIOCGIFFLAGS, IFREQ.pack(b"lo", 0))
    except OSError:
        return False
    _, flags = IFREQ.unpack(answer)
    return not flags & IFF_UP


def _query() -> Finding:
    """Whether SO_ORIGINAL_DST answers on a connection nothing redirected."""
    name = "SO_ORIGINAL_DST"
    error = test_connection_error(original_destination)
    if error is None:
        return Finding(
            name,
            "answers, but reports a redirect for a plain loopback connection",
            problem="a rule redirects connections to 127.0.0.1",
            what_to_do="check `nft list ruleset` for a rule matching 127.0.0.1",
        )
    if isinstance(error, NotRedirectedError):
        if error.errno == errno.ENOPROTOOPT:
            return Finding(
                name, "answers; connection tracking is not loaded yet (the first nat rule loads it)"
            )
        return Finding(name, "answers (a test connection: not redirected, as expected)")
    if isinstance(error, ValueError):  # the marks: reported below
        return Finding(name, f"not asked: {error}")
    if _loopback_down():
        return Finding(
            name,
            f"not asked: no loopback connection ({error or 'timed out'})",
            problem="the loopback interface is down (as it starts in a new network "
            "namespace): no test connection, and no proxy on 127.0.0.1",
            what_to_do="ip link set lo up",
        )
    return query_failed(name, error)


def _tool(name: str, version_argument: str) -> str | None:
    path = shutil.which(name)
    if path is None:
        return None
    answer = subprocess.run(
        [path, version_argument], capture_output=True, text=True, check=False, timeout=10
    )
    return (
        (answer.stdout or answer.stderr).strip().splitlines()[0] if answer.returncode == 0 else path
    )


def _tools() -> Finding:
    nft = _tool("nft", "--version")
    iptables = _tool("iptables", "--version")
    value = "; ".join(found for found in (nft, iptables) if found) or "neither nft nor iptables"
    if nft or iptables:
        return Finding("rule tools", value)
    return Finding(
        "rule tools",
        value,
        problem="nothing can install a redirect rule",
        what_to_do="install nftables (Debian/Ubuntu: apt-get install nftables)",
    )


def _fwmark_accept() -> Finding:
    try:
        with open(TCP_FWMARK_ACCEPT, encoding="ascii") as sysctl:
            value = sysctl.read().strip()
    except OSError as error:
        return Finding("tcp_fwmark_accept", f"unknown ({error.strerror})")
    meaning = (
        "1: accepted connections carry their SYN's mark (chains of proxies work)"
        if value == "1"
        else f"{value}: one proxy works; a chain of proxies needs "
        "sysctl -w net.ipv4.tcp_fwmark_accept=1"
    )
    return Finding("tcp_fwmark_accept", meaning)


def _rcvmark() -> Finding:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        try:
            udp.setsockopt(socket.SOL_SOCKET, SO_RCVMARK, 1)
        except OSError:
            return Finding(
                "SO_RCVMARK",
                f"no (Linux 5.19+; this is {platform.release()}): "
                "datagrams carry no inbound mark in their records",
            )
    return Finding("SO_RCVMARK", "yes")


def _marks() -> Finding:
    value = f"LOOP_MARK {LOOP_MARK:#x}, MARK_MASK {MARK_MASK:#x}"
    problem = marks_problem()
    if not problem:
        return Finding("marks", value + ", valid")
    return Finding(
        "marks",
        value,
        problem=problem,
        what_to_do="set WFPREDIRECT_LOOP_MARK to one non-zero bit inside "
        "WFPREDIRECT_MARK_MASK (the defaults are 0x40 and 0xf0), or unset both",
    )


def _rulesets() -> list[tuple[str, str]]:
    """(tool, text) of every ruleset this process can read."""
    found = []
    for command in (["nft", "list", "ruleset"], ["iptables-save"], ["ip6tables-save"]):
        if shutil.which(command[0]) is None:
            continue
        answer = subprocess.run(command, capture_output=True, text=True, check=False, timeout=10)
        if answer.returncode == 0:
            found.append((command[0], answer.stdout))
    return found


# A rule that diverts traffic to a proxy: nft's redirect/tproxy/dnat
# statements, iptables' REDIRECT/TPROXY/DNAT targets.
DIVERTING = re.compile(r"\b(?:redirect|tproxy|dnat)\b|-j (?:REDIRECT|TPROXY|DNAT)\b")
NFT_CHAIN = re.compile(r"^\s*chain (\S+) \{")
IPTABLES_RULE = re.compile(r"^-A (\S+) ")


# A rule that tests the packet's mark (not one that sets it: nft's
# `meta mark set ...`, iptables' --set-mark/--tproxy-mark).
MARK_TEST = re.compile(r"meta mark (?:&|==|!=|\d|0x)|-m mark\b")


def _mark_test(line: str) -> str:
    """The part of `line` before any mark setting, if it tests a mark."""
    setting = MARK_SETTING.search(line)
    tested = line[: setting.start()] if setting else line
    return tested if MARK_TEST.search(tested) else ""


def _tests_loop_mark(line: str, loop_mark: int) -> bool:
    return any(int(number, 16) & loop_mark for number in HEX_NUMBER.findall(_mark_test(line)))


def _exemption_for(tool: str, loop_mark: int) -> str:
    mark = f"{loop_mark:#x}"
    if tool == "nft":
        return f"put `meta mark & {mark} == {mark} return` before it, in the same chain"
    command = "ip6tables" if tool == "ip6tables-save" else "iptables"
    return (
        f"put `{command} -t nat -I <its chain> -m mark --mark {mark}/{mark} -j RETURN` "
        "before it (iptables -t mangle for a TPROXY rule)"
    )


def unexempted_diversions(tool: str, text: str, loop_mark: int) -> list[str]:
    """The rules of ruleset `text` (`nft list ruleset` or iptables-save) that
    divert traffic without a mark test, neither in the rule itself nor in an
    earlier rule of the same chain that tests `loop_mark`: the proxy's own
    upstream would be diverted back into it."""
    found = []
    exempted: set[str] = set()
    chain = ""
    for line in text.splitlines():
        if tool == "nft":
            opened = NFT_CHAIN.match(line)
            if opened:
                chain = opened.group(1)
                continue
        else:
            appended = IPTABLES_RULE.match(line)
            if not appended:
                continue
            chain = appended.group(1)
        diverting = DIVERTING.search(line)
        if not diverting:
            if _tests_loop_mark(line, loop_mark):
                exempted.add(chain)
            continue
        # A diverting rule that tests a mark itself is some proxy's own
        # exemption (in a chain of proxies, each tests its own loop mark).
        if not _mark_test(line) and chain not in exempted:
            found.append(line.strip())
    return found


# A capture's table (wfpredirect.Capture, --capture): its name carries the
# pid of the process that made it; `flags owner` follows the opening line.
CAPTURE_TABLE = re.compile(rf"^table inet ({TABLE_PREFIX}(\d+)_\d+) \{{")


def capture_tables(text: str) -> list[tuple[str, int, bool]]:
    """(name, pid, owned) of each capture table in `nft list ruleset`'s `text`."""
    found: list[tuple[str, int, bool]] = []
    for line in text.splitlines():
        opened = CAPTURE_TABLE.match(line)
        if opened:
            found.append((opened[1], int(opened[2]), False))
        elif found and line.strip() == "flags owner":
            found[-1] = (*found[-1][:2], True)
    return found


def _capture_findings(rulesets: list[tuple[str, str]]) -> list[Finding]:
    findings = []
    for tool, text in rulesets:
        if tool != "nft":
            continue
        for name, pid, owned in capture_tables(text):
            alive = os.path.exists(f"/proc/{pid}")
            if owned or alive:
                how = "removed with it" if owned else "without 'flags owner': deleted when it stops"
                findings.append(Finding("capture table", f"{name}: process {pid}, {how}"))
            else:
                findings.append(
                    Finding(
                        "leftover capture table",
                        name,
                        problem=f"its process {pid} is gone (killed without 'flags owner'), and "
                        "the table still sends traffic to a port nobody may listen on",
                        what_to_do=f"nft delete table inet {name}",
                    )
                )
    return findings


def _rules_using_the_marks() -> list[Finding]:
    rulesets = _rulesets()
    if not rulesets:
        return [Finding("rules", "not read (needs root and nft or iptables)")]
    conflicts = []
    loop_checks = 0
    for tool, text in rulesets:
        for line in text.splitlines():
            setting = MARK_SETTING.search(line)
            if setting:
                bits = 0
                for number in HEX_NUMBER.findall(setting.group("rest")):
                    bits |= int(number, 16)
                if bits & MARK_MASK:
                    conflicts.append(f"{tool}: {line.strip()}")
            elif "mark" in line and any(
                int(number, 16) & LOOP_MARK for number in HEX_NUMBER.findall(line)
            ):
                loop_checks += 1
    findings = [
        Finding(
            "rules testing the loop mark",
            str(loop_checks)
            if loop_checks
            else f"none yet: put `meta mark & {LOOP_MARK:#x} == {LOOP_MARK:#x} return` before "
            "the redirect rule, or the proxy's upstream is redirected back into it",
        )
    ]
    # With marks that cannot work no rule can exempt them: that is the one
    # problem reported (see _marks).
    for tool, text in [] if marks_problem() else rulesets:
        for rule in unexempted_diversions(tool, text, LOOP_MARK):
            findings.append(
                Finding(
                    "rule without the loop exemption",
                    f"{tool}: {rule}",
                    problem="it diverts the proxy's own upstream connections back into the "
                    f"proxy: nothing before it in its chain skips the loop mark {LOOP_MARK:#x}",
                    what_to_do=_exemption_for(tool, LOOP_MARK),
                )
            )
    findings += _capture_findings(rulesets)
    for conflict in conflicts:
        findings.append(
            Finding(
                "rule setting mask bits",
                conflict,
                problem=f"this rule sets bits inside MARK_MASK {MARK_MASK:#x}: they would "
                "travel in records and reach the proxy's upstream connections",
                what_to_do="choose a WFPREDIRECT_MARK_MASK (and a LOOP_MARK inside it) that no "
                "other rule uses",
            )
        )
    return findings


def checks() -> list[Finding]:
    return [
        Finding("kernel", f"Linux {platform.release()}"),
        _privileges(),
        _query(),
        _tools(),
        _fwmark_accept(),
        _rcvmark(),
        _marks(),
        *_rules_using_the_marks(),
    ]
