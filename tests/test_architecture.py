"""The shape of the house: no import cycle between obs modules (TYPE_CHECKING imports count),
and no module over 500 lines."""

from __future__ import annotations

import ast
from pathlib import Path

OBS = Path(__file__).resolve().parents[1] / "obs"
MAX_LINES = 500


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(OBS.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(OBS.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The obs modules `name` imports anywhere in its source, TYPE_CHECKING blocks included.

    `from obs.a import b` counts as importing `obs.a.b` when that is a module, else `obs.a`.
    A package's own `__init__` is not counted as imported by its submodules' relative parents.
    """
    found: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                if candidate in known:
                    found.add(candidate)
                elif node.module in known:
                    found.add(node.module)
    found.discard(name)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_import_reader_sees_type_checking_imports(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from obs.x import Y\n")
    assert _imports("obs.m", source, {"obs.x", "obs.m"}) == {"obs.x"}


def test_no_import_cycle_between_obs_modules() -> None:
    graph = _graph()
    # The package's public face re-exports everything; what it imports is not a cycle of the house.
    graph.pop("obs", None)
    for edges in graph.values():
        edges.discard("obs")
    assert _cycles(graph) == []


def test_no_obs_module_is_longer_than_500_lines() -> None:
    too_long = {
        name: n for name, path in _modules().items()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert too_long == {}
