"""``python -m wfpredirect proxy --workers N``: the parent supervises its
workers. Real processes on the real kernel, in a network namespace, each
test's processes under a pids cgroup of their own that must be empty at its
end (cgroups.py): a killed worker is named and replaced, a killed parent
takes its workers with it, SIGHUP stops them all with one line, a fork that
fails or a stop signal while they start stops at once, and a worker that
never listened stops the proxy."""

from __future__ import annotations

import ctypes
import fcntl
import os
import queue
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import pytest

from cgroups import PidsGroup, pids_cgroup
from netns import run_in_netns
from processes import proxy_command
from rules import redirect
from servers import Origin, exchange
from support import NEUTRAL_DIRECTORY, require_tool
from wfpredirect.cli import _proxy_log as proxy_log
from wfpredirect.cli._proxy_log import message

RULES = redirect("ip", "127.0.0.2", 8080, 15001)
ORIGIN = ("127.0.0.2", 8080)
LISTENING = proxy_log.LISTENING.line(host="127.0.0.1", port=15001)
# Summaries often: the tests wait for them (settled).
SUMMARIES = ("--summary-interval", "0.1")
# One exchange through the proxy: b"ping\n" up, b"origin ping\n" down.
RELAYED = "127.0.0.1:PORT -> 127.0.0.2:8080: 5 bytes up, 12 bytes down, N s, closed"
STOPPING = proxy_log.STOPPING.line(open=0, grace=5.0)
#: How long a test waits for a line or a state (seconds): far more than it takes.
WAIT = 20.0
#: The tests' bound on processes: the parent, and each worker with the
#: native relay's thread, with room for the replacements.
PIDS_MAX = 16
# linux/prctl.h
PR_SET_CHILD_SUBREAPER = 36
# The user a worker changes to, and how long it then sleeps (seconds) when
# nothing ends it.
NOBODY = 65534
OUTLIVES = 2.0
# linux/fcntl.h: a pipe of one page.
PAGE = 4096


def tidy(line: str) -> str:
    """`line` without what changes from run to run: client ports, seconds."""
    line = re.sub(r"^127\.0\.0\.1:\d+ ->", "127.0.0.1:PORT ->", line)
    return re.sub(r"\b\d+\.\d+ s\b", "N s", line)


def stopped(relayed: int) -> str:
    return tidy(
        proxy_log.STOPPED.line(
            seconds=0.0,
            open=0,
            relayed=relayed,
            refused=0,
            failed=0,
            up=5 * relayed,
            down=12 * relayed,
        )
    )


#: The start lines after the listening ones, which test_service.py checks.
START_LINES = re.compile(
    f"{proxy_log.PRIVILEGES.pattern.pattern}|{proxy_log.CAPACITY.pattern.pattern}"
)


class Lines:
    """A process's output, line by line as it comes, each without its time
    and level; every line read is kept in `seen`."""

    def __init__(self, stream: IO[str]) -> None:
        self.queue: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream: IO[str]) -> None:
        with stream:
            for line in stream:
                said = message(line.rstrip("\n"))
                # The privileges and capacity start lines are test_service's.
                if not START_LINES.fullmatch(said):
                    self.queue.put(said)
        self.queue.put(None)

    def expect(self, wanted: str | Callable[[str], bool]) -> str:
        """The next line that is `wanted` (or for which it is true)."""
        deadline = time.monotonic() + WAIT
        while True:
            try:
                line = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line {wanted!r} within {WAIT} s: {self.seen}") from None
            if line is None:
                raise AssertionError(f"the output ended before {wanted!r}: {self.seen}")
            self.seen.append(line)
            if line == wanted if isinstance(wanted, str) else wanted(line):
                return line

    def rest(self) -> list[str]:
        """Every line, once the output has ended (every writer gone)."""
        self.thread.join(WAIT)
        assert not self.thread.is_alive(), f"the output did not end within {WAIT} s: {self.seen}"
        while (line := self.queue.get_nowait()) is not None:
            self.seen.append(line)
        return self.seen


@contextmanager
def proxy(
    group: PidsGroup, *extra: str, **popen: Any
) -> Iterator[tuple[subprocess.Popen[str], Lines]]:
    """The proxy with `extra` options, in `group`; killed at the end if still running."""
    process = subprocess.Popen(
        proxy_command(*extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=NEUTRAL_DIRECTORY,
        preexec_fn=group.enter,
        **popen,
    )
    assert process.stdout is not None
    try:
        yield process, Lines(process.stdout)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(WAIT)


def worker_pids(lines: list[str]) -> dict[int, int]:
    """Each worker's pid, from the parent's debug lines (the latest for each number)."""
    pids = {}
    for line in lines:
        if started := proxy_log.WORKER_STARTED.pattern.fullmatch(line):
            pids[int(started["number"])] = int(started["pid"])
    return pids


def is_relayed(line: str) -> bool:
    return proxy_log.RELAYED.pattern.fullmatch(line) is not None


def relay_once(lines: Lines) -> bytes:
    """One exchange through the proxy, and its relayed line."""
    with socket.create_connection(ORIGIN, timeout=WAIT) as client:
        answer = exchange(client, b"ping\n")
    lines.expect(is_relayed)
    return answer


def settled(lines: Lines, relayed: int) -> None:
    """Wait for the parent's summary of `relayed` connections, none open.

    A connection's line comes before the native relay has stopped counting
    it as open: a stop signal sent at once might find it in the stopping
    line's count."""
    lines.expect(lambda line: line.startswith(f"summary: 0 open, {relayed} relayed,"))


def listeners() -> set[int]:
    """The processes listening on the proxy's port (ss)."""
    ss = subprocess.run(
        ["ss", "-Hltnp", "sport = :15001"], capture_output=True, text=True, check=True
    )
    return {int(pid) for pid in re.findall(r"pid=(\d+)", ss.stdout)}


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"not within {WAIT} s: {what}"
        time.sleep(0.02)


def reap(pid: int) -> int:
    """The exit status of `pid`, a child of this process, once it has ended."""
    deadline = time.monotonic() + WAIT
    while True:
        ended, status = os.waitpid(pid, os.WNOHANG)
        if ended:
            return os.waitstatus_to_exitcode(status)
        assert time.monotonic() < deadline, f"process {pid} still runs after {WAIT} s"
        time.sleep(0.02)


def gone(pids: list[int]) -> str:
    """What ps lists of `pids` (nothing, when they have all ended)."""
    listed = subprocess.run(
        ["ps", "-o", "pid=", "-p", ",".join(map(str, pids))], capture_output=True, text=True
    )
    return listed.stdout.strip()


def test_a_killed_worker_is_named_and_replaced_and_what_it_counted_is_kept() -> None:
    """kill -9 of each worker in turn: a line names it, a replacement takes
    its place on the same address, later connections are relayed, and the
    final line still counts the connection relayed before the kills."""
    require_tool("ss")
    require_tool("ps")

    def body() -> dict[str, object]:
        origin = Origin(ORIGIN)
        with (
            pids_cgroup(PIDS_MAX) as group,
            proxy(group, "--workers", "2", "--log-level", "debug", "--summary-interval", "0.1") as (
                process,
                lines,
            ),
        ):
            lines.expect(LISTENING)
            answers = [relay_once(lines)]
            # The parent has the workers' report of it.
            lines.expect(lambda line: line.startswith("summary: 0 open, 1 relayed,"))
            first = worker_pids(lines.seen)
            for number in (0, 1):
                os.kill(first[number], signal.SIGKILL)
                lines.expect(lambda line, n=number: line.startswith(f"worker {n} started: "))
                wait_until(
                    lambda: listeners() == set(worker_pids(lines.seen).values()),
                    "the replacement listens beside the other worker",
                )
            answers += [relay_once(lines) for _ in range(3)]
            settled(lines, 4)
            process.send_signal(signal.SIGTERM)
            status = process.wait(WAIT)
            output = lines.rest()
            assert process.stderr is not None
            errors = process.stderr.read()
        origin.close()
        last = worker_pids(output)
        return {
            "exit": status,
            "errors": errors,
            "answers": answers,
            "lines": [tidy(line) for line in output if not line.startswith("summary: ")],
            "pids": (first, last),
            "left": gone([*first.values(), *last.values(), process.pid]),
        }

    result = run_in_netns(body, nft_rules=RULES)
    first, last = result.pop("pids")  # type: ignore[misc]
    assert result == {
        "exit": 0,
        "errors": "",
        "answers": [b"origin ping\n"] * 4,
        "lines": [
            f"worker 0 started: pid {first[0]}",
            f"worker 1 started: pid {first[1]}",
            LISTENING,
            RELAYED,
            f"worker 0 (pid {first[0]}) killed by SIGKILL: another starts in 1 s",
            f"worker 0 started: pid {last[0]}",
            f"worker 1 (pid {first[1]}) killed by SIGKILL: another starts in 1 s",
            f"worker 1 started: pid {last[1]}",
            RELAYED,
            RELAYED,
            RELAYED,
            STOPPING,
            stopped(4),
        ],
        "left": "",
    }


def test_the_workers_stop_when_the_parent_is_killed() -> None:
    """kill -9 of the parent: each worker gets SIGTERM (PR_SET_PDEATHSIG),
    says its own stop lines, having no parent to speak for it, and exits 0."""

    def body() -> dict[str, object]:
        # The orphaned workers become this process's children, to be waited for.
        assert ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1) == 0
        with (
            pids_cgroup(PIDS_MAX) as group,
            proxy(group, "--workers", "3", "--log-level", "debug") as (process, lines),
        ):
            lines.expect(LISTENING)
            pids = worker_pids(lines.seen)
            process.kill()
            parent = process.wait(WAIT)
            workers = {number: reap(pid) for number, pid in pids.items()}
            output = lines.rest()
            left = group.procs()
        return {
            "parent": parent,
            "workers": workers,
            "after": sorted(tidy(line) for line in output[output.index(LISTENING) + 1 :]),
            "left": left,
        }

    assert run_in_netns(body, nft_rules=RULES) == {
        "parent": -signal.SIGKILL,
        "workers": {0: 0, 1: 0, 2: 0},
        "after": [stopped(0)] * 3 + [STOPPING] * 3,
        "left": [],
    }


@pytest.mark.parametrize("to", ["parent", "group"])
def test_sighup_stops_the_parent_and_its_workers_with_one_line(to: str) -> None:
    """SIGHUP to the parent alone, or to the whole process group (a closed
    terminal): one hangup line, the graceful stop, exit 0."""

    def body() -> dict[str, object]:
        origin = Origin(ORIGIN)
        with (
            pids_cgroup(PIDS_MAX) as group,
            proxy(group, "--workers", "2", *SUMMARIES, start_new_session=True) as (process, lines),
        ):
            lines.expect(LISTENING)
            answer = relay_once(lines)
            settled(lines, 1)
            if to == "group":
                os.killpg(process.pid, signal.SIGHUP)
            else:
                process.send_signal(signal.SIGHUP)
            status = process.wait(WAIT)
            output = lines.rest()
            assert process.stderr is not None
            errors = process.stderr.read()
        origin.close()
        return {
            "exit": status,
            "errors": errors,
            "answer": answer,
            "lines": [tidy(line) for line in output if not line.startswith("summary: ")],
        }

    assert run_in_netns(body, nft_rules=RULES) == {
        "exit": 0,
        "errors": "",
        "answer": b"origin ping\n",
        "lines": [LISTENING, RELAYED, proxy_log.HANGUP.line(), STOPPING, stopped(1)],
    }


def test_a_fork_that_fails_stops_the_started_workers() -> None:
    """Under pids.max 3, the third of four workers cannot be forked: one
    line, exit 1, the two started killed and nothing left. (The protocol
    relay: its workers have no thread of their own to count.)"""

    def body() -> dict[str, object]:
        with (
            pids_cgroup(3) as group,
            proxy(group, "--workers", "4", "--relay", "protocol") as (process, lines),
        ):
            status = process.wait(WAIT)
            output = lines.rest()
            assert process.stderr is not None
            errors = process.stderr.read()
        return {"exit": status, "output": output, "errors": errors}

    assert run_in_netns(body) == {
        "exit": 1,
        "output": [],
        "errors": "wfpredirect proxy: cannot start worker 2 of 4: fork: [Errno 11] Resource "
        "temporarily unavailable: the processes this user or its cgroup may have are used up "
        "(ulimit -u, pids.max): lower --workers or raise the limit (the 2 started were "
        "stopped)\n",
    }


def test_a_stop_signal_while_the_workers_start_stops_the_starting() -> None:
    """SIGTERM after the first of eight workers: no other is started, and
    that one stops as on any stop. To hold the parent there, its output is a
    full pipe of one page: it blocks writing the first worker's line until
    the test, having sent the signal, reads."""

    def body() -> dict[str, object]:
        read_end, write_end = os.pipe()
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, PAGE)
        filler = "#" * (PAGE - 1)
        os.write(write_end, filler.encode() + b"\n")
        with pids_cgroup(PIDS_MAX) as group:
            process = subprocess.Popen(
                proxy_command("--workers", "8", "--log-level", "debug"),
                stdout=write_end,
                stderr=subprocess.PIPE,
                text=True,
                cwd=NEUTRAL_DIRECTORY,
                preexec_fn=group.enter,
            )
            os.close(write_end)
            children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
            try:
                wait_until(lambda: children.read_text() != "", "the first worker is forked")
                first = int(children.read_text().split()[0])
                process.send_signal(signal.SIGTERM)
                lines = Lines(os.fdopen(read_end))
                status = process.wait(WAIT)
                output = lines.rest()
                assert process.stderr is not None
                errors = process.stderr.read()
            finally:
                if process.poll() is None:
                    process.kill()
                process.wait(WAIT)
        return {
            "exit": status,
            "errors": errors,
            "lines": [tidy(line) for line in output],
            "first": first,
        }

    result = run_in_netns(body)
    first = result.pop("first")
    assert result == {
        "exit": 0,
        "errors": "",
        "lines": [
            "#" * (PAGE - 1),
            f"worker 0 started: pid {first}",
            LISTENING,
            STOPPING,
            stopped(0),
        ],
    }


def test_a_worker_that_never_listened_stops_the_proxy() -> None:
    """Worker 0 cannot bind the UDP address (taken): it is not replaced,
    which would fail the same way forever; the proxy stops with its status."""

    def body() -> dict[str, object]:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
            taken.bind(("127.0.0.1", 15053))
            with (
                pids_cgroup(PIDS_MAX) as group,
                proxy(
                    group, "--workers", "2", "--log-level", "debug", "--udp", "127.0.0.1:15053"
                ) as (process, lines),
            ):
                status = process.wait(WAIT)
                output = lines.rest()
                assert process.stderr is not None
                errors = process.stderr.read()
        return {"exit": status, "errors": errors, "lines": output}

    result = run_in_netns(body)
    pids = worker_pids(result["lines"])  # type: ignore[arg-type]
    assert result == {
        "exit": 1,
        "errors": "wfpredirect proxy: [Errno 98] Address already in use\n",
        "lines": [
            f"worker 0 started: pid {pids[0]}",
            f"worker 1 started: pid {pids[1]}",
            f"worker 0 (pid {pids[0]}) exited with status 1: it never listened, so the proxy stops",
        ],
    }


def test_a_worker_that_changed_its_user_still_ends_with_its_parent() -> None:
    """A change of user clears PR_SET_PDEATHSIG: without asking again, a
    worker outlives its killed parent (it ends by itself, 0); having asked
    again (watch_parent_again), it gets SIGTERM."""
    from wfpredirect.cli import _workers
    from wfpredirect.cli._platform import this_platform

    def attempt(again: bool) -> int:
        ready_read, ready_write = os.pipe()
        middle = os.fork()
        if middle == 0:  # the parent, which forks the worker and is killed
            status = 1
            try:

                def work() -> int:
                    os.setgroups([])
                    os.setresgid(NOBODY, NOBODY, NOBODY)
                    os.setresuid(NOBODY, NOBODY, NOBODY)
                    _workers.parent = os.getppid()
                    if again:
                        _workers.watch_parent_again()
                    os.write(ready_write, f"{os.getpid()}\n".encode())  # ready
                    time.sleep(OUTLIVES)
                    return 0

                this_platform.start_worker(work)
                time.sleep(WAIT)
            finally:
                os._exit(status)
        os.close(ready_write)
        with os.fdopen(ready_read) as ready:
            worker = int(ready.readline())
        os.kill(middle, signal.SIGKILL)
        os.waitpid(middle, 0)
        return reap(worker)

    def body() -> dict[str, int]:
        assert ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1) == 0
        return {"as it was": attempt(False), "asked again": attempt(True)}

    assert run_in_netns(body) == {"as it was": 0, "asked again": -signal.SIGTERM}


def test_a_replacement_that_cannot_be_forked_is_tried_again() -> None:
    """pids.max lowered under the running proxy: the replacement of a
    killed worker cannot be forked, which is said, and it is tried again
    after the doubled wait, when the limit allows it again."""

    def body() -> dict[str, object]:
        with (
            pids_cgroup(PIDS_MAX) as group,
            proxy(group, "--workers", "2", "--log-level", "debug") as (process, lines),
        ):
            lines.expect(LISTENING)
            first = worker_pids(lines.seen)
            # The parent and worker 1 (with its relay thread) only.
            (group.path / "pids.max").write_text("3\n")
            os.kill(first[0], signal.SIGKILL)
            lines.expect(lambda line: line.startswith("cannot start worker 0 again: "))
            (group.path / "pids.max").write_text(f"{PIDS_MAX}\n")
            lines.expect(lambda line: line.startswith("worker 0 started: "))
            process.send_signal(signal.SIGTERM)
            status = process.wait(WAIT)
            output = lines.rest()
            assert process.stderr is not None
            errors = process.stderr.read()
        return {
            "exit": status,
            "errors": errors,
            "lines": [tidy(line) for line in output],
            "first": first,
        }

    result = run_in_netns(body)
    first = result.pop("first")
    last = worker_pids(result["lines"])  # type: ignore[arg-type]
    assert result == {
        "exit": 0,
        "errors": "",
        "lines": [
            f"worker 0 started: pid {first[0]}",  # type: ignore[index]
            f"worker 1 started: pid {first[1]}",  # type: ignore[index]
            LISTENING,
            f"worker 0 (pid {first[0]}) killed by SIGKILL: another starts in 1 s",  # type: ignore[index]
            "cannot start worker 0 again: [Errno 11] Resource temporarily unavailable: "
            "next try in 2 s",
            f"worker 0 started: pid {last[0]}",
            STOPPING,
            stopped(0),
        ],
    }
