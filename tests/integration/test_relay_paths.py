"""The Python relay paths' own mechanics on real sockets, below the proxy's
command line: TCP_NODELAY on the upstream of every path."""

from __future__ import annotations

import importlib.util
import signal
import socket
import threading

import pytest

from netns import run_in_netns
from rules import redirect
from support import unavailable
from wfpredirect.cli import _relay
from wfpredirect.cli._relay_protocol import ProtocolConnection
from wfpredirect.cli._relay_streams import StreamConnection

RULES = redirect("ip", "127.0.0.2", 8080, 15001)


def upstream_socket(connection: object) -> socket.socket:
    """The upstream socket of a connection on any relay path."""
    if isinstance(connection, ProtocolConnection):
        assert connection.upstream.transport is not None
        return connection.upstream.transport.get_extra_info("socket")  # type: ignore[no-any-return]
    assert isinstance(connection, StreamConnection) and connection.upstream is not None
    return connection.upstream[1].get_extra_info("socket")  # type: ignore[no-any-return]


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
# The native path's sockets are the engine's, out of a Python hook's reach:
# test_relay_native.py sees its TCP_NODELAY in the system calls.
@pytest.mark.parametrize("path", [path for path in _relay.RELAY_PATHS if path != "native"])
def test_every_upstream_gets_tcp_nodelay(path: str, loop: str) -> None:
    """Like the client side, the upstream sends each write at once (no
    Nagle delay on a small answer's second segment), on every Python path."""
    if loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        unavailable("uvloop is not installed (.ci/run installs it)")
    from wfpredirect.cli import _proxy

    def body() -> dict[str, object]:
        seen: dict[str, object] = {}
        origin = socket.create_server(("127.0.0.2", 8080))

        def answer() -> None:
            connection, _ = origin.accept()
            with connection:
                connection.sendall(connection.recv(100))

        class Recording(_proxy.Proxy):
            async def _relay(self, connection: _relay.Connection, redirect: object) -> None:
                opened = connection.open_upstream

                async def open_and_look(**marks: object) -> None:
                    await opened(redirect, **marks)  # type: ignore[arg-type]
                    sock = upstream_socket(connection)
                    seen["nodelay"] = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)

                connection.open_upstream = lambda _, **marks: open_and_look(**marks)  # type: ignore[method-assign]
                await super()._relay(connection, redirect)  # type: ignore[arg-type]

        listening = threading.Event()

        def say(line: str) -> None:  # the proxy's lines, in this process
            if line.startswith("listening on "):
                listening.set()

        _proxy.say = say  # (in the namespace's fork only)

        def client() -> None:
            assert listening.wait(10)
            with socket.create_connection(("127.0.0.2", 8080), timeout=10) as sock:
                sock.sendall(b"ping")
                seen["answer"] = sock.recv(100)
            signal.raise_signal(signal.SIGTERM)

        threads = [threading.Thread(target=answer), threading.Thread(target=client)]
        for thread in threads:
            thread.start()
        settings = _proxy.ProxySettings("127.0.0.1", 15001, relay=path, loop=loop)
        settings.summary_interval = 0
        _proxy._runner(loop)(Recording(settings).run())
        for thread in threads:
            thread.join(10)
        origin.close()
        return seen

    assert run_in_netns(body, nft_rules=RULES) == {"nodelay": 1, "answer": b"ping"}
