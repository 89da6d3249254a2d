"""The layout's promises about itself: every citation of the design
document resolves to text that is there, and every file a source or test
names exists.

Reads the project's own folders (the checkout, or the unpacked sdist the
Windows lane runs from), never what lies around them.
"""

from __future__ import annotations

import re
from pathlib import Path

from support import project_file

# The folders whose files cite the design and name other files.
SOURCES = ("csrc", "wfpredirect", "tests", "benchmarks", "docs", "examples")
TEXT_SUFFIXES = {".cpp", ".hpp", ".c", ".py", ".pyi", ".md", ".toml", ".yml"}

# A citation: docs/design.md, then optionally "," or ":" and a quoted
# section title or phrase (which may wrap over comment lines).
CITATION = re.compile(r'docs/design\.md(?:\'s)?[,:]?\s+"([^"]+)"')
# The design the project had before it held its own (spelled in two parts,
# so that this file does not cite it).
OUTSIDE_DESIGN = "DESIGN" + ".md"
# Where a comment wraps: the next line's comment leader.
COMMENT_WRAP = re.compile(r"\s*\n\s*(?://|#:?|\*(?!/))?\s*")
# A file named in a source: a path or a bare name with a source suffix.
FILE_NAME = re.compile(r"(?<![\w./-])((?:[\w-]+/)*[\w-]+\.(?:cpp|hpp|pyi|py|c|md))\b")
# Files a test writes itself, which the repository does not hold.
WRITTEN_BY_TESTS = {
    # test_layers.py's made package.
    *(f"wfpredirect/{name}.py" for name in ("_a", "_b", "_c", "_d", "_e", "cli/_x")),
}


def project() -> Path:
    return project_file("pyproject.toml").parent


def source_files(root: Path) -> list[Path]:
    found = []
    for folder in SOURCES:
        for path in sorted((root / folder).rglob("*")):
            if path.suffix in TEXT_SUFFIXES and "__pycache__" not in path.parts:
                found.append(path)
    return [*found, root / "setup.py"]


def flattened(text: str) -> str:
    """The text with comment lines joined, and spaces collapsed."""
    return re.sub(r"\s+", " ", COMMENT_WRAP.sub(" ", text))


def test_the_design_document_is_in_the_project() -> None:
    design = project() / "docs" / "design.md"
    assert design.is_file()
    assert design.read_text(encoding="utf-8").startswith("# wfpredirect: design\n")


def test_every_citation_of_the_design_resolves() -> None:
    root = project()
    design = flattened((root / "docs" / "design.md").read_text(encoding="utf-8"))
    unresolved = []
    cited = 0
    for path in source_files(root):
        text = path.read_text(encoding="utf-8")
        if OUTSIDE_DESIGN in text:
            unresolved.append(f"{path.relative_to(root)}: cites the design outside the project")
        for match in CITATION.finditer(flattened(text)):
            cited += 1
            if match.group(1) not in design:
                unresolved.append(f"{path.relative_to(root)}: {match.group(1)!r}")
    assert unresolved == []
    # The citations are there to be checked (a broken pattern finds none).
    assert cited >= 15


def test_every_file_a_source_names_exists() -> None:
    root = project()
    files = source_files(root)
    paths = {path.relative_to(root).as_posix() for path in files}
    paths |= {"README.md", "CHANGELOG.md", "setup.py", "pyproject.toml"}
    names = {path.rsplit("/", 1)[-1] for path in paths}
    missing = []
    for path in files:
        if path.name == "CHANGELOG.md":
            continue  # history names files as they were
        for match in FILE_NAME.finditer(path.read_text(encoding="utf-8")):
            name = match.group(1)
            if name in WRITTEN_BY_TESTS:
                continue
            if "/" in name:
                found = (
                    name in paths
                    or any(known.endswith("/" + name) for known in paths)
                    or (path.parent / name).exists()
                )
            else:
                found = name in names
            if not found:
                missing.append(f"{path.relative_to(root)}: {name}")
    assert missing == []
