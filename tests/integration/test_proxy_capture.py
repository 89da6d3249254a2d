"""``wfpredirect proxy --capture``, each test in its own network namespace:
the rules installed once the proxy listens and named in its start lines,
traffic relayed through them, nothing left however the proxy ends, and
every refusal said in one line before anything is installed."""

from __future__ import annotations

import os
import subprocess
from typing import Any

import pytest

import wfpredirect
from netns import run_in_netns
from processes import messages, proxy_command, running
from servers import Origin
from support import NEUTRAL_DIRECTORY, require_tool
from test_capture import FWMARK_ACCEPT, NO_ROUTING, nft, routing, table_flags, tables, through
from test_doctor import doctor
from test_proxy import PROXY_READY, stop
from wfpredirect.cli import _proxy_log as proxy_log

LOOP_MARK = wfpredirect.LOOP_MARK
CAPTURE = "tcp:127.0.0.2:8080"
CAPTURING = proxy_log.CAPTURING.pattern


# The start lines after the listening line: the privileges, the capacity,
# the capture (with --workers the workers' own come first).
START_LINES = 4


def capturing_line(proxy: subprocess.Popen[str]) -> str:
    """The proxy's capturing line, read among its start lines."""
    assert proxy.stdout is not None
    for _ in range(START_LINES):
        line = proxy_log.message(proxy.stdout.readline().rstrip("\n"))
        if CAPTURING.fullmatch(line):
            return line
    raise AssertionError("no capturing line")


def captured_table(line: str) -> str:
    match = CAPTURING.fullmatch(line)
    assert match is not None
    return match["table"]


def test_relayed_through_the_proxys_own_capture_and_gone_after_sigterm() -> None:
    require_tool("nft")

    def body() -> dict[str, Any]:
        origin = Origin(("127.0.0.2", 8080))
        with running(proxy_command("--capture", CAPTURE), ready=PROXY_READY) as proxy:
            line = capturing_line(proxy)
            table = captured_table(line)
            held = tables()
            flags = table_flags(table)
            answer = through(("127.0.0.2", 8080))
            status, output = stop(proxy)
        return {
            "capturing": line,
            "table": table == f"wfpredirect_{proxy.pid}_1",
            "held": held == [table],
            "flags": flags,
            "answer": answer,
            "marks": [arrival.mark for arrival in origin.arrivals],
            "relayed": [
                line for line in messages(output) if proxy_log.RELAYED.pattern.fullmatch(line)
            ].__len__(),
            "exit": status,
            "left": nft("list", "ruleset"),
        }

    result = run_in_netns(body, sysctls=FWMARK_ACCEPT)
    table = captured_table(result["capturing"])
    assert result == {
        "capturing": f"capturing tcp:127.0.0.2:8080 in nftables table {table}",
        "table": True,
        "held": True,
        "flags": ["flags owner"],
        "answer": b"origin hello\n",
        "marks": [LOOP_MARK],
        "relayed": 1,
        "exit": 0,
        "left": "",
    }


@pytest.mark.parametrize("workers", ["1", "2"], ids=["one", "workers"])
def test_nothing_is_left_after_kill_9(workers: str) -> None:
    require_tool("nft")

    def body() -> dict[str, Any]:
        Origin(("127.0.0.2", 8080))
        command = proxy_command("--workers", workers, "--capture", CAPTURE)
        with running(command, ready=PROXY_READY) as proxy:
            table = captured_table(capturing_line(proxy))
            held = tables()
            answer = through(("127.0.0.2", 8080))
            proxy.kill()
            proxy.wait(timeout=10)
            # The workers see their parent go and stop (they hold no copy of
            # the table's socket: it is gone with the parent alone).
            left = nft("list", "ruleset")
        return {
            # With --workers the parent holds the capture.
            "holder": table.split("_")[1] == str(proxy.pid),
            "held": held == [table],
            "answer": answer,
            "left": left,
        }

    assert run_in_netns(body) == {
        "holder": True,
        "held": True,
        "answer": b"origin hello\n",
        "left": "",
    }


def start_refused(command: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """How a proxy that does not start ends, and what it left in the ruleset."""
    completed = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=NEUTRAL_DIRECTORY,
        timeout=60,
        check=False,
    )
    return {
        "exit": completed.returncode,
        "stdout": completed.stdout,
        "stderr": completed.stderr,
        "left": nft("list", "ruleset"),
    }


def test_a_failed_capture_stops_the_start_and_leaves_nothing() -> None:
    require_tool("nft")

    def body() -> dict[str, Any]:
        # Without `ip` the UDP capture's route cannot be made.
        command = proxy_command("--udp", "0.0.0.0:15353", "--capture", "udp:127.0.0.3:5353")
        return {**start_refused(command, {"PATH": "/nonexistent"}), "routing": routing()}

    assert run_in_netns(body) == {
        "exit": 1,
        "stdout": "",
        "stderr": "wfpredirect proxy: [Errno 2] a UDP capture needs the command 'ip': "
        "apt-get install iproute2\n",
        "left": "",
        "routing": NO_ROUTING,
    }


FORM = "(the form is [tcp:|udp:]ADDRESS[/PREFIX][:PORTS])"
USAGE_ERROR = "wfpredirect proxy: error: argument --capture: "


@pytest.mark.parametrize(
    ("arguments", "said"),
    [
        (
            ["--capture", "tcp:::1:80"],
            f"{USAGE_ERROR}capture 'tcp:::1:80': an IPv6 address goes in brackets, as in "
            f"[::1]:8080 {FORM}",
        ),
        (
            ["--capture", "tcp:127.0.0.2:99999"],
            f"{USAGE_ERROR}capture 'tcp:127.0.0.2:99999': port '99999' is not within 1-65535 "
            f"{FORM}",
        ),
        (
            ["--capture", "sctp:127.0.0.2:80"],
            f"{USAGE_ERROR}capture 'sctp:127.0.0.2:80': 'sctp' is neither tcp, udp nor an "
            f"address {FORM}",
        ),
        (
            ["--capture", "udp:127.0.0.3:5353"],
            "wfpredirect proxy: --capture udp:127.0.0.3:5353: no UDP listener: add one with "
            "--udp 0.0.0.0:PORT",
        ),
        (
            ["--capture", "tcp:[::1]:8080"],
            "wfpredirect proxy: --capture tcp:[::1]:8080: no IPv6 TCP listener (--listen "
            "127.0.0.1): give --listen [::]:15001",
        ),
        (
            ["--udp", "[::1]:15353", "--capture", "udp:127.0.0.3:5353"],
            "wfpredirect proxy: --capture udp:127.0.0.3:5353: no IPv4 UDP listener (--udp "
            "::1): give --udp 0.0.0.0:15353",
        ),
        (
            ["--udp", "0.0.0.0:15353", "--user", "nobody", "--capture", "udp:127.0.0.3:5353"],
            "wfpredirect proxy: --capture udp:127.0.0.3:5353 with --user: the UDP capture's "
            "routing rule is made by the command ip, which runs without the proxy's "
            "capabilities once it is nobody: leave --user out (the proxy still keeps only the "
            "capabilities it needs)",
        ),
        (
            ["--capture-interface", "eth0"],
            "wfpredirect proxy: --capture-interface needs --capture",
        ),
        (
            ["--capture", CAPTURE, "--capture-interface", "a/b"],
            "wfpredirect proxy: error: argument --capture-interface: interface 'a/b' is not "
            "an interface name",
        ),
    ],
    ids=[
        "ipv6-without-brackets",
        "port",
        "protocol",
        "udp-without-listener",
        "ipv6-without-listener",
        "ipv4-udp-on-ipv6",
        "udp-with-user",
        "interface-alone",
        "bad-interface",
    ],
)
def test_a_refused_capture_is_one_line_and_installs_nothing(
    arguments: list[str], said: str
) -> None:
    require_tool("nft")

    def body() -> dict[str, Any]:
        return start_refused(proxy_command(*arguments))

    assert run_in_netns(body) == {"exit": 2, "stdout": "", "stderr": said + "\n", "left": ""}


def test_the_doctor_finds_a_running_capture_correct_and_a_leftover_one_a_problem() -> None:
    require_tool("nft")

    def body() -> dict[str, Any]:
        with running(proxy_command("--capture", CAPTURE), ready=PROXY_READY) as proxy:
            table = captured_table(capturing_line(proxy))
            running_status, running_report = doctor()
            stop(proxy)
        # What a killed proxy leaves where nftables lacks `flags owner`: an
        # ordinary table named after a process that is gone.
        dead = subprocess.Popen(["true"])
        dead.wait()
        leftover = f"wfpredirect_{dead.pid}_1"
        subprocess.run(
            ["nft", "-f", "-"],
            input=f"table inet {leftover} {{\n  chain tcp_output {{\n"
            "    type nat hook output priority -100; policy accept;\n"
            f"    meta mark & {LOOP_MARK:#x} == {LOOP_MARK:#x} return\n"
            "    ip daddr 127.0.0.2 tcp dport 8080 redirect to :15001\n  }\n}\n",
            text=True,
            check=True,
        )
        leftover_status, leftover_report = doctor()
        return {
            "running": (running_status, running_report, table, proxy.pid),
            "leftover": (leftover_status, leftover_report, leftover, dead.pid),
        }

    result = run_in_netns(body, sysctls=FWMARK_ACCEPT)
    status, report, table, pid = result["running"]
    assert (status, report[-1]) == (0, "no problems found")
    assert [line.strip() for line in report if table in line] == [
        f"capture table                {table}: process {pid}, removed with it"
    ]
    status, report, leftover, pid = result["leftover"]
    assert status == 1
    assert [line.strip() for line in report if leftover in line] == [
        f"leftover capture table       {leftover}",
        f"what to do: nft delete table inet {leftover}",
    ]
