"""The import graph of genbench and genbench_baselines has no cycles.

Edges are read with :mod:`ast` from every ``import`` statement: at module level, inside
functions and under ``if TYPE_CHECKING:`` alike (an annotation-only import is still a
dependency). ``from package import name`` is an edge to the submodule when ``name`` is
one, else to the package. A parent package's ``__init__``, which Python runs implicitly
before a submodule, is not an edge: every package that re-exports its submodules would
otherwise be a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"genbench": ROOT / "genbench", "genbench_baselines": ROOT / "baselines"}


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for both packages."""
    found: dict[str, Path] = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth."""
    return [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]


def _owner(name: str, known: dict[str, Path]) -> str | None:
    """The longest known module that ``name`` lies in (None: outside both packages)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def _targets(module: str, node: ast.Import | ast.ImportFrom, known: dict[str, Path]) -> set[str]:
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = module.split(".")
            if known[module].name != "__init__.py":
                package = package[:-1]
            package = package[: len(package) - node.level + 1]
            base = ".".join([*package, *([node.module] if node.module else [])])
        names = [
            f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
            for alias in node.names
        ]
    return {t for n in names if (t := _owner(n, known)) and t != module}


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {
        module: {
            target
            for node in _imports(ast.parse(path.read_text(encoding="utf-8")))
            for target in _targets(module, node, known)
        }
        for module, path in known.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if start in state:
            continue
        path, iters = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while path:
            nxt = next(iters[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                iters.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                iters.append(iter(sorted(graph[nxt])))
    return None


def test_graph_sees_the_packages() -> None:
    graph = import_graph()
    assert "genbench.cli" in graph and "genbench_baselines.dcgan" in graph
    assert "genbench.contract" in graph["genbench_baselines.dcgan"]


def test_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])
