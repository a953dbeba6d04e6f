"""``PostgresBackend``: ``django.tasks``' backend interface on our queue.

A Django ``Task`` is enqueued as one of our runs (same table, worker, admin, API, retention),
through an adapter task (:mod:`.adapter`) keyed by the Task's module path, so that any
worker that can import the Task can run it. What a ``TaskResult`` shows that our columns do
not keep exactly - the JSON arguments and return value, one error per failed attempt, the
Task's ``run_after`` and backend alias - is kept as JSON in the run's ``django_task`` column,
so that ``get_result`` never unpickles anything.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.apps import apps
from django.core import checks
from django.tasks import TaskResult, TaskResultStatus
from django.tasks.backends.base import BaseTaskBackend
from django.tasks.base import Task
from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
from django.tasks.signals import task_enqueued
from django.utils import timezone

from ..tasks import TaskOptions, check_queue
from ..times import check_time
from ..topic import enqueue
from .adapter import adapter_for
from .documents import jsonb_text
from .task_class import RetryingTask

__all__ = ["PostgresBackend"]


class PostgresBackend(BaseTaskBackend):
    """Runs ``django.tasks`` Tasks on django_tasks' PostgreSQL queue and worker pool."""

    supports_defer = True
    supports_priority = True
    supports_get_result = True
    # ``async def`` Tasks run as coroutines on the worker's event loop (adapter._AsyncCall).
    supports_async_task = True
    task_class = RetryingTask

    def validate_task(self, task: Task[Any, Any]) -> None:
        # Before Django's own check, which lets True through (a bool is an int: it failed in
        # SQL) and raises a bare TypeError comparing a str with an int. Its range check and
        # message stay Django's.
        priority = task.priority
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise InvalidTask(f"priority must be an int, got {type(priority).__name__}.")
        super().validate_task(task)
        try:
            check_queue(task.queue_name)
            self.retry_options(task)
            if task.run_after is not None:  # a time the run's row can hold (django_tasks.times)
                check_time("run_after", task.run_after)
        except (TypeError, ValueError) as exc:
            raise InvalidTask(str(exc)) from None

    def retry_options(self, task: Task[Any, Any]) -> dict[str, Any]:
        """Our ``retries`` / ``retry_delay_seconds`` for ``task``: its own (a
        :class:`RetryingTask`), else the backend's ``OPTIONS``; checked as our ``@task``
        checks them (TypeError or ValueError)."""
        retries = getattr(task, "retries", None)
        delay = getattr(task, "retry_delay_seconds", None)
        options = {
            "retries": self.options.get("RETRIES", 0) if retries is None else retries,
            "retry_delay_seconds": (
                self.options.get("RETRY_DELAY_SECONDS", 0) if delay is None else delay
            ),
        }
        TaskOptions(name="check", **options)  # the same rules as our own tasks
        return options

    def enqueue(self, task: Task[Any, Any], args: Any, kwargs: Any) -> TaskResult[Any, Any]:
        """One SCHEDULED run, in the caller's transaction (on ``DATABASE_ALIAS``)."""
        self.validate_task(task)
        result = _ready_result(task, args, kwargs, self.alias)
        jsonb_text([result.args, result.kwargs], "arguments")  # before anything is written
        document = {
            "path": task.module_path,
            "takes_context": task.takes_context,
            "backend": self.alias,
            "run_after": task.run_after.isoformat() if task.run_after else None,
            "args": result.args,
            "kwargs": result.kwargs,
            "errors": [],
        }
        adapter = adapter_for(task, **self.retry_options(task))
        created = timezone.now()  # the run's created time and the result's enqueued_at
        future = enqueue(
            adapter,
            tuple(result.args),
            dict(result.kwargs),
            queue=task.queue_name,
            priority=task.priority,
            scheduled_time=task.run_after,
            extra={"django_task": document, "created": created.isoformat()},
        )
        object.__setattr__(result, "id", str(future.id))
        object.__setattr__(result, "enqueued_at", created)
        task_enqueued.send(type(self), task_result=result)
        return result

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        """The backend writes our tables: the app must be installed (and migrated)."""
        if apps.is_installed("django_tasks"):
            return []
        return [
            checks.Error(
                f"TASKS[{self.alias!r}] uses django_tasks.backends.PostgresBackend, but "
                f"'django_tasks' is not in INSTALLED_APPS.",
                hint="Add 'django_tasks' to INSTALLED_APPS and run migrate.",
                id="django_tasks.E010",
            )
        ]

    def get_result(self, result_id: str) -> TaskResult[Any, Any]:
        """The run as a ``TaskResult``; ``TaskResultDoesNotExist`` for an unknown or malformed
        id (never a ValidationError)."""
        try:
            run_id = uuid.UUID(str(result_id))
        except (ValueError, TypeError, AttributeError):
            raise TaskResultDoesNotExist(result_id) from None
        from .results import load_result  # models: only once apps are ready

        return load_result(run_id, self.alias)


def _ready_result(task: Task[Any, Any], args: Any, kwargs: Any, alias: str) -> TaskResult[Any, Any]:
    """The result of a run about to be enqueued. Django normalises the arguments here
    (TypeError if they are not JSON); a value nested too deeply - or holding itself - makes
    that recurse without end: a ValueError, as for any argument that cannot be stored."""
    try:
        return TaskResult(
            task=task,
            id="",
            status=TaskResultStatus.READY,
            enqueued_at=None,
            started_at=None,
            last_attempted_at=None,
            finished_at=None,
            args=list(args),
            kwargs=dict(kwargs),
            backend=alias,
            errors=[],
            worker_ids=[],
        )
    except RecursionError:
        raise ValueError(
            "The arguments cannot be stored: they are nested too deeply (or hold themselves)."
        ) from None
