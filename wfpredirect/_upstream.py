"""The one upstream policy, shared by ``RedirectSocket.create_upstream``
and ``wfpredirect.aio.open_upstream``: which addresses to try, the loop
guard, the records (with the mark keywords) before bind and connect, and
the error when every address failed. The two differ only in how they wait
(a blocking connect, or the event loop's).

The loop guard refuses an upstream to a listening address of this
process's redirect servers (errno ELOOP): the connection that arrives there
is the proxy itself, so it would accept its own upstream, open another, and
so on. The servers are the RedirectSocket listeners and the
``start_redirect_server`` servers that are still open.
"""

from __future__ import annotations

import errno
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

from ._addresses import (
    Address,
    host_ip,
    is_listener_address,
    original_target,
    resolved_targets,
)
from ._backend import backend
from ._core import _set_upstream_records
from ._errors import RedirectError, renamed


class _Listening(Protocol):
    def fileno(self) -> int: ...
    def getsockname(self) -> Any: ...


_lock = threading.Lock()
# The listening sockets of this process's redirect servers, with their
# addresses (which a listening socket keeps); a closed one (fileno() -1) is
# dropped the next time they are read.
_listening: list[tuple[_Listening, Address]] = []


def remember_listener(sock: _Listening) -> None:
    """Count listening `sock` among the redirect servers' listeners until
    it is closed."""
    address = sock.getsockname()
    with _lock:
        if not any(known is sock for known, _ in _listening):
            _listening.append((sock, address))


def listening_addresses() -> list[Address]:
    """The addresses the open redirect servers of this process listen on."""
    with _lock:
        _listening[:] = [entry for entry in _listening if entry[0].fileno() != -1]
        return [address for _, address in _listening]


def targets(
    function: str,
    destination: Address | None,
    address: Address | None,
    infos: Sequence[tuple[Any, ...]] | None,
) -> list[tuple[int, Address]]:
    """The (family, address) pairs to try, in order: the original
    destination when no `address` was given (NotRedirectedError naming
    `function` when there is none), else the IPv4 and IPv6 answers of
    getaddrinfo for `address` (`infos`, which the caller asked in its own
    way)."""
    if address is None:
        return [original_target(destination, function)]
    assert infos is not None
    return resolved_targets(infos)


def refuse_a_loop(function: str, target: Address, listeners: Iterable[Address] = ()) -> None:
    """RedirectError(ELOOP) naming `function` when `target` is where one of
    `listeners` or this process's redirect servers accepts."""
    for listener in [*listeners, *listening_addresses()]:
        if is_listener_address(listener, target):
            raise RedirectError(
                errno.ELOOP,
                f"{function}: refusing to connect to {target[0]}:{target[1]}, "
                "the proxy's own listening address (a redirect loop)",
            )


def prepare(
    function: str,
    upstream: socket.socket,
    records: bytes | None,
    *,
    loop_mark: int | None,
    mark_mask: int | None,
    timeout: float | None,
    local_address: Address | None,
    transparent: bool = False,
) -> None:
    """Ready new socket `upstream` to connect: the records first (with the
    mark keywords: set_redirect_records's), then `timeout` (None leaves it;
    0.0 makes it non-blocking), then, with `transparent`, IP_TRANSPARENT,
    then the bind to `local_address`. A records error is renamed after
    `function`; `upstream` is the caller's to close. `upstream` is one the
    library has just made (Attempts), never bound or connected, so its state
    is not asked again (set_redirect_records' check: on Linux one system
    call fewer)."""
    if records is not None:
        try:
            _set_upstream_records(upstream, records, loop_mark, mark_mask)
        except RedirectError as error:
            raise renamed(error, "set_redirect_records", function) from error
    if timeout is not None:
        upstream.settimeout(timeout)
    if transparent:
        backend.make_transparent(upstream, function)
    if local_address is not None:
        upstream.bind(_in_family(upstream.family, local_address))


def _in_family(family: int, address: Address) -> Address:
    """`address` for a socket of `family`: an IPv4-mapped IPv6 host (a
    client of a dual-stack listener) as IPv4 for an IPv4 socket."""
    if family == socket.AF_INET and ":" in address[0]:
        return (str(host_ip(address[0])), address[1])
    return address


class _Connect:
    connected = False


class Attempts:
    """The new upstream sockets to try in turn, each ready to connect to
    its target (see `prepare`). A target that is a redirect server's
    listening address raises ELOOP, before anything else is asked:
    `records` (a function: the connection's records, or None) is called
    only for a target that may be tried. A records error is raised; any other
    OSError preparing a socket counts as that target's failure. The caller
    connects each inside `connecting`, and raises `error()` when none
    connected."""

    def __init__(
        self,
        function: str,
        destination: Address | None,
        address: Address | None,
        infos: Sequence[tuple[Any, ...]] | None,
        records: Callable[[], bytes | None],
        *,
        loop_mark: int | None,
        mark_mask: int | None,
        timeout: float | None,
        local_address: Address | None,
        transparent: bool = False,
        listeners: Iterable[Address] = (),
        factory: Callable[[int, int, int], socket.socket] = socket.socket,
    ) -> None:
        self._function = function
        self._address = address
        self._targets = targets(function, destination, address, infos)
        self._records = records
        self._records_value: bytes | None = None
        self._records_known = False
        self._loop_mark = loop_mark
        self._mark_mask = mark_mask
        self._timeout = timeout
        self._local_address = local_address
        self._transparent = transparent
        self._listeners = list(listeners)
        self._factory = factory
        self.failures: list[OSError] = []

    def __iter__(self) -> Iterator[tuple[socket.socket, Address]]:
        for family, target in self._targets:
            refuse_a_loop(self._function, target, self._listeners)
            if not self._records_known:
                self._records_value = self._records()
                self._records_known = True
            # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on such a socket.
            sock = self._factory(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
            try:
                prepare(
                    self._function,
                    sock,
                    self._records_value,
                    loop_mark=self._loop_mark,
                    mark_mask=self._mark_mask,
                    timeout=self._timeout,
                    local_address=self._local_address,
                    transparent=self._transparent,
                )
            except RedirectError:
                sock.close()
                raise
            except OSError as error:
                self.failed(sock, error)
                continue
            except BaseException:
                sock.close()
                raise
            yield sock, target

    def failed(self, sock: socket.socket, error: OSError) -> None:
        """`sock` could not connect: closed, and its error kept."""
        sock.close()
        self.failures.append(error)

    @contextmanager
    def connecting(self, sock: socket.socket) -> Iterator[_Connect]:
        """Around the connect of `sock`: an OSError is its target's failure
        (kept, and ``.connected`` stays False, so the caller tries the next
        target); anything else closes `sock` and goes on."""
        attempt = _Connect()
        try:
            yield attempt
        except OSError as error:
            self.failed(sock, error)
            return
        except BaseException:
            sock.close()
            raise
        attempt.connected = True

    def error(self) -> OSError:
        return every_address_failed(self._function, self._address, self.failures)


def every_address_failed(
    function: str, address: Address | None, failures: list[OSError]
) -> OSError:
    """The error when no target could be connected: the only failure
    itself, or one naming them all."""
    if len(failures) == 1:
        return failures[0]
    return OSError(f"{function}: every address of {address!r} failed: {failures!r}")
