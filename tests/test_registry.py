"""The registry: tasks by key, and resolvers for keys no ``@task`` registered."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

from django_tasks.registry import TaskRegistry, UnknownTask
from tests.taskapp.tasks import add

from .conftest import ROOT


def test_find_asks_the_resolvers_in_order_for_an_unregistered_key() -> None:
    registry = TaskRegistry()
    registry.register(add)
    asked: list[tuple[str, str]] = []

    def not_mine(key: str, name: str) -> Any:
        asked.append((key, name))
        return None

    def makes_it(key: str, name: str) -> Any:
        asked.append((key, name))
        return add if name == "made.here" else None

    registry.add_resolver(not_mine)
    registry.add_resolver(makes_it)
    registry.add_resolver(makes_it)  # once is enough
    assert registry.find(add.key, "add") is add  # registered: no resolver asked
    assert asked == []
    assert registry.find("k" * 32, "made.here") is add
    assert asked == [("k" * 32, "made.here")] * 2
    with pytest.raises(UnknownTask):
        registry.find("k" * 32, "nobody.makes.this")


def test_a_resolvers_error_and_its_cause_reach_the_caller() -> None:
    registry = TaskRegistry()

    def failing(key: str, name: str) -> Any:
        try:
            raise ModuleNotFoundError("No module named 'gone'", name="gone")
        except ImportError as exc:
            raise UnknownTask(key) from exc

    registry.add_resolver(failing)
    with pytest.raises(UnknownTask) as info:
        registry.find("k" * 32, "gone.task")
    assert isinstance(info.value.__cause__, ModuleNotFoundError)


def test_the_worker_does_not_import_the_django_tasks_backend() -> None:
    """The backend registers its resolver; the worker package knows nothing of it."""
    imports = []
    for path in (ROOT / "django_tasks" / "worker").glob("*.py"):
        for node in ast.walk(ast.parse(Path(path).read_text())):
            if isinstance(node, ast.ImportFrom):
                imports.append((path.name, node.module or "", node.level))
            elif isinstance(node, ast.Import):
                imports.extend((path.name, alias.name, 0) for alias in node.names)
    assert not [i for i in imports if "backends" in i[1] and "django.db" not in i[1]]
