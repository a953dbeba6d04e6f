"""django_tasks: Prefect-style tasks for Django, with PostgreSQL as the only infrastructure.

Public API::

    from django_tasks import task

    @task(queue="emails")
    def send_welcome(user_id: int) -> str: ...

    send_welcome(42)            # inline, recorded as a task run
    run = send_welcome.delay(42)  # background, committed with the caller's transaction
    run.result(timeout=10)

This module must not import models: it is imported while Django populates INSTALLED_APPS.
"""

from __future__ import annotations

from .artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from .context import MissingContextError, TaskRunContext, get_run_context
from .dependencies import UpstreamFailed, allow_failure
from .futures import State, TaskRunFailed, TaskRunFuture
from .logs import get_run_logger
from .manual_states import Cancelled, Completed, Crashed, Failed
from .progress import Progress, set_progress
from .recorder import flush
from .registry import UnknownTask
from .retries import exponential_backoff
from .runners import (
    SubmittedFuture,
    TaskFutureList,
    ThreadPoolTaskRunner,
    as_completed,
    unmapped,
    wait,
)
from .schedules import cron, every
from .serializers import PayloadError, PayloadSignatureError, PayloadTooLarge, SerializationError
from .states import StateName, StateType
from .tasks import Task, task
from .transactions import TaskTransaction, current_transaction, transaction

__all__ = [
    "Cancelled",
    "Completed",
    "Crashed",
    "Failed",
    "MissingContextError",
    "PayloadError",
    "PayloadSignatureError",
    "PayloadTooLarge",
    "Progress",
    "SerializationError",
    "State",
    "StateName",
    "StateType",
    "SubmittedFuture",
    "Task",
    "TaskFutureList",
    "TaskRunContext",
    "TaskRunFailed",
    "TaskRunFuture",
    "TaskTransaction",
    "ThreadPoolTaskRunner",
    "UnknownTask",
    "UpstreamFailed",
    "allow_failure",
    "as_completed",
    "create_link_artifact",
    "create_markdown_artifact",
    "create_table_artifact",
    "cron",
    "current_transaction",
    "every",
    "exponential_backoff",
    "flush",
    "get_run_context",
    "get_run_logger",
    "set_progress",
    "task",
    "transaction",
    "unmapped",
    "wait",
]

__version__ = "0.1.0"
