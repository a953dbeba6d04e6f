"""What a worker knows about a claimed run and its outcome, and the statements that record
an outcome (used by the worker processes and by the supervisor when it kills one)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.utils import timezone
from psycopg.types.json import Json

from .. import sql
from ..futures import State
from ..states import StateType
from .connection import QueueConnection

__all__ = [
    "ClaimedRun",
    "Deferred",
    "Outcome",
    "TaskRunCancelled",
    "TaskRunTimeout",
    "finish_params",
    "finish_run",
    "outcome_state",
    "retry_run",
]


class TaskRunTimeout(TimeoutError):
    """Raised inside a task that ran longer than its ``timeout_seconds``."""


class TaskRunCancelled(BaseException):
    """Raised inside a task whose run was cancelled (a BaseException, so that a broad
    ``except Exception`` in task code does not swallow it)."""


@dataclass(frozen=True)
class Outcome:
    type: StateType
    name: str
    message: str
    payload: bytes | None
    preview: Any
    traceback: str
    #: The return value or the exception itself, for hooks and ``retry_condition_fn``.
    value: Any = field(default=None, compare=False, repr=False)
    exception: BaseException | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class ClaimedRun:
    id: uuid.UUID
    task_key: str
    task_name: str
    parameters: bytes
    timeout: float | None = None
    attempts: int = 0
    retries: int = 0
    retry_delays: tuple[float, ...] = ()
    retry_jitter: float | None = None
    pending_at: datetime | None = None
    name: str = ""


@dataclass(frozen=True)
class Deferred:
    """A finished run whose RUNNING and final states are written with the next claim."""

    run: ClaimedRun
    started: datetime
    finished: datetime
    outcome: Outcome


def outcome_state(outcome: Outcome) -> State:
    """An outcome as the :class:`State` that hooks and ``retry_condition_fn`` receive."""
    return State(
        outcome.type,
        outcome.name,
        outcome.message,
        timezone.now(),
        data=outcome.value,
        exception=outcome.exception,
    )


def finish_params(run_id: uuid.UUID, worker: str, outcome: Outcome) -> dict[str, Any]:
    return {
        "id": run_id,
        "worker": worker,
        "type": outcome.type.value,
        "name": outcome.name,
        "message": outcome.message,
        "result": outcome.payload,
        "result_preview": Json(outcome.preview),
        "traceback": outcome.traceback,
    }


def finish_run(db: QueueConnection, run_id: uuid.UUID, worker: str, outcome: Outcome) -> bool:
    """Write a run's final state (only if ``worker`` still holds it). Used by the supervisor too."""
    rows = db.execute(sql.FINISH, finish_params(run_id, worker, outcome), give_up_on_stop=False)
    return bool(rows)


def retry_run(
    db: QueueConnection, run_id: uuid.UUID, worker: str, message: str, tb: str, delay: float
) -> None:
    """Put a failed run back in the topic as AwaitingRetry after ``delay`` seconds."""
    db.execute(
        sql.RETRY,
        {"id": run_id, "worker": worker, "message": message, "traceback": tb, "delay": delay},
        give_up_on_stop=False,
    )
