"""TPROXY: the original destination of a connection accepted on an
IP_TRANSPARENT socket is its local address; a connection to the listener
itself is not redirected; the upstream with records reaches the origin."""

from __future__ import annotations

import socket
import subprocess

import wfpredirect
from netns import run_in_netns
from record_format import decode
from servers import Origin, exchange
from test_original_destination import listen

# The transparent proxy's own upstream carries LOOP_MARK (0x40) and skips the
# rule; everything else for 127.0.0.2:8080 is diverted to the listener.
TPROXY_RULES = """table ip wfpr_tproxy {
  chain pre {
    type filter hook prerouting priority mangle;
    meta mark & 0x40 == 0x40 return
    ip daddr 127.0.0.2 tcp dport 8080 tproxy to :15001 meta mark set 1 accept
  }
}
"""


def test_tproxy_connection() -> None:
    def body() -> dict[str, object]:
        subprocess.run(["ip", "rule", "add", "fwmark", "1", "lookup", "100"], check=True)
        subprocess.run(
            ["ip", "route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", "100"], check=True
        )
        origin = Origin(("127.0.0.2", 8080))
        listener = listen(socket.AF_INET, ("0.0.0.0", 15001), transparent=True)

        socket.create_connection(("127.0.0.2", 8080), timeout=5)
        conn, _ = listener.accept()
        records = conn.redirect_records
        upstream = conn.create_upstream(timeout=5)
        answer = exchange(upstream, b"tproxy\n")

        socket.create_connection(("127.0.0.1", 15001), timeout=5)
        direct, _ = listener.accept()
        try:
            wfpredirect.original_destination(listener)
            listening: object = "no error"
        except wfpredirect.NotRedirectedError as error:
            listening = (error.errno, str(error))
        return {
            "destination": conn.original_destination,
            "native": wfpredirect.original_destination(conn),
            "record": decode(records) if records is not None else None,
            "answer": answer,
            "origin": len(origin.arrivals),
            "direct": (
                direct.original_destination,
                direct.redirect_records,
                direct.redirect_context,
            ),
            "direct_native": wfpredirect.original_destination(direct),
            "listening": listening,
        }

    result = run_in_netns(body, nft_rules=TPROXY_RULES)
    assert result == {
        "destination": ("127.0.0.2", 8080),
        "native": ("127.0.0.2", 8080),
        "record": {"destination": ("127.0.0.2", 8080), "mark": 0, "transparent": True},
        "answer": b"origin tproxy\n",
        "origin": 1,
        "direct": (None, None, None),
        # The native call cannot know the listener: a transparent socket's
        # local address is its original destination.
        "direct_native": ("127.0.0.1", 15001),
        "listening": (
            107,
            "[Errno 107] original_destination: the connection was not redirected: "
            "getpeername: the socket is not connected",
        ),
    }
