"""``wfpredirect proxy --keep-client-address`` on a gateway: a client
namespace and an origin namespace, each joined to the proxy's namespace by
a veth pair, loopback addresses only (route_localnet lets 127/8 cross a
veth). The client's connection to the origin is redirected in PREROUTING;
the proxy's upstream leaves from the client's address, and
examples/keep_client_address.sh (run as shipped) routes the origin's
replies back to the proxy. The origin answers with the address it sees."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from netns import run_in_netns
from processes import messages, running
from support import NEUTRAL_DIRECTORY, project_file, require_tool
from wfpredirect.cli import _proxy_log as proxy_log

HERE = Path(__file__).resolve().parent
CLIENT, GATEWAY_CLIENT_SIDE = "127.1.0.2", "127.1.0.1"
ORIGIN, GATEWAY_ORIGIN_SIDE = "127.2.0.2", "127.2.0.1"
# The gateway's redirect: connections arriving from the client's side.
RULES = """
table ip wfpr {
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    iifname "kp0" tcp dport 8080 redirect to :15001
  }
}
"""


def ip(*arguments: str) -> None:
    subprocess.run(["ip", *arguments], check=True)


# 127/8 may be routed on every interface, with no reverse-path filter.
LOCALNET = (
    "for f in /proc/sys/net/ipv4/conf/*/route_localnet; do echo 1 > $f; done; "
    "for f in /proc/sys/net/ipv4/conf/*/rp_filter; do echo 0 > $f; done"
)


def localnet(namespace: str | None) -> None:
    """LOCALNET on every interface of `namespace` (None: this one) so far;
    `lo` keeps 127.0.0.1 alone, so the rest of 127/8 is not local there."""
    inside = ["ip", "netns", "exec", namespace] if namespace else []
    subprocess.run([*inside, "sh", "-c", LOCALNET], check=True)


def loopback_alone(namespace: str | None) -> None:
    where = ["-n", namespace] if namespace else []
    ip(*where, "link", "set", "lo", "up")
    ip(*where, "addr", "del", "127.0.0.1/8", "dev", "lo")
    ip(*where, "addr", "add", "127.0.0.1/32", "dev", "lo")


@contextmanager
def namespace(name: str, link: str, peer: str, address: str, gateway: str) -> Iterator[str]:
    """A named namespace whose `peer` veth end (`address`) routes everything
    through `gateway`, the other end (`link`) being in this namespace."""
    ip("netns", "add", name)
    try:
        ip("link", "add", link, "type", "veth", "peer", "name", peer, "netns", name)
        loopback_alone(name)
        ip("-n", name, "addr", "add", f"{address}/24", "dev", peer)
        ip("-n", name, "link", "set", peer, "up")
        ip("addr", "add", f"{gateway}/24", "dev", link)
        ip("link", "set", link, "up")
        localnet(name)
        localnet(None)
        ip("-n", name, "route", "add", "default", "via", gateway, "src", address)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.mark.parametrize(
    "arguments",
    [
        ["--keep-client-address", "--relay", "protocol"],
        ["--keep-client-address", "--relay", "streams"],
        ["--keep-client-address", "--relay", "native"],
        [],
    ],
    ids=["protocol", "streams", "native", "without"],
)
def test_the_origin_sees_the_client(arguments: list[str]) -> None:
    keep = "--keep-client-address" in arguments
    seen = CLIENT if keep else GATEWAY_ORIGIN_SIDE
    assert through_the_gateway(arguments, routed=keep) == {
        "fetched": (0, f"{seen}\n", ""),
        "lines": [("relayed", CLIENT, f"{ORIGIN}:8080", "closed")],
        "exit": 0,
        "rules removed": True,
    }


@pytest.mark.parametrize("relay", ["native"])
def test_without_the_routing_the_replies_miss_the_proxy(relay: str) -> None:
    """The origin's replies to the client's address, not routed to the
    proxy's socket, go on to the client, which knows nothing of them: the
    upstream never connects."""
    result = through_the_gateway(
        ["--keep-client-address", "--connect-timeout", "1", "--relay", relay],
        routed=False,
        wait=5,
    )
    # The proxy closes the client's connection: an empty reply, or a reset.
    fetched = result.pop("fetched")
    assert fetched in {
        (52, "", "curl: (52) Empty reply from server\n"),
        (56, "", "curl: (56) Recv failure: Connection reset by peer\n"),
    }
    assert result == {
        "lines": [("failed", CLIENT, f"{ORIGIN}:8080", "timed out")],
        "exit": 0,
        "rules removed": True,
    }


def through_the_gateway(arguments: list[str], routed: bool, wait: int = 10) -> dict[str, object]:
    """One curl from the client namespace to the origin's address, through
    the proxy started with `arguments`, with or without the routing of
    examples/keep_client_address.sh."""
    require_tool("curl")
    routing = project_file("examples/keep_client_address.sh")
    names = (f"wfpr-kc-{os.getpid()}", f"wfpr-ko-{os.getpid()}")

    def body() -> dict[str, object]:
        with ExitStack() as stack:
            loopback_alone(None)
            client = stack.enter_context(
                namespace(names[0], "kp0", "kc0", CLIENT, GATEWAY_CLIENT_SIDE)
            )
            origin = stack.enter_context(
                namespace(names[1], "kp1", "ko0", ORIGIN, GATEWAY_ORIGIN_SIDE)
            )
            rules_before = subprocess.run(
                ["ip", "rule"], capture_output=True, text=True, check=True
            ).stdout
            if routed:
                subprocess.run(["sh", str(routing)], check=True, cwd=NEUTRAL_DIRECTORY)
            stack.enter_context(
                running(
                    [
                        "ip",
                        "netns",
                        "exec",
                        origin,
                        sys.executable,
                        str(HERE / "whoami_origin.py"),
                        ORIGIN,
                        "8080",
                    ],
                    ready="ready",
                )
            )
            proxy = stack.enter_context(
                running(
                    [
                        sys.executable,
                        "-m",
                        "wfpredirect",
                        "proxy",
                        "--listen",
                        "0.0.0.0:15001",
                        "--summary-interval",
                        "0",
                        *arguments,
                    ],
                    ready=proxy_log.LISTENING.line(host="0.0.0.0", port=15001),
                )
            )
            fetched = subprocess.run(
                [
                    "ip",
                    "netns",
                    "exec",
                    client,
                    "curl",
                    "-sS",
                    "--max-time",
                    str(wait),
                    f"http://{ORIGIN}:8080/",
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            proxy.terminate()
            output, _ = proxy.communicate(timeout=10)
            if routed:
                subprocess.run(["sh", str(routing), "remove"], check=True, cwd=NEUTRAL_DIRECTORY)
            rules_after = subprocess.run(
                ["ip", "rule"], capture_output=True, text=True, check=True
            ).stdout
        lines = []
        for line in messages(output):
            for kind in (proxy_log.RELAYED, proxy_log.FAILED):
                if match := kind.pattern.fullmatch(line):
                    outcome = match["outcome"] if kind is proxy_log.RELAYED else match["reason"]
                    client_host = match["client"].rsplit(":", 1)[0]
                    lines.append((kind.event, client_host, match["target"], outcome))
        return {
            "fetched": (fetched.returncode, fetched.stdout, fetched.stderr),
            "lines": lines,
            "exit": proxy.returncode,
            "rules removed": rules_after == rules_before,
        }

    result = run_in_netns(body, nft_rules=RULES)
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    assert not set(names) & {line.split()[0] for line in listed.stdout.splitlines() if line}
    return result
