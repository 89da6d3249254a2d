"""create_redirect_datagram_endpoint's idle_timeout and max_flows are
checked before anything is made: a bad value is an error naming it."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from wfpredirect.aio import RedirectDatagramProtocol, create_redirect_datagram_endpoint


def endpoint_error(**options: Any) -> tuple[str, str]:
    """The error that create_redirect_datagram_endpoint raises with
    `options`, given a socket that it must leave open."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        with pytest.raises((ValueError, TypeError)) as raised:
            asyncio.run(
                create_redirect_datagram_endpoint(RedirectDatagramProtocol, sock=sock, **options)
            )
        assert sock.fileno() != -1  # nothing was done with it
    finally:
        sock.close()
    return type(raised.value).__name__, str(raised.value)


@pytest.mark.parametrize(
    "idle_timeout", [float("nan"), float("inf"), float("-inf"), 0, -1, 1e-9, 0.099]
)
def test_idle_timeout_must_be_finite_and_at_least_a_tenth_of_a_second(
    idle_timeout: float,
) -> None:
    assert endpoint_error(idle_timeout=idle_timeout) == (
        "ValueError",
        "create_redirect_datagram_endpoint: idle_timeout must be a finite number of seconds, "
        f"at least 0.1 (got {idle_timeout!r})",
    )


@pytest.mark.parametrize("idle_timeout", ["60", None, True])
def test_idle_timeout_must_be_a_number(idle_timeout: object) -> None:
    assert endpoint_error(idle_timeout=idle_timeout) == (
        "TypeError",
        "create_redirect_datagram_endpoint: idle_timeout must be a number of seconds, "
        f"not {type(idle_timeout).__name__}",
    )


@pytest.mark.parametrize("max_flows", [0, -1])
def test_max_flows_must_be_at_least_one(max_flows: int) -> None:
    assert endpoint_error(max_flows=max_flows) == (
        "ValueError",
        f"create_redirect_datagram_endpoint: max_flows must be at least 1 (got {max_flows})",
    )


@pytest.mark.parametrize("max_flows", [1.5, "10", True])
def test_max_flows_must_be_an_int(max_flows: object) -> None:
    assert endpoint_error(max_flows=max_flows) == (
        "TypeError",
        "create_redirect_datagram_endpoint: max_flows must be an int or None, "
        f"not {type(max_flows).__name__}",
    )
