"""Inline runs (``task(...)``): run the function here and record it as a task run.

The record is written after the function returns, in one savepoint on Django's connection:
PENDING, RUNNING and the final state with the timestamps at which they happened. If that write
fails (for example the caller's transaction is already broken) the call itself still returns
or raises as the function did, and the failure is logged: recording must never change what the
function does.
"""

from __future__ import annotations

import logging
import traceback
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError, transaction
from django.utils import timezone

from .conf import task_settings
from .ids import uuid7
from .serializers import preview
from .states import StateName, StateType, check_transition

if TYPE_CHECKING:
    from .tasks import Task

__all__ = ["run_inline"]

logger = logging.getLogger("django_tasks.runs")


def run_inline(task: Task[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Call the function; record COMPLETED with its result, or FAILED and re-raise."""
    bound = task.bind(args, kwargs)
    run_id = uuid7()
    pending = timezone.now()
    running = timezone.now()
    try:
        value = task.fn(*args, **kwargs)
    except BaseException as exc:
        _record(
            task,
            run_id,
            dict(bound.arguments),
            [
                (StateType.PENDING, StateName.PENDING, "", pending),
                (StateType.RUNNING, StateName.RUNNING, "", running),
                (
                    StateType.FAILED,
                    StateName.FAILED,
                    f"{type(exc).__name__}: {exc}",
                    timezone.now(),
                ),
            ],
            result_preview=None,
            tb=traceback.format_exc(),
        )
        raise
    _record(
        task,
        run_id,
        dict(bound.arguments),
        [
            (StateType.PENDING, StateName.PENDING, "", pending),
            (StateType.RUNNING, StateName.RUNNING, "", running),
            (StateType.COMPLETED, StateName.COMPLETED, "", timezone.now()),
        ],
        result_preview=preview(value),
        tb="",
    )
    return value


def _record(
    task: Task[Any, Any],
    run_id: uuid.UUID,
    arguments: dict[str, Any],
    history: list[tuple[StateType, str, str, datetime]],
    *,
    result_preview: Any,
    tb: str,
) -> None:
    from .models import TaskRun, TaskRunState

    current: StateType | None = None
    for state_type, *_ in history:
        current = check_transition(current, state_type)
    final_type, final_name, final_message, finished = history[-1]
    run = TaskRun(
        id=run_id,
        task_key=task.key,
        task_name=task.name,
        name=task.name,
        origin=TaskRun.Origin.CALL,
        queue=task.queue,
        priority=task.priority,
        tags=list(task.tags),
        state_type=final_type,
        state_name=final_name,
        state_message=final_message,
        scheduled_time=history[0][3],
        attempts=1,
        parameters=b"",
        parameters_preview=preview(arguments),
        result_preview=result_preview,
        traceback=tb,
        created=history[0][3],
        updated=finished,
        started=history[1][3],
        finished=finished,
    )
    states = [
        TaskRunState(run=run, type=t, name=n, message=m, timestamp=ts) for t, n, m, ts in history
    ]
    try:
        with transaction.atomic(using=task_settings().DATABASE_ALIAS):
            run.save(force_insert=True)
            TaskRunState.objects.bulk_create(states)
    except DatabaseError:
        logger.warning("Could not record inline run %s of %s", run_id, task.name, exc_info=True)
