"""The shape of `obs.llm`: no import cycle (type-checking imports count) and no reads of private attributes.

A stream is handed the recorder, the error builder and a cache callable by
its client; it never imports the client, and no module reaches into another
object's underscore attributes.
"""

from __future__ import annotations

import ast
from pathlib import Path

import obs.llm

PACKAGE = Path(obs.llm.__file__).resolve().parent
# The embedded server launcher has an owner of its own and never touches the client.
SKIP = {"llama/server.py"}


def _modules() -> dict[str, ast.Module]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative in SKIP:
            continue
        name = "obs.llm." + relative.removesuffix(".py").replace("/", ".")
        found[name.removesuffix(".__init__")] = ast.parse(path.read_text(encoding="utf-8"))
    return found


def _imports(tree: ast.Module) -> set[str]:
    names = set()
    for node in ast.walk(tree):  # walks into `if TYPE_CHECKING:` blocks too
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_no_import_cycle_inside_obs_llm() -> None:
    modules = _modules()
    graph = {
        name: {m for m in _imports(tree) if m in modules and m != name} for name, tree in modules.items()
    }
    visiting: list[str] = []
    done: set[str] = set()

    def visit(name: str) -> None:
        assert name not in visiting, "import cycle: " + " -> ".join([*visiting[visiting.index(name) :], name])
        if name in done:
            return
        visiting.append(name)
        for target in sorted(graph[name]):
            visit(target)
        visiting.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)
    assert "obs.llm.client" not in _imports(modules["obs.llm.stream"])


def test_no_module_reads_another_objects_private_attributes() -> None:
    reads = []
    for name, tree in _modules().items():
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
            ):
                reads.append(f"{name}:{node.lineno} .{node.attr}")
    assert reads == []
