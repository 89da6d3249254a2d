"""``wfpredirect proxy --workers N``: N processes, each a whole proxy with
its own listener on the same address (SO_REUSEPORT: the kernel spreads the
connections over them), under a parent that speaks for them all and keeps
them running (docs/service.md, "Workers").

Each worker prints its own per-connection lines. The lines that describe the
proxy as a whole (listening, summary, hangup, stopping, stopped) go instead,
as the worker wrote them, through a pipe to the parent
(``_proxy.worker_channel``), which reads them back with their patterns
(_proxy_log) and prints one of each for all: the listening lines once every
worker listens, a summary of the summed totals, one stopping line, and the
final summary. A worker reports its totals to the parent at least once a
second (a summary line, when they changed), so that a worker that dies
leaves its totals up to its last report in the sums. The UDP relay
(``--udp``) runs in worker 0.

The parent supervises:

- a worker gets SIGTERM when the parent ends, even by SIGKILL
  (this_platform.watch_parent), and then stops as on any stop signal;
- a worker that ends while the proxy runs is named (a ``worker_died``
  line) and replaced after a back-off (restart_delay); the replacement
  binds the same address;
- a worker that ends before it listened (its listener or its UDP socket
  could not be made) stops the proxy instead: a replacement would fail the
  same way, forever;
- a stop signal while the workers start stops the starting at once; a fork
  that fails at start kills the workers started so far and exits 1 with one
  line;
- SIGHUP: the parent says ``hangup`` once and stops the workers with
  SIGTERM; a worker's own (a closed terminal's SIGHUP reaches the whole
  process group) comes to the parent, which drops it.

The parent's loop is a plain poll() loop, not asyncio: it forks a
replacement at any time, and a forked child must not inherit a running
event loop. Signals reach it through a wakeup pipe (signal.set_wakeup_fd).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import os
import selectors
import signal
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import _proxy, _proxy_capture
from . import _proxy_log as log
from ._platform import this_platform

if TYPE_CHECKING:
    from .._capture import Capture
    from ._proxy import ProxySettings

#: The lines a worker hands its parent, by how they begin.
PARENT_LINES = (
    log.LISTENING,
    log.LISTENING_UDP,
    log.CAPACITY,
    log.PRIVILEGES,
    log.SUMMARY,
    log.HANGUP,
    log.STOPPING,
    log.STOPPED,
)
#: The lines a worker says at start, the capacity last; the first worker's
#: are said once every worker has said them.
_READY_LINES = (log.LISTENING, log.LISTENING_UDP, log.PRIVILEGES, log.CAPACITY)
_PREFIXES = tuple(line.template.split("{", 1)[0] for line in PARENT_LINES)
#: The totals a summary and the stopped line carry, summed over the workers.
TOTALS = ("open", "relayed", "refused", "failed", "up", "down")

#: A worker reports its totals at least this often (seconds), so that what
#: a worker that dies has counted is lost for at most this long.
REPORT_INTERVAL = 1.0
#: A replacement's back-off (seconds): the first, and the most it doubles to.
FIRST_DELAY = 1.0
MAX_DELAY = 30.0
#: A worker that ran this long (seconds) before it ended resets the back-off.
STEADY = 60.0
#: What one read takes from a worker's pipe.
_READ_SIZE = 65536


def restart_delay(previous: float | None, uptime: float) -> float:
    """How long to wait before replacing a worker that ended after `uptime`
    seconds, `previous` the wait before it started (None: none)."""
    if previous is None or uptime >= STEADY:
        return FIRST_DELAY
    return min(previous * 2, MAX_DELAY)


def report_interval(summary_interval: float) -> float:
    """A worker's summary interval: the proxy's, or REPORT_INTERVAL when
    that is longer or 0 (no summaries)."""
    return summary_interval if 0 < summary_interval < REPORT_INTERVAL else REPORT_INTERVAL


def describe(wait_status: int) -> str:
    """How a process ended, from its wait status."""
    code = os.waitstatus_to_exitcode(wait_status)
    if code >= 0:
        return f"exited with status {code}"
    ended = f"killed by {signal.Signals(-code).name}"
    if sys.platform != "win32" and os.WCOREDUMP(wait_status):
        ended += " (core dumped)"
    return ended


def exit_status(wait_status: int) -> int:
    """The proxy's exit status for a worker that failed with `wait_status`:
    its own, as a shell says it (128 + N for signal N), and 1 for 0."""
    code = os.waitstatus_to_exitcode(wait_status)
    return 128 - code if code < 0 else code or 1


class _Channel:
    """A worker's end: the parent's lines go down the pipe, whole (one write
    each, shorter than PIPE_BUF, so lines of different writers never mix).
    Once the parent is gone the worker says them itself."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.open = True

    def offer(self, line: str) -> bool:
        if not self.open or not line.startswith(_PREFIXES):
            return False
        try:
            os.write(self.fd, line.encode() + b"\n")
        except BrokenPipeError:
            # The parent has ended (and this worker is stopping: watch_parent).
            self.open = False
            return False
        return True


def _watched() -> tuple[int, ...]:
    """The signals the parent handles: the stop signals and SIGCHLD."""
    if sys.platform == "win32":
        raise AssertionError(sys.platform)
    return (*_proxy.STOP_SIGNALS, signal.SIGCHLD)


#: In a worker: its parent's pid (None in any other process).
parent: int | None = None


def watch_parent_again() -> None:
    """In a worker, after it changed its user or group (which clears
    PR_SET_PDEATHSIG): SIGTERM again when the parent ends. Nothing in any
    other process."""
    if parent is not None:
        this_platform.watch_parent(parent)


def _noted(signum: int, frame: object) -> None:
    """The parent's handler: the wakeup pipe carries the signal's number."""


def _wakeup_pipe() -> tuple[int, int]:
    """A pipe for signal.set_wakeup_fd: both ends non-blocking."""
    if sys.platform == "win32":
        raise AssertionError(sys.platform)
    return os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)


def _ended(pid: int) -> int | None:
    """Child `pid`'s wait status if it has ended (it is then waited for)."""
    if sys.platform == "win32":
        raise AssertionError(sys.platform)
    ended, status = os.waitpid(pid, os.WNOHANG)
    return status if ended else None


def _work(
    run_one: Callable[[ProxySettings], int],
    settings: ProxySettings,
    channel: int,
    forget_parent: Callable[[], None],
) -> int:
    """In a new worker: drop what it inherited of the parent (its
    descriptors, its signal handling) and run the proxy. The stop signals
    stay held until the proxy has its handlers (_proxy.Proxy.run)."""
    global parent
    forget_parent()
    parent = os.getppid()  # the one start_worker has checked (this_platform.watch_parent)
    signal.set_wakeup_fd(-1)
    watched = _watched()
    for signum in watched:
        signal.signal(signum, signal.SIG_DFL)
    this_platform.hold_signals(watched[-1:], False)  # SIGCHLD
    _proxy.worker_channel = _Channel(channel).offer
    # Becoming --user clears PR_SET_PDEATHSIG: the proxy asks again then.
    _proxy.after_user_change = watch_parent_again
    return run_one(settings)


@dataclasses.dataclass
class _Worker:
    number: int
    pid: int
    # The read end of its pipe; None once at its end.
    channel: int | None
    started: float
    # Its wait status, once it has ended and been waited for.
    status: int | None = None
    pending: bytes = b""
    listening: list[str] = dataclasses.field(default_factory=list)
    summary: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(TOTALS, 0))
    stopping: int | None = None
    stopped: dict[str, int] | None = None

    def said_capacity(self) -> bool:
        """Whether it has said its last start line."""
        return any(getattr(line, "kind", None) is log.CAPACITY for line in self.listening)


@dataclasses.dataclass
class _Slot:
    """Worker `number`'s place: the worker now in it, and its back-off."""

    number: int
    worker: _Worker | None = None
    delay: float | None = None
    restart_at: float | None = None


def run_workers(settings: ProxySettings, run_one: Callable[[ProxySettings], int]) -> int:
    """Start settings.workers processes, each running `run_one` with its
    settings (the UDP relay in worker 0 only); speak for them and replace
    those that end until a stop signal; the exit status."""
    return _Parent(settings, run_one).run()


class _Parent:
    def __init__(self, settings: ProxySettings, run_one: Callable[[ProxySettings], int]) -> None:
        self.settings = settings
        self.run_one = run_one
        self.slots: list[_Slot] = []
        self.selector = selectors.DefaultSelector()
        self.by_channel: dict[int, _Worker] = {}
        self.wakeup_read, self.wakeup_write = _wakeup_pipe()
        self.selector.register(self.wakeup_read, selectors.EVENT_READ)
        # What the workers that ended had counted, and their stopping lines' open connections.
        self.retired = dict.fromkeys(TOTALS, 0)
        self.stopping_ended = 0
        self.said_listening: list[str] = []
        self.started: float | None = None
        self.stop_requested = False
        self.said_stopping = False
        self.failure: int | None = None
        self.next_report: float | None = None
        self.last_report = (0.0, dict.fromkeys(TOTALS, 0))
        # --capture's rules while they are installed (held here, not by a worker).
        self.capture: Capture | None = None

    def run(self) -> int:
        watched = _watched()
        previous = {signum: signal.signal(signum, _noted) for signum in watched}
        previous_wakeup = signal.set_wakeup_fd(self.wakeup_write, warn_on_full_buffer=False)
        try:
            if not self.start_all():
                return 1
            self.supervise()
            return self.failure or 0
        finally:
            self.remove_capture()
            signal.set_wakeup_fd(previous_wakeup)
            for signum, handler in previous.items():
                if handler is not None:
                    signal.signal(signum, handler)
            self.selector.close()
            os.close(self.wakeup_read)
            os.close(self.wakeup_write)

    # Starting

    def start_all(self) -> bool:
        """Fork the workers, unless a stop signal comes first (it stops the
        starting at once); False when a fork failed (said, and the started
        workers killed)."""
        count = self.settings.workers
        for number in range(count):
            self.take_signals()
            if self.stop_requested:
                break
            slot = _Slot(number)
            try:
                self.fork(slot)
            except OSError as error:
                self.abort(number, count, error)
                return False
            self.slots.append(slot)
        return True

    def fork(self, slot: _Slot) -> None:
        number = slot.number
        settings = dataclasses.replace(
            self.settings,
            udp=self.settings.udp if number == 0 else None,
            # The parent holds the capture (its own table, for them all).
            captures=(),
            capture_interface=None,
            summary_interval=report_interval(self.settings.summary_interval),
        )
        read_end, write_end = os.pipe()
        watched = _watched()
        # Held across the fork: the worker starts with them held, and its
        # inherited handlers never run.
        this_platform.hold_signals(watched, True)
        try:
            pid = this_platform.start_worker(
                functools.partial(
                    _work,
                    self.run_one,
                    settings,
                    write_end,
                    functools.partial(self.forget, read_end),
                )
            )
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
            this_platform.hold_signals(watched, False)
        worker = _Worker(number, pid, read_end, time.monotonic())
        slot.worker = worker
        self.by_channel[read_end] = worker
        self.selector.register(read_end, selectors.EVENT_READ)
        _proxy.say(log.WORKER_STARTED.line(number=number, pid=pid))

    def forget(self, read_end: int) -> None:
        """In a new worker: close what it inherited of this process's
        descriptors (its own pipe's read end `read_end` among them)."""
        self.selector.close()
        for fd in (self.wakeup_read, self.wakeup_write, read_end, *self.by_channel):
            os.close(fd)

    def abort(self, number: int, count: int, error: OSError) -> None:
        """A fork failed at start: kill the workers started (none serves
        yet), wait for them, and say so."""
        if sys.platform == "win32":
            raise AssertionError(sys.platform)
        workers = [slot.worker for slot in self.slots if slot.worker is not None]
        for worker in workers:
            os.kill(worker.pid, signal.SIGKILL)
        for worker in workers:
            os.waitpid(worker.pid, 0)
            if worker.channel is not None:
                os.close(worker.channel)
        advice = (
            ": the processes this user or its cgroup may have are used up (ulimit -u, "
            "pids.max): lower --workers or raise the limit"
            if error.errno == errno.EAGAIN
            else ""
        )
        # One write, as _run._run_one's error lines.
        sys.stderr.write(
            f"wfpredirect proxy: cannot start worker {number} of {count}: fork: {error}"
            f"{advice} (the {len(workers)} started were stopped)\n"
        )
        sys.stderr.flush()

    # Supervising

    def supervise(self) -> None:
        """Until every worker has ended and none is to be replaced."""
        while any(slot.worker is not None or slot.restart_at is not None for slot in self.slots):
            timeout = self.timeout()
            ready = self.selector.select(None if timeout is None else max(0, timeout))
            # Signals first: a worker that a terminal's SIGINT or SIGHUP
            # stopped with this process is then seen ending after a stop.
            self.take_signals()
            for key, _ in ready:
                if key.fd in self.by_channel:
                    self.read(self.by_channel[key.fd])
            self.reap()
            now = time.monotonic()
            for slot in self.slots:
                worker = slot.worker
                if worker is not None and worker.channel is None and worker.status is not None:
                    self.ended(slot, worker, now)
            self.restart_due(now)
            self.announce(now)
        self.say_stopping()
        if self.started is not None:
            seconds = time.monotonic() - self.started
            _proxy.say(log.STOPPED.line(seconds=seconds, **self.retired))

    def timeout(self) -> float | None:
        """Seconds until the next replacement or summary is due, if any."""
        due = [slot.restart_at for slot in self.slots if slot.restart_at is not None]
        if self.next_report is not None and not self.stop_requested:
            due.append(self.next_report)
        return min(due) - time.monotonic() if due else None

    def take_signals(self) -> None:
        """Act on the signals the wakeup pipe carries (SIGCHLD: reap looks)."""
        while True:
            try:
                received = os.read(self.wakeup_read, 512)
            except BlockingIOError:
                return
            for signum in received:
                if signum in _proxy.STOP_SIGNALS:
                    self.request_stop(signum == getattr(signal, "SIGHUP", None))

    def request_stop(self, hangup: bool = False) -> None:
        """Tell every worker to stop (again, on a second signal); replace none."""
        if hangup and not self.stop_requested:
            _proxy.say(log.HANGUP.line())
        self.stop_requested = True
        self.remove_capture()
        for slot in self.slots:
            slot.restart_at = None
            worker = slot.worker
            if worker is not None and worker.status is None:
                with contextlib.suppress(ProcessLookupError):  # ended, not yet waited for
                    os.kill(worker.pid, signal.SIGTERM)

    def read(self, worker: _Worker) -> None:
        assert worker.channel is not None
        data = os.read(worker.channel, _READ_SIZE)
        if not data:
            self.selector.unregister(worker.channel)
            del self.by_channel[worker.channel]
            os.close(worker.channel)
            worker.channel = None
            return
        *lines, worker.pending = (worker.pending + data).split(b"\n")
        for line in lines:
            self.heard(worker, line.decode())

    def heard(self, worker: _Worker, line: str) -> None:
        for listening in _READY_LINES:
            if fields := listening.pattern.fullmatch(line):
                # Made again, so that it is logged as its event.
                worker.listening.append(listening.line(**fields.groupdict()))
                if self.started is not None:
                    self.say_listening(worker.listening[-1:])
                return
        if log.HANGUP.pattern.fullmatch(line):
            return  # said by this process, once
        for kind in (log.SUMMARY, log.STOPPING, log.STOPPED):
            fields = kind.pattern.fullmatch(line)
            if fields is not None:
                break
        else:
            raise AssertionError(line)
        if kind is log.STOPPING:
            worker.stopping = int(fields["open"])
            return
        totals = {name: int(fields[name]) for name in TOTALS}
        if kind is log.SUMMARY:
            worker.summary = totals
        else:
            worker.stopped = totals

    def reap(self) -> None:
        for slot in self.slots:
            worker = slot.worker
            if worker is not None and worker.status is None:
                worker.status = _ended(worker.pid)

    def ended(self, slot: _Slot, worker: _Worker, now: float) -> None:
        """`worker` has ended (its pipe closed, its status known): keep what
        it counted; replace it, or stop the proxy, or, when stopping, note
        how it ended."""
        assert worker.status is not None
        slot.worker = None
        clean = worker.status == 0 and worker.stopped is not None
        counted = worker.stopped if clean and worker.stopped is not None else worker.summary
        for name in TOTALS:
            # A worker that died has lost its open connections with it.
            self.retired[name] += counted[name] if name != "open" or clean else 0
        died = functools.partial(
            log.WORKER_DIED.line,
            number=worker.number,
            pid=worker.pid,
            ended=describe(worker.status),
        )
        if not worker.listening and not clean:
            _proxy.say(died(then="it never listened, so the proxy stops"))
            self.fail(worker.status)
            self.request_stop()
            return
        if self.stop_requested:
            self.stopping_ended += worker.stopping or 0
            if not clean:
                _proxy.say(died(then="not replaced: the proxy is stopping"))
                self.fail(worker.status)
            return
        slot.delay = restart_delay(slot.delay, now - worker.started)
        slot.restart_at = now + slot.delay
        _proxy.say(died(then=f"another starts in {slot.delay:g} s"))

    def fail(self, wait_status: int) -> None:
        if self.failure is None:
            self.failure = exit_status(wait_status)

    def restart_due(self, now: float) -> None:
        for slot in self.slots:
            if slot.restart_at is None or slot.restart_at > now or self.stop_requested:
                continue
            slot.restart_at = None
            try:
                self.fork(slot)
            except OSError as error:
                slot.delay = min(2 * (slot.delay or FIRST_DELAY), MAX_DELAY)
                slot.restart_at = now + slot.delay
                _proxy.say(
                    log.WORKER_UNSTARTED.line(number=slot.number, error=error, delay=slot.delay)
                )

    # What the parent says for them all

    def announce(self, now: float) -> None:
        """The listening lines once every worker listens, then each summary
        due, and the stopping line once every worker has said its own."""
        workers = [slot.worker for slot in self.slots]
        # A worker is up once it has said its last start line, the capacity.
        if self.started is None and workers and all(w and w.said_capacity() for w in workers):
            self.started = now
            self.install_capture()
            for worker in workers:
                assert worker is not None
                self.say_listening(worker.listening)
            if self.capture is not None:
                for line in _proxy_capture.capture_lines(self.capture):
                    _proxy.say(line)
            # Every worker has dropped its own privileges by now; this
            # process keeps only what starting a replacement takes.
            try:
                _proxy.keep_privileges(self.settings, starting=True)
            except OSError as error:
                sys.stderr.write(f"wfpredirect proxy: {error}\n")
                self.failure = 1
                self.request_stop()
            if self.settings.summary_interval > 0:
                self.next_report = now + self.settings.summary_interval
                self.last_report = (now, self.summed())
        if self.next_report is not None and now >= self.next_report and not self.stop_requested:
            self.report(now)
        self.say_stopping()

    def install_capture(self) -> None:
        """--capture, held here for every worker, once they all listen (and
        before this process keeps only what starting a replacement takes);
        when refused, said, and the proxy stops."""
        settings = self.settings
        if not settings.captures:
            return
        try:
            self.capture = _proxy_capture.install_capture(
                settings.captures,
                settings.capture_interface,
                (settings.host, settings.port),
                settings.udp,
                settings.loop_mark,
            )
        except OSError as error:
            sys.stderr.write(f"wfpredirect proxy: {error}\n")
            self.failure = 1
            self.request_stop()

    def remove_capture(self) -> None:
        capture, self.capture = self.capture, None
        if capture is not None:
            for line in _proxy_capture.remove_capture(capture):
                _proxy.say(line)

    def say_listening(self, lines: list[str]) -> None:
        """Each listening line once: a replacement listens where its
        predecessor did."""
        for line in lines:
            if line not in self.said_listening:
                self.said_listening.append(line)
                _proxy.say(line)

    def summed(self) -> dict[str, int]:
        totals = dict(self.retired)
        for slot in self.slots:
            if slot.worker is not None:
                for name in TOTALS:
                    totals[name] += slot.worker.summary[name]
        return totals

    def report(self, now: float) -> None:
        """The summed summary, if it changed since the last one."""
        assert self.next_report is not None
        self.next_report = now + self.settings.summary_interval
        last, said = self.last_report
        totals = self.summed()
        if totals == said:
            return
        moved = totals["up"] + totals["down"] - said["up"] - said["down"]
        _proxy.say(log.SUMMARY.line(**totals, rate=moved / (now - last)))
        self.last_report = (now, totals)

    def say_stopping(self) -> None:
        if self.said_stopping or not self.stop_requested or self.started is None:
            return
        workers = [slot.worker for slot in self.slots if slot.worker is not None]
        if all(worker.stopping is not None for worker in workers):
            self.said_stopping = True
            open_connections = self.stopping_ended + sum(w.stopping or 0 for w in workers)
            _proxy.say(log.STOPPING.line(open=open_connections, grace=self.settings.grace))
