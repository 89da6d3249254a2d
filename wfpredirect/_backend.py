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
- ``transparent_listener(host, port) -> socket``: a TCP socket bound with
  IP_TRANSPARENT, for a TPROXY rule (``proxy --transparent``);
- ``prepare_reply_socket(sock)``: ready a new UDP socket to bind to a
  datagram's original destination (``datagram_reply_socket``; Linux only);
- ``missing_exemption(loop_mark) -> str``: what a redirect that sent an
  upstream connection back lacks.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Protocol

from ._core import BACKEND

if TYPE_CHECKING:
    from ._doctor import Finding


class Backend(Protocol):
    def doctor_checks(self) -> list[Finding]: ...
    def run_demo(self, keep_running: bool) -> int: ...
    def proxy_problem(
        self, loop_mark: int | None, mark_mask: int | None, udp: bool, transparent: bool
    ) -> str: ...
    def transparent_listener(self, host: str, port: int) -> socket.socket: ...
    def prepare_reply_socket(self, sock: socket.socket) -> None: ...
    def missing_exemption(self, loop_mark: int) -> str: ...


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
