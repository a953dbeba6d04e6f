"""What a worker knows about a claimed run and its outcome, and the statements that record
an outcome (used by the worker processes and by the supervisor when it kills one)."""

from __future__ import annotations

import json
import uuid
from base64 import b64encode
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.utils import timezone
from psycopg.types.json import Json

from .. import sql
from ..futures import State
from ..states import StateName, StateType
from ..storable import describe_exception, shown, storable_json, storable_message
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
    "unrecordable",
]


class TaskRunTimeout(TimeoutError):
    """Raised inside a task that ran longer than its ``timeout_seconds``."""


class TaskRunCancelled(BaseException):
    """Raised inside a task whose run was cancelled (a BaseException, so that a broad
    ``except Exception`` in task code does not swallow it)."""


@dataclass(frozen=True)
class Outcome:
    """How a run ended (or an attempt of it), ready to be written: its message and traceback
    are made storable here (see :mod:`..storable`), its preview by ``preview()``."""

    type: StateType
    name: str
    message: str
    payload: bytes | None
    preview: Any
    traceback: str
    #: The return value or the exception itself, for hooks and ``retry_condition_fn``.
    value: Any = field(default=None, compare=False, repr=False)
    exception: BaseException | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.message:
            object.__setattr__(self, "message", storable_message(self.message))
        if self.traceback:
            object.__setattr__(self, "traceback", storable_message(self.traceback))


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
    queue: str = ""
    tags: tuple[str, ...] = ()
    #: Marked by its claim as taking a slot of a concurrency limit (django_tasks.limits).
    holds_slot: bool = False
    #: Starts on a start a rate limit reserved for it (it waited for that rate).
    rate_slot: bool = False
    #: Why its row could not be read as written (e.g. ``tags`` set to a number by SQL): the
    #: run fails with this message instead of starting (see :meth:`from_claim`).
    defect: str = ""

    @classmethod
    def from_claim(cls, row: Sequence[Any], queue: str) -> ClaimedRun:
        """The run a row of :func:`..sql.claim` returned. A column our code always writes as a
        JSON list but that holds something else (SQL wrote it) becomes empty and is named in
        :attr:`defect`: one unreadable row must fail its own run, not every run of its batch."""
        defects: list[str] = []
        tags = _listed(row[14], str, "tags (a JSON list of strings)", defects)
        delays = _listed(row[8], int | float, "retry_delays (a JSON list of numbers)", defects)
        return cls(
            id=row[1],
            task_key=row[2],
            task_name=row[3],
            parameters=bytes(row[4]),
            timeout=row[5],
            attempts=row[6],
            retries=row[7],
            retry_delays=delays,
            retry_jitter=row[9],
            pending_at=row[10],
            name=row[13],
            queue=queue,
            tags=tags,
            holds_slot=row[15],
            rate_slot=row[16],
            defect=" and ".join(defects),
        )


def _listed(value: Any, kind: Any, column: str, defects: list[str]) -> tuple[Any, ...]:
    """``value`` (a list read from JSON: the columns are NOT NULL) as a tuple of ``kind``; or
    ``()``, with the defect added to ``defects``, when it is something else."""
    if isinstance(value, list) and all(
        isinstance(item, kind) and not isinstance(item, bool) for item in value
    ):
        return tuple(value)
    defects.append(f"{column} holds {shown(value)}")
    return ()


@dataclass(frozen=True)
class Deferred:
    """A finished run whose RUNNING and final states are written with the next claim."""

    run: ClaimedRun
    started: datetime
    finished: datetime
    outcome: Outcome

    def entry(self) -> bytes:
        """This completion as one object of the JSON array FLUSH and CLAIM take (and as it is
        kept in the process's journal until written). Made for every short run, so written
        out by hand: a third of the cost of building a dict for ``json.dumps``."""
        outcome = self.outcome
        result = "null" if outcome.payload is None else f'"{b64encode(outcome.payload).decode()}"'
        try:
            preview = _ENCODE(outcome.preview) if outcome.preview is not None else "null"
        except ValueError:  # a preview built elsewhere than preview(): escape it
            preview = _ENCODE(storable_json(outcome.preview))
        return (
            f'{{"id":"{self.run.id}","started":{self.started.timestamp()!r},'
            f'"finished":{self.finished.timestamp()!r},"type":"{outcome.type.value}",'
            f'"name":{_ENCODE(outcome.name)},"message":{_text(outcome.message)},'
            f'"result":{result},"preview":{preview},"traceback":{_text(outcome.traceback)}}}'
        ).encode()


#: JSON without NaN or infinities (PostgreSQL's jsonb has none).
_ENCODE = json.JSONEncoder(allow_nan=False).encode


def _text(text: str) -> str:
    return _ENCODE(text) if text else '""'


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


def finish_params(
    run_id: uuid.UUID, worker: str, outcome: Outcome, finished: datetime | None = None
) -> dict[str, Any]:
    """``finished``: when the run ended, on the database's clock, for an outcome written
    later (an async lane's); ``None``: now."""
    return {
        "finished": finished,
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
    """Write a run's final state (only if ``worker`` still holds it). Used by the supervisor too.

    If the database refuses the outcome as it is, the run ends FAILED with the reason
    (:func:`unrecordable`): recording never takes a worker down."""
    try:
        rows = db.execute(sql.FINISH, finish_params(run_id, worker, outcome), give_up_on_stop=False)
    except Exception as exc:  # lost connections are retried inside execute(): this is data
        outcome = unrecordable(outcome, exc)
        rows = db.execute(sql.FINISH, finish_params(run_id, worker, outcome), give_up_on_stop=False)
    return bool(rows)


def unrecordable(outcome: Outcome, error: BaseException) -> Outcome:
    """What is written instead of an outcome the database refused: FAILED, saying why."""
    what = "result" if outcome.type == StateType.COMPLETED else f"outcome ({outcome.name})"
    message = f"Could not record the run's {what}: {describe_exception(error)}"
    return Outcome(StateType.FAILED, StateName.FAILED, message, None, None, "")


def retry_run(
    db: QueueConnection, run_id: uuid.UUID, worker: str, message: str, tb: str, delay: float
) -> None:
    """Put a failed run back in the topic as AwaitingRetry after ``delay`` seconds."""
    params = {
        "id": run_id,
        "worker": worker,
        "message": storable_message(message),
        "traceback": storable_message(tb),
        "delay": delay,
    }
    db.execute(sql.RETRY, params, give_up_on_stop=False)
