"""``wfpredirect proxy``'s run: the settings checked against this platform
and its descriptors, then one proxy process, or the workers (_workers) each
running one. It sits above the proxy, the workers and the native relay,
which it hands to the proxy (docs/design.md, "Layers")."""

from __future__ import annotations

import signal
import sys

from . import _proxy_log as log
from . import _relay as relay
from ._capacity import plan
from ._platform import this_platform
from ._proxy import STOP_SIGNALS, Proxy, ProxySettings, ServeNative, _runner
from ._proxy_capture import capture_problem
from ._workers import run_workers


def _native(settings: ProxySettings) -> ServeNative | None:
    """How the native path serves, when it is the one chosen (Linux's: its
    modules are loaded only then)."""
    if sys.platform == "linux" and settings.relay == "native":
        from ._relay_native import serve_native

        return serve_native
    return None


def _run_one(settings: ProxySettings) -> int:
    """One proxy process until a stop signal: the exit status."""
    # The stop signals' handlers as they were: Proxy.run ignores the signals
    # once it stops serving, and they come back once its loop has closed.
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    try:
        _runner(settings.loop)(Proxy(settings, process=True, serve_native=_native(settings)).run())
    except OSError as error:
        # One write: with --workers, several workers may say it at once.
        sys.stderr.write(f"wfpredirect proxy: {error}\n")
        sys.stderr.flush()
        return 1
    finally:
        for signum, handler in previous.items():
            if handler is not None:
                signal.signal(signum, handler)
    return 0


def run_proxy(settings: ProxySettings) -> int:
    """Run until a stop signal (STOP_SIGNALS); the exit status."""
    problem = capture_problem(
        settings.captures,
        settings.capture_interface,
        (settings.host, settings.port),
        settings.udp,
        settings.user,
    ) or (
        this_platform.proxy_problem(
            settings.loop_mark,
            settings.mark_mask,
            udp=settings.udp is not None,
            transparent=settings.transparent or settings.keep_client_address,
        )
        or this_platform.workers_problem(settings.workers)
        or this_platform.privileges_problem(settings.user)
    )
    if not problem and settings.workers > 1 and settings.port == 0:
        problem = (
            f"--workers {settings.workers} needs a fixed port (each worker binds the "
            "same address with SO_REUSEPORT)"
        )
    try:
        settings.relay = relay.choose_relay_path(settings.relay)
        _runner(settings.loop)
    except ValueError as error:
        problem = problem or str(error)
    if not problem:
        # Each process of --workers has this limit, and these caps, its own.
        settings.descriptors = this_platform.raise_descriptor_limit()
        try:
            capacity = plan(
                settings.descriptors,
                settings.relay,
                settings.udp is not None,
                settings.max_connections,
                settings.max_udp_flows,
            )
        except ValueError as error:
            problem = str(error)
        else:
            settings.max_connections = capacity.connections
            settings.max_udp_flows = capacity.flows
    if problem:
        print(f"wfpredirect proxy: {problem}", file=sys.stderr)
        return 2
    log.configure(settings.log_level, settings.log_format)
    if settings.workers > 1:
        return run_workers(settings, _run_one)
    return _run_one(settings)
