"""The examples in examples/, run as shipped with real curl and a real HTTP
server (the transparent proxy alone and as a chain of two, the asyncio
proxy) and a real TPROXY rule (the UDP relay); the README or the documentation shows each one, and
its copy there is the file itself."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

import wfpredirect
from netns import run_in_netns
from processes import running
from rules import chain, redirect
from support import project_file, require_tool
from test_aio_datagrams import UdpOrigin
from test_datagrams import IPV4, ORIGIN_PORT, PROXY_PORT, route_marked_locally, tproxy_rules

EXAMPLES = ["transparent_proxy.py", "asyncio_proxy.py", "udp_relay.py", "tproxy_proxy.py"]


def example(name: str) -> Path:
    return project_file(f"examples/{name}")


def test_readme_shows_the_first_example_as_shipped() -> None:
    """README's copy of the threaded proxy is the file the tests run."""
    text = project_file("README.md").read_text(encoding="utf-8")
    name = "transparent_proxy.py"
    marker = f"<!-- example: examples/{name} (run by tests/integration/test_examples.py) -->"
    assert marker in text, f"README does not show examples/{name}"
    match = re.search(r"```python\n(.*?)```", text[text.index(marker) :], re.DOTALL)
    assert match is not None
    assert match.group(1) == example(name).read_text(encoding="utf-8")


def test_the_documentation_includes_every_example() -> None:
    """Each of the other examples is on a documentation page as the file
    itself (literalinclude), so no copy can drift."""
    included = {
        name
        for page in project_file("docs/index.md").parent.glob("*.md")
        for name in re.findall(
            r"```\{literalinclude\} \.\./examples/(\S+)\n", page.read_text(encoding="utf-8")
        )
    }
    assert set(EXAMPLES) - {"transparent_proxy.py"} <= included
    assert included <= {path.name for path in example("namespace.sh").parent.iterdir()}


# The proxy closes a connection that was not redirected: curl reports an
# empty reply (52) or, when its request was still unread, a reset (56).
CURL_NO_REPLY = (52, 56)


def curl(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "-sS", "--max-time", "10", url], capture_output=True, text=True, check=False
    )


@pytest.fixture()
def site(tmp_path: Path) -> tuple[Path, Path]:
    require_tool("curl")
    (tmp_path / "hello.txt").write_text("hello from the origin\n")
    return tmp_path, example("transparent_proxy.py")


ORIGIN_READY = "Serving HTTP on 127.0.0.2 port 8080"


def origin_server(directory: Path) -> list[str]:
    return [
        sys.executable,
        "-u",
        "-m",
        "http.server",
        "8080",
        "--bind",
        "127.0.0.2",
        "--directory",
        str(directory),
    ]


def relay_once(
    directory: Path, proxy: list[str], ready: str, setup: Sequence[str] = ()
) -> dict[str, object]:
    """In the current namespace: run `setup`'s commands, the origin and
    `proxy` (ready when it prints `ready`); fetch a page through the
    redirect, then ask the proxy's own port directly; what each side saw."""
    for command in setup:
        subprocess.run(command.split(), check=True)
    with (
        running(origin_server(directory), ready=ORIGIN_READY) as origin,
        running(proxy, ready=ready) as relay,
    ):
        relayed = curl("http://127.0.0.2:8080/hello.txt")
        direct = curl("http://127.0.0.1:15001/hello.txt")
    relay_output = relay.stdout.read() if relay.stdout else ""
    origin_log = origin.stderr.read() if origin.stderr else ""
    return {
        "relayed": (relayed.returncode, relayed.stdout),
        "direct": (direct.returncode in CURL_NO_REPLY, direct.stdout),
        "proxy_lines": relay_output.splitlines(),
        "origin_requests": origin_log.count('"GET /hello.txt HTTP/1.1" 200'),
    }


# What the threaded examples print for relay_once's two connections.
RELAYED_AND_REFUSED = [
    "relaying to 127.0.0.2 port 8080",
    "refused a connection that was not redirected",
]


def test_transparent_proxy_relays_with_curl(site: tuple[Path, Path]) -> None:
    directory, proxy = site
    result = run_in_netns(
        lambda: relay_once(
            directory, [sys.executable, str(proxy)], "listening on 127.0.0.1 port 15001"
        ),
        nft_rules=redirect("ip", "127.0.0.2", 8080, 15001),
    )
    assert result == {
        "relayed": (0, "hello from the origin\n"),
        "direct": (True, ""),
        "proxy_lines": RELAYED_AND_REFUSED,
        "origin_requests": 1,
    }


def test_chain_of_two_proxies_ends_at_the_origin(site: tuple[Path, Path]) -> None:
    directory, proxy = site

    def body() -> dict[str, object]:
        with running(origin_server(directory), ready=ORIGIN_READY) as origin:
            first = running(
                [sys.executable, str(proxy), "15001"],
                env={"WFPREDIRECT_LOOP_MARK": "0x40"},
                ready="listening on 127.0.0.1 port 15001",
            )
            second = running(
                [sys.executable, str(proxy), "15002"],
                env={"WFPREDIRECT_LOOP_MARK": "0x80"},
                ready="listening on 127.0.0.1 port 15002",
            )
            with first as proxy_a, second as proxy_b:
                relayed = curl("http://127.0.0.2:8080/hello.txt")
            lines_a = proxy_a.stdout.read() if proxy_a.stdout else ""
            lines_b = proxy_b.stdout.read() if proxy_b.stdout else ""
        origin_log = origin.stderr.read() if origin.stderr else ""
        return {
            "relayed": (relayed.returncode, relayed.stdout),
            "proxy_a": lines_a.splitlines(),
            "proxy_b": lines_b.splitlines(),
            "origin_requests": origin_log.count('"GET /hello.txt HTTP/1.1" 200'),
        }

    result = run_in_netns(
        body,
        nft_rules=chain("127.0.0.2", 8080, [(0x40, 15001), (0x80, 15002)]),
        sysctls={"net.ipv4.tcp_fwmark_accept": "1"},
    )
    assert result == {
        "relayed": (0, "hello from the origin\n"),
        "proxy_a": ["relaying to 127.0.0.2 port 8080"],
        "proxy_b": ["relaying to 127.0.0.2 port 8080"],
        "origin_requests": 1,
    }


PING_PONGS = 1000


def test_udp_relay_answers_every_datagram_in_order() -> None:
    """The UDP relay as shipped, behind a real TPROXY rule: a client sends
    each datagram as soon as the previous answer arrived, 1,000 times, and
    gets every answer, in order, byte for byte."""
    relay = example("udp_relay.py")

    def body() -> dict[str, object]:
        route_marked_locally(IPV4)
        origin = UdpOrigin()
        destination = (IPV4.origin_host, ORIGIN_PORT)
        ready = f"relaying udp on 0.0.0.0 port {PROXY_PORT}"
        with (
            running([sys.executable, str(relay), str(PROXY_PORT)], ready=ready),
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client,
        ):
            client.bind((IPV4.client_host, 0))
            client.settimeout(5)
            wrong = []
            for number in range(PING_PONGS):
                question = f"question {number}".encode()
                client.sendto(question, destination)
                answer, source = client.recvfrom(2048)
                if (answer, source) != (b"origin " + question, destination):
                    wrong.append((number, answer, source))
        return {
            "wrong answers": wrong,
            "origin saw": len(origin.arrivals),
            "loop mark on each": {mark for _, _, mark in origin.arrivals},
        }

    assert run_in_netns(body, nft_rules=tproxy_rules(IPV4)) == {
        "wrong answers": [],
        "origin saw": PING_PONGS,
        "loop mark on each": {wfpredirect.LOOP_MARK},
    }


def test_asyncio_proxy_relays_with_curl(site: tuple[Path, Path]) -> None:
    directory, _ = site
    proxy = [sys.executable, str(example("asyncio_proxy.py"))]
    result = run_in_netns(
        lambda: relay_once(directory, proxy, "listening on 127.0.0.1 port 15001"),
        nft_rules=redirect("ip", "127.0.0.2", 8080, 15001),
    )
    assert result == {
        "relayed": (0, "hello from the origin\n"),
        "direct": (True, ""),
        "proxy_lines": [],
        "origin_requests": 1,
    }


def test_tproxy_proxy_relays_with_curl(site: tuple[Path, Path]) -> None:
    """The TPROXY proxy as shipped, behind the rule and routing of the Linux
    page (docs/linux.md), which the test applies as the page shows them."""
    from test_tproxy import TPROXY_RULES

    page = project_file("docs/linux.md").read_text(encoding="utf-8")
    routing = [
        "ip rule add fwmark 1 lookup 100",
        "ip route add local 0.0.0.0/0 dev lo table 100",
    ]
    assert f"{routing[0]}\n{routing[1]}\nnft -f - <<'NFT'\n{TPROXY_RULES}NFT\n" in page
    directory, _ = site
    proxy = [sys.executable, str(example("tproxy_proxy.py"))]
    result = run_in_netns(
        lambda: relay_once(directory, proxy, "listening on 0.0.0.0 port 15001", routing),
        nft_rules=TPROXY_RULES,
    )
    assert result == {
        "relayed": (0, "hello from the origin\n"),
        "direct": (True, ""),
        "proxy_lines": RELAYED_AND_REFUSED,
        "origin_requests": 1,
    }
