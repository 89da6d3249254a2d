"""What a capture sends to the proxy: a protocol, a network, ports; and the
text form of the command line, ``[tcp:|udp:]ADDRESS[/PREFIX][:PORTS]``."""

from __future__ import annotations

import ipaddress
import string
from dataclasses import dataclass
from typing import Literal

Protocol = Literal["tcp", "udp"]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
PROTOCOLS: tuple[Protocol, ...] = ("tcp", "udp")
MAX_PORT = 65535
SPEC_FORMAT = "[tcp:|udp:]ADDRESS[/PREFIX][:PORTS]"


@dataclass(frozen=True)
class CaptureTarget:
    """Traffic to capture: `protocol` to `network`, to `ports` (inclusive
    ranges; empty for every port)."""

    protocol: Protocol
    network: Network
    ports: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol {self.protocol!r} is not 'tcp' or 'udp'")
        if not isinstance(self.network, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
            raise TypeError(f"network must be an ipaddress network, not {self.network!r}")
        for low, high in self.ports:
            if not 1 <= low <= high <= MAX_PORT:
                raise ValueError(f"port range {low}-{high} is not within 1-{MAX_PORT}")

    @property
    def version(self) -> int:
        return self.network.version

    @classmethod
    def parse(cls, spec: str) -> CaptureTarget:
        """A target from its text form: ``tcp:127.0.0.2:8080``,
        ``tcp:0.0.0.0/0:80,443``, ``tcp:[::1]:8080``, ``udp:127.0.0.3:5353``
        (tcp when the protocol is left out). ValueError saying what is wrong."""
        try:
            return _parse(spec)
        except ValueError as error:
            raise ValueError(f"capture {spec!r}: {error} (the form is {SPEC_FORMAT})") from None

    def __str__(self) -> str:
        address = str(self.network.network_address)
        if self.version == 6:
            address = f"[{address}]"
        text = f"{self.protocol}:{address}"
        if self.network.num_addresses > 1:
            text += f"/{self.network.prefixlen}"
        if self.ports:
            text += ":" + ",".join(
                str(low) if low == high else f"{low}-{high}" for low, high in self.ports
            )
        return text


def _parse(spec: str) -> CaptureTarget:
    protocol: Protocol = "tcp"
    rest = spec
    for name in PROTOCOLS:
        if spec.startswith(f"{name}:"):
            protocol, rest = name, spec[len(name) + 1 :]
    head, colon, _ = rest.partition(":")
    # A word that no address starts with (IPv6 starts with hex digits).
    if colon and head.isalpha() and not all(c in string.hexdigits for c in head):
        raise ValueError(f"{head!r} is neither tcp, udp nor an address")
    if rest.startswith("["):
        address, bracket, after = rest[1:].partition("]")
        if not bracket:
            raise ValueError("no ']' after the IPv6 address")
        if ":" not in address:
            raise ValueError(f"{address!r} in brackets is not an IPv6 address")
        prefix, colon, ports_text = after.partition(":")
        if prefix and not prefix.startswith("/"):
            raise ValueError(f"{prefix!r} after the address")
        network_text = address + prefix
    else:
        if rest.count(":") > 1:
            raise ValueError("an IPv6 address goes in brackets, as in [::1]:8080")
        network_text, colon, ports_text = rest.partition(":")
    if not network_text:
        raise ValueError("no address")
    try:
        network = ipaddress.ip_network(network_text)
    except ValueError as error:
        raise ValueError(str(error)) from None
    ports = _parse_ports(ports_text) if colon else ()
    return CaptureTarget(protocol, network, ports)


def _parse_ports(text: str) -> tuple[tuple[int, int], ...]:
    ranges = []
    for item in text.split(","):
        low_text, dash, high_text = item.partition("-")
        bounds = [low_text, high_text] if dash else [low_text]
        if not all(bound.isdigit() and bound.isascii() for bound in bounds):
            raise ValueError(f"{item!r} is not a port or a range N-M")
        low, high = int(bounds[0]), int(bounds[-1])
        if not 1 <= low <= MAX_PORT or not 1 <= high <= MAX_PORT:
            raise ValueError(f"port {item!r} is not within 1-{MAX_PORT}")
        if low > high:
            raise ValueError(f"range {item!r} ends before it starts")
        ranges.append((low, high))
    return tuple(ranges)
