"""Imports run one way: no circle among fastnst's modules, not even one broken at run time by an import
inside a function, and every import of a fastnst module sits at the top of its file unless it is listed
below with its reason.

The graph is read from the source with ``ast`` (nothing is imported): every ``import``/``from ... import``
of a fastnst module anywhere in a file (top level, inside functions, under ``if TYPE_CHECKING``), plus the
package ``__init__`` files that such an import runs first.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fastnst"

# Imports of fastnst modules inside a function, each for a reason that is not a circle: start-up time (the
# imported module pulls in a heavy package that most uses of the importer never need) or an optional package.
# Keep it short. A circle is never a reason: cut it (a small module both sides import, or the composer above
# its parts); the cycle test below counts these imports like any other.
LATE_IMPORTS_ALLOWED: dict[tuple[str, str], str] = {
    # Lightning (seconds to import): the inference, video and --tune parts of the benchmark never need it.
    ("fastnst.tools.bench.training", "fastnst.training.module"): "start-up: Lightning",
    ("fastnst.tools.bench.training", "fastnst.training.data"): "start-up: Lightning",
    ("fastnst.tools.bench.data", "fastnst.training.data"): "start-up: Lightning",
    ("fastnst.tools.bench.data", "fastnst.training.prepared"): "start-up: Lightning (fastnst.training's package)",
    ("fastnst.tools.bench.styles", "fastnst.tools.bench.training"): "start-up: Lightning",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def fastnst_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _targets(node: ast.Import | ast.ImportFrom, importer: str, is_package: bool, modules: dict[str, Path]) -> list[str]:
    """The fastnst modules an import statement loads (a name imported from a package may be a submodule)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in modules]
    base = node.module or ""
    if node.level:  # relative: from the importer's package
        package = importer.split(".") if is_package else importer.split(".")[:-1]
        base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
    if base not in modules:
        return []
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]


Edges = dict[str, dict[str, tuple[int, bool]]]


def import_graph() -> tuple[Edges, Edges]:
    """(every edge, the imports as written): importer -> {imported: (line, late)}, ``late`` for an import inside
    a function or under TYPE_CHECKING. Every edge adds the package files an import runs first."""
    modules = fastnst_modules()
    graph: Edges = {}
    written: Edges = {}
    for name, path in modules.items():
        edges = graph.setdefault(name, {})
        direct = written.setdefault(name, {})
        ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}

        def visit(node: ast.AST, late: bool) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                    visit(child, True)
                elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                    visit(child, True)
                elif isinstance(child, (ast.Import, ast.ImportFrom)):
                    for target in _targets(child, name, path.name == "__init__.py", modules):
                        # importing a.b.c runs the package files a/__init__ and a/b/__init__ first
                        parts = target.split(".")
                        chain = [".".join(parts[:i]) for i in range(1, len(parts))] + [target]
                        for t, edge_map in [(t, edges) for t in chain] + [(target, direct)]:
                            if t != name and t not in ancestors and t in modules:
                                old = edge_map.get(t)
                                if old is None or (old[1] and not late):  # a top-level import counts first
                                    edge_map[t] = (child.lineno, late)
                else:
                    visit(child, late)

        visit(ast.parse(path.read_text(), str(path)), False)
    return graph, written


def cycles(graph: Edges) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                connect(w)
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def test_the_graph_sees_imports_at_every_depth() -> None:
    graph, written = import_graph()
    assert "fastnst.inference.stylizer" in graph["fastnst"]  # top level, from a package file
    assert graph["fastnst.formats.checkpoint"]["fastnst.formats.metadata"][1] is False
    assert written["fastnst.tools.bench.training"]["fastnst.training.module"][1] is True  # inside a function
    assert "fastnst.training" in graph["fastnst.tools.bench.training"]  # the package file an import runs first
    assert "fastnst.training" not in written["fastnst.tools.bench.training"]
    assert cycles({"a": {"b": (1, False)}, "b": {"c": (1, True)}, "c": {"a": (1, False)}, "d": {"a": (1, False)}}) \
        == [["a", "b", "c"]]


def test_no_circle_among_fastnst_modules() -> None:
    graph, _ = import_graph()
    found = cycles(graph)
    lines = []
    for component in found:
        lines.append(f"circle of {len(component)} modules:")
        lines += [f"  {a}:{line} imports {b}" + (" (late: in a function or TYPE_CHECKING)" if late else "")
                  for a in component for b, (line, late) in sorted(graph[a].items()) if b in component]
    assert not found, "imports must run one way; cut each circle (a small module both import, or the composer " \
                      "above its parts), never with an import inside a function:\n" + "\n".join(lines)


def test_imports_of_fastnst_modules_are_at_the_top_unless_listed() -> None:
    _, written = import_graph()
    late = {(a, b): line for a, edges in written.items() for b, (line, is_late) in edges.items() if is_late}
    unlisted = sorted(f"{a}:{line} imports {b} inside a function" for (a, b), line in late.items()
                      if (a, b) not in LATE_IMPORTS_ALLOWED)
    assert not unlisted, "move these imports to the top of the file, or list them in LATE_IMPORTS_ALLOWED with " \
                         "their reason (start-up time, an optional package):\n" + "\n".join(unlisted)
    stale = sorted(f"{a} -> {b}" for a, b in LATE_IMPORTS_ALLOWED if (a, b) not in late)
    assert not stale, "LATE_IMPORTS_ALLOWED lists imports that are no longer late; remove them:\n" + "\n".join(stale)
