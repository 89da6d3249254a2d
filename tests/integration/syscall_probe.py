"""One accepted connection's redirect calls, for test_connection_state.py
to run under strace inside its namespace: sets up the connection the
scenario names, then, between two getsockname calls on a marker socket,
makes exactly what a proxy makes per connection (query_redirect_info, then
the records on a new upstream socket when there are any): with `public`,
set_redirect_records on the caller's socket; with `library`, the library's
own upstream (wfpredirect._upstream.Attempts, as create_upstream,
open_upstream and the proxy make it). Prints the descriptors: accepted,
upstream, marker.

Usage: python syscall_probe.py redirect-ipv4|redirect-ipv6|tproxy|direct [public|library]
"""

from __future__ import annotations

import socket
import sys

import wfpredirect
from wfpredirect._upstream import Attempts

LISTEN_PORT = 15001
#: Where the scenarios' clients connect (the rules send it to LISTEN_PORT).
TARGETS = {
    "redirect-ipv4": (socket.AF_INET, "127.0.0.1", ("127.0.0.2", 8080)),
    "redirect-ipv6": (socket.AF_INET6, "::1", ("::1", 8080)),
    "tproxy": (socket.AF_INET, "0.0.0.0", ("127.0.0.2", 8080)),
    "direct": (socket.AF_INET, "127.0.0.1", ("127.0.0.1", LISTEN_PORT)),
}


def main(scenario: str, upstream_kind: str) -> None:
    family, host, target = TARGETS[scenario]
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if scenario == "tproxy":
        listener.setsockopt(socket.SOL_IP, socket.IP_TRANSPARENT, 1)
    listener.bind((host, LISTEN_PORT))
    listener.listen()
    client = socket.create_connection(target, timeout=5)
    accepted, _ = listener.accept()
    upstream = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    marker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    marker.getsockname()
    info = wfpredirect.query_redirect_info(accepted)
    if info.records is not None and upstream_kind == "library":
        attempts = Attempts(
            "open_upstream",
            info.original_destination,
            None,
            None,
            lambda: info.records,
            loop_mark=None,
            mark_mask=None,
            timeout=None,
            local_address=None,
        )
        own, _ = next(iter(attempts))
    elif info.records is not None:
        wfpredirect.set_redirect_records(upstream, info.records)
    marker.getsockname()
    if info.records is not None and upstream_kind == "library":
        upstream.close()
        upstream = own

    print(accepted.fileno(), upstream.fileno(), marker.fileno())
    for sock in (marker, upstream, accepted, client, listener):
        sock.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "public")
