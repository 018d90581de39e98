"""The package's shape stays as docs/ARCHITECTURE.md describes it.

Read from the source files (ast), not by importing them: no import cycle between
gateway modules (counting imports made inside functions too: a cycle deferred to
call time is still a cycle), dependencies point down the doc's module map, no
module over 400 lines, at most 12 modules directly in gateway/.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "gateway"
DOC = PACKAGE.parent / "docs" / "ARCHITECTURE.md"
MAX_LINES = 400
MAX_TOP_LEVEL = 12


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str], *, type_only_too: bool = False
             ) -> set[str]:
    """The gateway modules ``name`` imports (``from a import b`` counts ``a.b`` when
    ``a.b`` is a module, else ``a``); TYPE_CHECKING-only imports are edges only with
    ``type_only_too`` (they make no cycle at run time, but are still a dependency)."""
    tree = ast.parse(path.read_text(), str(path))
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if (not type_only_too and isinstance(node, ast.If)
                and "TYPE_CHECKING" in ast.unparse(node.test)):
            type_only.update(id(n) for n in ast.walk(node))
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                target = f"{base}.{alias.name}"
                if target in known:
                    found.add(target)
                elif base in known:
                    found.add(base)
    found.discard(name)
    return found


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle() -> None:
    modules = _modules()
    known = set(modules)
    graph = {name: _imports(name, path, known) for name, path in modules.items()}
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_cycles() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def _layers() -> list[str]:
    """The entries directly in gateway/ (``web``, ``service``...) in the order of the
    module map in docs/ARCHITECTURE.md: its lines indented by exactly two spaces."""
    text = DOC.read_text()
    block = text[text.index("## Module map"):text.index("## Redis keys")]
    return re.findall(r"^  ([a-z_]+)(?:\.py|/)\s", block, flags=re.MULTILINE)


def _layer(module: str) -> str:
    """``gateway.cache.disk.files`` -> ``cache``; ``gateway.service`` -> ``service``."""
    return module.split(".")[1]


def _upward(graph: dict[str, set[str]], layers: list[str]) -> list[str]:
    """Every import of a module by one in another entry listed below it: the importer
    must be above (inside one package, modules import one another freely)."""
    rank = {layer: i for i, layer in enumerate(layers)}
    return sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets
                  if _layer(a) != _layer(b) and rank[_layer(b)] < rank[_layer(a)])


def test_the_module_map_lists_every_entry_of_gateway_once() -> None:
    entries = sorted(p.stem for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    entries += sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists())
    layers = _layers()
    assert len(layers) == len(set(layers))
    assert sorted(layers) == sorted(entries)


def test_dependencies_point_down_the_module_map() -> None:
    """What ARCHITECTURE.md claims: a module imports only from its own package or from
    entries listed below it. Imports inside functions and type-only ones count."""
    modules = {n: p for n, p in _modules().items() if n != "gateway"}
    known = set(modules)
    graph = {name: _imports(name, path, known, type_only_too=True)
             for name, path in modules.items()}
    assert _upward(graph, _layers()) == []


def test_the_layer_check_finds_an_upward_import() -> None:
    layers = ["web", "cache", "model"]
    graph = {"gateway.web.app": {"gateway.cache.tiers", "gateway.model"},
             "gateway.cache.tiers": {"gateway.cache.lru", "gateway.web.keys"},
             "gateway.cache.lru": set(), "gateway.model": set()}
    assert _upward(graph, layers) == ["gateway.cache.tiers -> gateway.web.keys"]


@pytest.mark.parametrize("name", sorted(_modules()))
def test_module_is_at_most_400_lines(name: str) -> None:
    lines = len(_modules()[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines: split it by concern"


def test_at_most_12_modules_directly_in_gateway() -> None:
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL, top
