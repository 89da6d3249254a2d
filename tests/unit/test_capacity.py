"""The caps derived from the descriptor limit (docs/service.md, "Descriptors
and capacity"), and the refusal when the ones given cannot fit."""

from __future__ import annotations

import pytest

from wfpredirect.cli._capacity import Capacity, plan


@pytest.mark.parametrize(
    ("limit", "relay", "udp", "given", "expected"),
    [
        # (1024 - 64 - 2 * 32) // 2 on the native relay: its two sockets a
        # connection, its pool of 32 pipes in the reserve; connections take
        # everything without --udp.
        (1024, "native", False, (None, None), (448, 0, 32)),
        (1024, "streams", False, (None, None), (480, 0, 0)),
        # A quarter of 896 for flows, the rest (672) for connections.
        (1024, "native", True, (None, None), (336, 224, 32)),
        (1024, "protocol", True, (None, None), (360, 240, 0)),
        (20000, "native", False, (None, None), (9936, 0, 32)),
        (20000, "native", True, (None, None), (7452, 4968, 32)),
        # One given: the other takes what it leaves.
        (1024, "native", True, (100, None), (100, 696, 32)),
        (1024, "native", True, (None, 800), (48, 800, 32)),
        (1024, "native", True, (100, 360), (100, 360, 32)),
        # Without --udp a flow cap means nothing.
        (1024, "native", False, (160, 5000), (160, 0, 32)),
    ],
)
def test_the_caps(
    limit: int,
    relay: str,
    udp: bool,
    given: tuple[int | None, int | None],
    expected: tuple[int, int, int],
) -> None:
    assert plan(limit, relay, udp, *given) == Capacity(limit, *expected)


@pytest.mark.parametrize(
    ("limit", "relay", "udp", "given", "line"),
    [
        (
            1024,
            "native",
            False,
            (1000, None),
            "--max-connections 1000 needs 2128 descriptors (2 a connection on the native "
            "relay, 64 for its pool of 32 pipes, 64 for the listeners and logging), and this "
            "process may open 1024: raise the limit (`ulimit -n 2128` in the shell that starts "
            "it, LimitNOFILE=2128 in a systemd unit) or lower --max-connections",
        ),
        (
            1024,
            "native",
            True,
            (448, None),
            "--max-connections 448 needs at least 1025 descriptors (2 a connection on the "
            "native relay, 64 for its pool of 32 pipes, 1 a udp flow, 64 for the listeners "
            "and logging), and this process may open 1024: raise the limit (`ulimit -n 1025` "
            "in the shell that starts it, LimitNOFILE=1025 in a systemd unit) or lower "
            "--max-connections",
        ),
        (
            1024,
            "streams",
            True,
            (100, 800),
            "--max-connections 100 and --max-udp-flows 800 need 1064 descriptors (2 a "
            "connection on the streams relay, 1 a udp flow, 64 for the listeners and "
            "logging), and this process may open 1024: raise the limit (`ulimit -n 1064` in "
            "the shell that starts it, LimitNOFILE=1064 in a systemd unit) or lower "
            "--max-connections and --max-udp-flows",
        ),
        (
            64,
            "native",
            False,
            (None, None),
            "the proxy needs at least 130 descriptors (2 a connection on the native relay, "
            "64 for its pool of 32 pipes, 64 for the listeners and logging), and this "
            "process may open 64: raise the limit (`ulimit -n 130` in the shell that starts "
            "it, LimitNOFILE=130 in a systemd unit)",
        ),
    ],
)
def test_caps_that_cannot_fit_are_refused(
    limit: int, relay: str, udp: bool, given: tuple[int | None, int | None], line: str
) -> None:
    with pytest.raises(ValueError) as refused:
        plan(limit, relay, udp, *given)
    assert str(refused.value) == line
