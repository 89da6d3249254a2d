"""The lines ``wfpredirect proxy`` prints, and the patterns that read them
back: one home for both, so that the demo, the tests and the benchmarks
read what the proxy writes.

Each ``*_line`` function makes one line; each upper-case pattern matches
that whole line (``fullmatch``), with named groups for its fields.
"""

from __future__ import annotations

import re

_ADDRESS = r"\S+"
_SECONDS = r"\d+\.\d{3}"


def listening_line(host: str, port: int) -> str:
    return f"listening on {host} port {port}"


LISTENING = re.compile(r"listening on (?P<host>\S+) port (?P<port>\d+)")


def listening_udp_line(host: str, port: int) -> str:
    return f"listening for udp on {host} port {port}"


LISTENING_UDP = re.compile(r"listening for udp on (?P<host>\S+) port (?P<port>\d+)")


def relayed_line(client: str, target: str, up: int, down: int, seconds: float, outcome: str) -> str:
    """A relayed connection, when it ends: `outcome` is "closed", "cut at
    shutdown", "timed out ..." or "ended by ..."."""
    return f"{client} -> {target}: {up} bytes up, {down} bytes down, {seconds:.3f} s, {outcome}"


RELAYED = re.compile(
    rf"(?P<client>{_ADDRESS}) -> (?P<target>{_ADDRESS}): (?P<up>\d+) bytes up, "
    rf"(?P<down>\d+) bytes down, (?P<seconds>{_SECONDS}) s, (?P<outcome>.+)"
)


def refused_line(client: str) -> str:
    return f"refused {client}: not redirected (addressed to the proxy itself)"


REFUSED = re.compile(rf"refused (?P<client>{_ADDRESS}): not redirected \(.+\)")


def failed_line(client: str, target: str, reason: str) -> str:
    return f"failed {client} -> {target}: cannot connect upstream: {reason}"


FAILED = re.compile(
    rf"failed (?P<client>{_ADDRESS}) -> (?P<target>{_ADDRESS}): cannot connect upstream: "
    r"(?P<reason>.+)"
)


def udp_flow_line(client: str, target: str, up: int, down: int, seconds: float) -> str:
    """A relayed UDP flow, when it ends."""
    return f"udp {client} -> {target}: {up} bytes up, {down} bytes down, {seconds:.3f} s"


UDP_FLOW = re.compile(
    rf"udp (?P<client>{_ADDRESS}) -> (?P<target>{_ADDRESS}): (?P<up>\d+) bytes up, "
    rf"(?P<down>\d+) bytes down, (?P<seconds>{_SECONDS}) s"
)


def udp_refused_line(client: str) -> str:
    return f"refused udp {client}: not redirected"


UDP_REFUSED = re.compile(rf"refused udp (?P<client>{_ADDRESS}): not redirected")


def udp_error_line(error: OSError) -> str:
    return f"udp error: {error}"


def totals_text(
    open_: int, relayed: int, refused: int, failed: int, bytes_up: int, bytes_down: int
) -> str:
    """The totals the summary and the stop line share."""
    return (
        f"{open_} open, {relayed} relayed, {refused} refused, {failed} failed, "
        f"{bytes_up} bytes up, {bytes_down} bytes down"
    )


_TOTALS = (
    r"(?P<open>\d+) open, (?P<relayed>\d+) relayed, (?P<refused>\d+) refused, "
    r"(?P<failed>\d+) failed, (?P<up>\d+) bytes up, (?P<down>\d+) bytes down"
)


def summary_line(totals: str, rate: float) -> str:
    return f"summary: {totals}, {rate:.0f} bytes/s"


SUMMARY = re.compile(rf"summary: {_TOTALS}, (?P<rate>\d+) bytes/s")


def stopping_line(open_connections: int, grace: float) -> str:
    return f"stopping: {open_connections} open connections get {grace:g} s"


STOPPING = re.compile(r"stopping: (?P<open>\d+) open connections get (?P<grace>\S+) s")


def stopped_line(seconds: float, totals: str) -> str:
    return f"stopped after {seconds:.1f} s: {totals}"


STOPPED = re.compile(rf"stopped after (?P<seconds>\d+\.\d) s: {_TOTALS}")
