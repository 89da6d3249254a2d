"""The native relay path (``wfpredirect proxy --relay native``, Linux): the
whole of each connection in the core (csrc/core/netfilter/relay_engine.cpp),
in one epoll loop in a thread of its own that holds no interpreter lock:
the accept, the redirect state, the judgement of judge_connection, the
upstream carrying the records, both directions (through the engine's one
buffer, or with splice(2) through a pipe of its pool, PIPE_POOL, while a
direction streams), the half-close, and the close.

What Python does is turn the engine's events, which come in batches
signalled on a descriptor the event loop watches, into the lines and the
totals the other paths give: the same LogLine texts, the same loggers
(judge_connection's ``wfpredirect.aio`` lines, the accept pause's
throttled ``accept_paused`` line), and the same graceful stop.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import sys
import threading
from collections.abc import Callable
from typing import Any

from .._addresses import Address
from .._backend_netfilter import transparent_error
from .._errors import RedirectError, renamed
from ..aio import say_loop_refused, say_unreadable
from . import _proxy
from . import _proxy_log as log
from ._capacity import PIPE_POOL
from ._relay import connect_failed, make_listeners, say_accept_paused

# The native relay is Linux's (serve_native is loaded only there): says so
# to the type checker, which reads no further on another platform.
assert sys.platform == "linux"

from .._core import RelayEngine  # noqa: E402 - Linux's: after the assert

#: A relayed connection's code when the stop cut it (kCutAtShutdown).
CUT_AT_SHUTDOWN = -1
#: ... when it delivered no byte either way for --idle-timeout (kIdleTimeout).
IDLE_TIMEOUT = -2


class _Listening:
    """What the proxy reads of a listener the engine owns: its address."""

    def __init__(self, address: Address) -> None:
        self.address = address

    def getsockname(self) -> Address:
        return self.address


def _error(code: int) -> OSError:
    """The OSError Python raises for errno `code` (its subclass, its words)."""
    return OSError(code, os.strerror(code))


def outcome(code: int) -> str:
    """A relayed connection's outcome, as the other paths word it."""
    if code == 0:
        return "closed"
    if code == CUT_AT_SHUTDOWN:
        return "cut at shutdown"
    if code == IDLE_TIMEOUT:
        return "idle timeout"
    return f"ended by {_error(code)!r}"


def failure_reason(event: tuple[Any, ...]) -> str:
    """The failed line's reason for a "failed" or "failed_call" event."""
    if event[0] == "failed_call":
        _, _, _, call, code = event
        error = _error(code)
        if call == "setsockopt(IP_TRANSPARENT)":
            error = transparent_error(error, "open_upstream")
        return str(error)
    detail = event[3]
    if isinstance(detail, RedirectError):
        return str(renamed(detail, "set_redirect_records", "open_upstream"))
    if detail == 0:
        return "timed out"
    return str(connect_failed(detail, event[2]))


class NativeServer:
    """The engine, its thread and its events, as the proxy's server."""

    def __init__(
        self,
        engine: RelayEngine,
        addresses: list[Address],
        totals: _proxy.Totals,
        loop_mark: int,
    ) -> None:
        self.engine = engine
        self.sockets = [_Listening(address) for address in addresses]
        self.totals = totals
        self.loop_mark = loop_mark
        self.loop = asyncio.get_running_loop()
        self.finished: asyncio.Future[None] = self.loop.create_future()
        self.stopped = False
        # The engine's part of the totals as last added to them (open, up,
        # down): the UDP relay counts into the same totals.
        self.counted = (0, 0, 0)
        self.loop.add_reader(engine.event_fd, self.handle_events)
        self.thread = threading.Thread(target=self._run, name="wfpredirect-relay", daemon=True)
        try:
            self.thread.start()
        except RuntimeError as error:
            # No thread to be had (a pids limit, ulimit -u): the proxy's
            # one-line start error, not a traceback.
            self.loop.remove_reader(engine.event_fd)
            raise OSError(
                errno.EAGAIN, f"cannot start the native relay's thread: {error}"
            ) from None

    def _run(self) -> None:
        error: BaseException | None = None
        try:
            self.engine.run()
        except BaseException as problem:  # noqa: BLE001 - handed to the loop's side
            error = problem
        self.loop.call_soon_threadsafe(self._ended, error)

    def _ended(self, error: BaseException | None) -> None:
        if not self.finished.done():
            if error is None:
                self.finished.set_result(None)
            else:
                self.finished.set_exception(error)

    def open_count(self) -> int:
        return self.engine.open_count()

    def close(self) -> None:
        self.engine.close_listeners()
        # What has happened so far is said before the stopping line.
        self.handle_events()

    async def stop(self, grace: float) -> None:
        """Let the open connections finish for `grace` seconds, cut the rest,
        and say each one's line."""
        if not self.stopped:
            self.stopped = True
            self.engine.stop(grace)
        try:
            await asyncio.shield(self.finished)
        finally:
            self.loop.remove_reader(self.engine.event_fd)
            self.handle_events()

    async def wait_closed(self) -> None:
        await self.stop(0.0)

    def handle_events(self) -> None:
        totals = self.totals
        say = _proxy.say
        address = _proxy.format_address
        for event in self.engine.events():
            kind = event[0]
            if kind == "relayed":
                _, client, target, up, down, seconds, code = event
                totals.relayed += 1
                say(
                    log.RELAYED.line(
                        client=address(client),
                        target=address(target),
                        up=up,
                        down=down,
                        seconds=seconds,
                        outcome=outcome(code),
                    )
                )
            elif kind == "refused":
                totals.refused += 1
                say(log.REFUSED.line(client=address(event[1])))
            elif kind in ("failed", "failed_call"):
                totals.failed += 1
                say(
                    log.FAILED.line(
                        client=address(event[1]),
                        target=address(event[2]),
                        reason=failure_reason(event),
                    )
                )
            elif kind == "loop":
                totals.refused += 1
                say_loop_refused(event[1], self.loop_mark)  # judge_connection's lines
            elif kind == "gone":
                say(log.GONE.line(client=address(event[1])))
            elif kind == "unreadable":
                say_unreadable(event[1], event[2])
            elif kind == "connection_cap":
                log.THROTTLE.say(log.CONNECTION_CAP, limit=event[2])
            else:  # accept_error: _Acceptor's line
                say_accept_paused(event[1], _error(event[2]))
        self.refresh()

    def refresh(self) -> None:
        """The totals' live part: the connections relaying now, and every
        byte delivered so far (as the other paths count each chunk), added
        to what the UDP relay counts."""
        totals = self.totals
        now = self.engine.counters()
        before, self.counted = self.counted, now
        totals.open += now[0] - before[0]
        totals.bytes_up += now[1] - before[1]
        totals.bytes_down += now[2] - before[2]


async def serve_native(
    settings: _proxy.ProxySettings,
    totals: _proxy.Totals,
    *,
    listener: socket.socket | None,
    loop_mark: int,
    bound: Callable[[], None] = lambda: None,
) -> NativeServer:
    """The native path's server on settings' address (or on bound socket
    `listener`), counting into `totals`; `bound()` is called once the
    listeners are, before the engine's thread starts."""
    listeners = (
        [listener]
        if listener is not None
        else make_listeners(settings.host, settings.port, reuse_port=settings.workers > 1)
    )
    try:
        for sock in listeners:
            sock.listen(settings.backlog)
        bound()
        addresses = [sock.getsockname() for sock in listeners]
        # The engine owns the listening descriptors from here on.
        engine = RelayEngine(
            [sock.fileno() for sock in listeners],
            connect_timeout=settings.connect_timeout,
            keep_client_address=settings.keep_client_address,
            loop_mark=settings.loop_mark,
            mark_mask=settings.mark_mask,
            backlog=settings.backlog,
            idle_timeout=settings.idle_timeout,
            # None until the proxy derives it from the descriptor limit: no cap.
            max_connections=settings.max_connections,
            max_pipes=PIPE_POOL,
        )
    except BaseException:
        for sock in listeners:
            sock.close()
        raise
    for sock in listeners:
        sock.detach()  # the engine's now
    return NativeServer(engine, addresses, totals, loop_mark)
