"""The PostgreSQL topic: putting runs in (enqueue) and the worker's own connection.

Enqueue uses Django's connection so that it joins the caller's transaction. Workers use a
connection of their own (see :func:`open_worker_connection`), held for the life of the process
whatever ``CONN_MAX_AGE`` says, so task code that closes or breaks Django's connection cannot
disturb the queue, and no run pays for a new connection.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg
from django.db import connections
from psycopg.types.json import Json

from . import sql
from .conf import task_settings
from .futures import TaskRunFuture
from .serializers import dumps, preview
from .states import StateName

if TYPE_CHECKING:
    from .tasks import Task

__all__ = ["check_importable", "enqueue", "open_worker_connection"]


def check_importable(task: Task[Any, Any]) -> None:
    """Refuse a task a worker could never find: defined in ``__main__`` or inside a function."""
    fn = task.fn
    if fn.__module__ == "__main__" or "<locals>" in fn.__qualname__:
        raise ValueError(
            f"Task {task.name!r} ({fn.__module__}.{fn.__qualname__}) cannot run in the "
            f"background: workers find tasks by importing installed apps' tasks.py modules, so "
            f"define it at module level in one of them (or in a module that one imports)."
        )


def enqueue(
    task: Task[Any, Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    queue: str,
    priority: int,
    scheduled_time: datetime | None,
) -> TaskRunFuture[Any]:
    """Insert one SCHEDULED run (and its history row, and a NOTIFY) in one round trip.

    Serialization happens first, so a value that cannot be pickled or is too large raises
    before anything is sent to the database.
    """
    check_importable(task)
    bound = task.bind(args, kwargs)
    run_id = uuid.uuid4()
    params: dict[str, Any] = {
        "id": run_id,
        "task_key": task.key,
        "task_name": task.name,
        "name": task.name,
        "queue": queue,
        "priority": priority,
        "tags": Json(list(task.tags)),
        "state_name": StateName.SCHEDULED,
        "scheduled_time": scheduled_time,
        "parameters": dumps((args, kwargs), what="parameters"),
        "parameters_preview": Json(preview(dict(bound.arguments))),
    }
    with connections[task_settings().DATABASE_ALIAS].cursor() as cursor:
        cursor.execute(sql.ENQUEUE, params)
    return TaskRunFuture(run_id)


def open_worker_connection(alias: str | None = None) -> psycopg.Connection[Any]:
    """A new autocommit psycopg connection to the database Django uses for task tables."""
    wrapper = connections[alias or task_settings().DATABASE_ALIAS]
    params = wrapper.get_connection_params()
    # Django's cursor class and adapter context are for the ORM; the queue wants plain tuples.
    for key in ("cursor_factory", "context"):
        params.pop(key, None)
    conn: psycopg.Connection[Any] = psycopg.connect(**params, autocommit=True)
    conn.execute("SET application_name = 'django_tasks worker'")
    return conn
