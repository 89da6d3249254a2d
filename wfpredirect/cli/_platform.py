"""The command line's one platform choice: what the proxy, its workers, the
doctor and the demo do their own way per backend is written once per
backend, in _platform_netfilter, _platform_winsock and
_platform_unsupported, which offer the same functions; this module picks one
by ``_core.BACKEND``, as the library's _backend does for its own (the
library's seam: transparent listeners, IP_TRANSPARENT, reply sockets, the
loop's words, resets).

Each platform module has:

- ``relay_paths``: the proxy's relay paths this platform has (_relay), the
  first the one ``--relay auto`` picks;
- ``doctor_checks() -> list[Finding]``: the doctor's findings;
- ``run_demo(keep_running) -> int``: ``wfpredirect demo``;
- ``proxy_problem(loop_mark, mark_mask, udp, transparent) -> str``: why
  ``wfpredirect proxy`` cannot start with these settings ("" when it can);
- ``workers_problem(workers) -> str``: why ``proxy --workers`` cannot run
  that many processes here ("" when it can);
- ``start_worker(work) -> int``: a new process (its pid) that runs
  ``work()`` and exits with its status, and that ends with this process
  (``--workers``);
- ``watch_parent(parent)``: in a worker, SIGTERM when process `parent`
  ends (again after a change of user, which clears it on Linux); nothing
  where there are no workers;
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

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from .._core import BACKEND
from . import _platform_netfilter, _platform_unsupported, _platform_winsock

if TYPE_CHECKING:
    from ._doctor import Finding


class Platform(Protocol):
    relay_paths: tuple[str, ...]

    def doctor_checks(self) -> list[Finding]: ...
    def run_demo(self, keep_running: bool) -> int: ...
    def proxy_problem(
        self, loop_mark: int | None, mark_mask: int | None, udp: bool, transparent: bool
    ) -> str: ...
    def workers_problem(self, workers: int) -> str: ...
    def start_worker(self, work: Callable[[], int]) -> int: ...
    def watch_parent(self, parent: int) -> None: ...
    def hold_signals(self, signums: tuple[int, ...], held: bool) -> None: ...
    def raise_descriptor_limit(self) -> int: ...
    def privileges_problem(self, user: str | None) -> str: ...
    def keep_privileges(
        self, transparent: bool, user: str | None, relaying: bool = True, binding: bool = False
    ) -> tuple[str, str] | None: ...
    def end_binding(self) -> None: ...


#: Each backend's platform module (typed: each is checked against Platform).
_BY_BACKEND: dict[str, Platform] = {
    "netfilter": _platform_netfilter,
    "winsock": _platform_winsock,
    "unsupported": _platform_unsupported,
}
this_platform = _BY_BACKEND[BACKEND]
