"""wfpredirect.aio on the real kernel: start_redirect_server hands each
connection's RedirectInfo to the callback, open_upstream carries the records,
on asyncio's own loop and on uvloop."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

import wfpredirect
from netns import run_in_netns
from record_format import decode
from rules import redirect
from servers import Origin
from support import unavailable
from wfpredirect import NotRedirectedError, RedirectInfo
from wfpredirect.aio import open_upstream, start_redirect_server

IPV4_RULES = redirect("ip", "127.0.0.2", 8080, 15001)
# The origin's accepted socket shows the mark of the upstream's SYN.
FWMARK_ACCEPT = {"net.ipv4.tcp_fwmark_accept": "1"}


def event_loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if name == "uvloop":
        try:
            import uvloop
        except ImportError:
            unavailable("uvloop is not installed (.ci/run installs it)")
        return uvloop.new_event_loop  # type: ignore[no-any-return]
    return asyncio.new_event_loop


def run(main: Callable[[], Any], loop_name: str) -> Any:
    loop = event_loop_factory(loop_name)()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: bytes
) -> bytes:
    writer.write(line)
    writer.write_eof()
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    return answer


LOOPS = ["asyncio", "uvloop"]


@pytest.mark.parametrize("loop_name", LOOPS)
def test_callback_gets_the_redirect_and_the_upstream_reaches_the_origin(loop_name: str) -> None:
    async def main() -> dict[str, object]:
        origin = Origin(("127.0.0.2", 8080))
        seen: list[RedirectInfo] = []
        answers: list[bytes] = []

        async def relay(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, info: RedirectInfo
        ) -> None:
            seen.append(info)
            line = await reader.readline()
            if info.original_destination is not None:
                up_reader, up_writer = await open_upstream(info)
                answers.append(await exchange(up_reader, up_writer, line))
            writer.close()

        server = await start_redirect_server(relay, "127.0.0.1", 15001)
        for target in (("127.0.0.2", 8080), ("127.0.0.1", 15001)):
            reader, writer = await asyncio.open_connection(*target)
            writer.write(b"hello\n")
            await reader.read()
            writer.close()
        server.close()
        await server.wait_closed()
        origin.close()
        redirected, direct = seen
        return {
            "redirected": (
                decode(redirected.records) if redirected.records else None,
                redirected.context,
                redirected.original_destination,
            ),
            "direct": direct,
            "answers": answers,
            "origin_marks": [arrival.mark for arrival in origin.arrivals],
        }

    result = run_in_netns(lambda: run(main, loop_name), nft_rules=IPV4_RULES, sysctls=FWMARK_ACCEPT)
    assert result == {
        "redirected": (
            {"destination": ("127.0.0.2", 8080), "mark": 0, "transparent": False},
            None,
            ("127.0.0.2", 8080),
        ),
        "direct": RedirectInfo(None, None, None),
        "answers": [b"origin hello\n"],
        "origin_marks": [wfpredirect.LOOP_MARK],
    }


@pytest.mark.parametrize("loop_name", LOOPS)
def test_without_the_records_the_upstream_comes_back_into_the_server(loop_name: str) -> None:
    """The upstream without the records is redirected back into the server,
    which recognises its own upstream and refuses it (one log line) instead
    of handing it to the callback."""

    async def main() -> dict[str, object]:
        seen: list[object] = []
        refused: list[str] = []
        came_back = asyncio.Event()

        class Collect(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                refused.append(record.getMessage())
                came_back.set()

        logging.getLogger("wfpredirect.aio").addHandler(Collect())

        async def relay(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, info: RedirectInfo
        ) -> None:
            seen.append(info.original_destination)
            # The original destination, but none of the records.
            await open_upstream(info._replace(records=None))

        server = await start_redirect_server(relay, "127.0.0.1", 15001)
        await asyncio.open_connection("127.0.0.2", 8080)
        await asyncio.wait_for(came_back.wait(), 10)
        server.close()
        return {"seen": seen, "refused": [re.sub(r"port \d+", "port N", m) for m in refused]}

    assert run_in_netns(lambda: run(main, loop_name), nft_rules=IPV4_RULES) == {
        "seen": [("127.0.0.2", 8080)],
        "refused": [
            "refused 127.0.0.1 port N: the proxy's own upstream connection came back: the "
            "redirect rule does not skip the loop mark 0x40 (or the upstream carried no "
            "records): put "
            "`meta mark & 0x40 == 0x40 return` (nft) or "
            "`iptables -t nat -I OUTPUT -m mark --mark 0x40/0x40 -j RETURN` (iptables) before it"
        ],
    }


def test_ipv6_and_the_loop_mark_keywords() -> None:
    async def main() -> dict[str, object]:
        origin = Origin(("::1", 8080), family=socket.AF_INET6)
        infos: list[RedirectInfo] = []
        answers: list[bytes] = []

        async def relay(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, info: RedirectInfo
        ) -> None:
            infos.append(info)
            up_reader, up_writer = await open_upstream(info, loop_mark=0x80, mark_mask=0xF0)
            answers.append(await exchange(up_reader, up_writer, await reader.readline()))
            writer.close()

        server = await start_redirect_server(relay, "::1", 15001)
        reader, writer = await asyncio.open_connection("::1", 8080)
        writer.write(b"six\n")
        await reader.read()
        server.close()
        origin.close()
        return {
            "destination": infos[0].original_destination,
            "answers": answers,
            "origin_marks": [arrival.mark for arrival in origin.arrivals],
        }

    # The rule skips the 0x80 mark that the upstream carries.
    rules = redirect("ip6", "::1", 8080, 15001, loop_mark=0x80)
    assert run_in_netns(lambda: run(main, "asyncio"), nft_rules=rules, sysctls=FWMARK_ACCEPT) == {
        "destination": ("::1", 8080, 0, 0),
        "answers": [b"origin six\n"],
        "origin_marks": [0x80],
    }


def test_open_upstream_needs_a_destination() -> None:
    async def main() -> object:
        try:
            await open_upstream(RedirectInfo(None, None, None))
        except NotRedirectedError as error:
            return (error.errno, str(error))
        return None

    assert run(main, "asyncio") == (
        2,
        "[Errno 2] open_upstream: the connection was not redirected and no address was given",
    )


def test_open_upstream_to_an_address_without_records() -> None:
    async def main() -> dict[str, object]:
        origin = Origin(("127.0.0.3", 8080))
        reader, writer = await open_upstream(
            RedirectInfo(None, None, None),
            address=("127.0.0.3", 8080),
            local_addr=("127.0.0.4", 0),
        )
        answer = await exchange(reader, writer, b"plain\n")
        origin.close()
        arrival = origin.arrivals[0]
        return {"answer": answer, "peer_host": arrival.peer[0], "mark": arrival.mark}

    assert run_in_netns(lambda: run(main, "asyncio")) == {
        "answer": b"origin plain\n",
        "peer_host": "127.0.0.4",
        "mark": 0,
    }


def test_open_upstream_and_create_upstream_take_an_ipv6_4_tuple() -> None:
    """(host, port, flowinfo, scope_id), as the socket module gives IPv6
    addresses, is an address both upstream calls take."""

    async def main() -> dict[str, object]:
        origin = Origin(("::1", 8080), socket.AF_INET6)
        reader, writer = await open_upstream(
            RedirectInfo(None, None, None), address=("::1", 8080, 0, 0)
        )
        answer = await exchange(reader, writer, b"aio\n")
        with wfpredirect.RedirectSocket(socket.AF_INET6) as listener:
            listener.bind(("::1", 0))
            listener.listen()
            client = socket.create_connection(listener.getsockname()[:2], timeout=5)
            accepted, _ = listener.accept()
            with client, accepted, accepted.create_upstream(("::1", 8080, 0, 0)) as upstream:
                upstream.sendall(b"sync\n")
                synchronous = upstream.recv(100)
        origin.close()
        return {"aio": answer, "sync": synchronous, "families": upstream.family}

    assert run_in_netns(lambda: run(main, "asyncio")) == {
        "aio": b"origin aio\n",
        "sync": b"origin sync\n",
        "families": socket.AF_INET6,
    }


def test_open_upstream_wants_a_redirect_info() -> None:
    async def main() -> str:
        try:
            await open_upstream(("127.0.0.2", 8080))  # type: ignore[arg-type]
        except TypeError as error:
            return str(error)
        return "no error"

    assert run(main, "asyncio") == (
        "open_upstream: redirect must be a RedirectInfo (the third argument of the "
        "start_redirect_server callback), not tuple"
    )


def test_a_connection_to_a_tproxy_listener_itself_is_not_redirected() -> None:
    """Every connection on an IP_TRANSPARENT listener looks redirected; the
    server knows its listening address and reports one addressed to it as
    not redirected."""
    from test_original_destination import listen
    from test_tproxy import TPROXY_RULES

    async def main() -> list[RedirectInfo]:
        seen: list[RedirectInfo] = []
        listener = listen(socket.AF_INET, ("0.0.0.0", 15001), transparent=True)

        def connected(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, info: RedirectInfo
        ) -> None:
            seen.append(info)
            writer.close()

        server = await start_redirect_server(connected, sock=listener)
        for target in (("127.0.0.2", 8080), ("127.0.0.1", 15001)):
            reader, writer = await asyncio.open_connection(*target)
            await reader.read()  # until the callback closes it
            writer.close()
        server.close()
        return [
            info._replace(records=decode(info.records) if info.records else None) for info in seen
        ]

    def body() -> list[RedirectInfo]:
        subprocess.run(["ip", "rule", "add", "fwmark", "1", "lookup", "100"], check=True)
        subprocess.run(
            ["ip", "route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", "100"], check=True
        )
        return run(main, "asyncio")  # type: ignore[no-any-return]

    assert run_in_netns(body, nft_rules=TPROXY_RULES) == [
        RedirectInfo(
            {"destination": ("127.0.0.2", 8080), "mark": 0, "transparent": True},
            None,
            ("127.0.0.2", 8080),
        ),
        RedirectInfo(None, None, None),
    ]
