"""The nft table of one capture, as text for libnftables.

One ``inet`` table (IPv4 and IPv6) whose every chain starts with the loop
exemption: a connection or datagram carrying the loop mark is the proxy's
own upstream and passes. Then:

- TCP: nat REDIRECT to the proxy's port, in the output hook (locally
  originated connections) and, with an interface, in prerouting for what
  arrives on it (a gateway).
- UDP: TPROXY to the proxy's port in prerouting, setting the route mark;
  the policy route of that mark (see _capture_routes) delivers it locally.
  Locally originated datagrams reach prerouting through the loopback
  interface: the output hook sets the route mark on them, which reroutes a
  datagram for another host onto ``lo`` too.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._capture_targets import CaptureTarget

# nft priorities: nat at dstnat (-100) and filter/route at mangle (-150), as
# the nft manual (8), "CHAINS", lists them.
NAT_PRIORITY = -100
MANGLE_PRIORITY = -150
LOOPBACK = "lo"
#: The chains a capture's table may have; a table with UDP_PREROUTING holds
#: UDP targets (and so needs the policy route).
TCP_OUTPUT = "tcp_output"
TCP_PREROUTING = "tcp_prerouting"
UDP_OUTPUT = "udp_output"
UDP_PREROUTING = "udp_prerouting"


@dataclass(frozen=True)
class CaptureSettings:
    """What one capture's table does (checked by Capture before it gets here)."""

    targets: tuple[CaptureTarget, ...]
    tcp_port: int | None
    udp_port: int | None
    loop_mark: int
    route_mark: int
    interface: str | None


def _match(target: CaptureTarget) -> str:
    family = "ip" if target.version == 4 else "ip6"
    if target.network.prefixlen == 0:
        match = f"meta nfproto {'ipv4' if target.version == 4 else 'ipv6'}"
    elif target.network.num_addresses == 1:
        match = f"{family} daddr {target.network.network_address}"
    else:
        match = f"{family} daddr {target.network}"
    if not target.ports:
        return f"{match} meta l4proto {target.protocol}"
    ports = ", ".join(str(low) if low == high else f"{low}-{high}" for low, high in target.ports)
    if len(target.ports) > 1:
        ports = f"{{ {ports} }}"
    return f"{match} {target.protocol} dport {ports}"


def _chain(name: str, hook: str, kind: str, priority: int, rules: list[str], mark: int) -> str:
    body = "\n".join(f"    {rule}" for rule in rules)
    return (
        f"  chain {name} {{\n"
        f"    type {kind} hook {hook} priority {priority}; policy accept;\n"
        f"    meta mark & {mark:#x} == {mark:#x} return\n"
        f"{body}\n"
        "  }\n"
    )


def _interfaces(settings: CaptureSettings, also_loopback: bool) -> str:
    names = [LOOPBACK] if also_loopback else []
    if settings.interface is not None:
        names.append(settings.interface)
    return "iifname { " + ", ".join(f'"{name}"' for name in names) + " }"


def table_text(name: str, settings: CaptureSettings, owner: bool) -> str:
    """The commands creating table `name` (``flags owner`` when `owner`)."""
    tcp = [target for target in settings.targets if target.protocol == "tcp"]
    udp = [target for target in settings.targets if target.protocol == "udp"]
    chains = []
    mark = settings.loop_mark
    if tcp:
        redirect = [f"{_match(t)} redirect to :{settings.tcp_port}" for t in tcp]
        chains.append(_chain(TCP_OUTPUT, "output", "nat", NAT_PRIORITY, redirect, mark))
        if settings.interface is not None:
            arriving = [f"{_interfaces(settings, False)} {rule}" for rule in redirect]
            chains.append(_chain(TCP_PREROUTING, "prerouting", "nat", NAT_PRIORITY, arriving, mark))
    if udp:
        route = settings.route_mark
        rerouted = [f"{_match(t)} meta mark set meta mark | {route:#x}" for t in udp]
        chains.append(_chain(UDP_OUTPUT, "output", "route", MANGLE_PRIORITY, rerouted, mark))
        diverted = [
            f"{_interfaces(settings, True)} {_match(t)} tproxy "
            f"{'ip' if t.version == 4 else 'ip6'} to :{settings.udp_port} "
            f"meta mark set meta mark | {route:#x} accept"
            for t in udp
        ]
        chains.append(
            _chain(UDP_PREROUTING, "prerouting", "filter", MANGLE_PRIORITY, diverted, mark)
        )
    flags = "  flags owner\n" if owner else ""
    return f"table inet {name} {{\n{flags}{''.join(chains)}}}\n"
