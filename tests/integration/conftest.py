"""The integration tests drive the netfilter backend on the real Linux
kernel (network namespaces, nft): elsewhere they skip, saying so."""

from __future__ import annotations

from pathlib import Path

import pytest

from support import linux_only

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.resolve().parents:
            item.add_marker(linux_only)
