"""The package's layering, read from the source with :mod:`ast` (nothing of it is imported,
except by the one test of the token-group contract between models and metrics).

Every ``import`` statement of every module of :mod:`mmdiag` counts: module level,
inside functions and methods, and inside ``if TYPE_CHECKING:`` blocks (an
annotation-only import still says which layer a module reads, so it is not
skipped). Relative imports are resolved against the importing module's package;
``from mmdiag.x import y`` is an edge to ``mmdiag.x.y`` when ``y`` is a submodule
(and to ``mmdiag.x`` either way, whose ``__init__`` runs first). An import of
``a.b.c`` also runs the ``__init__`` of ``a`` and ``a.b``, so those packages are
edges too, except the importer's own enclosing packages (already being imported).
"""
from __future__ import annotations

import ast
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

PACKAGE = "mmdiag"
MAX_LINES = 500

#: (layer, the layers it must not import from); prefixes of dotted module names
FORBIDDEN: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("mmdiag.models", ("mmdiag.metrics", "mmdiag.analyses", "mmdiag.report", "mmdiag.session", "mmdiag.runner",
                       "mmdiag.plugin")),
    ("mmdiag.metrics", ("mmdiag.models", "mmdiag.record", "mmdiag.recording", "mmdiag.session", "mmdiag.runner",
                        "mmdiag.plugin", "mmdiag.report")),
)


@dataclass(frozen=True)
class Edge:
    """One import statement's dependency: ``source`` imports ``target`` at ``line``."""

    source: str
    target: str
    line: int


@dataclass(repr=False)
class ModuleGraph:
    """The package's modules (dotted name -> file) and the import edges between them."""

    files: dict[str, Path]
    edges: list[Edge] = field(default_factory=list)

    def __repr__(self) -> str:
        return f"ModuleGraph({len(self.files)} modules, {len(self.edges)} import edges)"

    def targets(self, source: str) -> list[str]:
        return sorted({e.target for e in self.edges if e.source == source})

    def where(self, source: str, target: str) -> int:
        return min(e.line for e in self.edges if e.source == source and e.target == target)


def package_dir() -> Path:
    spec = importlib.util.find_spec(PACKAGE)  # finds the package without running it
    assert spec is not None and spec.submodule_search_locations, f"{PACKAGE} is not importable"
    return Path(list(spec.submodule_search_locations)[0])


def module_files(root: Path) -> dict[str, Path]:
    """Dotted module name -> source file, for every importable ``.py`` file under ``root``."""
    out: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if not all(p.isidentifier() for p in parts):  # e.g. a shipped model folder "shapes-clip"
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_package(name: str, files: dict[str, Path]) -> bool:
    return files[name].name == "__init__.py"


def _resolve_relative(source: str, files: dict[str, Path], module: str | None, level: int) -> str:
    package = source.split(".") if _is_package(source, files) else source.split(".")[:-1]
    base = package[:len(package) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _internal(name: str, files: dict[str, Path]) -> str | None:
    """The longest prefix of ``name`` that is a module of the package (None for outside modules)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in files:
            return candidate
        parts.pop()
    return None


def _with_packages(source: str, target: str) -> list[str]:
    """``target`` plus its enclosing packages that are not ``source``'s own."""
    own = {".".join(source.split(".")[:i]) for i in range(1, source.count(".") + 2)}
    parts = target.split(".")
    return [t for t in (".".join(parts[:i]) for i in range(1, len(parts) + 1)) if t not in own or t == target]


def imports_of(source: str, files: dict[str, Path]) -> list[Edge]:
    """Every internal dependency of module ``source``, from all its import statements."""
    tree = ast.parse(files[source].read_text(encoding="utf-8"), filename=str(files[source]))
    edges: list[Edge] = []

    def add(name: str | None, line: int) -> None:
        target = None if name is None else _internal(name, files)
        if target is None:
            return
        for t in _with_packages(source, target):
            if t != source:
                edges.append(Edge(source, t, line))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = (_resolve_relative(source, files, node.module, node.level) if node.level
                    else node.module)
            if not base:
                continue
            add(base, node.lineno)
            for alias in node.names:
                if alias.name != "*" and f"{base}.{alias.name}" in files:
                    add(f"{base}.{alias.name}", node.lineno)
    return edges


def build_graph() -> ModuleGraph:
    files = module_files(package_dir())
    graph = ModuleGraph(files)
    for name in files:
        graph.edges.extend(imports_of(name, files))
    return graph


def strongly_connected(graph: ModuleGraph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    adjacency = {name: graph.targets(name) for name in graph.files}

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in adjacency[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for name in sorted(graph.files):
        if name not in index:
            visit(name)
    return components


def _cycle_in(component: list[str], adjacency: dict[str, list[str]]) -> list[str]:
    """A shortest closed path through the component's first module (breadth-first inside the component)."""
    members = set(component)
    start = component[0]
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in adjacency[node]:
                if nxt not in members:
                    continue
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if nxt not in previous:
                    previous[nxt] = node
                    following.append(nxt)
        frontier = following
    return component


def _describe(cycle: list[str], graph: ModuleGraph) -> str:
    steps = [f"{a} (line {graph.where(a, b)})" for a, b in zip(cycle, cycle[1:])]
    return " -> ".join([*steps, cycle[-1]])


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


@pytest.fixture(scope="module")
def graph() -> ModuleGraph:
    return build_graph()


def test_graph_sees_function_level_and_relative_imports(graph: ModuleGraph) -> None:
    # the parser itself: a function-level import and a relative one, on a synthetic package
    files = {"pkg": Path("pkg/__init__.py"), "pkg.a": Path("pkg/a.py"), "pkg.sub": Path("pkg/sub/__init__.py"),
             "pkg.sub.b": Path("pkg/sub/b.py")}
    assert _resolve_relative("pkg.sub.b", files, "a", 2) == "pkg.a"
    assert _resolve_relative("pkg.sub", files, "b", 1) == "pkg.sub.b"
    assert _resolve_relative("pkg.sub.b", files, None, 1) == "pkg.sub"
    assert _with_packages("pkg.a", "pkg.sub.b") == ["pkg.sub", "pkg.sub.b"]
    assert _internal("pkg.sub.b.thing", files) == "pkg.sub.b"
    assert _internal("numpy", files) is None
    assert len(graph.files) > 20 and "mmdiag.models.base" in graph.files
    assert "mmdiag.data.types" in graph.targets("mmdiag.models.base")


def test_no_import_cycle(graph: ModuleGraph) -> None:
    components = strongly_connected(graph)
    adjacency = {name: graph.targets(name) for name in graph.files}
    assert not components, "import cycles (counting imports inside functions):\n" + "\n".join(
        f"  {_describe(_cycle_in(c, adjacency), graph)}\n    (modules tied in this cycle: {', '.join(c)})"
        for c in components)


def test_layers_import_only_downwards(graph: ModuleGraph) -> None:
    wrong = []
    for layer, forbidden in FORBIDDEN:
        for edge in graph.edges:
            if _within(edge.source, layer) and any(_within(edge.target, f) for f in forbidden):
                wrong.append(f"  {edge.source} (line {edge.line}) imports {edge.target}")
    assert not wrong, "imports against the layering:\n" + "\n".join(sorted(set(wrong)))


def test_models_and_metrics_agree_on_the_token_group_ids() -> None:
    # the one contract between two layers that may not import each other: Trace.groups' ids
    # (mmdiag.models.base) are what mmdiag.metrics.attention names and validates
    from mmdiag.metrics import attention
    from mmdiag.models import base

    ids = {"special": base.GROUP_SPECIAL, "text": base.GROUP_TEXT, "image": base.GROUP_IMAGE}
    assert (base.GROUP_PAD, base.GROUP_SPECIAL, base.GROUP_TEXT, base.GROUP_IMAGE) == (-1, 0, 1, 2)
    assert {name: i for i, name in attention.GROUP_NAMES.items()} == ids
    assert attention.N_GROUPS == len(ids) and base.GROUP_PAD < 0
    groups = torch.tensor([[base.GROUP_SPECIAL, base.GROUP_TEXT, base.GROUP_IMAGE, base.GROUP_PAD]])
    attention.check_attention(torch.full((1, 1, 4, 4), 0.25), groups)  # accepted as they are
    with pytest.raises(ValueError):
        attention.check_attention(torch.full((1, 1, 4, 4), 0.25), groups - 1)


def test_modules_are_short(graph: ModuleGraph) -> None:
    root = package_dir()
    zoo_models = {p for p in (root / "zoo").iterdir() if p.is_dir()} if (root / "zoo").is_dir() else set()
    too_long = []
    for name, path in sorted(graph.files.items()):
        if any(folder in path.parents for folder in zoo_models):
            continue
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > MAX_LINES:
            too_long.append(f"  {name}: {n} lines")
    assert not too_long, f"modules over {MAX_LINES} lines:\n" + "\n".join(too_long)
