"""The facade's one backend choice: what differs between the netfilter,
winsock and unsupported backends is written once per backend, in
_backend_netfilter, _backend_winsock and _backend_unsupported, which offer
the same functions; this module picks one by ``_core.BACKEND``. Nothing else
in the facade asks which backend it runs on.

Each backend module has:

- ``doctor_checks() -> list[Finding]``: the doctor's findings;
- ``run_demo(keep_running) -> int``: ``wfpredirect demo``;
- ``proxy_problem(loop_mark, mark_mask, udp, transparent) -> str``: why
  ``wfpredirect proxy`` cannot start with these settings ("" when it can);
- ``transparent_listener(host, port, reuse_port=False) -> socket``: a TCP
  socket bound with IP_TRANSPARENT, for a TPROXY rule (``proxy
  --transparent``), with SO_REUSEPORT too for ``--workers``;
- ``make_transparent(sock, function)``: IP_TRANSPARENT on a new upstream
  socket before it binds a client's (non-local) address (``open_upstream(...,
  transparent=True)``, ``proxy --keep-client-address``; Linux only);
- ``prepare_reply_socket(sock)``: ready a new UDP socket to bind to a
  datagram's original destination (``datagram_reply_socket``; Linux only);
- ``missing_exemption(loop_mark) -> str``: what a redirect that sent an
  upstream connection back lacks;
- ``relay_paths``: the proxy's relay paths this platform has (_relay), the
  first the one ``--relay auto`` picks;
- ``open_splice_pipe() -> SplicePipe | None``: a pipe for the splice
  path's zero-copy relay (None: the path copies through a buffer);
- ``workers_problem(workers) -> str``: why ``proxy --workers`` cannot run
  that many processes here ("" when it can);
- ``start_worker(work) -> int``: a new process (its pid) that runs
  ``work()`` and exits with its status, and that ends with this process
  (``--workers``);
- ``watch_parent(parent)``: in a worker, SIGTERM when process `parent`
  ends (again after a change of user, which clears it on Linux); nothing
  where there are no workers;
- ``reset_on_close(sock)``: SO_LINGER with a zero timeout on `sock` (a
  socket, or an asyncio transport's), so that closing it sends a reset
  instead of an end of stream; nothing when the socket is gone (the proxy
  passes a broken or cut connection on this way);
- ``hold_signals(signums, held)``: block (`held`) or unblock the signals
  `signums` in this thread, a blocked one staying pending (``--workers``
  holds the stop signals around each fork, so that a worker has them
  held until it has its handlers; nothing where there are no workers);
- ``raise_descriptor_limit() -> int``: the descriptors this process may
  open, its soft limit raised to the hard one first where there is one
  (Windows has none: a nominal figure, docs/service.md);
- ``privileges_problem(user) -> str``: why this process cannot become
  `user` (``proxy --user``; "" when it can, or there is none);
- ``keep_privileges(transparent, user, relaying=True, binding=False)``:
  before the sockets are bound (and before any other thread starts), keep
  only the capabilities relaying needs, with `binding` CAP_NET_BIND_SERVICE
  as well until ``end_binding()``, and become `user`; when not `relaying`
  (a ``--workers`` parent), what a worker starts with, as this user; what is kept and who runs, as
  (capabilities, user name), or None when nothing was dropped (Linux only;
  nothing elsewhere);
- ``end_binding()``: the sockets are bound: drop what `binding` held.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ._core import BACKEND

if TYPE_CHECKING:
    from .cli._doctor import Finding


class SplicePipe(Protocol):
    """A non-blocking pipe that moves a socket's bytes without copying
    them through user space (os.splice)."""

    #: How many bytes it holds.
    capacity: int

    def fill(self, fd: int, size: int) -> int:
        """Up to `size` bytes from socket `fd` into the pipe: how many (0 at
        end of stream); BlockingIOError when none can move now."""
        ...

    def drain(self, fd: int, size: int) -> int:
        """Up to `size` bytes from the pipe into socket `fd`: how many."""
        ...

    def close(self) -> None: ...


class Backend(Protocol):
    relay_paths: tuple[str, ...]

    def doctor_checks(self) -> list[Finding]: ...
    def run_demo(self, keep_running: bool) -> int: ...
    def proxy_problem(
        self, loop_mark: int | None, mark_mask: int | None, udp: bool, transparent: bool
    ) -> str: ...
    def transparent_listener(
        self, host: str, port: int, reuse_port: bool = False
    ) -> socket.socket: ...
    def make_transparent(self, sock: socket.socket, function: str) -> None: ...
    def prepare_reply_socket(self, sock: socket.socket) -> None: ...
    def missing_exemption(self, loop_mark: int) -> str: ...
    def open_splice_pipe(self) -> SplicePipe | None: ...
    def workers_problem(self, workers: int) -> str: ...
    def start_worker(self, work: Callable[[], int]) -> int: ...
    def watch_parent(self, parent: int) -> None: ...
    def hold_signals(self, signums: tuple[int, ...], held: bool) -> None: ...
    def reset_on_close(self, sock: Any) -> None: ...
    def raise_descriptor_limit(self) -> int: ...
    def privileges_problem(self, user: str | None) -> str: ...
    def keep_privileges(
        self, transparent: bool, user: str | None, relaying: bool = True, binding: bool = False
    ) -> tuple[str, str] | None: ...
    def end_binding(self) -> None: ...


def _chosen() -> Backend:
    if BACKEND == "netfilter":
        from . import _backend_netfilter

        return _backend_netfilter
    if BACKEND == "winsock":
        from . import _backend_winsock

        return _backend_winsock
    from . import _backend_unsupported

    return _backend_unsupported


backend: Backend = _chosen()
