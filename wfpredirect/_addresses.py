"""Addresses as the socket module gives them, and the one rule about them
every redirect query applies: a connection addressed to the proxy's own
listening address was not redirected."""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Sequence
from typing import Any, cast

from ._errors import NotRedirectedError

#: (host, port) for IPv4, (host, port, flowinfo, scope_id) for IPv6: the
#: socket module's address tuples.
Address = tuple[str, int] | tuple[str, int, int, int]


def host_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The address of `host` without its scope, an IPv4-mapped IPv6 host
    (a dual-stack socket's IPv4 peer, ::ffff:a.b.c.d) as the IPv4 address."""
    ip = ipaddress.ip_address(host.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        return ip.ipv4_mapped
    return ip


def _same_host(listener_host: str, host: str) -> bool:
    listener_ip = host_ip(listener_host)
    return listener_ip.is_unspecified or listener_ip == host_ip(host)


def is_listener_address(listener: Address | None, address: Address) -> bool:
    """Whether `address` is where `listener` accepts (a wildcard listener
    accepts on every address of its port)."""
    if listener is None:
        return False
    return listener[1] == address[1] and _same_host(listener[0], address[0])


def any_listener_address(listeners: Sequence[Address | None], address: Address) -> bool:
    """Whether `address` is where one of `listeners` accepts (the rule
    query_redirect_info applies to its `listening_addresses`)."""
    return bool(listeners) and any(is_listener_address(listener, address) for listener in listeners)


def original_target(destination: Address | None, function: str) -> tuple[int, Address]:
    """(family, address) of an upstream to the original destination;
    NotRedirectedError naming `function` when there is none."""
    if destination is None:
        raise NotRedirectedError(
            errno.ENOENT,
            f"{function}: the connection was not redirected and no address was given",
        )
    return (socket.AF_INET if len(destination) == 2 else socket.AF_INET6, destination)


def resolved_targets(infos: Sequence[tuple[Any, ...]]) -> list[tuple[int, Address]]:
    """(family, address) of each IPv4 or IPv6 answer of getaddrinfo, in its order."""
    return [
        (info[0], cast(Address, info[4]))
        for info in infos
        if info[0] in (socket.AF_INET, socket.AF_INET6)
    ]
