"""A run of a ``django.tasks`` Task read back as a ``TaskResult`` (never unpickling)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from django.tasks import TaskResult, TaskResultStatus
from django.tasks.base import Task, TaskError
from django.tasks.exceptions import TaskResultDoesNotExist
from django.utils.module_loading import import_string

from ..models import TaskRun, TaskRunState
from ..states import StateType
from ..storable import shown

__all__ = ["STATUS", "WorkerCrashed", "django_status", "load_result"]

#: Our state types as Django's four statuses (docs/django-tasks-backend.md).
STATUS: dict[str, TaskResultStatus] = {
    StateType.SCHEDULED: TaskResultStatus.READY,  # new, deferred, or awaiting a retry
    StateType.PENDING: TaskResultStatus.READY,  # claimed, not started
    StateType.RUNNING: TaskResultStatus.RUNNING,
    StateType.CANCELLING: TaskResultStatus.RUNNING,
    StateType.COMPLETED: TaskResultStatus.SUCCESSFUL,
    StateType.FAILED: TaskResultStatus.FAILED,
    StateType.CRASHED: TaskResultStatus.FAILED,
    StateType.CANCELLED: TaskResultStatus.FAILED,
}


def django_status(state_type: str) -> TaskResultStatus:
    return STATUS[state_type]


def load_result(run_id: uuid.UUID, alias: str | None = None) -> TaskResult[Any, Any]:
    """The run ``run_id`` as a ``TaskResult``: ``TaskResultDoesNotExist`` if there is no such
    run of a ``django.tasks`` Task."""
    row = (
        TaskRun.objects.filter(pk=run_id, django_task__isnull=False)
        .values("state_type", "created", "finished", "priority", "queue", "django_task")
        .first()
    )
    if row is None:
        raise TaskResultDoesNotExist(str(run_id))
    document: dict[str, Any] = row["django_task"] or {}
    history = list(
        TaskRunState.objects.filter(run_id=run_id, type__in=[StateType.RUNNING, StateType.CRASHED])
        .order_by("timestamp", "id")
        .values_list("type", "timestamp", "worker", "message")
    )
    attempts = [(at, worker) for kind, at, worker, _ in history if kind == StateType.RUNNING]
    crashes = [(at, message) for kind, at, _, message in history if kind == StateType.CRASHED]
    status = django_status(row["state_type"])
    finished = status in (TaskResultStatus.SUCCESSFUL, TaskResultStatus.FAILED)
    result: TaskResult[Any, Any] = TaskResult(
        task=_task(document, dict(row)),
        id=str(run_id),
        status=status,
        enqueued_at=row["created"],
        started_at=attempts[0][0] if attempts else None,
        last_attempted_at=attempts[-1][0] if attempts else None,
        finished_at=row["finished"] if finished else None,
        args=document["args"],
        kwargs=document["kwargs"],
        backend=alias or document["backend"],
        errors=_errors(document.get("errors", []), crashes),
        worker_ids=[worker for _, worker in attempts],
    )
    if status == TaskResultStatus.SUCCESSFUL:
        object.__setattr__(result, "_return_value", document.get("return_value"))
    return result


class WorkerCrashed(Exception):
    """The ``exception_class`` of an attempt whose worker process died under it (killed, out
    of memory): it raised nothing, and the rescue recorded it."""


def _errors(stored: list[dict[str, Any]], crashes: list[tuple[datetime, str]]) -> list[TaskError]:
    """One ``TaskError`` per failed attempt, in order: what the task raised, and attempts
    lost with their worker (the rescue's message as the traceback)."""
    path = f"{WorkerCrashed.__module__}.{WorkerCrashed.__qualname__}"
    timed = [
        (datetime.fromisoformat(e["at"]), e["exception_class_path"], e["traceback"]) for e in stored
    ]
    timed += [(at, path, f"{path}: {message}\n") for at, message in crashes]
    return [TaskError(exception_class_path=kind, traceback=text) for _, kind, text in sorted(timed)]


def _task(document: dict[str, Any], row: dict[str, Any]) -> Task[Any, Any]:
    """The Task as it was enqueued: its stored priority, queue, backend and run_after."""
    path = document["path"]
    try:
        task = import_string(path)
    except ImportError:
        raise TaskResultDoesNotExist(f"Its Task {shown(path)} cannot be imported here.") from None
    if not isinstance(task, Task):
        raise TaskResultDoesNotExist(f"{shown(path)} is not a django.tasks Task.")
    run_after = document.get("run_after")
    return task.using(
        priority=row["priority"],
        queue_name=row["queue"],
        backend=document["backend"],
        run_after=datetime.fromisoformat(run_after) if run_after else None,
    )
