"""Small real peers for the integration tests: an origin server that records
what reached it, and helpers to read a connection's mark."""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field

SO_MARK = 36  # asm-generic/socket.h; socket.SO_MARK exists from Python 3.12


def socket_mark(sock: socket.socket) -> int:
    return sock.getsockopt(socket.SOL_SOCKET, SO_MARK)


@dataclass
class Arrival:
    peer: tuple[object, ...]
    local: tuple[object, ...]
    mark: int
    request: bytes


@dataclass
class Origin:
    """A TCP server on `address` that answers each connection's first line
    with b"origin <line>" and records every arrival."""

    address: tuple[object, ...]
    family: int = socket.AF_INET
    arrivals: list[Arrival] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.listener = socket.socket(self.family, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(self.address)
        self.listener.listen()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, peer = self.listener.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                request = conn.makefile("rb").readline()
                self.arrivals.append(Arrival(peer, conn.getsockname(), socket_mark(conn), request))
                conn.sendall(b"origin " + request)

    def close(self) -> None:
        self.listener.close()


def exchange(sock: socket.socket, line: bytes) -> bytes:
    """Send one line, return the whole answer."""
    sock.sendall(line)
    sock.shutdown(socket.SHUT_WR)
    chunks = []
    while chunk := sock.recv(4096):
        chunks.append(chunk)
    return b"".join(chunks)
