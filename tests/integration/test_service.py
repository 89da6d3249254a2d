"""``wfpredirect proxy`` set up as a service (docs/service.md): its
descriptor limit raised and its caps derived from it, and, started as root,
only the capabilities its options need once its sockets are bound, as
--user if asked. Each proxy runs in a network namespace of its own, and its
/proc files are read while it runs."""

from __future__ import annotations

import importlib.util
import os
import resource
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from netns import run_in_netns
from processes import messages, proxy_command
from rules import redirect
from servers import Origin, exchange
from support import NEUTRAL_DIRECTORY, require_tool, unavailable
from test_privilege import require_both_capabilities, without_capabilities
from wfpredirect.cli import _proxy_log as proxy_log
from wfpredirect.cli._capacity import PIPE_POOL

READY = proxy_log.LISTENING.line(host="127.0.0.1", port=15001)
RULES = redirect("ip", "127.0.0.2", 8080, 15001)
FWMARK_ACCEPT = {"net.ipv4.tcp_fwmark_accept": "1"}
# linux/capability.h: the bits of the two the proxy keeps.
NET_ADMIN = 1 << 12
NET_RAW = 1 << 13
KILL = 1 << 5
SETGID = 1 << 6
SETUID = 1 << 7
SETPCAP = 1 << 8
NOBODY = 65534
# The limit each proxy here starts with (the soft one is raised to the hard one).
SOFT, HARD = 1024, 4096


def limited(soft: int, hard: int) -> Callable[[], None]:
    """A preexec_fn: the child starts with this descriptor limit."""
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@contextmanager
def proxy(*extra: str, ready: str = READY) -> Iterator[subprocess.Popen[str]]:
    """The proxy started with SOFT/HARD descriptors, once it has said `ready`
    and the lines that follow it at start (capacity, privileges); stopped
    and waited for at the end."""
    process = subprocess.Popen(
        proxy_command(*extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=NEUTRAL_DIRECTORY,
        preexec_fn=limited(SOFT, HARD),
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert proxy_log.message(line.rstrip("\n")) == ready, (line, process.stderr)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)


def stop(process: subprocess.Popen[str]) -> tuple[int, list[str]]:
    """SIGTERM; the exit status and the rest of its lines (after the first)."""
    process.send_signal(signal.SIGTERM)
    output, errors = process.communicate(timeout=10)
    assert errors == "", errors
    return process.returncode, messages(output)


CAPABILITY_SETS = ("CapEff", "CapPrm", "CapInh", "CapBnd", "CapAmb")


def credentials(pid: int) -> dict[str, object]:
    """What /proc says of process `pid`: its user and group ids, its
    capability sets, and the capabilities its other threads hold."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        fields = dict(line.rstrip("\n").split(":\t", 1) for line in status if ":\t" in line)
    threads = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/status", encoding="ascii") as status:
            held = dict(line.rstrip("\n").split(":\t", 1) for line in status if ":\t" in line)
        threads.add((int(held["CapEff"], 16), int(held["CapPrm"], 16)))
    return {
        "uid": fields["Uid"].split(),
        "gid": fields["Gid"].split(),
        **{name: int(fields[name], 16) for name in CAPABILITY_SETS},
        "threads": threads,
    }


def dropped_to(mask: int, user: int = 0) -> dict[str, object]:
    """The credentials of a proxy that kept `mask` alone, as `user`."""
    ids = [str(user)] * 4
    return {
        "uid": ids,
        "gid": ids,
        "CapEff": mask,
        "CapPrm": mask,
        "CapInh": 0,
        "CapBnd": mask,
        "CapAmb": 0,
        "threads": {(mask, mask)},
    }


def capacity(connections: int, flows: int, pipes: int = PIPE_POOL) -> str:
    return proxy_log.CAPACITY.line(limit=HARD, connections=connections, flows=flows, pipes=pipes)


def privileges(capabilities: str, user: str = "root") -> str:
    return proxy_log.PRIVILEGES.line(capabilities=capabilities, user=user)


@pytest.mark.parametrize(
    ("flags", "mask", "said"),
    [
        # (4096 - 64 - 2 * 32) // 2 connections on the native relay (its
        # pool of 32 pipes in the reserve).
        ((), NET_ADMIN, [privileges("CAP_NET_ADMIN"), capacity(1984, 0)]),
        (
            ("--transparent",),
            NET_ADMIN | NET_RAW,
            [privileges("CAP_NET_ADMIN,CAP_NET_RAW"), capacity(1984, 0)],
        ),
        # A quarter of 3968 for the flows, the rest for connections.
        (
            ("--udp", "127.0.0.1:15002"),
            NET_ADMIN | NET_RAW,
            [
                proxy_log.LISTENING_UDP.line(host="127.0.0.1", port=15002),
                privileges("CAP_NET_ADMIN,CAP_NET_RAW"),
                capacity(1488, 992),
            ],
        ),
        # 2 descriptors a connection on the streams relay.
        (("--relay", "streams"), NET_ADMIN, [privileges("CAP_NET_ADMIN"), capacity(2016, 0, 0)]),
    ],
    ids=["default", "transparent", "udp", "streams"],
)
def test_only_the_capabilities_the_options_need_are_kept(
    flags: tuple[str, ...], mask: int, said: list[str]
) -> None:
    require_both_capabilities()

    def body() -> dict[str, object]:
        with proxy(*flags) as process:
            assert process.stdout is not None
            start = [proxy_log.message(process.stdout.readline().rstrip("\n")) for _ in said]
            held = credentials(process.pid)
            status, _ = stop(process)
        return {"start": start, "held": held, "exit": status}

    assert run_in_netns(body) == {"start": said, "held": dropped_to(mask), "exit": 0}


@pytest.mark.parametrize(
    "way",
    [
        ("--relay", "native"),
        ("--relay", "protocol"),
        ("--relay", "streams"),
        # uvloop resolves addresses in threads of its own, which must not
        # be started while the capability is held.
        ("--relay", "protocol", "--loop", "uvloop"),
        ("--relay", "streams", "--loop", "uvloop"),
    ],
    ids=lambda way: "-".join(way[1::2]),
)
def test_a_port_below_1024_is_bound_and_cap_net_bind_service_dropped(
    way: tuple[str, ...],
) -> None:
    """CAP_NET_BIND_SERVICE binds port 80 (here as nobody) and is gone once
    it is bound, from every thread."""
    require_both_capabilities()
    if "uvloop" in way and importlib.util.find_spec("uvloop") is None:
        unavailable("uvloop is not installed (.ci/run installs it)")

    def body() -> dict[str, object]:
        command = ("--listen", "127.0.0.1:80", *way, "--user", "nobody")
        with proxy(*command, ready=proxy_log.LISTENING.line(host="127.0.0.1", port=80)) as process:
            held = credentials(process.pid)
            status, _ = stop(process)
        return {"held": held, "exit": status}

    assert run_in_netns(body) == {"held": dropped_to(NET_ADMIN, NOBODY), "exit": 0}


def relay_once() -> tuple[bytes, int]:
    """A client's line through the redirect: the origin's answer, and the
    mark the upstream connection arrived with (tcp_fwmark_accept)."""
    origin = Origin(("127.0.0.2", 8080))
    try:
        with socket.create_connection(("127.0.0.2", 8080), timeout=10) as client:
            answer = exchange(client, b"ping\n")
    finally:
        origin.close()
    return answer, origin.arrivals[0].mark


def test_as_another_user_with_the_capabilities_it_needs() -> None:
    """--user nobody: after the drop the proxy is uid 65534 with
    CAP_NET_ADMIN alone, and its upstreams still carry the loop mark."""
    require_both_capabilities()

    def body() -> dict[str, object]:
        with proxy("--user", "nobody") as process:
            assert process.stdout is not None
            start = [proxy_log.message(process.stdout.readline().rstrip("\n")) for _ in range(2)]
            held = credentials(process.pid)
            answer, mark = relay_once()
            status, lines = stop(process)
        return {
            "start": start,
            "held": held,
            "answer": answer,
            "mark": mark,
            "relayed": [
                (match["target"], match["up"], match["down"], match["outcome"])
                for match in map(proxy_log.RELAYED.pattern.fullmatch, lines)
                if match
            ],
            "exit": status,
        }

    assert run_in_netns(body, nft_rules=RULES, sysctls=FWMARK_ACCEPT) == {
        "start": [privileges("CAP_NET_ADMIN", "nobody"), capacity(1984, 0)],
        "held": dropped_to(NET_ADMIN, NOBODY),
        "answer": b"origin ping\n",
        "mark": 0x40,
        "relayed": [("127.0.0.2:8080", "5", "12", "closed")],
        "exit": 0,
    }


def test_workers_each_drop_and_their_parent_keeps_what_they_start_with() -> None:
    """--workers 2 --user nobody: each worker keeps CAP_NET_ADMIN as
    nobody; the parent, which forks replacements, keeps only what a worker
    starts with (CAP_NET_ADMIN, CAP_SETUID and CAP_SETGID for --user,
    CAP_SETPCAP) and CAP_KILL to signal them, as root; the start lines are said once. Two workers
    exactly, none left behind."""
    require_both_capabilities()

    def body() -> dict[str, object]:
        with proxy("--user", "nobody", "--workers", "2") as process:
            assert process.stdout is not None
            start = [proxy_log.message(process.stdout.readline().rstrip("\n")) for _ in range(2)]
            children = subprocess.run(
                ["ps", "-o", "pid=", "--ppid", str(process.pid)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            held = {
                "parent": credentials(process.pid),
                "workers": [credentials(int(child)) for child in children],
            }
            answer, mark = relay_once()
            status, lines = stop(process)
        left = subprocess.run(
            ["ps", "-o", "pid=", "-p", ",".join([str(process.pid), *children])],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        return {
            "start": start,
            "held": held,
            "answer": answer,
            "mark": mark,
            "exit": status,
            "left": left,
            "said again": [
                line for line in lines if line.startswith(("descriptors", "privileges"))
            ],
        }

    worker = dropped_to(NET_ADMIN, NOBODY)
    parent = dropped_to(NET_ADMIN | KILL | SETUID | SETGID | SETPCAP)
    assert run_in_netns(body, nft_rules=RULES, sysctls=FWMARK_ACCEPT) == {
        "start": [privileges("CAP_NET_ADMIN", "nobody"), capacity(1984, 0)],
        "held": {"parent": parent, "workers": [worker, worker]},
        "answer": b"origin ping\n",
        "mark": 0x40,
        "exit": 0,
        "left": [],
        "said again": [],
    }


def test_the_soft_descriptor_limit_is_raised_to_the_hard_one() -> None:
    def body() -> list[str]:
        with proxy() as process, open(f"/proc/{process.pid}/limits", encoding="ascii") as limits:
            return next(line.split()[3:5] for line in limits if line.startswith("Max open files"))

    assert run_in_netns(body) == [str(HARD), str(HARD)]


@pytest.mark.parametrize(
    ("flags", "line"),
    [
        (
            ("--max-connections", "2000"),
            "--max-connections 2000 needs 4128 descriptors (2 a connection on the native "
            "relay, 64 for its pool of 32 pipes, 64 for the listeners and logging), and this "
            "process may open 4096: raise the limit (`ulimit -n 4128` in the shell that starts "
            "it, LimitNOFILE=4128 in a systemd unit) or lower --max-connections",
        ),
        (
            ("--relay", "streams", "--udp", "127.0.0.1:15002", "--max-udp-flows", "5000"),
            "--max-udp-flows 5000 needs at least 5066 descriptors (2 a connection on the "
            "streams relay, 1 a udp flow, 64 for the listeners and logging), and this process "
            "may open 4096: raise the limit (`ulimit -n 5066` in the shell that starts it, "
            "LimitNOFILE=5066 in a systemd unit) or lower --max-udp-flows",
        ),
    ],
    ids=["connections", "flows"],
)
def test_caps_beyond_the_limit_stop_it_at_start(flags: tuple[str, ...], line: str) -> None:
    def body() -> tuple[int, str, str]:
        completed = subprocess.run(
            proxy_command(*flags),
            capture_output=True,
            text=True,
            timeout=30,
            cwd=NEUTRAL_DIRECTORY,
            preexec_fn=limited(SOFT, HARD),
            check=False,
        )
        return completed.returncode, completed.stdout, completed.stderr

    assert run_in_netns(body) == (2, "", f"wfpredirect proxy: {line}\n")


def test_at_a_caps_exact_need_it_starts() -> None:
    """--max-connections 1984 is exactly what HARD descriptors hold."""

    def body() -> list[str]:
        with proxy("--max-connections", "1984") as process:
            assert process.stdout is not None
            return [proxy_log.message(process.stdout.readline().rstrip("\n")) for _ in range(2)]

    assert run_in_netns(body) == [privileges("CAP_NET_ADMIN"), capacity(1984, 0)]


def test_without_the_capabilities_to_switch_user_it_does_not_start() -> None:
    """Root without CAP_SETUID and CAP_SETGID (setpriv drops them) cannot
    become nobody: exit status 2, one line, nothing started."""

    def body() -> tuple[int, str, str]:
        completed = subprocess.run(
            [
                *without_capabilities("-setuid,-setgid"),
                *proxy_command("--user", "nobody"),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=NEUTRAL_DIRECTORY,
            check=False,
        )
        return completed.returncode, completed.stdout, completed.stderr

    assert run_in_netns(body) == (
        2,
        "",
        "wfpredirect proxy: --user nobody: becoming another user takes CAP_SETUID and "
        "CAP_SETGID, which this process lacks (start it as root)\n",
    )


@pytest.mark.parametrize(
    ("bounding", "said", "mask"),
    [
        # Given both (as systemd's CapabilityBoundingSet= would), without
        # CAP_SETPCAP: the one not needed leaves the permitted set, the
        # bounding set stays as it was given.
        ("-all,+net_admin,+net_raw", [privileges("CAP_NET_ADMIN")], NET_ADMIN | NET_RAW),
        # Given exactly what it needs: nothing to drop, nothing said.
        ("-all,+net_admin", [], NET_ADMIN),
    ],
    ids=["more", "exactly"],
)
def test_started_with_fewer_capabilities(bounding: str, said: list[str], mask: int) -> None:
    require_both_capabilities()

    def body() -> dict[str, object]:
        command = [
            require_tool("setpriv"),
            f"--bounding-set={bounding}",
            "--inh-caps=-all",
            *proxy_command(),
        ]
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=NEUTRAL_DIRECTORY,
            preexec_fn=limited(SOFT, HARD),
        )
        try:
            assert process.stdout is not None
            start = [
                proxy_log.message(process.stdout.readline().rstrip("\n"))
                for _ in range(len(said) + 2)
            ]
            held = credentials(process.pid)
        finally:
            process.send_signal(signal.SIGTERM)
            process.communicate(timeout=10)
        return {"start": start, "held": held, "exit": process.returncode}

    assert run_in_netns(body) == {
        "start": [READY, *said, capacity(1984, 0)],
        "held": {**dropped_to(NET_ADMIN), "CapBnd": mask},
        "exit": 0,
    }
