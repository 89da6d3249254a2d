"""``python -m wfpredirect proxy``: a transparent TCP (and UDP) relay on
wfpredirect.aio.

Each redirected connection gets an upstream connection carrying its records,
to its original destination; both directions are copied with back-pressure
and a half-close is passed on. Each redirected UDP flow gets an upstream
socket carrying its records; answers go back from the original destination.
One line per connection or flow, a periodic summary, and a clean stop on
SIGINT/SIGTERM (and Ctrl-Break, SIGBREAK, on Windows).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import logging
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from .._backend import backend
from .._capture import Capture
from .._capture_targets import CaptureTarget
from .._errors import RedirectError
from .._marks import LOOP_MARK
from .._records import Datagram, RedirectInfo
from ..aio import (
    DatagramFlow,
    RedirectDatagramEndpoint,
    RedirectDatagramProtocol,
    create_redirect_datagram_endpoint,
)
from . import _proxy_log as log
from . import _relay as relay
from ._capacity import pool_pipes
from ._platform import this_platform
from ._proxy_capture import capture_lines, install_capture, remove_capture
from ._relay_protocol import serve_protocol
from ._relay_streams import serve_streams

T = TypeVar("T")

#: asyncio's default listen backlog (100) drops SYNs under a burst of clients.
DEFAULT_BACKLOG = 1024

#: Ports below this one take CAP_NET_BIND_SERVICE to bind (the default of
#: net.ipv4.ip_unprivileged_port_start).
PRIVILEGED_PORTS = 1024

#: --workers' upper bound: each worker is a whole Python process (about 30
#: MB), and more processes than cores only add memory.
MAX_WORKERS = 64

#: The range of each numeric option (a ProxySettings field), checked when
#: the command line is parsed; docs/service.md lists them. Every bound is
#: finite: a timeout near zero would spin a core (its timer always due), one
#: near infinity never ends anything.
LIMITS: dict[str, tuple[float, float]] = {
    "backlog": (1, 65535),
    "idle_timeout": (0.1, 7 * 86400),
    "udp_idle_timeout": (0.1, 86400),
    "connect_timeout": (0.01, 3600),
    "grace": (0, 3600),
    "summary_interval": (0.1, 86400),  # or 0: no summaries
    "max_connections": (1, 1_000_000),
    "max_udp_flows": (1, 1_000_000),
}


# What stops the proxy gracefully: Ctrl-C and `kill`, and on Windows also
# Ctrl-Break (CTRL_BREAK_EVENT, which another process sends with
# GenerateConsoleCtrlEvent to a proxy started in a new process group; SIGTERM
# there is TerminateProcess, which no handler sees).
# SIGHUP (a closed terminal, or `kill -HUP` from an operator who expects a
# reload) stops it the same way, with a line of its own: there is no reload,
# and dying of it silently would end transfers with what looks like a clean
# end of stream.
STOP_SIGNALS = tuple(
    signum
    for signum in (
        signal.SIGINT,
        signal.SIGTERM,
        getattr(signal, "SIGHUP", None),
        getattr(signal, "SIGBREAK", None),
    )
    if signum is not None
)


@dataclass
class ProxySettings:
    host: str
    port: int
    loop_mark: int | None = None
    mark_mask: int | None = None
    backlog: int = DEFAULT_BACKLOG
    connect_timeout: float = 10.0
    grace: float = 5.0
    summary_interval: float = 60.0
    udp: tuple[str, int] | None = None
    udp_idle_timeout: float = 60.0
    # Linux: listen with IP_TRANSPARENT, for a TCP TPROXY rule.
    transparent: bool = False
    # What is logged (a logging level), and how: "text" or "json".
    log_level: int = logging.INFO
    log_format: str = "text"
    # Linux: bind each upstream to the client's address (IP_TRANSPARENT).
    keep_client_address: bool = False
    # How the bytes move (_relay.RELAY_PATHS, or "auto": the platform's first).
    relay: str = "auto"
    # Processes, each with its own SO_REUSEPORT listener (Linux; _workers).
    workers: int = 1
    # The event loop: "asyncio" or "uvloop".
    loop: str = "asyncio"
    # A relayed connection with no bytes either way for this long is ended.
    idle_timeout: float = 3600.0
    # Connections held at once (accepting pauses at the cap), and UDP flows
    # at once (new ones dropped beyond it); None: derived from the
    # descriptor limit at start.
    max_connections: int | None = None
    max_udp_flows: int | None = None
    # Linux: the user to run as once listening (with only the capabilities
    # the options need).
    user: str | None = None
    # Linux: what --capture sends to the proxy, and --capture-interface (a
    # --workers parent holds it: its workers get none).
    captures: tuple[CaptureTarget, ...] = ()
    capture_interface: str | None = None
    # The descriptors this process may open, as run_proxy raised the limit
    # (0: not known, and no capacity line).
    descriptors: int = 0


@dataclass
class Totals:
    open: int = 0
    relayed: int = 0
    refused: int = 0
    failed: int = 0
    bytes_up: int = 0  # client to origin
    bytes_down: int = 0  # origin to client


def user_problem(name: str) -> str:
    """Why --user `name` cannot be used here ("" when it can)."""
    if sys.platform == "win32":
        return "--user is for Linux: on Windows, run the proxy as a service account instead"
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return f"{name!r} is not a user of this system"
    return ""


def format_address(address: Any) -> str:
    """``host:port``, with brackets around an IPv6 host."""
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[HOST]:PORT`` (IPv6) into (host, port)."""
    host, separator, port = text.rpartition(":")
    if not separator or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


#: In a worker of ``--workers``: takes the lines its parent sums up into
#: its own (listening, summary, stopping, stopped), answering True (_workers).
worker_channel: Callable[[str], bool] | None = None


def say(line: str) -> None:
    """Log `line` (a _proxy_log LogLine's), unless the parent takes it."""
    if worker_channel is not None and worker_channel(line):
        return
    log.say(line)


async def _within(seconds: float, awaitable: Awaitable[T]) -> T:
    """`awaitable` in this task, cancelled after `seconds` (asyncio.TimeoutError).

    asyncio.wait_for runs it in a task of its own (before Python 3.12), one
    task, future and callback more per connection; bench_proxy.py measured
    that in the connections per second."""
    task = asyncio.current_task()
    assert task is not None
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        task.cancel()

    timer = asyncio.get_running_loop().call_later(seconds, expire)
    try:
        return await awaitable
    except asyncio.CancelledError:
        if expired:
            # The task goes on: withdraw our cancellation request (3.11+).
            uncancel = getattr(task, "uncancel", None)
            if uncancel is not None:
                uncancel()
            raise asyncio.TimeoutError from None
        raise
    finally:
        timer.cancel()


#: How many origin addresses UdpRelay remembers having warned about (a
#: udp_reply_failed line each): past it the oldest is forgotten, and may be
#: warned about again.
REPLY_WARNINGS_KEPT = 1024


class UdpRelay(RedirectDatagramProtocol):
    """Each redirected flow's datagrams go upstream with its records; the
    answers go back to the client. One line per flow when it ends.

    A datagram that would start a flow beyond the endpoint's cap (`limit`)
    counts as refused, with a throttled udp_flow_cap line; errors get
    throttled udp_error lines; an answer that cannot be sent from the
    origin's address (another socket holds it without SO_REUSEADDR) counts
    as failed, with one udp_reply_failed line per origin address."""

    def __init__(self, totals: Totals, limit: int | None = None) -> None:
        self.totals = totals
        self.limit = limit
        self.moved: dict[DatagramFlow, dict[str, int]] = {}
        # The origin addresses whose udp_reply_failed line was said (a dict
        # keeps their order: the oldest goes first).
        self.warned: dict[Any, None] = {}

    def datagram_received(self, datagram: Datagram, flow: DatagramFlow | None) -> None:
        if flow is None or flow.original_destination is None:
            self.totals.refused += 1
            say(log.UDP_REFUSED.line(client=format_address(datagram.address)))
            return
        if flow not in self.moved:
            self.moved[flow] = {"up": 0, "down": 0}
            self.totals.open += 1
        flow.send_upstream(datagram.data)
        self.moved[flow]["up"] += len(datagram.data)
        self.totals.bytes_up += len(datagram.data)

    def flow_dropped(self, datagram: Datagram) -> None:
        self.totals.refused += 1
        log.THROTTLE.say(log.UDP_FLOW_CAP, limit=self.limit)

    def upstream_datagram_received(self, data: bytes, flow: DatagramFlow) -> None:
        try:
            flow.reply(data)
        except OSError as error:
            if error.errno != errno.EADDRINUSE:
                raise  # error_received says it
            self.totals.failed += 1
            self.reply_failed(flow, error)
            return
        self.moved[flow]["down"] += len(data)
        self.totals.bytes_down += len(data)

    def reply_failed(self, flow: DatagramFlow, error: OSError) -> None:
        """The udp_reply_failed line, the first time for this origin address."""
        target = flow.original_destination
        if target in self.warned:
            return
        if len(self.warned) >= REPLY_WARNINGS_KEPT:
            del self.warned[next(iter(self.warned))]
        self.warned[target] = None
        say(
            log.UDP_REPLY_FAILED.line(
                client=format_address(flow.client),
                target=format_address(target),
                error=error,
            )
        )

    def flow_closed(self, flow: DatagramFlow) -> None:
        moved = self.moved.pop(flow, None)
        if moved is None or flow.original_destination is None:
            return
        self.totals.open -= 1
        self.totals.relayed += 1
        say(
            log.UDP_FLOW.line(
                client=format_address(flow.client),
                target=format_address(flow.original_destination),
                up=moved["up"],
                down=moved["down"],
                seconds=flow.last_active - flow.created,
            )
        )

    def error_received(self, exc: OSError) -> None:
        self.totals.failed += 1
        log.THROTTLE.say(log.UDP_ERROR, error=exc)


#: In a worker of ``--workers``: what to do once this process has become
#: ``--user`` (ask again to end with the parent: _workers).
after_user_change: Callable[[], None] | None = None


def keep_privileges(settings: ProxySettings, starting: bool = False) -> tuple[str, str] | None:
    """Keep only the capabilities `settings` need (this_platform.keep_privileges):
    a proxy's, before it binds; with `starting`, a ``--workers`` parent's,
    which binds nothing but must start replacement workers that do."""
    ports = [settings.port] + ([settings.udp[1]] if settings.udp is not None else [])
    return this_platform.keep_privileges(
        settings.transparent or settings.keep_client_address or settings.udp is not None,
        settings.user,
        relaying=not starting,
        binding=any(0 < port < PRIVILEGED_PORTS for port in ports),
    )


#: asyncio's words for accept() out of a resource (EMFILE...), after which
#: its server stops accepting for a second.
ASYNCIO_ACCEPT_PAUSED = "socket.accept() out of system resource"
#: The event loop's other errors are throttled one kind (message) at a
#: time, up to this many kinds; beyond, they share one throttle.
LOOP_ERROR_KINDS = 64
#: Loop turns the stop waits, after cutting the connections, for those
#: accepted just before the listeners closed: the selector loop's
#: connect_accepted_socket makes the transport in a task (one turn), calls
#: connection_made (one), whose judgement starts the connection's task
#: (one); uvloop's takes fewer. Twice that, for what the turns run late.
LATE_CONNECTION_TURNS = 6


class Activity:
    """A relaying connection's bytes (`moved`), as the idle sweep last saw
    them: their sum then, and since when it has not changed."""

    __slots__ = ("idle", "moved", "seen", "since")

    def __init__(self, moved: dict[str, int], now: float) -> None:
        self.moved = moved
        self.seen = 0
        self.since = now
        self.idle = False  # ended by the sweep


def sweep_interval(idle_timeout: float) -> float:
    """How often the idle sweep looks: a quarter of the timeout, at most a
    second; a connection is ended between idle_timeout and idle_timeout plus
    this after its last byte."""
    return min(1.0, idle_timeout / 4)


class NativeServer(relay.Listening, Protocol):
    """What the proxy asks of the native relay's server (_relay_native),
    beyond a server's: its live totals, its open connections, its stop."""

    def refresh(self) -> None: ...
    def open_count(self) -> int: ...
    async def stop(self, grace: float) -> None: ...


#: _relay_native.serve_native's type.
ServeNative = Callable[..., Awaitable[NativeServer]]


#: The Python relay paths' servers, by name (the native relay's is handed
#: to the proxy: serve_native).
SERVERS = {"protocol": serve_protocol, "streams": serve_streams}


class Proxy:
    def __init__(
        self,
        settings: ProxySettings,
        process: bool = False,
        serve_native: ServeNative | None = None,
    ) -> None:
        self.settings = settings
        # Whether this process is the proxy's own (the command line's, or a
        # worker): only then are its privileges dropped, which is each
        # process's and each thread's (one embedding a Proxy has its own).
        self.process = process
        self.totals = Totals()
        self.connections: set[asyncio.Task[Any]] = set()
        # The relaying connections' tasks, for the idle sweep.
        self.relaying: dict[asyncio.Task[Any], Activity] = {}
        self.gate = relay.Gate(settings.max_connections)
        self.keepalive_inherited = False
        self.loop_errors: dict[str, log.Throttle] = {}
        # How the native path serves (_relay_native.serve_native: given by
        # the command line, cli/_run.py, which the native relay sits above),
        # and its server, whose engine keeps the live totals.
        self.serve_native = serve_native
        self.native: NativeServer | None = None
        # What keep_privileges kept: (capabilities, user), or None when
        # there was nothing to drop.
        self.kept: tuple[str, str] | None = None
        # --capture's rules while they are installed.
        self.capture: Capture | None = None

    def keep_privileges(self) -> None:
        """Before the sockets are bound, while no thread but this one runs
        (capabilities are each thread's): only the capabilities the options
        need, as --user, and CAP_NET_BIND_SERVICE until end_binding when a
        port is below 1024 (Linux; _privileges)."""
        if self.process:
            self.kept = keep_privileges(self.settings)

    def end_binding(self) -> None:
        """The sockets are bound: CAP_NET_BIND_SERVICE goes, if it was kept."""
        if self.process:
            this_platform.end_binding()
            if self.settings.user is not None and after_user_change is not None:
                after_user_change()

    def loop_refused(self, peer: Any) -> None:
        """judge_connection's loop case (its line said): a refused connection."""
        self.totals.refused += 1

    def gone(self, peer: Any, error: RedirectError) -> None:
        """judge_connection's client gone before its query: a DEBUG line."""
        say(log.GONE.line(client=format_address(peer) if peer else "an-unknown-peer"))

    def loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """The event loop's errors as the proxy's lines, throttled, without a
        traceback: asyncio's accept() out of a resource is the accept_paused
        line the other paths give; anything else one loop_error line."""
        text = str(context.get("message") or "error")
        error = context.get("exception")
        if text == ASYNCIO_ACCEPT_PAUSED and isinstance(error, OSError):
            listener = context.get("socket")
            try:
                address = listener.getsockname() if listener is not None else ("?", 0)
            except OSError:
                address = ("?", 0)
            relay.say_accept_paused(address, error)
            return
        throttles = self.loop_errors
        throttle = throttles.get(text)
        if throttle is None:
            key = text if len(throttles) < LOOP_ERROR_KINDS else ""
            throttle = throttles.setdefault(key, log.Throttle())
        detail = f"{text}: {error!r}" if error is not None else text
        throttle.say(log.LOOP_ERROR, error=" ".join(detail.split()))

    async def sweep_idle(self, stop: asyncio.Event) -> None:
        """End each relaying connection that moved no byte either way for
        idle_timeout: one look every sweep_interval at every connection's
        byte counts, so that the relays themselves keep no timer."""
        timeout = self.settings.idle_timeout
        interval = sweep_interval(timeout)
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            now = time.monotonic()
            for task, activity in list(self.relaying.items()):
                moved = activity.moved
                total = moved["up"] + moved["down"]
                if total != activity.seen:
                    activity.seen, activity.since = total, now
                elif now - activity.since >= timeout and not activity.idle:
                    activity.idle = True
                    task.cancel()

    async def handle_connection(self, connection: relay.Connection, redirect: RedirectInfo) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.connections.add(task)
        try:
            await self._relay(connection, redirect)
        finally:
            self.connections.discard(task)

    async def _relay(self, connection: relay.Connection, redirect: RedirectInfo) -> None:
        client = format_address(connection.peername())
        destination = redirect.original_destination
        if destination is None:
            self.totals.refused += 1
            say(log.REFUSED.line(client=client))
            connection.abort()
            return
        target = format_address(destination)
        try:
            await _within(
                self.settings.connect_timeout,
                connection.open_upstream(
                    redirect,
                    loop_mark=self.settings.loop_mark,
                    mark_mask=self.settings.mark_mask,
                    # The client's address, any port: HAProxy's "usesrc clientip".
                    source=(connection.peername()[0], 0)
                    if self.settings.keep_client_address
                    else None,
                ),
            )
        except (OSError, asyncio.TimeoutError) as error:
            self.totals.failed += 1
            say(log.FAILED.line(client=client, target=target, reason=str(error) or "timed out"))
            connection.abort()
            return
        # Keepalive on both sockets, but the client's where it came from
        # the listener (relay.accepting).
        for sock in connection.sockets()[1 if self.keepalive_inherited else 0 :]:
            relay.keep_alive(sock)
        self.totals.open += 1
        started = time.monotonic()
        moved = {"up": 0, "down": 0}
        totals = self.totals
        task = asyncio.current_task()
        assert task is not None
        activity = self.relaying[task] = Activity(moved, started)

        def count(name: str, size: int) -> None:
            moved[name] += size
            if name == "up":
                totals.bytes_up += size
            else:
                totals.bytes_down += size

        outcome = "closed"
        try:
            ended_by = await connection.relay(count)
            if ended_by is not None:
                outcome = f"ended by {ended_by!r}"
        except asyncio.CancelledError:
            connection.reset()
            if not activity.idle:
                outcome = "cut at shutdown"
                raise
            # The idle sweep's cancellation: this task ends normally.
            outcome = "idle timeout"
            uncancel = getattr(task, "uncancel", None)
            if uncancel is not None:
                uncancel()
        finally:
            del self.relaying[task]
            self.totals.open -= 1
            self.totals.relayed += 1
            say(
                log.RELAYED.line(
                    client=client,
                    target=target,
                    up=moved["up"],
                    down=moved["down"],
                    seconds=time.monotonic() - started,
                    outcome=outcome,
                )
            )

    def summary(self) -> dict[str, int]:
        """The totals, as the summary and the stop line name them."""
        if self.native is not None:
            self.native.refresh()
        totals = self.totals
        return {
            "open": totals.open,
            "relayed": totals.relayed,
            "refused": totals.refused,
            "failed": totals.failed,
            "up": totals.bytes_up,
            "down": totals.bytes_down,
        }

    async def report_periodically(self, stop: asyncio.Event) -> None:
        """A summary line each interval in which the totals changed: an idle
        proxy says nothing new. The rate is over the time since the last one."""
        interval = self.settings.summary_interval
        last = time.monotonic()
        moved = 0
        # Changed since the start, not since this task's first turn: the
        # listeners accept from the start line on (a --workers parent's
        # readiness), and a connection that came in before this turn must
        # still get its summary.
        said = dict.fromkeys(self.summary(), 0)
        while True:
            try:
                await asyncio.wait_for(stop.wait(), interval)
                return
            except asyncio.TimeoutError:
                pass
            totals = self.summary()
            if totals == said:
                continue
            now = time.monotonic()
            total = self.totals.bytes_up + self.totals.bytes_down
            say(log.SUMMARY.line(**totals, rate=(total - moved) / (now - last)))
            last, moved, said = now, total, totals

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        def request_stop(signum: int, frame: object) -> None:
            loop.call_soon_threadsafe(stop.set)

        # loop.add_signal_handler where the loop has it: it also points the
        # signal wakeup descriptor at the loop, so a signal delivered to
        # another thread (an executor's, a sanitizer's) still wakes it. The
        # Windows Proactor loop lacks it: signal.signal there, whose handler
        # wakes the loop with call_soon_threadsafe.
        def hang_up() -> None:
            if not stop.is_set():
                say(log.HANGUP.line())
            stop.set()

        for signum in STOP_SIGNALS:
            try:
                loop.add_signal_handler(
                    signum, hang_up if signum == getattr(signal, "SIGHUP", None) else stop.set
                )
            except NotImplementedError:
                signal.signal(signum, request_stop)
        # A --workers worker starts with them held (_workers): one sent
        # meanwhile is a stop request now.
        this_platform.hold_signals(STOP_SIGNALS, False)
        # asyncio's own errors (its accept loop out of descriptors, above
        # all) as the proxy's lines: in its format, throttled, no traceback.
        loop.set_exception_handler(self.loop_exception)
        try:
            await self._serve(stop)
        finally:
            # Ignored from here on: a stop signal (another worker's failure
            # makes the parent send one) that arrived while asyncio.run
            # closes the loop would be written to its closed wakeup pipe.
            for signum in STOP_SIGNALS:
                with contextlib.suppress(NotImplementedError):
                    loop.remove_signal_handler(signum)
                signal.signal(signum, signal.SIG_IGN)

    async def _serve(self, stop: asyncio.Event) -> None:
        settings = self.settings
        loop = asyncio.get_running_loop()
        self.keep_privileges()
        # Resolving a host name runs in the default executor, whose threads
        # would keep CAP_NET_BIND_SERVICE: this one ends before it is dropped.
        binding = concurrent.futures.ThreadPoolExecutor(1, "wfpredirect-bind")
        if self.process:
            loop.set_default_executor(binding)
        udp_socket = None if settings.udp is None else _bind_udp(settings.udp)
        try:
            server = await self._listen()
        except BaseException:
            if udp_socket is not None:
                udp_socket.close()
            raise
        finally:
            binding.shutdown()
        if self.process:
            loop.set_default_executor(concurrent.futures.ThreadPoolExecutor())
        try:
            # Once the listeners are up, before the start lines; and before
            # --user drops the privilege it takes.
            if settings.captures:
                self.capture = install_capture(
                    settings.captures,
                    settings.capture_interface,
                    (settings.host, settings.port),
                    settings.udp,
                    settings.loop_mark,
                )
            self.end_binding()
        except BaseException:
            self.remove_capture()
            server.close()
            if udp_socket is not None:
                udp_socket.close()
            raise
        endpoint: RedirectDatagramEndpoint | None = None
        if udp_socket is not None:
            endpoint, _ = await create_redirect_datagram_endpoint(
                lambda: UdpRelay(self.totals, settings.max_udp_flows),
                sock=udp_socket,
                idle_timeout=settings.udp_idle_timeout,
                loop_mark=settings.loop_mark,
                mark_mask=settings.mark_mask,
                max_flows=settings.max_udp_flows,
            )
        started = time.monotonic()
        for sock in server.sockets:
            host, port = sock.getsockname()[:2]
            say(log.LISTENING.line(host=host, port=port))
        if endpoint is not None:
            host, port = endpoint.get_extra_info("sockname")[:2]
            say(log.LISTENING_UDP.line(host=host, port=port))
        if self.capture is not None:
            for line in capture_lines(self.capture):
                say(line)
        if self.kept is not None:
            say(log.PRIVILEGES.line(capabilities=self.kept[0], user=self.kept[1]))
        # Last of the start lines (a --workers parent waits for it).
        if settings.descriptors:
            say(
                log.CAPACITY.line(
                    limit=settings.descriptors,
                    connections=settings.max_connections,
                    flows=settings.max_udp_flows,
                    pipes=pool_pipes(settings.relay),
                )
            )
        try:
            await self._until_stopped(stop, server, endpoint, started)
        finally:
            self.remove_capture()

    def remove_capture(self) -> None:
        """Remove --capture's rules (once), saying it when that fails."""
        capture, self.capture = self.capture, None
        if capture is not None:
            for line in remove_capture(capture):
                say(line)

    def _listener(self) -> socket.socket | None:
        """The listening socket made here rather than by the event loop, if
        any: with --transparent, and on uvloop (its address resolution
        starts threads of its own, which would keep the capability to bind
        a port below 1024: resolved here, in this thread), when the address
        is one."""
        settings = self.settings
        reuse_port = settings.workers > 1
        if settings.transparent:
            return backend.transparent_listener(settings.host, settings.port, reuse_port)
        if settings.loop == "uvloop":
            listeners = relay.make_listeners(settings.host, settings.port, reuse_port=reuse_port)
            if len(listeners) == 1:
                return listeners[0]
            for sock in listeners:
                sock.close()
        return None

    async def _listen(self) -> relay.Listening:
        """The TCP server of the chosen relay path, listening."""
        settings = self.settings
        server: relay.Listening
        if settings.relay == "native":
            assert self.serve_native is not None, "--relay native: no serve_native given"
            server = self.native = await self.serve_native(
                settings,
                self.totals,
                listener=backend.transparent_listener(
                    settings.host, settings.port, settings.workers > 1
                )
                if settings.transparent
                else None,
                loop_mark=LOOP_MARK if settings.loop_mark is None else settings.loop_mark,
                # Before the engine's thread starts.
                bound=self.end_binding,
            )
        else:
            server = await SERVERS[settings.relay](
                self.handle_connection,
                settings.host,
                settings.port,
                listener=self._listener(),
                reuse_port=settings.workers > 1,
                serving=relay.Serving(
                    gate=self.gate,
                    backlog=settings.backlog,
                    loop_mark=LOOP_MARK if settings.loop_mark is None else settings.loop_mark,
                    on_loop=self.loop_refused,
                    on_gone=self.gone,
                ),
            )
        self.keepalive_inherited = getattr(server, "keepalive", False)
        return server

    async def _until_stopped(
        self,
        stop: asyncio.Event,
        server: relay.Listening,
        endpoint: RedirectDatagramEndpoint | None,
        started: float,
    ) -> None:
        settings = self.settings
        reporter = None
        if settings.summary_interval > 0:
            reporter = asyncio.create_task(self.report_periodically(stop))
        sweeper = None
        if settings.relay != "native":
            sweeper = asyncio.create_task(self.sweep_idle(stop))
        await stop.wait()
        server.close()
        # Connections accepted in the turn the stop came in have their tasks
        # queued but not started: one turn lets each count itself as open.
        await asyncio.sleep(0)
        if endpoint is not None:
            endpoint.close()  # each open flow gets its line
        # Nothing listens for what it would divert any more.
        self.remove_capture()
        native = self.native
        open_connections = len(self.connections) + (native.open_count() if native else 0)
        say(log.STOPPING.line(open=open_connections, grace=settings.grace))
        if native is not None:
            await native.stop(settings.grace)
        if self.connections:
            await asyncio.wait(set(self.connections), timeout=settings.grace)
        await self._cut_connections()
        # A connection accepted just before the listeners closed reaches its
        # task some loop turns later (asyncio makes its transport in a task
        # of its own, whose protocol then judges it): it is cut too, and its
        # line comes before the stop's.
        for _ in range(LATE_CONNECTION_TURNS):
            await asyncio.sleep(0)
            await self._cut_connections()
        await server.wait_closed()
        if reporter is not None:
            await reporter
        if sweeper is not None:
            await sweeper
        say(log.STOPPED.line(seconds=time.monotonic() - started, **self.summary()))

    async def _cut_connections(self) -> None:
        for task in set(self.connections):
            task.cancel()
        if self.connections:
            await asyncio.wait(set(self.connections))


def _bind_udp(address: tuple[str, int]) -> socket.socket:
    """A UDP socket bound to `address` (the first address of its host)."""
    family, _, _, _, where = socket.getaddrinfo(*address, type=socket.SOCK_DGRAM)[0]
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.bind(where)
    except BaseException:
        sock.close()
        raise
    return sock


#: ``--loop``: the event loops the proxy can run on.
EVENT_LOOPS = ("asyncio", "uvloop")


def _runner(loop: str) -> Callable[[Coroutine[Any, Any, None]], None]:
    """What runs the proxy's coroutine on event loop `loop` (EVENT_LOOPS);
    ValueError when that loop is not installed."""
    if loop == "uvloop":
        try:
            import uvloop  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            raise ValueError(
                "--loop uvloop: uvloop is not installed (python -m pip install uvloop)"
            ) from None
        run: Callable[[Coroutine[Any, Any, None]], None] = uvloop.run
        return run
    return asyncio.run
