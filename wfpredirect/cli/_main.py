"""``wfpredirect`` / ``python -m wfpredirect``: ``proxy``, ``doctor`` and ``demo``."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from .. import __version__
from .._capture import check_interface
from .._capture_targets import CaptureTarget
from .._marks import (
    DEFAULT_LOOP_MARK,
    DEFAULT_MARK_MASK,
    LOOP_MARK_VARIABLE,
    MARK_MASK_VARIABLE,
    parse_mark,
)
from ._doctor import run_doctor
from ._platform import this_platform
from ._proxy import (
    EVENT_LOOPS,
    LIMITS,
    MAX_WORKERS,
    ProxySettings,
    parse_address,
    user_problem,
)
from ._proxy_log import FORMATS, LEVELS
from ._relay import RELAY_PATHS
from ._run import run_proxy


def mark_number(text: str) -> int:
    """A mark given in decimal or 0x-hex: the grammar of the variables."""
    try:
        return parse_mark(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def whole_number(low: int, high: int, what: str) -> Callable[[str], int]:
    """An argparse type: a whole number from `low` to `high` (`what` it counts)."""

    def parse(text: str) -> int:
        if not text.isdigit() or not low <= int(text) <= high:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what} ({low} to {high})")
        return int(text)

    return parse


def seconds(low: float, high: float, none: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number of seconds from `low` to `high`
    (and 0 as well when `none`: the feature off)."""
    allowed = f"0, or {low:g} to {high:g}" if none else f"{low:g} to {high:g}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (low <= value <= high or (none and value == 0)):
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds ({allowed})")
        return value

    return parse


def user_name(text: str) -> str:
    """--user: a user this system knows."""
    problem = user_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def listen_address(text: str) -> tuple[str, int]:
    try:
        return parse_address(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def capture_target(text: str) -> CaptureTarget:
    """--capture SPEC: [tcp:|udp:]ADDRESS[/PREFIX][:PORTS]."""
    try:
        return CaptureTarget.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def interface_name(text: str) -> str:
    try:
        check_interface(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


EXAMPLES = """\
examples:
  wfpredirect demo                              the whole flow in a throw-away
                                                network namespace (Linux, root)
  wfpredirect doctor                            what this machine offers
  wfpredirect proxy --listen 127.0.0.1:15001    relay what a redirect rule
                                                sends to port 15001
  wfpredirect proxy --listen 127.0.0.1:15001 --capture tcp:127.0.0.2:8080
                                                and send it there itself (Linux)
  wfpredirect proxy --listen 127.0.0.1:15001 --udp 0.0.0.0:15002
                                                TCP, and UDP from a TPROXY rule
  wfpredirect proxy --listen 127.0.0.1:15001 --log-format json --quiet
                                                log only problems, as JSON
"""

# The mark flags: (flag, the variable it overrides, that one's default, what it is).
MARK_OPTIONS = [
    ("--loop-mark", LOOP_MARK_VARIABLE, DEFAULT_LOOP_MARK, "the loop mark of upstream connections"),
    ("--mark-mask", MARK_MASK_VARIABLE, DEFAULT_MARK_MASK, "the inbound mark bits that travel"),
]
# The flags given in seconds, each a ProxySettings field of the same name,
# with their ranges (LIMITS): (flag, what it is).
SECONDS_OPTIONS = [
    ("--idle-timeout", "a connection with no bytes either way for this long is ended"),
    ("--udp-idle-timeout", "a UDP flow idle this long is closed"),
    ("--connect-timeout", "upstream connect timeout"),
    ("--grace", "how long open connections may finish after a stop signal"),
    ("--summary-interval", "seconds between summary lines, 0 for none"),
]
# The limits given as counts, each a ProxySettings field of the same name
# whose default (None) is derived at start: (flag, what it counts, the default).
COUNT_OPTIONS = [
    (
        "--max-connections",
        "connections held at once; at the cap accepting pauses",
        "from the descriptor limit",
    ),
    (
        "--max-udp-flows",
        "UDP flows at once; beyond it new flows are dropped and counted",
        "from the descriptor limit",
    ),
]
# The flags that choose how the proxy runs, each a ProxySettings field of the
# same name: (flag, choices, what it is).
RUN_OPTIONS = [
    (
        "--relay",
        ("auto", *RELAY_PATHS),
        "how the bytes move: protocol (asyncio Protocols), streams (asyncio streams), "
        "native (Linux: the whole connection in the C++ core, its own loop in a "
        "thread); auto: native on Linux, protocol on Windows",
    ),
    ("--loop", EVENT_LOOPS, "the event loop (uvloop when installed)"),
]


class _Parser(argparse.ArgumentParser):
    """argparse's parser, whose usage error is one line: the command, the
    option and what is wrong with it (the usage of a command with this many
    options would bury it)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def parser() -> argparse.ArgumentParser:
    top = _Parser(
        prog="wfpredirect",
        description="A transparent proxy built on wfpredirect, a check of this machine, "
        "and a demonstration.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = top.add_subparsers(dest="command", metavar="COMMAND")

    proxy = commands.add_parser(
        "proxy",
        help="relay redirected TCP connections to their original destinations",
        description="Relay each redirected TCP connection to where its client meant to go, "
        "carrying its redirect records. Stops on SIGINT, SIGTERM or SIGHUP.",
    )
    proxy.add_argument(
        "--listen",
        required=True,
        type=listen_address,
        metavar="HOST:PORT",
        help="where the redirect sends connections ([HOST]:PORT for IPv6)",
    )
    proxy.add_argument(
        "--udp",
        type=listen_address,
        metavar="HOST:PORT",
        help="also relay redirected UDP flows received here (Linux: a TPROXY rule's target)",
    )
    proxy.add_argument(
        "--capture",
        type=capture_target,
        action="append",
        default=[],
        metavar="SPEC",
        help="Linux: send this traffic to the proxy while it runs, in an nftables table "
        "that goes with it (even after kill -9); SPEC is [tcp:|udp:]ADDRESS[/PREFIX][:PORTS], "
        "PORTS a port, N-M or a comma list, IPv6 in brackets; repeatable",
    )
    proxy.add_argument(
        "--capture-interface",
        type=interface_name,
        metavar="IFACE",
        help="Linux: also capture what arrives on IFACE (a gateway), not only what this host sends",
    )
    for flag, variable, default, what in MARK_OPTIONS:
        proxy.add_argument(
            flag,
            type=mark_number,
            metavar="N",
            help=f"Linux: {what} (default: {variable}, else {default:#x})",
        )
    proxy.add_argument(
        "--transparent",
        action="store_true",
        help="Linux: listen with IP_TRANSPARENT, for a TCP TPROXY rule (which hands "
        "connections only to such a listener)",
    )
    proxy.add_argument(
        "--keep-client-address",
        action="store_true",
        help="Linux: bind each upstream connection to its client's address (IP_TRANSPARENT), "
        "so the origin sees the client; the replies must be routed back to this host "
        "(see the documentation)",
    )
    low, high = LIMITS["backlog"]
    proxy.add_argument(
        "--backlog",
        type=whole_number(int(low), int(high), "a listen backlog"),
        default=ProxySettings.backlog,
        metavar="N",
        help=f"listen backlog, {low} to {high} (default %(default)s)",
    )
    for flag, what in SECONDS_OPTIONS:
        name = flag.removeprefix("--").replace("-", "_")
        low, high = LIMITS[name]
        none = name == "summary_interval"
        proxy.add_argument(
            flag,
            type=seconds(low, high, none=none),
            default=getattr(ProxySettings, name),
            metavar="SECONDS",
            help=f"{what}, {'0 or ' if none else ''}{low:g} to {high:g} (default %(default)s)",
        )
    for flag, what, derived in COUNT_OPTIONS:
        name = flag.removeprefix("--").replace("-", "_")
        low, high = LIMITS[name]
        proxy.add_argument(
            flag,
            type=whole_number(int(low), int(high), what),
            metavar="N",
            help=f"{what}, {low} to {high} (default: {derived})",
        )
    proxy.add_argument(
        "--user",
        type=user_name,
        metavar="NAME",
        help="Linux: once listening, run as this user, keeping only the capabilities "
        "the options need (see the documentation's 'Running as a service')",
    )
    verbosity = proxy.add_mutually_exclusive_group()
    verbosity.add_argument(
        "--log-level",
        choices=LEVELS,
        default="info",
        help="the least severe lines logged (default %(default)s: every connection)",
    )
    verbosity.add_argument(
        "--quiet",
        "-q",
        action="store_true",
        help="only warnings and errors (--log-level warning)",
    )
    proxy.add_argument(
        "--log-format",
        choices=FORMATS,
        default="text",
        help="text: TIME LEVEL MESSAGE a line; json: one object a line (default %(default)s)",
    )
    for flag, choices, what in RUN_OPTIONS:
        proxy.add_argument(
            flag,
            choices=choices,
            default=getattr(ProxySettings, flag.removeprefix("--")),
            help=f"{what} (default %(default)s)",
        )
    proxy.add_argument(
        "--workers",
        type=whole_number(1, MAX_WORKERS, "a number of processes"),
        default=ProxySettings.workers,
        metavar="N",
        help=f"Linux: N processes (1 to {MAX_WORKERS}), each with its own SO_REUSEPORT "
        "listener on the same address; one set of summary lines for all (default %(default)s)",
    )
    commands.add_parser(
        "doctor",
        help="check what this machine offers a transparent proxy",
        description="Report the backend, the OS, privileges, kernel features and the marks; "
        "for each problem, what to do. Exit status 1 when there are problems.",
    )
    demo = commands.add_parser(
        "demo",
        help="the whole flow, in a throw-away network namespace (Linux, root)",
        description="Linux, as root: a network namespace with an nft redirect, an HTTP "
        "origin and the proxy, driven by real clients; everything is removed at the end, "
        "also when interrupted. Windows: what the redirecting driver must do, then doctor.",
    )
    demo.add_argument(
        "--keep-running",
        action="store_true",
        help="Linux: after the clients, keep the namespace, the origin and the "
        "proxy up for your own clients until SIGINT/SIGTERM",
    )
    return top


def main(argv: Sequence[str] | None = None) -> int:
    top = parser()
    arguments = top.parse_args(argv)
    if arguments.command is None:
        # No command: the help, as a usage error.
        top.print_help(sys.stderr)
        return 2
    if arguments.command == "proxy":
        host, port = arguments.listen
        return run_proxy(
            ProxySettings(
                host=host,
                port=port,
                loop_mark=arguments.loop_mark,
                mark_mask=arguments.mark_mask,
                backlog=arguments.backlog,
                connect_timeout=arguments.connect_timeout,
                grace=arguments.grace,
                idle_timeout=arguments.idle_timeout,
                max_connections=arguments.max_connections,
                max_udp_flows=arguments.max_udp_flows,
                user=arguments.user,
                summary_interval=arguments.summary_interval,
                udp=arguments.udp,
                udp_idle_timeout=arguments.udp_idle_timeout,
                transparent=arguments.transparent,
                log_level=LEVELS["warning" if arguments.quiet else arguments.log_level],
                log_format=arguments.log_format,
                keep_client_address=arguments.keep_client_address,
                relay=arguments.relay,
                loop=arguments.loop,
                workers=arguments.workers,
                captures=tuple(arguments.capture),
                capture_interface=arguments.capture_interface,
            )
        )
    if arguments.command == "doctor":
        return run_doctor(this_platform.doctor_checks)
    if arguments.command == "demo":
        return this_platform.run_demo(arguments.keep_running)
    raise AssertionError(arguments.command)
