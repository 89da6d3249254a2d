"""``python -m wfpredirect doctor`` on the real kernel, in a fresh network
namespace: the backend, the marks, the rules that use their bits, and the
privileges, each problem with what to do."""

from __future__ import annotations

import subprocess
import sys

from netns import run_in_netns
from rules import LOOPING_RULES, redirect
from support import NEUTRAL_DIRECTORY, require_tool, sanitizer_environment

RULES = redirect("ip", "127.0.0.2", 8080, 15001)
# Another program's rule that sets bit 0x80, inside the default MARK_MASK 0xf0.
MARKING_RULES = """table ip other {
  chain pre {
    type filter hook output priority 0;
    tcp dport 9999 meta mark set 0x80
  }
}
"""


def doctor(
    prefix: tuple[str, ...] = (), env: dict[str, str] | None = None
) -> tuple[int, list[str]]:
    completed = subprocess.run(
        [*prefix, sys.executable, "-m", "wfpredirect", "doctor"],
        capture_output=True,
        text=True,
        check=False,
        cwd=NEUTRAL_DIRECTORY,
        env=env,
        timeout=60,
    )
    assert completed.stderr == ""
    return completed.returncode, completed.stdout.splitlines()


def fields(lines: list[str]) -> dict[str, str]:
    """The report's "name  value" lines, up to the blank line."""
    report = lines[: lines.index("")]
    return {
        name.strip(): value.strip() for name, _, value in (line.partition("  ") for line in report)
    }


def test_a_machine_ready_for_the_proxy() -> None:
    status, lines = run_in_netns(
        doctor, nft_rules=RULES, sysctls={"net.ipv4.tcp_fwmark_accept": "1"}
    )
    report = fields(lines)
    assert status == 0
    assert lines[-1] == "no problems found"
    assert {
        name: report[name]
        for name in (
            "backend",
            "privileges",
            "SO_ORIGINAL_DST",
            "tcp_fwmark_accept",
            "marks",
            "rules testing the loop mark",
        )
    } == {
        "backend": "netfilter",
        "privileges": "uid 0, CAP_NET_ADMIN and CAP_NET_RAW",
        # The namespace's nat rule has loaded connection tracking.
        "SO_ORIGINAL_DST": "answers (a test connection: not redirected, as expected)",
        "tcp_fwmark_accept": "1: accepted connections carry their SYN's mark "
        "(chains of proxies work)",
        "marks": "LOOP_MARK 0x40, MARK_MASK 0xf0, valid",
        "rules testing the loop mark": "1",
    }


def test_a_rule_setting_bits_of_the_mask_is_a_problem() -> None:
    status, lines = run_in_netns(doctor, nft_rules=RULES + MARKING_RULES)
    assert status == 1
    assert lines[lines.index("1 problem:") :] == [
        "1 problem:",
        "- rule setting mask bits: this rule sets bits inside MARK_MASK 0xf0: they would "
        "travel in records and reach the proxy's upstream connections",
        "  what to do: choose a WFPREDIRECT_MARK_MASK (and a LOOP_MARK inside it) that no "
        "other rule uses",
    ]
    assert fields(lines)["rule setting mask bits"] == "nft: tcp dport 9999 meta mark set 0x00000080"


def test_marks_that_cannot_work_are_a_problem() -> None:
    def body() -> tuple[int, list[str]]:
        return doctor(
            env={
                **sanitizer_environment(),
                "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                "WFPREDIRECT_LOOP_MARK": "0",
            }
        )

    status, lines = run_in_netns(body, nft_rules=RULES)
    assert status == 1
    assert fields(lines)["marks"] == "LOOP_MARK 0x0, MARK_MASK 0xf0"
    assert lines[lines.index("1 problem:") :] == [
        "1 problem:",
        "- marks: WFPREDIRECT_LOOP_MARK (LOOP_MARK) is 0: the loop mark must be non-zero, or the "
        "upstream connection is redirected back into the proxy",
        "  what to do: set WFPREDIRECT_LOOP_MARK to one non-zero bit inside "
        "WFPREDIRECT_MARK_MASK (the defaults are 0x40 and 0xf0), or unset both",
    ]


def test_without_privileges_it_says_what_to_do() -> None:
    def body() -> tuple[int, list[str]]:
        setpriv = require_tool("setpriv")
        # Root without any capability (another uid could not read a checkout
        # in a private folder): neither marks nor the rulesets are allowed.
        return doctor(prefix=(setpriv, "--inh-caps=-all", "--bounding-set=-all"))

    status, lines = run_in_netns(body, nft_rules=RULES)
    report = fields(lines)
    assert status == 1
    assert (report["privileges"], report["rules"]) == (
        "uid 0, neither CAP_NET_ADMIN nor CAP_NET_RAW",
        "not read (needs root and nft or iptables)",
    )
    assert lines[lines.index("1 problem:") :] == [
        "1 problem:",
        "- privileges: set_redirect_records (SO_MARK) will raise RedirectPermissionError",
        "  what to do: run the proxy as root, or give it CAP_NET_ADMIN (systemd: "
        "AmbientCapabilities=CAP_NET_ADMIN; or setcap cap_net_admin+ep on its interpreter)",
    ]


def test_loopback_down_gets_its_own_advice() -> None:
    """In a network namespace of its own, where loopback starts down."""
    unshare = require_tool("unshare")
    status, lines = run_in_netns(lambda: doctor(prefix=(unshare, "-n")))
    assert status == 1
    assert fields(lines)["SO_ORIGINAL_DST"] == (
        "not asked: no loopback connection ([Errno 101] Network is unreachable)"
    )
    assert lines[lines.index("1 problem:") :] == [
        "1 problem:",
        "- SO_ORIGINAL_DST: the loopback interface is down (as it starts in a new network "
        "namespace): no test connection, and no proxy on 127.0.0.1",
        "  what to do: ip link set lo up",
    ]


def test_a_redirect_without_the_loop_exemption_is_a_problem() -> None:
    status, lines = run_in_netns(doctor, nft_rules=LOOPING_RULES)
    assert status == 1
    assert fields(lines)["rule without the loop exemption"] == (
        "nft: ip daddr 127.0.0.2 tcp dport 8080 redirect to :15001"
    )
    assert lines[lines.index("1 problem:") :] == [
        "1 problem:",
        "- rule without the loop exemption: it diverts the proxy's own upstream connections "
        "back into the proxy: nothing before it in its chain skips the loop mark 0x40",
        "  what to do: put `meta mark & 0x40 == 0x40 return` before it, in the same chain",
    ]
