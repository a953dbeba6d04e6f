"""The package's imports follow the layers of docs/architecture.md, and none goes in a circle.

Read from the source with ``ast``: every ``import`` and ``from ... import`` of a
``django_tasks`` module, deferred ones (inside functions) included, those under
``if TYPE_CHECKING:`` left out (they are never executed)."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

from .conftest import ROOT

PACKAGE = ROOT / "django_tasks"
DOC = ROOT / "docs" / "architecture.md"


def modules() -> dict[str, Path]:
    """``django_tasks.x.y`` -> its file (migrations left out: they import nothing of ours)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        if "migrations" in path.parts:
            continue
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            inside.update(id(child) for child in ast.walk(node))
    return inside


def imports_of(name: str, path: Path, known: dict[str, Path]) -> Iterator[str]:
    """The ``django_tasks`` modules that module ``name`` imports."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    skipped = _type_checking_nodes(tree)
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            targets = [f"{base}.{alias.name}" for alias in node.names]
            found = [t for t in targets if t in known] or ([base] if base in known else [])
        elif isinstance(node, ast.Import):
            found = [alias.name for alias in node.names if alias.name in known]
        else:
            continue
        yield from (target for target in found if target != name)


def layers() -> list[tuple[str, list[str]]]:
    """The layers table of docs/architecture.md, bottom first: (layer, module names)."""
    rows = re.findall(r"^\| (\w+) \| (`.*?) \|", DOC.read_text(), flags=re.MULTILINE)
    return [(layer, re.findall(r"`([\w.]+)`", cell)) for layer, cell in rows]


def layer_of(module: str, table: list[tuple[str, list[str]]]) -> int | None:
    """The layer of ``django_tasks.<name>``: the longest name of the table that is it or one
    of its parents."""
    name = module.removeprefix("django_tasks.")
    best: tuple[int, int] | None = None
    for index, (_, names) in enumerate(table):
        for prefix in names:
            if (name == prefix or name.startswith(prefix + ".")) and (
                best is None or len(prefix) > best[1]
            ):
                best = (index, len(prefix))
    return None if best is None else best[0]


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: set(imports_of(name, path, known)) for name, path in known.items()}


def test_the_doc_places_every_module_in_one_layer() -> None:
    table = layers()
    assert [layer for layer, _ in table] == [
        "foundation",
        "tables",
        "records",
        "engine",
        "worker",
        "surfaces",
    ]
    # The package itself only re-exports the public API; nothing inside imports it.
    unplaced = [m for m in modules() if m != "django_tasks" and layer_of(m, table) is None]
    assert unplaced == []
    assert not [m for m, targets in graph().items() if "django_tasks" in targets]


def test_no_module_imports_a_higher_layer() -> None:
    table = layers()
    upward = [
        f"{module} ({table[mine][0]}) imports {target} ({table[theirs][0]})"
        for module, targets in graph().items()
        if module != "django_tasks" and (mine := layer_of(module, table)) is not None
        for target in sorted(targets)
        if (theirs := layer_of(target, table)) is not None and theirs > mine
    ]
    assert upward == []


def test_no_import_cycle() -> None:
    edges = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in list(edges):
        if node not in index:
            visit(node)
    assert cycles == []


def test_the_checker_sees_deferred_imports_and_skips_type_checking_ones(tmp_path: Path) -> None:
    """The rules above could pass by missing imports: they must see a deferred one."""
    source = tmp_path / "probe.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from django_tasks.admin import x\n"
        "def later():\n"
        "    from django_tasks import topic\n"
        "    from django_tasks.worker.process import Worker\n"
    )
    known = modules()
    found = set(imports_of("django_tasks.probe", source, known))
    assert found == {"django_tasks.topic", "django_tasks.worker.process"}
