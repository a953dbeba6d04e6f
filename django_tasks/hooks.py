"""State hooks and retry conditions: user code called around a run's final state.

``on_completion`` hooks run after a run ends COMPLETED (or CACHED), ``on_failure`` hooks after
it ends FAILED for good (not between retries), each as ``hook(task, task_run, state)`` where
``task_run`` is the :class:`~django_tasks.context.TaskRunContext`. A hook that raises is
logged and the others still run: a hook never changes a run's state. ``retry_condition_fn``
decides whether a failure is retried; if it raises, the run is not retried (the error is
logged) - retrying on a broken condition could repeat a harmful side effect.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .context import TaskRunContext, run_context
from .futures import State
from .states import StateType

if TYPE_CHECKING:
    from .tasks import Task

__all__ = ["call_hooks", "retry_allowed"]

logger = logging.getLogger("django_tasks.hooks")


def retry_allowed(task: Task[Any, Any], task_run: TaskRunContext, state: State) -> bool:
    """Whether ``task``'s ``retry_condition_fn`` (if any) lets this failed state be retried."""
    condition = task.options.retry_condition_fn
    if condition is None:
        return True
    try:
        with run_context(task_run):
            return bool(condition(task, task_run, state))
    except Exception:
        logger.exception(
            "retry_condition_fn of %s raised; run %s is not retried", task, task_run.id
        )
        return False


def call_hooks(task: Task[Any, Any], task_run: TaskRunContext, state: State) -> None:
    """Call the hooks for a final ``state``: ``on_completion`` or ``on_failure``."""
    if state.type == StateType.COMPLETED:
        hooks = task.options.on_completion
    elif state.type == StateType.FAILED:
        hooks = task.options.on_failure
    else:
        return
    for hook in hooks:
        try:
            with run_context(task_run):
                hook(task, task_run, state)
        except Exception:
            name = getattr(hook, "__qualname__", repr(hook))
            logger.exception("Hook %s of run %s (%s) raised", name, task_run.id, task.name)
