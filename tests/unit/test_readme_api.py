"""The API reference's table (docs/api.md) names every public name, each
with where it works."""

from __future__ import annotations

import re

import wfpredirect
from support import project_file

AVAILABILITY = {"everywhere", "Windows, Linux", "Linux"}


def api_reference_rows() -> list[tuple[str, str]]:
    """(first cell, last cell) of each row of the API reference table."""
    text = project_file("docs/api.md").read_text(encoding="utf-8")
    assert "\n## Where each name works\n" in text, "docs/api.md lost its table"
    section = text.split("\n## Where each name works\n", 1)[1].split("\n#", 1)[0]
    rows = []
    for line in section.splitlines():
        if line.startswith("| `"):
            # Cells are separated by " | "; a "|" inside a cell is escaped.
            cells = line.strip("|").split(" | ")
            rows.append((cells[0], cells[-1].strip()))
    return rows


def test_every_public_name_is_documented_once() -> None:
    documented = [
        name
        for first_cell, _ in api_reference_rows()
        for name in re.findall(r"`([A-Za-z_]\w*)", first_cell)
    ]
    assert len(documented) == len(set(documented))
    # SO_ORIGINAL_DST is documented even where it is absent.
    assert set(documented) == set(wfpredirect.__all__) | {"SO_ORIGINAL_DST"}


def test_every_row_says_where_it_works() -> None:
    rows = api_reference_rows()
    assert rows
    assert {availability for _, availability in rows} <= AVAILABILITY
