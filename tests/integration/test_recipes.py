"""examples/namespace.sh, run as shipped for every case it accepts (nft and
iptables rules, IPv4 and IPv6, local REDIRECT, gateway REDIRECT, TCP and UDP
TPROXY, the loop exemption by mark and by owner): the real `wfpredirect
proxy` behind its rules, a real client through them, the exact answer and
the proxy's line for it; afterwards no namespace, link or process of the
script is left. The combinations it refuses say why, and create nothing."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from support import (
    SANITIZER_VARIABLES,
    project_file,
    require_root,
    require_tool,
    sanitizer_environment,
)
from wfpredirect.cli import _proxy_log as proxy_log

HERE = Path(__file__).resolve().parent
NAME = "wfpr-recipes-test"
BODY = "hello from the origin (namespace.sh)\n"
# The veth pair's ends of the gateway case (each in its own namespace).
VETH_ENDS = ("to-client", "to-gateway")
ORIGIN_LINE = re.compile(r"origin: (?P<command>.*), pid (?P<pid>\d+)")


@dataclass(frozen=True)
class Case:
    rules: str
    family: str
    case: str
    exempt: str = "mark"
    loop_mark: str | None = None

    def options(self) -> list[str]:
        options = ["--rules", self.rules, "--family", self.family, "--case", self.case]
        options += ["--exempt", self.exempt]
        if self.loop_mark is not None:
            options += ["--loop-mark", self.loop_mark]
        return options

    @property
    def id(self) -> str:
        return "-".join(self.options()[1::2])

    @property
    def namespaces(self) -> list[str]:
        return [NAME, f"{NAME}-client"] if self.case == "gateway" else [NAME]


ACCEPTED = [
    Case(rules, family, case)
    for rules in ("nft", "iptables")
    for family in ("4", "6")
    for case in ("local", "gateway", "tproxy-tcp", "tproxy-udp")
    if (family, case) != ("6", "gateway")
]
ACCEPTED += [
    Case(rules, family, "local", "owner") for rules in ("nft", "iptables") for family in "46"
]
# The one-command way: the proxy's --capture instead of rules.
ACCEPTED += [
    Case("capture", family, case)
    for family in "46"
    for case in ("local", "gateway", "tproxy-udp")
    if (family, case) != ("6", "gateway")
]
# The proxy's flag and the rules follow --loop-mark together.
ACCEPTED += [
    Case("nft", "4", "local", loop_mark="0x80"),
    Case("iptables", "4", "tproxy-udp", loop_mark="0x80"),
    Case("capture", "4", "tproxy-udp", loop_mark="0x80"),
]

GATEWAY_V6 = (
    "namespace.sh: --family 6 --case gateway is refused: IPv6 has one loopback address, ::1, "
    'which Linux keeps on lo ("Cannot assign loopback address on this device") and drops on '
    "any other interface, so no loopback-only address can sit on the veth pair a gateway "
    "needs; a real IPv6 gateway redirects on its real interfaces (docs/recipes.md)"
)
OWNER_OUTSIDE_OUTPUT = (
    "namespace.sh: --exempt owner works with --case local only: in PREROUTING a packet has no "
    "local socket, so there is no owner to match (meta skuid, -m owner); use --exempt mark"
)
CAPTURE_TPROXY_TCP = (
    "namespace.sh: --rules capture diverts TCP with REDIRECT (--case local or gateway) and UDP "
    "with TPROXY (--case tproxy-udp): --case tproxy-tcp needs --rules nft or iptables"
)
CAPTURE_OWNER = (
    "namespace.sh: --rules capture exempts the proxy's traffic by its loop mark: use --exempt mark"
)
REFUSED = [
    (Case("nft", "6", "gateway"), GATEWAY_V6),
    (Case("iptables", "6", "gateway"), GATEWAY_V6),
    (Case("nft", "4", "gateway", "owner"), OWNER_OUTSIDE_OUTPUT),
    (Case("iptables", "4", "tproxy-tcp", "owner"), OWNER_OUTSIDE_OUTPUT),
    (Case("nft", "6", "tproxy-udp", "owner"), OWNER_OUTSIDE_OUTPUT),
    (Case("capture", "4", "tproxy-tcp"), CAPTURE_TPROXY_TCP),
    (Case("capture", "4", "local", "owner"), CAPTURE_OWNER),
]


def script(case: Case) -> list[str]:
    """The script's command line, once the tools `case` needs are there."""
    require_root()
    tools = ["ip", "nsenter", "python3", "curl"]
    if case.rules == "nft":
        tools.append("nft")
    elif case.rules == "iptables":
        tools.append("iptables" if case.family == "4" else "ip6tables")
    if case.exempt == "owner":
        tools.append("setpriv")
    for tool in tools:
        require_tool(tool)
    return ["bash", str(project_file("examples/namespace.sh")), "--name", NAME, *case.options()]


def script_environment() -> dict[str, str]:
    """The test's environment, with the virtual environment's `wfpredirect`
    first on PATH; the sanitizer pass's preload is kept for the proxy only
    (the driver gets it back), not for bash and the rule tools."""
    environment = {k: v for k, v in os.environ.items() if k not in SANITIZER_VARIABLES}
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment['PATH']}"
    return environment


def run_script(case: Case, *command: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """The script for `case`, running `command` in its namespace."""
    process = subprocess.Popen(
        [*script(case), "--", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=script_environment(),
        cwd="/",
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)  # the script removes what it made
        stdout, stderr = process.communicate(timeout=30)
        pytest.fail(f"namespace.sh {case.id} ran over {timeout} s:\n{stdout}{stderr}")
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def processes_in(inodes: set[int]) -> list[int]:
    """Every process whose network namespace is one of `inodes`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                link = os.readlink(entry / "ns" / "net")
            except OSError:  # gone meanwhile, or a kernel thread
                continue
            if int(link.removeprefix("net:[").removesuffix("]")) in inodes:
                found.append(int(entry.name))
    return found


def left_behind(case: Case, inodes: set[int], origin_pid: int, workdir: str) -> dict[str, object]:
    """What of the script's namespaces, links, processes and files exists."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    return {
        "namespace files": [ns for ns in case.namespaces if Path("/run/netns", ns).exists()],
        "listed": [line.split()[0] for line in listed.stdout.splitlines() if NAME in line],
        "veth ends here": [end for end in VETH_ENDS if f" {end}@" in links.stdout],
        "processes in its namespaces": processes_in(inodes),
        "origin running": Path(f"/proc/{origin_pid}").exists(),
        "work directory": Path(workdir).exists(),
    }


NOTHING_LEFT = {
    "namespace files": [],
    "listed": [],
    "veth ends here": [],
    "processes in its namespaces": [],
    "origin running": False,
    "work directory": False,
}


def origin_of(stdout: str) -> tuple[int, str]:
    """The origin's pid and the work directory the script printed."""
    match = ORIGIN_LINE.search(stdout)
    assert match is not None, stdout
    workdir = re.search(r"/tmp/wfpr-namespace\.\w+", match["command"])
    assert workdir is not None, match["command"]
    return int(match["pid"]), workdir.group()


def expected_hosts(case: Case) -> tuple[str, str]:
    """(the client's host as the proxy's line shows it, the origin's address)."""
    if case.family == "6":
        return "[::1]", "[::1]"
    return ("127.1.0.2" if case.case == "gateway" else "127.0.0.1"), "127.0.0.2"


@pytest.mark.parametrize("case", ACCEPTED, ids=lambda case: case.id)
def test_each_case_relays_through_the_real_proxy(case: Case, tmp_path: Path) -> None:
    result_file = tmp_path / "result.json"
    # The driver imports wfpredirect: under the sanitizer pass it needs the
    # preload the script runs without.
    preload = [f"{name}={value}" for name, value in sanitizer_environment().items()]
    driver = ["env", *preload, sys.executable, str(HERE / "recipe_driver.py"), str(result_file)]
    completed = run_script(case, *driver)
    origin_pid, workdir = origin_of(completed.stdout)
    result = json.loads(result_file.read_text(encoding="utf-8"))
    inodes = set(result["namespace inodes"].values())

    client_host, origin_host = expected_hosts(case)
    udp = case.case == "tproxy-udp"
    if udp:
        origin_address = origin_host.strip("[]")
        answer = f"origin hello (from {origin_address} port 5353)\n"
        line, target = proxy_log.UDP_FLOW, f"{origin_host}:5353"
    else:
        answer, line, target = BODY, proxy_log.RELAYED, f"{origin_host}:8080"
    relayed = [
        match.groupdict()
        for text in result["proxy lines"]
        if (match := line.pattern.fullmatch(text))
    ]
    assert len(relayed) == 1, result["proxy lines"]
    (relay,) = relayed
    client, _, client_port = relay["client"].rpartition(":")
    assert {
        "script": (completed.returncode, completed.stderr),
        "client": result["client"],
        "proxy exit": result["proxy exit"],
        "relayed from": (client, client_port.isdigit()),
        "relayed to": relay["target"],
        # A TCP line counts the HTTP request and the whole response.
        "bytes": (int(relay["up"]), int(relay["down"]))
        if udp
        else (int(relay["up"]) > 0, int(relay["down"]) > len(BODY)),
        "outcome": relay.get("outcome", "closed"),
        "namespaces": sorted(result["namespace inodes"]),
    } == {
        "script": (0, f"namespace.sh: removed {' '.join(case.namespaces)}\n"),
        "client": [0, answer, ""],
        "proxy exit": 0,
        "relayed from": (client_host, True),
        "relayed to": target,
        "bytes": (len("hello"), len("origin hello")) if udp else (True, True),
        "outcome": "closed",
        "namespaces": sorted(case.namespaces),
    }
    assert left_behind(case, inodes, origin_pid, workdir) == NOTHING_LEFT


@pytest.mark.parametrize(("case", "message"), REFUSED, ids=[case.id for case, _ in REFUSED])
def test_a_refused_combination_says_why_and_creates_nothing(case: Case, message: str) -> None:
    completed = run_script(case, "true")
    assert (completed.returncode, completed.stdout, completed.stderr) == (2, "", message + "\n")
    assert [ns for ns in case.namespaces if Path("/run/netns", ns).exists()] == []


def test_ctrl_c_removes_everything() -> None:
    """Without COMMAND the script prints the proxy's and the client's
    commands and waits; SIGINT (Ctrl-C) removes everything."""
    case = Case("nft", "4", "local")
    process = subprocess.Popen(
        script(case),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=script_environment(),
        cwd="/",
    )
    assert process.stdout is not None
    printed = []
    while line := process.stdout.readline():
        printed.append(line.rstrip("\n"))
        if line == "Ctrl-C removes everything.\n":
            break
    inode = os.stat(f"/run/netns/{NAME}").st_ino
    origin_pid, workdir = origin_of("\n".join(printed))
    running_origin = processes_in({inode})
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=30)
    wfpredirect = Path(sys.executable).parent / "wfpredirect"
    assert {
        "commands": printed[-5:],
        "in the namespace": running_origin,
        "exit": (process.returncode, stdout, stderr),
    } == {
        "commands": [
            "start the proxy:",
            f"    ip netns exec {NAME} {wfpredirect} proxy --listen 127.0.0.1:15001"
            " --loop-mark 0x40",
            "then the client:",
            f"    ip netns exec {NAME} curl -sS --max-time 10 http://127.0.0.2:8080/hello.txt",
            "Ctrl-C removes everything.",
        ],
        # The origin alone: the script's own `sleep` waits in the host's
        # namespace (had it outlived the script, communicate would time out).
        "in the namespace": [origin_pid],
        "exit": (130, "", f"namespace.sh: removed {NAME}\n"),
    }
    assert left_behind(case, {inode}, origin_pid, workdir) == NOTHING_LEFT
