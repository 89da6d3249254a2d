"""The processes bench_proxy.py runs besides the reference proxy: the origin
and a relay written with the standard library only.

  python proxy_peers.py origin HOST PORT [PORT...]
      For each connection: read one line holding a byte count N, send N
      bytes, close.
  python proxy_peers.py stdlib-relay HOST PORT
      The reference proxy's work (wfpredirect/cli/_proxy.py) with the stdlib:
      the original destination from getsockopt(SO_ORIGINAL_DST) and struct,
      the inbound mark from getsockopt(SO_MARK), the upstream mark set with
      setsockopt(SO_MARK) before connecting, the same copy loop with
      back-pressure and half-close, one line per connection.

Each prints "ready" once it listens.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import sys
import time

CHUNK_SIZE = 65536  # the reference proxy's
SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h
SO_MARK = 36  # asm-generic/socket.h
LOOP_MARK = 0x40  # the package's defaults
MARK_MASK = 0xF0
PAYLOAD = bytes(CHUNK_SIZE)


async def serve_origin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        remaining = int(await reader.readline())
        while remaining > 0:
            piece = PAYLOAD[: min(remaining, CHUNK_SIZE)]
            writer.write(piece)
            await writer.drain()
            remaining -= len(piece)
        writer.close()
    except (OSError, ValueError):
        writer.transport.abort()


async def copy(source: asyncio.StreamReader, destination: asyncio.StreamWriter) -> int:
    moved = 0
    while data := await source.read(CHUNK_SIZE):
        destination.write(data)
        await destination.drain()
        moved += len(data)
    if destination.can_write_eof():
        destination.write_eof()
    return moved


async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    started = time.monotonic()
    client = writer.get_extra_info("socket")
    raw = client.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port, packed = struct.unpack_from("!2xH4s", raw)
    destination = (socket.inet_ntoa(packed), port)
    mark = client.getsockopt(socket.SOL_SOCKET, SO_MARK)
    upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    upstream.setblocking(False)
    upstream.setsockopt(socket.SOL_SOCKET, SO_MARK, (mark & MARK_MASK) | LOOP_MARK)
    await asyncio.get_running_loop().sock_connect(upstream, destination)
    upstream_reader, upstream_writer = await asyncio.open_connection(sock=upstream)
    up, down = await asyncio.gather(copy(reader, upstream_writer), copy(upstream_reader, writer))
    writer.close()
    upstream_writer.close()
    peer = writer.get_extra_info("peername")
    print(
        f"{peer[0]}:{peer[1]} -> {destination[0]}:{destination[1]}: {up} bytes up, "
        f"{down} bytes down, {time.monotonic() - started:.3f} s, closed",
        flush=True,
    )


async def main(role: str, host: str, ports: list[int]) -> None:
    handler = serve_origin if role == "origin" else relay
    servers = [await asyncio.start_server(handler, host, port, backlog=1024) for port in ports]
    print("ready", flush=True)
    await asyncio.gather(*(server.serve_forever() for server in servers))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], [int(port) for port in sys.argv[3:]]))
