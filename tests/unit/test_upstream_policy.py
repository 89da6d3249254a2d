"""The one upstream policy of RedirectSocket.create_upstream and
wfpredirect.aio.open_upstream: both refuse an upstream to a listening
address of this process's redirect servers (errno ELOOP), whichever kind of
server it is, and connect there again once that server is closed. Plain
loopback sockets; no redirect needed."""

from __future__ import annotations

import asyncio
import errno
import socket

import pytest

from wfpredirect import RedirectError, RedirectInfo, RedirectSocket
from wfpredirect.aio import open_upstream, start_redirect_server

NOT_REDIRECTED = RedirectInfo(None, None, None)


def loop_message(function: str, address: tuple[str, int]) -> str:
    return (
        f"[Errno {errno.ELOOP}] {function}: refusing to connect to {address[0]}:{address[1]}, "
        "the proxy's own listening address (a redirect loop)"
    )


def accepted_pair(listener: RedirectSocket) -> tuple[socket.socket, RedirectSocket]:
    client = socket.create_connection(listener.getsockname()[:2], timeout=5)
    accepted, _ = listener.accept()
    return client, accepted


def test_open_upstream_refuses_a_redirect_server_s_listening_address() -> None:
    async def main() -> dict[str, object]:
        server = await start_redirect_server(lambda r, w, i: w.close(), "127.0.0.1", 0)
        address = server.sockets[0].getsockname()[:2]
        with pytest.raises(RedirectError) as refused:
            await open_upstream(NOT_REDIRECTED, address=address)
        server.close()
        await server.wait_closed()
        # Closed, it is an address like any other: nothing listens there now.
        with pytest.raises(ConnectionRefusedError):
            await open_upstream(NOT_REDIRECTED, address=address)
        return {"errno": refused.value.errno, "message": str(refused.value), "address": address}

    result = asyncio.run(main())
    assert (result["errno"], result["message"]) == (
        errno.ELOOP,
        loop_message("open_upstream", result["address"]),  # type: ignore[arg-type]
    )


def test_create_upstream_refuses_an_asyncio_redirect_server_s_address() -> None:
    async def main() -> tuple[str, tuple[str, int]]:
        server = await start_redirect_server(lambda r, w, i: w.close(), "127.0.0.1", 0)
        address = server.sockets[0].getsockname()[:2]
        with RedirectSocket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            client, accepted = accepted_pair(listener)
            with client, accepted, pytest.raises(RedirectError) as refused:
                accepted.create_upstream(address, timeout=5)
        server.close()
        await server.wait_closed()
        return str(refused.value), address

    message, address = asyncio.run(main())
    assert message == loop_message("create_upstream", address)


def test_open_upstream_refuses_a_redirect_socket_listener_s_address() -> None:
    with RedirectSocket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        address = listener.getsockname()[:2]
        client, accepted = accepted_pair(listener)  # the first accept makes it known
        with client, accepted:
            with pytest.raises(RedirectError) as own:
                accepted.create_upstream(address, timeout=5)
            with pytest.raises(RedirectError) as refused:
                asyncio.run(open_upstream(NOT_REDIRECTED, address=address))
    assert (str(own.value), str(refused.value)) == (
        loop_message("create_upstream", address),
        loop_message("open_upstream", address),
    )
    with pytest.raises(ConnectionRefusedError):
        asyncio.run(open_upstream(NOT_REDIRECTED, address=address))


def test_the_upstream_has_tcp_nodelay() -> None:
    """asyncio sets TCP_NODELAY on a stream socket made with IPPROTO_TCP;
    open_upstream's socket is one (one made with protocol 0 was left with
    Nagle's algorithm)."""

    async def main() -> int:
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        address = server.sockets[0].getsockname()[:2]
        _, writer = await open_upstream(NOT_REDIRECTED, address=address)
        nodelay = writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        writer.close()
        server.close()
        await server.wait_closed()
        return int(nodelay)

    assert asyncio.run(main()) != 0
