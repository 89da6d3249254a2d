"""README's links into the repository (the documentation pages, files)
lead somewhere: Sphinx checks the pages' own links, but README is not built
whole."""

from __future__ import annotations

import re

from support import project_file


def test_every_local_link_of_the_readme_exists() -> None:
    readme = project_file("README.md")
    text = readme.read_text(encoding="utf-8")
    targets = [
        target
        for target in re.findall(r"\]\(([^)\s]+)\)", text)
        if not target.startswith(("http://", "https://", "#"))
    ]
    assert "docs/tutorial.md" in targets
    missing = [
        target for target in targets if not (readme.parent / target.split("#", 1)[0]).exists()
    ]
    assert missing == []


def test_every_anchor_of_the_readme_is_a_heading() -> None:
    text = project_file("README.md").read_text(encoding="utf-8")
    anchors = set(re.findall(r"\]\(#([^)\s]+)\)", text))
    headings = {
        re.sub(r"[^\w\- ]", "", heading).strip().lower().replace(" ", "-")
        for heading in re.findall(r"(?m)^#+ (.+)$", text)
    }
    assert anchors and anchors <= headings
