"""The package's import graph, read from its source with ast: which module
imports which, at module level and inside functions alike (an import that
runs late still runs), leaving out ``if TYPE_CHECKING:`` blocks (the type
checker's alone). tests/unit/test_layers.py holds the package to it.

Run it for the figures (docs/design.md, "Layers"):

    python tests/import_graph.py [PACKAGE_FOLDER]

PACKAGE_FOLDER is this checkout's wfpredirect/ unless given (another
checkout's, to compare: its modules count as the application's where this
checkout's wfpredirect/cli/ has one of their name).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

#: The entry points of the library: what a proxy author imports.
LIBRARY_ENTRIES = ("wfpredirect", "wfpredirect.aio")
#: The application's folder, and the root's one module of it (``python -m
#: wfpredirect``, which only calls into the folder).
APPLICATION_PACKAGE = "wfpredirect.cli"
APPLICATION_ENTRY = "wfpredirect.__main__"


def module_files(package: Path) -> dict[str, Path]:
    """Every module of the package folder by its dotted name; a stub with no
    source (the native _core) stands for its compiled module."""
    modules: dict[str, Path] = {}
    for path in sorted([*package.rglob("*.py"), *package.rglob("*.pyi")]):
        if "__pycache__" in path.parts:
            continue
        parts = [package.name, *path.relative_to(package).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules.setdefault(".".join(parts), path)
    return modules


def is_package(path: Path) -> bool:
    return path.stem == "__init__"


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(nodes: Iterable[ast.AST]) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement under `nodes`, but not in ``if TYPE_CHECKING:``."""
    for node in nodes:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and _type_checking(node.test):
            yield from _import_nodes(node.orelse)
        else:
            yield from _import_nodes(ast.iter_child_nodes(node))


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:end]) for end in range(1, len(parts))]


def _imported(module: str, path: Path, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The dotted names `node` in `module` loads (known or not)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        package = module if is_package(path) else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{node.module}" if node.module else package
    else:
        base = node.module or ""
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


def imports(package: Path) -> dict[str, set[str]]:
    """Each module of `package` and the package's modules it imports. A
    ``from X import name`` counts X when `name` is not a module of X (it
    reads X's __init__ for it, even a package the importer is inside), and
    an imported module's parent packages count where the importer is not
    already inside them (they are loaded first)."""
    files = module_files(package)
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        found: set[str] = set()
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in _import_nodes(tree.body):
            names = _imported(module, path, node)
            if isinstance(node, ast.ImportFrom):
                base, members = names[0], names[1:]
                named = [member for member in members if member in files]
                names = named if len(named) == len(members) else [base, *named]
            inside = _ancestors(module)
            for name in names:
                found.update(name for name in _ancestors(name) if name not in inside)
                found.add(name)
        found &= files.keys()
        found.discard(module)
        graph[module] = found
    return graph


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The import cycles: each group of modules that reach one another
    (a strongly connected component of more than one module, or one that
    imports itself), biggest first."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(module: str) -> None:  # Tarjan's algorithm
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in sorted(graph[module]):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            group = set()
            while True:
                member = stack.pop()
                group.add(member)
                if member == module:
                    break
            if len(group) > 1 or module in graph[module]:
                found.append(group)

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return sorted(found, key=lambda group: (-len(group), sorted(group)))


def reached(graph: dict[str, set[str]], starts: Iterable[str]) -> set[str]:
    """Every module that importing `starts` loads, `starts` included."""
    seen: set[str] = set()
    waiting = [start for start in starts if start in graph]
    while waiting:
        module = waiting.pop()
        if module not in seen:
            seen.add(module)
            waiting.extend(graph[module])
    return seen


def application_names(package: Path) -> set[str]:
    """The application's module names (the last part) in `package`: its
    folder's, and the root's entry (``__main__``)."""
    folder = package / APPLICATION_PACKAGE.rpartition(".")[2]
    return {path.stem for path in folder.glob("*.py")} | {APPLICATION_ENTRY.rpartition(".")[2]}


def is_application(module: str, names: set[str]) -> bool:
    """Whether `module` is the application's: in its folder, or named as one
    of its modules `names` are (for a tree from before the folder)."""
    in_folder = module == APPLICATION_PACKAGE or module.startswith(APPLICATION_PACKAGE + ".")
    return in_folder or module.rpartition(".")[2] in names


def figures(package: Path, layout: Path) -> list[str]:
    """The graph's figures as lines: modules, imports, cycles, and what the
    library's entry points load, and of that how much is the application's
    (its modules as `layout`, a package folder, names them)."""
    graph = imports(package)
    found = cycles(graph)
    library = reached(graph, LIBRARY_ENTRIES)
    names = application_names(layout)
    application = sorted(module for module in library if is_application(module, names))
    lines = [
        f"modules: {len(graph)}",
        f"imports (module -> module): {sum(len(targets) for targets in graph.values())}",
        f"cycles: {len(found)}"
        + (f" (of {', '.join(str(len(group)) for group in found)} modules)" if found else ""),
    ]
    lines += [f"  cycle: {' '.join(sorted(group))}" for group in found]
    lines.append(f"modules that import wfpredirect and wfpredirect.aio load: {len(library)}")
    lines.append(f"  {' '.join(sorted(library))}")
    lines.append(f"of them the application's: {len(application)}")
    lines += [f"  {' '.join(application)}"] if application else []
    return lines


def main(arguments: list[str]) -> int:
    here = Path(__file__).resolve().parents[1] / "wfpredirect"
    package = Path(arguments[0]).resolve() if arguments else here
    print("\n".join(figures(package, here)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
