"""Where workers find task functions: by task key, filled when ``@task`` runs at import.

Workers never unpickle a function. They import every installed app's ``tasks.py`` at start-up
(see :mod:`django_tasks.apps`), each ``@task`` registers itself here, and a run names its task
by key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .storable import shown

if TYPE_CHECKING:
    from .tasks import Task

__all__ = ["TaskRegistry", "UnknownTask", "registry", "task_key"]


def task_key(name: str, fn: Callable[..., Any]) -> str:
    """Stable hash of the task name and the function's ``module.qualname``.

    Built only from strings, never from ``id()`` or ``hash()`` (which vary by process), so every
    process that imports the same code computes the same key.
    """
    qualified = f"{fn.__module__}.{fn.__qualname__}"
    return hashlib.sha256(f"{name}\x00{qualified}".encode()).hexdigest()[:32]


class UnknownTask(LookupError):
    """No task with this key is registered in this process."""


class TaskRegistry:
    """Task key -> :class:`~django_tasks.tasks.Task` for this process."""

    def __init__(self) -> None:
        self._by_key: dict[str, Task[Any, Any]] = {}

    def register(self, task: Task[Any, Any]) -> None:
        """Add a task. The first task with a key stays: a ``with_options`` copy (same key) or a
        re-imported module must not replace the task that the decorator registered."""
        self._by_key.setdefault(task.key, task)

    def get(self, key: str) -> Task[Any, Any]:
        try:
            return self._by_key[key]
        except KeyError:
            raise UnknownTask(key) from None

    def by_name(self, name: str) -> Task[Any, Any]:
        """The task called ``name`` (schedules name their task this way); UnknownTask if none,
        LookupError if two tasks share the name."""
        found = [task for task in self._by_key.values() if task.name == name]
        if not found:
            raise UnknownTask(f"No task is called {shown(name)} in this process.")
        if len(found) > 1:
            where = ", ".join(f"{t.fn.__module__}.{t.fn.__qualname__}" for t in found)
            raise LookupError(
                f"Several tasks are called {shown(name)} ({where}): give each a name."
            )
        return found[0]

    def __contains__(self, key: object) -> bool:
        return key in self._by_key

    def all(self) -> list[Task[Any, Any]]:
        return sorted(self._by_key.values(), key=lambda t: t.name)


registry = TaskRegistry()
