"""genbench's layers: every import points down or sideways, and no import makes a cycle.

The layers, lowest first (docs/layout.md lists them with a line per module):
utils, contract and config, data, storage (the run folder and what it stores), models
(diffusion pieces and the built-in generators), train, metrics, runs, report, then the
entry points (api, cli, bench, ``genbench init``).

Edges are read with :mod:`ast` from every ``import`` statement: at module level, inside
functions and under ``if TYPE_CHECKING:`` alike (an annotation-only import is still a
dependency). ``from package import name`` is an edge to the submodule when ``name`` is
one, else to the package. Importing ``a.b.c`` also runs the ``__init__`` of ``a`` and of
``a.b``: those are edges too, except to the importer's own parent packages, which Python
has already run before the importer. The one package left out is the root ``genbench``: its
``__init__`` imports only ``genbench._version`` eagerly and resolves the public names
(the contract, the Python API) on first use, which ``test_root_package_is_light`` checks.
The plugin loader imports generators by entry point (``importlib``), which is no edge.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"genbench": ROOT / "genbench", "genbench_baselines": ROOT / "baselines"}
FACADE = "genbench"

#: Lowest first; a module belongs to the layer of its longest matching prefix.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("utils", ("genbench.utils", "genbench._version")),
    (
        "contract and config",
        ("genbench.contract", "genbench.registry", "genbench.metric_registry", "genbench.config"),
    ),
    ("data", ("genbench.data",)),
    ("storage", ("genbench.storage",)),
    ("models", ("genbench.diffusion", "genbench_baselines")),
    ("train", ("genbench.train",)),
    ("metrics", ("genbench.metrics",)),
    ("runs", ("genbench.runs",)),
    ("report", ("genbench.report",)),
    (
        "entry points",
        ("genbench.api", "genbench.cli", "genbench.bench", "genbench.project", "genbench.__main__"),
    ),
)


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


def _names(module: str, node: ast.Import | ast.ImportFrom, known: dict[str, Path]) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = module.split(".")
        if known[module].name != "__init__.py":
            package = package[:-1]
        package = package[: len(package) - node.level + 1]
        base = ".".join([*package, *([node.module] if node.module else [])])
    return [
        f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names
    ]


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:k]) for k in range(1, len(parts))]


def _targets(module: str, node: ast.Import | ast.ImportFrom, known: dict[str, Path]) -> set[str]:
    """What importing ``node`` runs: its module and the packages above it that ``module``'s
    own import has not already run."""
    out: set[str] = set()
    mine = {module, *_parents(module)}
    for name in _names(module, node, known):
        target = _owner(name, known)
        if target is None:
            continue
        out |= {p for p in [*_parents(target), target] if p in known and p not in mine}
    out.discard(FACADE)
    return out


def import_edges() -> dict[str, dict[str, int]]:
    """module -> {imported module: line of the first such import}."""
    known = modules()
    edges: dict[str, dict[str, int]] = {}
    for module, path in known.items():
        edges[module] = {}
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            for target in _targets(module, node, known):
                edges[module].setdefault(target, node.lineno)
    return edges


def import_graph() -> dict[str, set[str]]:
    return {m: set(ts) for m, ts in import_edges().items()}


def layer_of(module: str) -> int:
    if module == FACADE:  # the public names, resolved lazily: the top
        return len(LAYERS) - 1
    best: tuple[int, int] | None = None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and (best is None or len(p) > best[1]):
                best = (i, len(p))
    if best is None:
        raise AssertionError(f"{module} is in no layer: add it to tests/test_architecture.py")
    return best[0]


def upward_imports(edges: dict[str, dict[str, int]]) -> list[str]:
    """'file:line: a (layer) imports b (higher layer)' for every upward edge."""
    known = modules()
    out = []
    for module, targets in sorted(edges.items()):
        if module == FACADE:
            continue
        for target, line in sorted(targets.items()):
            low, high = layer_of(module), layer_of(target)
            if high > low:
                where = known[module].relative_to(ROOT) if module in known else module
                out.append(
                    f"{where}:{line}: {module} ({LAYERS[low][0]}) imports {target} "
                    f"({LAYERS[high][0]})"
                )
    return out


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
                iters.append(iter(sorted(graph.get(nxt, ()))))
    return None


def test_graph_sees_the_packages_and_their_init_files() -> None:
    graph = import_graph()
    assert "genbench.cli" in graph and "genbench_baselines.dcgan" in graph
    assert "genbench.contract" in graph["genbench_baselines.dcgan"]
    # importing genbench.diffusion.unet runs genbench/diffusion/__init__.py as well
    assert "genbench.diffusion" in graph["genbench_baselines.ddpm"]


def test_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_every_import_points_down_or_sideways() -> None:
    bad = upward_imports(import_edges())
    assert not bad, "imports from a higher layer:\n" + "\n".join(bad)


def test_a_planted_upward_import_is_reported_with_file_and_line() -> None:
    edges = import_edges()
    edges["genbench.storage.folder"] = {**edges["genbench.storage.folder"], "genbench.report": 7}
    assert upward_imports(edges) == [
        "genbench/storage/folder.py:7: genbench.storage.folder (storage) imports "
        "genbench.report (report)"
    ]


def test_a_function_level_import_is_an_edge() -> None:
    tree = ast.parse("def f():\n    from genbench.report import collect\n")
    (node,) = _imports(tree)
    assert _targets("genbench.storage.folder", node, modules()) == {
        "genbench.report",
        "genbench.report.collect",
    }


def test_root_package_is_light() -> None:
    """``import genbench.config`` runs genbench/__init__.py: it must not load torch or the API."""
    tree = ast.parse((PACKAGES["genbench"] / "__init__.py").read_text(encoding="utf-8"))
    eager = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert {n.module for n in eager if isinstance(n, ast.ImportFrom)} <= {
        "__future__",
        "typing",
        "genbench._version",
    }
    code = (
        "import sys, genbench.config as c\n"
        "c.ExperimentConfig.model_validate({'name': 'x', 'metrics': {'names': ['fid', 'kid']}})\n"
        "assert 'genbench.metric_registry' in sys.modules\n"
        "heavy = sorted(m for m in ('torch', 'torch_fidelity', 'genbench.api') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
        "import genbench\n"
        "assert all(getattr(genbench, n) is not None for n in genbench.__all__)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_every_module_has_a_layer() -> None:
    missing = []
    for module in modules():
        try:
            layer_of(module)
        except AssertionError:
            missing.append(module)
    assert not missing, f"modules in no layer (add them to LAYERS): {missing}"


MAX_PARAMETERS = 8


def wide_functions(source: str) -> list[tuple[int, str, int]]:
    """(line, name, count) of each function with more than 8 parameters (``self`` and
    ``cls`` not counted) and no ``# params: <why>`` comment right above it."""
    lines = source.splitlines()
    out = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        a = node.args
        every = [*a.posonlyargs, *a.args, *a.kwonlyargs, *filter(None, (a.vararg, a.kwarg))]
        count = sum(x.arg not in ("self", "cls") for x in every)
        if count <= MAX_PARAMETERS:
            continue
        first = min([node.lineno, *(d.lineno for d in node.decorator_list)]) - 1
        above = []
        while first > 0 and lines[first - 1].lstrip().startswith("#"):
            above.append(lines[first - 1].strip())
            first -= 1
        if not any(c.startswith("# params: ") and len(c) > 20 for c in above):
            out.append((node.lineno, node.name, count))
    return out


def test_the_parameter_check_finds_wide_functions() -> None:
    wide = "def f(a, b, c, d, e, f, g, h, i):\n    pass\n"
    assert wide_functions(wide) == [(1, "f", 9)]
    assert (
        wide_functions("class A:\n    def f(self, a, b, c, d, e, f, g, h):\n        pass\n") == []
    )
    assert wide_functions("# params: the options of a command, one each\n" + wide) == []


def test_no_function_takes_more_than_8_parameters_without_a_reason() -> None:
    """Typer commands are exempt (their parameters are their options); a settings object
    replaces a long list elsewhere, or a ``# params:`` comment says why not."""
    found = []
    for folder in PACKAGES.values():
        for path in sorted(folder.rglob("*.py")):
            if path.is_relative_to(ROOT / "genbench" / "cli"):
                continue
            rel = path.relative_to(ROOT)
            found += [f"{rel}:{n} {f}() takes {c}" for n, f, c in wide_functions(path.read_text())]
    assert not found, "more than 8 parameters, with no '# params:' reason:\n" + "\n".join(found)
