"""Where workers find task functions: by task key, filled when ``@task`` runs at import.

Workers never unpickle a function. They import every installed app's ``tasks.py`` at start-up
(see :mod:`django_tasks.apps`), each ``@task`` registers itself here, and a run names its task
by key.

A key no ``@task`` registered may still name a task that something else knows how to make:
a *resolver* (``registry.add_resolver``) gets the run's key and task name and returns the task
or ``None``. The ``django.tasks`` backend registers one (:mod:`django_tasks.backends.adapter`:
the name is a Django Task's module path), so that the worker, which only calls
:meth:`TaskRegistry.find`, knows nothing of Django's interface.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .storable import shown

if TYPE_CHECKING:
    from .tasks import Task

__all__ = ["Resolver", "TaskRegistry", "UnknownTask", "registry", "task_key"]

#: ``resolver(task_key, task_name)``: the task, or ``None`` when the name is not one of its
#: own. It raises :class:`UnknownTask` (with the reason as its cause) when the name is its
#: kind but does not lead to the task, and whatever loading the task raised otherwise.
Resolver = Callable[[str, str], "Task[Any, Any] | None"]


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
        self._resolvers: list[Resolver] = []

    def register(self, task: Task[Any, Any]) -> None:
        """Add a task. The first task with a key stays: a ``with_options`` copy (same key) or a
        re-imported module must not replace the task that the decorator registered."""
        self._by_key.setdefault(task.key, task)

    def get(self, key: str) -> Task[Any, Any]:
        try:
            return self._by_key[key]
        except KeyError:
            raise UnknownTask(key) from None

    def add_resolver(self, resolver: Resolver) -> None:
        """Ask ``resolver`` for keys no task registered (once per resolver)."""
        if resolver not in self._resolvers:
            self._resolvers.append(resolver)

    def find(self, key: str, name: str) -> Task[Any, Any]:
        """The task of a run: registered, or made by a resolver from the run's key and task
        name. Raises :class:`UnknownTask` (its cause: why a resolver could not make it) or
        whatever loading the task raised."""
        try:
            return self.get(key)
        except UnknownTask:
            pass
        for resolver in self._resolvers:
            task = resolver(key, name)
            if task is not None:
                return task
        raise UnknownTask(key)

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
