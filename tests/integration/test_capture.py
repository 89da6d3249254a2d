"""wfpredirect.Capture against the real kernel, each test in its own network
namespace: the owner-flagged table, traffic relayed through a real proxy,
and nothing left behind however the holder ends."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from typing import Any

import pytest

import wfpredirect
from netns import run_in_netns
from processes import proxy_command, running
from servers import Origin, exchange
from support import NEUTRAL_DIRECTORY, require_tool
from test_aio_datagrams import UdpOrigin
from test_datagrams import IPV4, ORIGIN_PORT, PROXY_PORT
from test_proxy import PROXY_READY
from wfpredirect._capture_routes import ROUTE_TABLE, RULE_PRIORITY
from wfpredirect._errors import CAPABILITY_ADVICE
from wfpredirect.cli import _proxy_log as proxy_log

LOOP_MARK = wfpredirect.LOOP_MARK
UDP_ANSWERS = 50
# The origin sees its connections' marks (through the proxy: LOOP_MARK).
FWMARK_ACCEPT = {"net.ipv4.tcp_fwmark_accept": "1"}
# A process that holds a capture until it is stopped; it prints the table's
# name once the table is in.
HOLDER = """
import sys, time, wfpredirect
with wfpredirect.Capture(sys.argv[1:], tcp_port=15001, udp_port=15353) as capture:
    print(capture.table, flush=True)
    time.sleep(60)
"""


# The same, with a child forked while the capture is open (as --workers
# forks its workers): the child's copy of the netlink socket must not keep
# the table once the holder is gone.
HOLDER_WITH_CHILD = """
import os, sys, time, wfpredirect
with wfpredirect.Capture(sys.argv[1:], tcp_port=15001) as capture:
    child = os.fork()
    if child == 0:
        time.sleep(60)
        os._exit(0)
    print(capture.table, child, flush=True)
    time.sleep(60)
"""


def nft(*arguments: str) -> str:
    return subprocess.run(["nft", *arguments], capture_output=True, text=True, check=True).stdout


def tables() -> list[str]:
    """The tables' names, from nft's text listing: nft 1.0.6 writes garbage
    in the "flags" field of a table in its JSON form."""
    return [line.split()[-1] for line in nft("list", "tables").splitlines()]


def chain(table: str, name: str) -> list[dict[str, Any]]:
    """The chain's rules, from nft's JSON form."""
    listing = json.loads(nft("-j", "list", "chain", "inet", table, name))["nftables"]
    return [item["rule"] for item in listing if "rule" in item]


def routing() -> dict[str, str]:
    """The capture's routing rules and routes, both families (\"\" when none)."""
    found = {}
    for family in ("-4", "-6"):
        found[f"rule {family}"] = subprocess.run(
            ["ip", family, "rule", "list", "pref", str(RULE_PRIORITY)],
            capture_output=True,
            text=True,
        ).stdout.strip()
        found[f"route {family}"] = subprocess.run(
            ["ip", family, "route", "list", "table", str(ROUTE_TABLE)],
            capture_output=True,
            text=True,
        ).stdout.strip()
    return found


NO_ROUTING = {"rule -4": "", "route -4": "", "rule -6": "", "route -6": ""}


def through(address: tuple[Any, ...], family: int = socket.AF_INET) -> bytes:
    with socket.socket(family, socket.SOCK_STREAM) as client:
        client.settimeout(10)
        client.connect(address)
        return exchange(client, b"hello\n")


def holder(*targets: str) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, *targets],
        stdout=subprocess.PIPE,
        text=True,
        cwd=NEUTRAL_DIRECTORY,
    )
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


def table_flags(name: str) -> list[str]:
    return [
        line.strip()
        for line in nft("list", "table", "inet", name).splitlines()
        if line.strip().startswith("flags ")
    ]


def rule_kinds(rule: dict[str, Any]) -> list[str]:
    """What a rule does, in order: its statements' names."""
    return [next(iter(statement)) for statement in rule["expr"]]


def test_relayed_through_the_proxy_and_the_ruleset_is_owned_with_the_exemption_first() -> None:
    require_tool("nft")

    def body() -> dict[str, Any]:
        origin = Origin(("127.0.0.2", 8080))
        with running(proxy_command(), ready=PROXY_READY) as proxy:
            with wfpredirect.Capture(["tcp:127.0.0.2:8080"], tcp_port=15001) as capture:
                answer = through(("127.0.0.2", 8080))
                names = tables()
                table = capture.table
                flags = table_flags(table)
                rules = chain(table, "tcp_output")
            after = nft("list", "ruleset")
            direct = through(("127.0.0.2", 8080))
            proxy.send_signal(signal.SIGTERM)
            output, _ = proxy.communicate(timeout=10)
        return {
            "answer": answer,
            "direct": direct,
            "marks": [arrival.mark for arrival in origin.arrivals],
            "relayed": len(
                [
                    line
                    for line in output.splitlines()
                    if proxy_log.RELAYED.pattern.fullmatch(proxy_log.message(line))
                ]
            ),
            "tables": names == [table],
            "flags": flags,
            "rules": [(rule["chain"], rule_kinds(rule)) for rule in rules],
            "exemption": rules[0]["expr"][0]["match"],
            "after": after,
        }

    result = run_in_netns(body, sysctls=FWMARK_ACCEPT)
    assert result == {
        "answer": b"origin hello\n",
        "direct": b"origin hello\n",
        # Through the proxy (its upstream carries the loop mark), then direct.
        "marks": [LOOP_MARK, 0],
        "relayed": 1,
        "tables": True,
        "flags": ["flags owner"],
        "rules": [
            ("tcp_output", ["match", "return"]),
            ("tcp_output", ["match", "match", "redirect"]),
        ],
        "exemption": {
            "op": "==",
            "left": {"&": [{"meta": {"key": "mark"}}, LOOP_MARK]},
            "right": LOOP_MARK,
        },
        "after": "",
    }


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
def test_nothing_is_left_when_the_holder_is_killed(how: int) -> None:
    require_tool("nft")

    def body() -> dict[str, Any]:
        process, table = holder("tcp:127.0.0.2:8080", "udp:127.0.0.3:5353")
        held = tables()
        held_routing = routing()
        process.send_signal(how)
        status = process.wait(timeout=10)
        left = nft("list", "ruleset")
        # The routing rule is no table's: it stays, matching nothing, until
        # the next capture starts (and here ends).
        routing_left = routing()
        with wfpredirect.Capture("tcp:127.0.0.2:8080", tcp_port=15001):
            pass
        return {
            "held": held == [table],
            "held routing": held_routing["rule -4"] != "" and held_routing["route -6"] != "",
            "status": status,
            "left": left,
            "routing left": routing_left == held_routing,
            "next start": routing(),
        }

    assert run_in_netns(body) == {
        "held": True,
        "held routing": True,
        "status": -how,
        "left": "",
        "routing left": True,
        "next start": NO_ROUTING,
    }


def test_a_forked_child_does_not_keep_the_table() -> None:
    require_tool("nft")

    def body() -> dict[str, Any]:
        process = subprocess.Popen(
            [sys.executable, "-c", HOLDER_WITH_CHILD, "tcp:127.0.0.2:8080"],
            stdout=subprocess.PIPE,
            text=True,
            cwd=NEUTRAL_DIRECTORY,
        )
        assert process.stdout is not None
        table, child = process.stdout.readline().split()
        try:
            held = tables()
            process.kill()
            process.wait(timeout=10)
            child_alive = os.path.exists(f"/proc/{child}")
            return {
                "held": held == [table],
                "child alive": child_alive,
                "left": nft("list", "ruleset"),
            }
        finally:
            os.kill(int(child), signal.SIGKILL)

    assert run_in_netns(body) == {"held": True, "child alive": True, "left": ""}


def test_without_the_privilege_a_capture_is_refused_and_leaves_nothing() -> None:
    setpriv = require_tool("setpriv")
    require_tool("nft")
    attempt = (
        "import wfpredirect\n"
        "try:\n"
        "    wfpredirect.Capture('tcp:127.0.0.2:8080', tcp_port=15001).install()\n"
        "except wfpredirect.RedirectPermissionError as error:\n"
        "    print(error.errno, error)\n"
    )

    def body() -> dict[str, Any]:
        refused = subprocess.run(
            [setpriv, "--inh-caps=-all", "--bounding-set=-all", "--reuid=65534", "--regid=65534",
             "--clear-groups", sys.executable, "-c", attempt],
            capture_output=True, text=True, cwd=NEUTRAL_DIRECTORY, check=False,
        )  # fmt: skip
        return {"said": refused.stdout, "errors": refused.stderr, "left": nft("list", "ruleset")}

    assert run_in_netns(body) == {
        "said": "1 [Errno 1] nft_run_cmd_from_buffer: netlink: Error: cache initialization "
        f"failed: Operation not permitted: {CAPABILITY_ADVICE}\n",
        # libnftables' own line, written when it cannot open its socket.
        "errors": "Operation not permitted (you must be root)\n",
        "left": "",
    }


def test_a_failed_start_leaves_nothing() -> None:
    require_tool("nft")

    def body() -> dict[str, Any]:
        # Without `ip` the UDP route cannot be made: the table that was
        # already in is taken out again.
        path, os.environ["PATH"] = os.environ["PATH"], "/nonexistent"
        try:
            with wfpredirect.Capture(["udp:127.0.0.3:5353"], udp_port=15353):
                raise AssertionError("the capture started without ip")
        except wfpredirect.RedirectError as error:
            refused = str(error)
        finally:
            os.environ["PATH"] = path
        return {"refused": refused, "left": nft("list", "ruleset"), "routing": routing()}

    assert run_in_netns(body) == {
        "refused": "[Errno 2] a UDP capture needs the command 'ip': apt-get install iproute2",
        "left": "",
        "routing": NO_ROUTING,
    }


def test_a_tcp_capture_needs_no_ip_command() -> None:
    require_tool("nft")

    def body() -> dict[str, Any]:
        path, os.environ["PATH"] = os.environ["PATH"], "/nonexistent"
        try:
            capture = wfpredirect.Capture("tcp:127.0.0.2:8080", tcp_port=15001)
            capture.install()
        finally:
            os.environ["PATH"] = path
        try:
            return {"flags": table_flags(capture.table), "routing": routing()}
        finally:
            capture.close()

    assert run_in_netns(body) == {"flags": ["flags owner"], "routing": NO_ROUTING}


def test_two_captures_side_by_side_closing_one_leaves_the_other() -> None:
    require_tool("nft")

    def body() -> dict[str, Any]:
        first_origin = Origin(("127.0.0.2", 8080))
        second_origin = Origin(("127.0.0.4", 8080))
        # A later --listen wins.
        second_proxy = proxy_command("--listen", "127.0.0.1:15002")
        with (
            running(proxy_command(), ready=PROXY_READY),
            running(second_proxy, ready=proxy_log.LISTENING.line(host="127.0.0.1", port=15002)),
        ):
            first = wfpredirect.Capture("tcp:127.0.0.2:8080", tcp_port=15001)
            second = wfpredirect.Capture("tcp:127.0.0.4:8080", tcp_port=15002)
            with first, second:
                both = [through(("127.0.0.2", 8080)), through(("127.0.0.4", 8080))]
                first.close()
                names = tables()
                after = [through(("127.0.0.2", 8080)), through(("127.0.0.4", 8080))]
            names_held = [first.table, second.table]
        return {
            "distinct": names_held[0] != names_held[1],
            "answers": both + after,
            "first marks": [arrival.mark for arrival in first_origin.arrivals],
            "second marks": [arrival.mark for arrival in second_origin.arrivals],
            "tables after closing the first": names == [names_held[1]],
            "left": nft("list", "ruleset"),
        }

    assert run_in_netns(body, sysctls=FWMARK_ACCEPT) == {
        "distinct": True,
        "answers": [b"origin hello\n"] * 4,
        # The first origin: through its proxy, then direct once its capture closed.
        "first marks": [LOOP_MARK, 0],
        "second marks": [LOOP_MARK, LOOP_MARK],
        "tables after closing the first": True,
        "left": "",
    }


def test_ipv6() -> None:
    require_tool("nft")

    def body() -> dict[str, Any]:
        origin = Origin(("::1", 8080, 0, 0), socket.AF_INET6)
        command = proxy_command("--listen", "[::1]:15001")
        ready = proxy_log.LISTENING.line(host="::1", port=15001)
        with running(command, ready=ready), wfpredirect.Capture("tcp:[::1]:8080", tcp_port=15001):
            answer = through(("::1", 8080), socket.AF_INET6)
        return {
            "answer": answer,
            "marks": [arrival.mark for arrival in origin.arrivals],
            "left": nft("list", "ruleset"),
        }

    assert run_in_netns(body, sysctls=FWMARK_ACCEPT) == {
        "answer": b"origin hello\n",
        "marks": [LOOP_MARK],
        "left": "",
    }


def test_udp_through_tproxy_every_datagram_answered_and_no_routing_left() -> None:
    require_tool("nft")

    def body() -> dict[str, Any]:
        origin = UdpOrigin()
        command = proxy_command("--udp", f"0.0.0.0:{PROXY_PORT}")
        answers = []
        with (
            running(command, ready=PROXY_READY),
            wfpredirect.Capture(f"udp:{IPV4.origin_host}:{ORIGIN_PORT}", udp_port=PROXY_PORT),
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client,
        ):
            client.settimeout(5)
            for number in range(UDP_ANSWERS):
                client.sendto(b"%d" % number, (IPV4.origin_host, ORIGIN_PORT))
                answers.append(client.recvfrom(2048))
            held = routing()
        return {
            "answers": answers,
            "origin marks": {mark for _, _, mark in origin.arrivals},
            "held": held["rule -4"],
            "left": nft("list", "ruleset"),
            "routing": routing(),
        }

    result = run_in_netns(body)
    assert result == {
        "answers": [
            (b"origin %d" % number, (IPV4.origin_host, ORIGIN_PORT))
            for number in range(UDP_ANSWERS)
        ],
        "origin marks": {LOOP_MARK},
        "held": f"{RULE_PRIORITY}:\tfrom all fwmark 0x1/0x1 lookup {ROUTE_TABLE}",
        "left": "",
        "routing": NO_ROUTING,
    }


def test_every_form_of_target_loads() -> None:
    """Networks, port lists and ranges, both families, both protocols and
    an interface: the kernel takes the whole table, chain by chain."""
    require_tool("nft")

    def body() -> dict[str, Any]:
        targets = [
            "tcp:127.0.0.2:8080",
            "tcp:[::]/0:80,443,8000-8100",
            "tcp:10.0.0.0/8",
            "udp:127.0.0.3:5353",
            "udp:[2001:db8::]/32:53",
        ]
        with wfpredirect.Capture(
            targets, tcp_port=15001, udp_port=15353, interface="eth1"
        ) as capture:
            chains = {
                name: [rule_kinds(rule) for rule in chain(capture.table, name)]
                for name in ("tcp_output", "tcp_prerouting", "udp_output", "udp_prerouting")
            }
            held = tables() == [capture.table]
        return {"held": held, "chains": chains, "left": nft("list", "ruleset")}

    exemption = ["match", "return"]
    # Each rule: its matches (address or family, protocol or ports, and the
    # interface in prerouting), then what it does.
    redirect = ["match", "match", "redirect"]
    arriving = ["match", *redirect]
    rerouted = ["match", "match", "mangle"]
    diverted = ["match", "match", "match", "tproxy", "mangle", "accept"]
    assert run_in_netns(body) == {
        "held": True,
        "chains": {
            "tcp_output": [exemption, redirect, redirect, redirect],
            "tcp_prerouting": [exemption, arriving, arriving, arriving],
            "udp_output": [exemption, rerouted, rerouted],
            "udp_prerouting": [exemption, diverted, diverted],
        },
        "left": "",
    }
