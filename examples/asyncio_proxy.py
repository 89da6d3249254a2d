"""The transparent proxy on asyncio: each redirected connection is relayed
to its original destination by an upstream connection that carries its
redirect records.

Usage: python asyncio_proxy.py [PORT]     (default 15001)
"""

import asyncio
import sys

from wfpredirect.aio import open_upstream, start_redirect_server


async def pipe(reader, writer):
    """Copy one direction until end of stream, then pass the half-close on."""
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.write_eof()


async def handle(reader, writer, redirect):
    if redirect.original_destination is None:  # not redirected: refuse
        writer.close()
        return
    upstream_reader, upstream_writer = await open_upstream(redirect)
    await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))
    writer.close()
    upstream_writer.close()


async def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 15001
    server = await start_redirect_server(handle, "127.0.0.1", port)
    print(f"listening on 127.0.0.1 port {port}", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
