"""The run context: which run the current code belongs to, available inside a task.

``get_run_context()`` inside a task function (inline, submitted or in a worker) returns a
:class:`TaskRunContext` with the run id, the attempt, the task and its parameters. It is also
what hooks and ``retry_condition_fn`` receive as ``task_run``. A context variable holds it, so
threads of the task runner each see their own run.
"""

from __future__ import annotations

import contextvars
import functools
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .tasks import Task

__all__ = ["MissingContextError", "TaskRunContext", "get_run_context"]


class MissingContextError(RuntimeError):
    """``get_run_context()`` was called outside a task run."""


@dataclass(frozen=True)
class TaskRunContext:
    """One run as the code running it sees it."""

    task: Task[Any, Any]
    id: uuid.UUID
    name: str
    #: 1 for the first attempt, 2 for the first retry, ...
    attempt: int
    #: The parameters, or a function that makes them: a worker binds the arguments to the
    #: signature only when someone reads ``parameters`` (most runs never do).
    bound_parameters: dict[str, Any] | Callable[[], dict[str, Any]] = field(repr=False)
    #: ``call`` (inline or submitted) or ``delay`` (a worker runs it).
    origin: str

    @functools.cached_property
    def parameters(self) -> dict[str, Any]:
        """The run's arguments by parameter name, defaults included."""
        given = self.bound_parameters
        return given() if callable(given) else given

    @property
    def run_count(self) -> int:
        """Prefect's name for :attr:`attempt`."""
        return self.attempt

    @property
    def task_key(self) -> str:
        return self.task.key


_current: contextvars.ContextVar[TaskRunContext | None] = contextvars.ContextVar(
    "django_tasks_run", default=None
)


def get_run_context() -> TaskRunContext:
    """The context of the run whose code is executing; raises outside a run."""
    context = _current.get()
    if context is None:
        raise MissingContextError("get_run_context() was called outside a task run.")
    return context


class run_context:
    """Make ``context`` current for the code inside the block (the task function, its hooks).

    A class rather than a generator: entered for every run, where a generator-based context
    manager costs a few times more."""

    __slots__ = ("_context", "_token")

    def __init__(self, context: TaskRunContext) -> None:
        self._context = context

    def __enter__(self) -> TaskRunContext:
        self._token = _current.set(self._context)
        return self._context

    def __exit__(self, *exc_info: object) -> None:
        _current.reset(self._token)
