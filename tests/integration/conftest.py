"""The integration tests drive the netfilter backend on the real Linux
kernel (network namespaces, nft): elsewhere they skip, saying so."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import linux_only

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.resolve().parents:
            item.add_marker(linux_only)


@pytest.fixture
def datagram_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """(receiver, sender) UDP sockets on 127.0.0.1; the receiver waits at most 5 s."""
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    sender.bind(("127.0.0.1", 0))
    receiver.settimeout(5)
    yield receiver, sender
    receiver.close()
    sender.close()
