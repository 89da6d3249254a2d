"""One Wine prefix for the whole run, shared by the conformance program and
the Windows lane, stopped with `wineserver -k` at the end."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import windows_lane
from support import require_tool


@pytest.fixture(scope="session")
def wine_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    require_tool("wine")
    require_tool("wineserver")
    environment = windows_lane.create_prefix(tmp_path_factory.mktemp("wine") / "prefix")
    yield environment
    windows_lane.stop_prefix(environment)
