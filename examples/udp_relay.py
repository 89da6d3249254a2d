"""A transparent UDP relay: each redirected flow goes on to where its client
meant to send, carrying the flow's redirect records, and the answers come
back from that address.

Usage: python udp_relay.py [PORT]     (default 15353)
"""

import asyncio
import sys

from wfpredirect.aio import RedirectDatagramProtocol, create_redirect_datagram_endpoint


async def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 15353
    # Where the TPROXY rule (Linux) or the WFP driver (Windows) sends flows.
    # The default protocol relays both ways; override its datagram_received
    # and upstream_datagram_received to inspect or change the data.
    endpoint, _ = await create_redirect_datagram_endpoint(
        RedirectDatagramProtocol, ("0.0.0.0", port), idle_timeout=30
    )
    print(f"relaying udp on 0.0.0.0 port {port}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        endpoint.close()


if __name__ == "__main__":
    asyncio.run(main())
