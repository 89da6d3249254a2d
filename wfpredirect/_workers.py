"""``wfpredirect proxy --workers N``: N processes, each a whole proxy with
its own listener on the same address (SO_REUSEPORT: the kernel spreads the
connections over them), under a parent that speaks for them all.

Each worker prints its own per-connection lines. The lines that describe the
proxy as a whole (listening, summary, stopping, stopped) go instead, as the
worker wrote them, through a pipe to the parent (``_proxy.worker_channel``),
which reads them back with their patterns (_proxy_log) and prints one of each
for all: the listening lines once every worker listens, a summary of the
summed totals, one stopping line, and the final summary summing the workers'
totals. The parent forwards the stop signals, waits for every worker and
exits with the first failure's status (0 when all stopped cleanly). The UDP
relay (``--udp``) runs in the first worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import _proxy
from . import _proxy_log as log
from ._backend import backend

if TYPE_CHECKING:
    from ._proxy import ProxySettings

#: The lines a worker hands its parent, by how they begin.
PARENT_LINES = (
    log.LISTENING,
    log.LISTENING_UDP,
    log.CAPACITY,
    log.PRIVILEGES,
    log.SUMMARY,
    log.STOPPING,
    log.STOPPED,
)
#: The lines a worker says at start, the capacity last; the first worker's
#: are said once every worker has said them.
_READY_LINES = (log.LISTENING, log.LISTENING_UDP, log.PRIVILEGES, log.CAPACITY)
_PREFIXES = tuple(line.template.split("{", 1)[0] for line in PARENT_LINES)
#: The totals a summary and the stopped line carry, summed over the workers.
TOTALS = ("open", "relayed", "refused", "failed", "up", "down")


class _Channel:
    """A worker's end: the parent's lines go down the pipe, whole (one write
    each, shorter than PIPE_BUF, so lines of different writers never mix)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def offer(self, line: str) -> bool:
        if not line.startswith(_PREFIXES):
            return False
        os.write(self.fd, line.encode() + b"\n")
        return True


def _work(
    run_one: Callable[[ProxySettings], int],
    settings: ProxySettings,
    channel: int,
    others: list[int],
) -> int:
    for fd in others:
        os.close(fd)
    _proxy.worker_channel = _Channel(channel).offer
    return run_one(settings)


def run_workers(settings: ProxySettings, run_one: Callable[[ProxySettings], int]) -> int:
    """Start settings.workers processes, each running `run_one` with its
    settings (the UDP relay in the first only); speak for them until they
    have all stopped; the exit status."""
    pids: list[int] = []
    channels: list[int] = []
    # Held from here until each process (every worker, and this one) has its
    # handlers: a stop signal meanwhile waits for them instead of killing a
    # worker that has not started, or this process with its workers left.
    backend.hold_signals(_proxy.STOP_SIGNALS, True)
    for number in range(settings.workers):
        read_end, write_end = os.pipe()
        worker = dataclasses.replace(settings, udp=settings.udp if number == 0 else None)
        pids.append(
            backend.start_worker(
                functools.partial(_work, run_one, worker, write_end, [*channels, read_end])
            )
        )
        os.close(write_end)
        channels.append(read_end)
    parent = _Parent(settings, pids)
    try:
        failed = asyncio.run(parent.run(channels))
    except BaseException:
        parent.forward_stop()  # no worker outlives this process
        raise
    finally:
        statuses = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
    if failed or any(statuses):
        # A worker ended by a signal (a negative status) exits as a shell says it.
        status = next((status for status in statuses if status), 1)
        return 128 - status if status < 0 else status
    return 0


class _Parent:
    def __init__(self, settings: ProxySettings, pids: list[int]) -> None:
        self.settings = settings
        self.pids = pids
        count = len(pids)
        self.listening: list[list[log.LogText]] = [[] for _ in range(count)]
        self.summaries: list[dict[str, int]] = [dict.fromkeys(TOTALS, 0) for _ in range(count)]
        self.stopping: dict[int, int] = {}
        self.stopped: dict[int, dict[str, int]] = {}
        self.ended: set[int] = set()
        self.started: float | None = None
        self.stop_requested = False
        self.said_stopping = False

    def summed(self, totals: list[dict[str, int]]) -> dict[str, int]:
        return {name: sum(worker[name] for worker in totals) for name in TOTALS}

    def forward_stop(self) -> None:
        self.stop_requested = True
        for number, pid in enumerate(self.pids):
            if number not in self.ended:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)

    async def run(self, channels: list[int]) -> bool:
        """Until every worker's channel has ended: whether one failed (it
        ended before its stopped line)."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[int, str | None]] = asyncio.Queue()
        for signum in _proxy.STOP_SIGNALS:
            loop.add_signal_handler(signum, events.put_nowait, (-1, None))
        backend.hold_signals(_proxy.STOP_SIGNALS, False)  # a pending one arrives now
        readers = [
            asyncio.create_task(self.read(loop, number, fd, events))
            for number, fd in enumerate(channels)
        ]
        reporter: asyncio.Task[None] | None = None
        failed = False
        while len(self.ended) < len(self.pids):
            number, line = await events.get()
            if number < 0:
                self.forward_stop()
            elif line is None:
                self.ended.add(number)
                if number not in self.stopped:
                    failed = True
                    self.forward_stop()
            else:
                self.heard(number, line)
            # A worker is up once it has said its last start line, the capacity.
            if self.started is None and all(
                any(said.kind is log.CAPACITY for said in lines) for lines in self.listening
            ):
                self.started = time.monotonic()
                for ready in self.listening[0]:
                    _proxy.say(ready)
                # Every worker has dropped its own by now (before its start
                # lines); this process only signals and reads.
                try:
                    backend.keep_privileges(False, self.settings.user, relaying=False)
                except OSError as error:
                    sys.stderr.write(f"wfpredirect proxy: {error}\n")
                    failed = True
                    self.forward_stop()
                if self.settings.summary_interval > 0:
                    reporter = asyncio.create_task(self.report_periodically())
            self.say_stopping()
        if reporter is not None:
            reporter.cancel()
        await asyncio.gather(*readers)
        if failed:
            return True
        totals = self.summed(list(self.stopped.values()))
        seconds = 0.0 if self.started is None else time.monotonic() - self.started
        _proxy.say(log.STOPPED.line(seconds=seconds, **totals))
        return False

    async def read(
        self,
        loop: asyncio.AbstractEventLoop,
        number: int,
        fd: int,
        events: asyncio.Queue[tuple[int, str | None]],
    ) -> None:
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", 0)
        )
        try:
            while line := await reader.readline():
                events.put_nowait((number, line.decode().rstrip("\n")))
        finally:
            transport.close()
            events.put_nowait((number, None))

    def heard(self, number: int, line: str) -> None:
        for listening in _READY_LINES:
            if fields := listening.pattern.fullmatch(line):
                # Made again, so that it is logged as its event.
                said = listening.line(**fields.groupdict())
                if number == 0 and self.started is not None:
                    _proxy.say(said)
                self.listening[number].append(said)
                return
        for kind in (log.SUMMARY, log.STOPPING, log.STOPPED):
            fields = kind.pattern.fullmatch(line)
            if fields is not None:
                break
        else:
            raise AssertionError(line)
        if kind is log.STOPPING:
            self.stopping[number] = int(fields["open"])
            return
        totals = {name: int(fields[name]) for name in TOTALS}
        if kind is log.SUMMARY:
            self.summaries[number] = totals
        else:
            self.stopped[number] = totals

    def say_stopping(self) -> None:
        if self.said_stopping or not self.stop_requested or self.started is None:
            return
        if all(number in self.stopping or number in self.ended for number in range(len(self.pids))):
            self.said_stopping = True
            _proxy.say(
                log.STOPPING.line(open=sum(self.stopping.values()), grace=self.settings.grace)
            )

    async def report_periodically(self) -> None:
        """The workers' summed summary each interval in which it changed."""
        interval = self.settings.summary_interval
        last = time.monotonic()
        said = self.summed(self.summaries)
        while True:
            await asyncio.sleep(interval)
            totals = self.summed(self.summaries)
            if totals == said:
                continue
            now = time.monotonic()
            moved = totals["up"] + totals["down"] - said["up"] - said["down"]
            _proxy.say(log.SUMMARY.line(**totals, rate=moved / (now - last)))
            last, said = now, totals
