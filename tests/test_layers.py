"""The import graph of natrl: no cycle, and a bottom layer that stands without the RL stack.

The graph is read from the source with ``ast``, not from a running interpreter, so that every import
statement counts: module level and inside functions (a lazy import is still a dependency). Rules:

- ``import natrl.a.b`` is an edge to ``natrl.a.b``;
- ``from natrl.a import b`` is an edge to ``natrl.a.b`` when that is a module of the package, else to
  ``natrl.a`` (``b`` is a name defined there);
- relative imports are resolved against the importing module's package;
- imports inside ``if TYPE_CHECKING:`` blocks are left out: they never run, so they cannot form a cycle
  at run time (type checkers handle such cycles themselves);
- importing ``natrl.a.b`` also runs ``natrl/a/__init__.py``; that implicit edge is not counted, or every
  package whose ``__init__`` imports its submodules would be a cycle. An explicit ``from natrl.a import
  name`` of a name defined in ``__init__`` is an edge to ``natrl.a``.

The reference for the reader is a plain depth-first search written here; the bottom layer's independence
of gymnasium is checked against a fresh interpreter's ``sys.modules``.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "natrl"

BOTTOM = ("natrl.linalg", "natrl.linesearch", "natrl.curvature", "natrl.distributions", "natrl.params",
          "natrl.atomic", "natrl.optim")  # fmt: skip
TOP = ("natrl.rl", "natrl.cli", "natrl.runs", "natrl.bench", "natrl.callbacks", "natrl.logger")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth, except those under ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
            continue
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))
    return found


def _targets(name: str, path: Path, node: ast.Import | ast.ImportFrom, modules: dict[str, Path]) -> set[str]:
    """The natrl modules one import statement of module ``name`` (file ``path``) depends on."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name.split(".")[0] == "natrl"}
    if node.level:  # relative: against the package holding this module
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        base = package[: len(package) - (node.level - 1)]
        source = ".".join([*base, *([node.module] if node.module else [])])
    else:
        source = node.module or ""
    if source.split(".")[0] != "natrl":
        return set()
    out = set()
    for alias in node.names:
        sub = f"{source}.{alias.name}"
        out.add(sub if sub in modules else source)
    return out


def raw_imports() -> dict[str, set[str]]:
    """Module → the natrl names it imports (anywhere in its source), modules or not."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        edges: set[str] = set()
        for node in _import_nodes(tree):
            edges |= _targets(name, path, node, modules)
        edges.discard(name)
        graph[name] = edges
    return graph


def import_graph() -> dict[str, set[str]]:
    """Module → the natrl modules it imports (anywhere in its source)."""
    raw = raw_imports()
    return {name: {t for t in edges if t in raw} for name, edges in raw.items()}


def test_every_import_of_natrl_names_one_of_its_modules() -> None:
    raw = raw_imports()
    dangling = {name: sorted(t for t in edges if t not in raw) for name, edges in raw.items()}
    assert not any(dangling.values()), {name: t for name, t in dangling.items() if t}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def _path_in(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    """One closed import path through ``component`` (for the failure message)."""
    members = set(component)
    start = component[0]
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & members):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [start, *reversed(path[:-1]), start] if v != start else [start, start]
                if w not in parents:
                    parents[w] = v
                    nxt.append(w)
        frontier = nxt
    return component  # pragma: no cover - a strongly connected component always closes


def test_the_graph_reader_on_a_known_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e2"}, "e2": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert _path_in(["a", "b", "c"], graph) == ["a", "b", "c", "a"]


def test_the_graph_reader_resolves_relative_lazy_and_type_checking_imports() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "from . import cg\n"
        "from .damping import x\n"
        "if TYPE_CHECKING:\n    from natrl.rl import agent\n"
        "def f():\n    import natrl.params\n    from natrl.optim import result\n"
    )
    modules = _modules()
    path = PACKAGE / "linalg" / "mod.py"
    found = set()
    for node in _import_nodes(ast.parse(source)):
        found |= _targets("natrl.linalg.mod", path, node, modules)
    assert found == {"natrl.linalg.cg", "natrl.linalg.damping", "natrl.params", "natrl.optim.result"}


def test_the_import_graph_has_no_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 50 and "natrl.rl.agent" in graph
    found = cycles(graph)
    assert not found, "import cycles (lazy imports included):\n" + "\n".join(
        f"  {{{', '.join(c)}}}: {' -> '.join(_path_in(c, graph))}" for c in found
    )


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_the_bottom_layer_never_imports_the_rl_stack() -> None:
    graph = import_graph()
    bottom = [m for m in graph if _within(m, BOTTOM)]
    assert len(bottom) > 15
    bad = {m: sorted(t for t in graph[m] if _within(t, TOP)) for m in bottom}
    assert not any(bad.values()), {m: t for m, t in bad.items() if t}
    # and nothing it reaches (transitively) is a top-layer module
    seen: set[str] = set()
    frontier = list(bottom)
    while frontier:
        v = frontier.pop()
        if v not in seen:
            seen.add(v)
            frontier.extend(graph[v])
    assert not [m for m in seen if _within(m, TOP)], sorted(m for m in seen if _within(m, TOP))


@pytest.mark.parametrize("module", BOTTOM)
def test_the_bottom_layer_imports_without_gymnasium(module: str) -> None:
    code = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout)
    assert "gymnasium" not in loaded
    assert not [m for m in loaded if _within(m, TOP)], [m for m in loaded if _within(m, TOP)]


def test_no_module_of_the_training_infrastructure_is_over_600_lines() -> None:
    """One job per module: the training stack (``TOP``) keeps each module at most 600 lines."""
    long = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = _module_name(path)
        if any(name == top or name.startswith(top + ".") for top in TOP):
            lines = len(path.read_text(encoding="utf-8").splitlines())
            if lines > 600:
                long[name] = lines
    assert not long, f"split these modules (> 600 lines): {long}"


def _private_imports(source: str) -> list[str]:
    """The underscored names (not dunders) that ``from natrl... import`` statements in ``source`` take."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").split(".")[0] == "natrl"):
            found += [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
    return found


def test_the_private_import_reader_on_known_cases() -> None:
    source = "from natrl.a import _x, y\nfrom .b import _z\nfrom natrl import __version__\nfrom os import _exit\n"
    assert _private_imports(source) == ["_x", "_z"]


def test_no_module_imports_another_modules_private_names() -> None:
    # STYLE: no module touches another's private names; what two modules share is public in one of them
    offenders = {name: found for name, path in _modules().items() if (found := _private_imports(path.read_text()))}
    assert offenders == {}
