"""Inline runs (``task(...)``): run the function here and record it as a task run.

The record is written after the function returns, in one savepoint on Django's connection:
PENDING, RUNNING (and, per retry, AwaitingRetry, Pending, Retrying) and the final state, with
the timestamps at which they happened. If that write
fails (for example the caller's transaction is already broken) the call itself still returns
or raises as the function did, and the failure is logged: recording must never change what the
function does.
"""

from __future__ import annotations

import logging
import time
import traceback
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError, transaction
from django.utils import timezone

from .conf import task_settings
from .context import TaskRunContext, run_context
from .futures import State
from .hooks import call_hooks, retry_allowed
from .ids import uuid7
from .retries import delay_for
from .serializers import preview
from .states import StateName, StateType, check_transition

if TYPE_CHECKING:
    from .tasks import Task

__all__ = ["run_inline"]

logger = logging.getLogger("django_tasks.runs")


def run_inline(task: Task[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Call the function (again, as its retry options allow); record the run; call hooks.

    Returns the value, or raises the last attempt's exception once retries are spent.
    """
    arguments = dict(task.bind(args, kwargs).arguments)
    run_id = uuid7()
    name = task.run_name(arguments, run_id, "call")
    history: list[tuple[StateType, str, str, datetime]] = [
        (StateType.PENDING, StateName.PENDING, "", timezone.now())
    ]
    attempt = 0
    while True:
        attempt += 1
        context = TaskRunContext(task, run_id, name, attempt, arguments, "call")
        running = StateName.RUNNING if attempt == 1 else StateName.RETRYING
        history.append((StateType.RUNNING, running, "", timezone.now()))
        try:
            with run_context(context):
                value = task.fn(*args, **kwargs)
        except BaseException as exc:
            message = f"{type(exc).__name__}: {exc}"
            failed = State(
                StateType.FAILED, StateName.FAILED, message, timezone.now(), exception=exc
            )
            if _retry_inline(task, context, failed, history):
                continue
            history.append((StateType.FAILED, StateName.FAILED, message, failed.timestamp))
            _record(task, run_id, name, attempt, arguments, history, None, traceback.format_exc())
            call_hooks(task, context, failed)
            raise
        done = State(StateType.COMPLETED, StateName.COMPLETED, "", timezone.now(), data=value)
        history.append((StateType.COMPLETED, StateName.COMPLETED, "", done.timestamp))
        _record(task, run_id, name, attempt, arguments, history, preview(value), "")
        call_hooks(task, context, done)
        return value


def _retry_inline(
    task: Task[Any, Any],
    context: TaskRunContext,
    failed: State,
    history: list[tuple[StateType, str, str, datetime]],
) -> bool:
    """Wait and record AwaitingRetry -> Pending if this failure is to be retried."""
    retries = task.options.retries
    if not isinstance(failed.exception, Exception) or context.attempt > retries:
        return False  # KeyboardInterrupt, SystemExit... are never retried
    if not retry_allowed(task, context, failed):
        return False
    delay = delay_for(task.options.retry_delays, context.attempt, task.options.retry_jitter_factor)
    message = f"{failed.message} (attempt {context.attempt} of {retries + 1}; retrying)"
    history.append((StateType.SCHEDULED, StateName.AWAITING_RETRY, message, failed.timestamp))
    time.sleep(delay)
    history.append((StateType.PENDING, StateName.PENDING, "", timezone.now()))
    return True


def _record(
    task: Task[Any, Any],
    run_id: uuid.UUID,
    name: str,
    attempts: int,
    arguments: dict[str, Any],
    history: list[tuple[StateType, str, str, datetime]],
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
        name=name,
        origin=TaskRun.Origin.CALL,
        queue=task.queue,
        priority=task.priority,
        tags=list(task.tags),
        state_type=final_type,
        state_name=final_name,
        state_message=final_message,
        scheduled_time=history[0][3],
        attempts=attempts,
        parameters=b"",
        parameters_preview=preview(arguments),
        result_preview=result_preview,
        traceback=tb,
        created=history[0][3],
        updated=finished,
        started=_last(history, StateType.RUNNING),
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


def _last(history: list[tuple[StateType, str, str, datetime]], state: StateType) -> datetime:
    """When the run last entered ``state`` (the start of its last attempt, for RUNNING)."""
    return [ts for t, _, _, ts in history if t == state][-1]
