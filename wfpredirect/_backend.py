"""The library's one backend choice: what differs between the netfilter,
winsock and unsupported backends is written once per backend, in
_backend_netfilter, _backend_winsock and _backend_unsupported, which offer
the same functions; this module picks one by ``_core.BACKEND``. Nothing else
in the library asks which backend it runs on. (What the command line does
its own way per platform is its own seam: cli/_platform.py.)

Each backend module has:

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
- ``reset_on_close(sock)``: SO_LINGER with a zero timeout on `sock` (a
  socket, or an asyncio transport's), so that closing it sends a reset
  instead of an end of stream; nothing when the socket is gone (the proxy
  passes a broken or cut connection on this way).
"""

from __future__ import annotations

import socket
from typing import Any, Protocol

from ._core import BACKEND


class Backend(Protocol):
    def transparent_listener(
        self, host: str, port: int, reuse_port: bool = False
    ) -> socket.socket: ...
    def make_transparent(self, sock: socket.socket, function: str) -> None: ...
    def prepare_reply_socket(self, sock: socket.socket) -> None: ...
    def missing_exemption(self, loop_mark: int) -> str: ...
    def reset_on_close(self, sock: Any) -> None: ...


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
