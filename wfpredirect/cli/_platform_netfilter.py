"""What the command line does its own way on Linux (netfilter): see
_platform."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING

from .._backend_netfilter import IP_TRANSPARENT, SO_MARK
from .._core import enable_datagram_records
from .._errors import CAPABILITY_ADVICE, RedirectPermissionError
from .._marks import marks_problem, resolve_marks

if TYPE_CHECKING:
    from ._doctor import Finding

#: The native relay first: the whole connection in the core (_relay_native),
#: zero copies for bulk and no Python per connection but its line
#: (bench_proxy.py measures each); then the Python paths, the faster first.
relay_paths: tuple[str, ...] = ("native", "protocol", "streams")


def doctor_checks() -> list[Finding]:
    from ._doctor_netfilter import checks

    return checks()


def run_demo(keep_running: bool) -> int:
    from ._demo_netfilter import run_netfilter_demo

    return run_netfilter_demo(keep_running)


def proxy_problem(
    loop_mark: int | None, mark_mask: int | None, udp: bool, transparent: bool
) -> str:
    """The marks must work, and this process must be allowed what every
    connection will need, asked once on throw-away sockets before anything
    listens: SO_MARK for the upstream connections, and with `udp` or
    `transparent` IP_TRANSPARENT (for the flows, for the listener)."""
    problem = marks_problem(loop_mark, mark_mask)
    if problem:
        return problem
    try:
        with socket.socket() as probe:
            mark, _, _ = resolve_marks(loop_mark, mark_mask)
            probe.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
    except PermissionError as error:
        return (
            f"cannot mark the upstream connections (setsockopt(SO_MARK): {error.strerror}), "
            f"so none could carry its records: {CAPABILITY_ADVICE}"
        )
    if udp:
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                enable_datagram_records(probe)
        except RedirectPermissionError as error:
            return f"cannot receive redirected UDP flows ({error}): {CAPABILITY_ADVICE}"
    if transparent:
        try:
            with socket.socket() as probe:
                probe.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
        except PermissionError as error:
            return (
                "cannot use IP_TRANSPARENT (--transparent, --keep-client-address): "
                f"setsockopt(IP_TRANSPARENT): {error.strerror}: {CAPABILITY_ADVICE}"
            )
    return ""


def workers_problem(workers: int) -> str:
    return ""


def hold_signals(signums: tuple[int, ...], held: bool) -> None:
    if sys.platform == "linux":  # always here; says so to the type checker
        import signal

        signal.pthread_sigmask(signal.SIG_BLOCK if held else signal.SIG_UNBLOCK, signums)


# linux/prctl.h
PR_SET_PDEATHSIG = 1


def watch_parent(parent: int) -> None:
    """In a worker: SIGTERM when process `parent` (the one that forked it)
    ends, even killed by SIGKILL (PR_SET_PDEATHSIG), so that no worker is
    left serving without the parent that speaks for it; if `parent` has
    already ended, exit at once. The kernel clears that setting when the
    process changes its user or group (setuid): call it again after one."""
    if sys.platform == "linux":  # always here; says so to the type checker
        import ctypes
        import signal

        # SIGTERM, not SIGKILL: the worker holds the stop signals until it
        # has its handlers, and then stops as on any stop signal.
        if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"prctl(PR_SET_PDEATHSIG): {os.strerror(error)}")
        # The parent may have ended between the fork and the prctl: the
        # worker then has another parent (init, or a subreaper).
        if os.getppid() != parent:
            os._exit(1)


def start_worker(work: Callable[[], int]) -> int:
    """A forked child running `work()`, which ends with its parent (this
    process: watch_parent); it exits with its status (1, after the
    traceback, when it raises), never returning into the parent's code."""
    if sys.platform == "linux":
        parent = os.getpid()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid:
            return pid
        status = 1
        try:
            watch_parent(parent)
            status = work()
        except BaseException:  # noqa: BLE001 - said here: the child never returns
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)
    raise AssertionError(sys.platform)


def raise_descriptor_limit() -> int:
    """The soft RLIMIT_NOFILE raised to the hard limit (HAProxy does the
    same at start): the limit now."""
    if sys.platform == "linux":  # always here; says so to the type checker
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and soft != hard:
            with contextlib.suppress(OSError, ValueError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    raise AssertionError(sys.platform)


def privileges_problem(user: str | None) -> str:
    from ._privileges import switching_problem

    return switching_problem(user)


def keep_privileges(
    transparent: bool, user: str | None, relaying: bool = True, binding: bool = False
) -> tuple[str, str] | None:
    from ._privileges import keep_only, names, needed, starting

    if relaying:
        kept = keep_only(needed(transparent), user, binding)
    else:
        # A --workers parent binds nothing, but forks the replacement of a
        # worker that died, which does: it keeps what a worker starts with,
        # and its user (the replacement's SO_REUSEPORT listener must have
        # the same owner as the others').
        kept = keep_only(starting(transparent, user, binding), None)
    return None if kept is None else (names(kept[0]), kept[1])


def end_binding() -> None:
    from ._privileges import finish

    finish()
