"""Capture: traffic sent to a transparent proxy for the life of a context,
in an nftables table that cannot outlive the process (Linux).

The table has ``flags owner``: it belongs to the netlink socket of the
libnftables context this object keeps open, and the kernel removes it when
that socket closes, so also when the process is killed with ``kill -9``.
Where the kernel (before 5.12) or libnftables (before 1.0.1) lacks
``owner``, the table is an ordinary one, deleted at exit: ``owned`` is then
False and ``leftover_advice`` says how to delete it by hand.
"""

from __future__ import annotations

import errno
import itertools
import os
import threading
import warnings
from collections.abc import Iterable
from types import TracebackType

from ._capture_routes import ROUTE_MARK, TABLE_PREFIX, capture_tables, sync_routes
from ._capture_rules import CaptureSettings, table_text
from ._capture_targets import MAX_PORT, CaptureTarget
from ._core import BACKEND
from ._errors import (
    CAPABILITY_ADVICE,
    RedirectError,
    RedirectPermissionError,
    UnsupportedError,
)
from ._marks import LOOP_MARK
from ._nftables import Nftables

# The longest interface name, with its terminating NUL: IFNAMSIZ (linux/if.h).
IFNAMSIZ = 16
UNSUPPORTED = (
    "a capture installs nftables rules: Linux only (Windows has nothing to install "
    "without a callout driver: see docs/windows.md)"
)

_numbers = itertools.count(1)
_numbers_lock = threading.Lock()


def _table_name() -> str:
    """Unique per capture: two proxies side by side never share a table."""
    with _numbers_lock:
        number = next(_numbers)
    return f"{TABLE_PREFIX}{os.getpid()}_{number}"


def leftover_advice(table: str) -> str:
    """How to delete a capture table left by a killed process."""
    return f"nft delete table inet {table}"


def _check_port(name: str, port: int | None, needed: bool) -> None:
    if port is None:
        if needed:
            raise ValueError(f"{name} is needed: a capture target has that protocol")
        return
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"{name} must be an int, not {type(port).__name__}")
    if not 1 <= port <= MAX_PORT:
        raise ValueError(f"{name} {port} is not within 1-{MAX_PORT}")


def check_interface(interface: str | None) -> None:
    """ValueError (TypeError) unless `interface` is None or can name a network interface."""
    if interface is None:
        return
    if not isinstance(interface, str):
        raise TypeError(f"interface must be a str, not {type(interface).__name__}")
    if (
        not 0 < len(interface.encode()) < IFNAMSIZ
        or not interface.isprintable()
        or any(character in interface for character in ' "/\\')
    ):
        raise ValueError(f"interface {interface!r} is not an interface name")


def _settings(
    targets: Iterable[CaptureTarget | str],
    tcp_port: int | None,
    udp_port: int | None,
    loop_mark: int | None,
    interface: str | None,
) -> CaptureSettings:
    if isinstance(targets, (str, CaptureTarget)):
        targets = [targets]
    parsed = tuple(
        target if isinstance(target, CaptureTarget) else CaptureTarget.parse(target)
        for target in targets
    )
    if not parsed:
        raise ValueError("a capture needs at least one target")
    protocols = {target.protocol for target in parsed}
    _check_port("tcp_port", tcp_port, "tcp" in protocols)
    _check_port("udp_port", udp_port, "udp" in protocols)
    check_interface(interface)
    mark = LOOP_MARK if loop_mark is None else loop_mark
    if isinstance(mark, bool) or not isinstance(mark, int) or not 0 < mark <= 0xFFFFFFFF:
        raise ValueError(f"loop_mark {mark!r} is not a mark (1 to 0xffffffff)")
    if mark & ROUTE_MARK:
        raise ValueError(
            f"loop_mark {mark:#x} shares bit {ROUTE_MARK:#x} with the route mark of UDP captures"
        )
    return CaptureSettings(parsed, tcp_port, udp_port, mark, ROUTE_MARK, interface)


class Capture:
    """Send `targets` to this host's proxy while the context is open (Linux,
    root or CAP_NET_ADMIN). Each target is a :class:`CaptureTarget` or its
    text form (``"tcp:127.0.0.2:8080"``). TCP goes to `tcp_port` (nat
    REDIRECT), UDP to `udp_port` (TPROXY: the proxy's UDP socket needs
    IP_TRANSPARENT). Traffic carrying `loop_mark` (default: LOOP_MARK, the
    mark of the proxy's upstream) passes. Locally originated traffic is
    captured, and with `interface` also what arrives on it.
    """

    def __init__(
        self,
        targets: Iterable[CaptureTarget | str],
        *,
        tcp_port: int | None = None,
        udp_port: int | None = None,
        loop_mark: int | None = None,
        interface: str | None = None,
    ) -> None:
        self.settings = _settings(targets, tcp_port, udp_port, loop_mark, interface)
        #: The nftables table's name, ``wfpredirect_<pid>_<n>`` (family inet).
        self.table = _table_name()
        #: True when the kernel removes the table with this process.
        self.owned = False
        self._nftables: Nftables | None = None

    @property
    def ruleset(self) -> str:
        """The table's nft text (as loaded when owned is True)."""
        return table_text(self.table, self.settings, owner=True)

    @property
    def installed(self) -> bool:
        return self._nftables is not None and not self._nftables.closed

    def install(self) -> None:
        """Load the table (and the policy route for UDP); RedirectError with
        nft's or ip's message when the system refuses."""
        if BACKEND != "netfilter":
            raise UnsupportedError(errno.EOPNOTSUPP, UNSUPPORTED)
        if self._nftables is not None:
            raise ValueError(f"capture {self.table} is already installed")
        nftables = Nftables()
        try:
            self.owned = self._add_table(nftables)
        except BaseException:
            nftables.close()
            raise
        try:
            sync_routes(nftables)
        except BaseException:
            self._remove(nftables)
            raise
        self._nftables = nftables

    def _add_table(self, nftables: Nftables) -> bool:
        """Add the table, owned when the system can; whether it is owned."""
        try:
            nftables.run(table_text(self.table, self.settings, owner=True))
            return True
        except RedirectPermissionError as error:
            raise RedirectPermissionError(
                error.errno, f"{error.strerror}: {CAPABILITY_ADVICE}"
            ) from None
        except RedirectError as owner_refused:
            # An older kernel or nft: the same table without the flag. When
            # that fails too, its error is the one to report.
            try:
                nftables.run(table_text(self.table, self.settings, owner=False))
            except RedirectError:
                raise owner_refused from None
            warnings.warn(
                f"capture table {self.table}: this kernel or nft lacks 'flags owner' "
                f"({owner_refused.strerror}); it is deleted at exit, but a kill -9 would "
                f"leave it: delete it then with: {leftover_advice(self.table)}",
                RuntimeWarning,
                stacklevel=3,
            )
            return False

    def _remove(self, nftables: Nftables) -> None:
        try:
            if self.table in capture_tables(nftables):
                nftables.run(f"delete table inet {self.table}")
            sync_routes(nftables)
        finally:
            nftables.close()

    def close(self) -> None:
        """Remove the table and, when no other capture needs it, the route."""
        nftables, self._nftables = self._nftables, None
        if nftables is not None and not nftables.closed:
            self._remove(nftables)

    def __enter__(self) -> Capture:
        self.install()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        targets = ", ".join(str(target) for target in self.settings.targets)
        return f"<Capture {self.table} [{targets}] installed={self.installed}>"
