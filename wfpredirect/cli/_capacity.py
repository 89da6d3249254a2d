"""How many connections and UDP flows one proxy process can hold at once,
from its descriptor limit (docs/service.md, "Descriptors and capacity").

A connection that could not get a descriptor would fail half-way (accept,
connect or a native relay's pipe answering EMFILE); a cap below the limit makes the
proxy pause accepting instead, and drop new UDP flows, while every held
connection keeps what it needs. HAProxy derives its maxconn from the limit
the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Descriptors one relayed connection holds at most, by relay path: its two
#: sockets. The native relay's pipes are the engine's pool, taken only while
#: bytes are in flight (csrc/core/netfilter/relay_engine.hpp): counted once,
#: in the reserve.
DESCRIPTORS_PER_CONNECTION = {"native": 2, "protocol": 2, "streams": 2}
#: The native relay's pipe pool (max_pipes of its RelaySettings): a
#: direction streaming faster than its destination reads holds one while
#: bytes are in it; with every one in use the others copy through the
#: engine's buffer. HAProxy's maxpipes is a quarter of maxconn; one thread
#: rarely has more than a few directions stalled at once.
PIPE_POOL = 32
DESCRIPTORS_PER_PIPE = 2
#: A UDP flow holds its upstream socket (its reply socket, when it has one,
#: is opened for each answer and closed at once).
DESCRIPTORS_PER_FLOW = 1
#: Kept aside for what is not a connection: the listeners, the UDP socket,
#: standard streams, the event loop's epoll and wake-up pipe, a worker's
#: channel, the Python modules being read.
RESERVED_DESCRIPTORS = 64
#: With --udp, the flows' share of what is left: a quarter (UDP_SHARE
#: parts of 4), the rest for connections.
UDP_SHARE = 1
SHARES = 4


@dataclass(frozen=True)
class Capacity:
    #: The descriptor limit the numbers come from.
    limit: int
    connections: int
    flows: int
    #: The native relay's pipe pool (0 on the other paths).
    pipes: int


def pool_pipes(relay: str) -> int:
    """The pipes relay path `relay` keeps in a pool (PIPE_POOL on native)."""
    return PIPE_POOL if relay == "native" else 0


def plan(
    limit: int,
    relay: str,
    udp: bool,
    max_connections: int | None,
    max_udp_flows: int | None,
) -> Capacity:
    """The caps for a process allowed `limit` descriptors on relay path
    `relay`: each one given is kept, each other derived from what is left
    (without `udp`, no flows); ValueError (the line to print) when they
    cannot fit."""
    per_connection = DESCRIPTORS_PER_CONNECTION[relay]
    pipes = pool_pipes(relay)
    reserved = RESERVED_DESCRIPTORS + pipes * DESCRIPTORS_PER_PIPE
    available = limit - reserved
    if not udp:
        max_udp_flows = 0
    connections, flows = max_connections, max_udp_flows
    if connections is None and flows is None:
        flows = available * UDP_SHARE // SHARES // DESCRIPTORS_PER_FLOW if udp else 0
    if connections is None:
        assert flows is not None
        connections = (available - flows * DESCRIPTORS_PER_FLOW) // per_connection
    if flows is None:
        flows = (available - connections * per_connection) // DESCRIPTORS_PER_FLOW
    used = connections * per_connection + flows * DESCRIPTORS_PER_FLOW
    if connections >= 1 and (flows >= 1 or not udp) and used <= available:
        return Capacity(limit, connections, flows, pipes)
    # The least that would do: what was asked for, and one of what was not.
    least = max_connections or 1, max_udp_flows if max_udp_flows is not None else 1
    need = reserved + least[0] * per_connection + least[1] * DESCRIPTORS_PER_FLOW
    given = [
        f"{flag} {value}"
        for flag, value in (
            ("--max-connections", max_connections),
            ("--max-udp-flows", max_udp_flows),
        )
        if value
    ]
    per = f"{per_connection} a connection on the {relay} relay"
    if pipes:
        per += f", {pipes * DESCRIPTORS_PER_PIPE} for its pool of {pipes} pipes"
    if udp:
        per += f", {DESCRIPTORS_PER_FLOW} a udp flow"
    raise ValueError(
        f"{' and '.join(given) or 'the proxy'} {'need' if len(given) > 1 else 'needs'} "
        f"{'' if max_connections and max_udp_flows is not None else 'at least '}{need} "
        f"descriptors ({per}, {RESERVED_DESCRIPTORS} for the listeners and logging), and "
        f"this process may open {limit}: raise the limit (`ulimit -n {need}` in the shell "
        f"that starts it, LimitNOFILE={need} in a systemd unit)"
        + (f" or lower {' and '.join(flag.split()[0] for flag in given)}" if given else "")
    )
