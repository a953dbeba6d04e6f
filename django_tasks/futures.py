"""Futures for background runs: look a run up, wait for it and read its result from any process.

A :class:`TaskRunFuture` holds only the run id, so it can be rebuilt anywhere with
``TaskRunFuture(run_id)``; every read goes to the database.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from .progress import Progress
from .serializers import loads
from .states import FINAL_TYPES, StateType

__all__ = ["BaseFuture", "LocalFuture", "State", "TaskRunFailed", "TaskRunFuture"]

R = TypeVar("R")


class _Polling:
    """The waits between two reads of a run: 5 ms at first, doubled up to 0.2 s (a run that
    ends at once is seen at once; a long one costs five reads a second), never past the
    deadline."""

    def __init__(self, timeout: float | None) -> None:
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.delay = 0.005

    def next_delay(self) -> float | None:
        """Seconds to wait before the next read; ``None`` once the time is up."""
        delay = self.delay
        if self.deadline is not None:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                return None
            delay = min(delay, remaining)
        self.delay = min(self.delay * 2, 0.2)
        return delay


@dataclass(frozen=True)
class State:
    """A run's current state as read from the database."""

    type: StateType
    name: str
    message: str
    timestamp: datetime
    #: Set on the states handed to hooks and ``retry_condition_fn``: the run's return value
    #: (completed) or its exception (failed). States read from the database carry neither.
    data: Any = field(default=None, compare=False, repr=False)
    exception: BaseException | None = field(default=None, compare=False, repr=False)

    def result(self, raise_on_failure: bool = True) -> Any:
        """Prefect's ``state.result()`` for hook and retry-condition states: the value, or the
        exception raised again (returned with ``raise_on_failure=False``)."""
        if self.exception is not None:
            if raise_on_failure:
                raise self.exception
            return self.exception
        return self.data

    def is_final(self) -> bool:
        return self.type in FINAL_TYPES

    def is_completed(self) -> bool:
        return self.type == StateType.COMPLETED

    def is_failed(self) -> bool:
        return self.type == StateType.FAILED

    def is_scheduled(self) -> bool:
        return self.type == StateType.SCHEDULED

    def is_running(self) -> bool:
        return self.type == StateType.RUNNING


class TaskRunFailed(Exception):
    """A run ended FAILED, CRASHED or CANCELLED and its own exception could not be rebuilt."""

    def __init__(self, message: str, *, state: State, traceback: str = "") -> None:
        super().__init__(message)
        self.state = state
        self.traceback = traceback


class BaseFuture:
    """What every future has: the run's ``id``, ``wait()`` and ``result()``. Passing a future
    as an argument makes its run an upstream of the new one (:mod:`.dependencies`)."""

    id: uuid.UUID

    def wait(self, timeout: float | None = None) -> State:
        raise NotImplementedError

    def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> Any:
        raise NotImplementedError

    async def await_final(self, timeout: float | None = None) -> State:
        """:meth:`wait` for async code, holding no thread while the run goes on."""
        raise NotImplementedError


class LocalFuture(BaseFuture):
    """A future of a run in this process (``.submit()``: :class:`..runners.SubmittedFuture`).
    A background run cannot wait for it in the database: ``.delay()`` waits for it and passes
    its result instead (:func:`..topic.enqueue`)."""


class TaskRunFuture(BaseFuture, Generic[R]):
    """A handle on one background run, valid in any process that can reach the database."""

    def __init__(self, run_id: uuid.UUID | str) -> None:
        self.id = run_id if isinstance(run_id, uuid.UUID) else uuid.UUID(str(run_id))
        self._state: State | None = None

    def __repr__(self) -> str:
        return f"<TaskRunFuture {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TaskRunFuture) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def refresh(self) -> State:
        """Read the run's current state from the database."""
        from .models import TaskRun

        row = (
            TaskRun.objects.filter(pk=self.id)
            .values_list("state_type", "state_name", "state_message", "updated")
            .first()
        )
        if row is None:
            raise TaskRun.DoesNotExist(
                f"No task run {self.id}: it was never committed (rolled back?) or was purged."
            )
        self._state = State(StateType(row[0]), row[1], row[2], row[3])
        return self._state

    @property
    def state(self) -> State:
        """The run's current state, read fresh from the database."""
        return self.refresh()

    @property
    def progress(self) -> Progress | None:
        """The run's latest ``set_progress()`` value, read from the database (``None``: it
        set none). Written a few times a second while it runs; the last value is kept."""
        from .models import TaskRun

        row = TaskRun.objects.filter(pk=self.id).values_list("progress", flat=True).first()
        return Progress.from_json(row)

    def cancel(self) -> bool:
        """Ask for the run to be cancelled; ``False`` if it had already finished.

        A run not yet started is CANCELLED at once; a running one becomes CANCELLING and its
        worker interrupts it (then CANCELLED). Runs in the caller's transaction, like
        ``.delay()``.
        """
        from .cancelling import cancel

        return cancel(self.id) is not None

    def wait(self, timeout: float | None = None) -> State:
        """Block until the run is in a final state or ``timeout`` seconds pass; return the state.

        Like Prefect's ``wait()``, running out of time is not an error: check ``is_final()``.
        """
        polling = _Polling(timeout)
        while True:
            state = self.refresh()
            delay = None if state.is_final() else polling.next_delay()
            if delay is None:
                return state
            time.sleep(delay)

    def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> R:
        """Wait for the run and return its value.

        A run that failed raises its own exception again (or :class:`TaskRunFailed` when that
        exception could not be pickled); with ``raise_on_failure=False`` the exception is
        returned instead. Raises :class:`TimeoutError` if the run is not final in time.
        """
        state = self.wait(timeout)
        if not state.is_final():
            raise TimeoutError(f"Task run {self.id} is still {state.name} after {timeout}s.")
        return self._outcome(state, raise_on_failure)

    async def await_final(self, timeout: float | None = None) -> State:
        """:meth:`wait` for async code (views, async tasks): the same reads, with
        ``asyncio.sleep`` between them, so no thread is held while the run goes on."""
        from asgiref.sync import sync_to_async

        refresh = sync_to_async(self.refresh, thread_sensitive=True)
        polling = _Polling(timeout)
        while True:
            state = await refresh()
            delay = None if state.is_final() else polling.next_delay()
            if delay is None:
                return state
            await asyncio.sleep(delay)

    async def aresult(self, timeout: float | None = None, raise_on_failure: bool = True) -> R:
        """:meth:`result` for async code: waits with :meth:`await_final`."""
        from asgiref.sync import sync_to_async

        state = await self.await_final(timeout)
        if not state.is_final():
            raise TimeoutError(f"Task run {self.id} is still {state.name} after {timeout}s.")
        outcome = sync_to_async(self._outcome, thread_sensitive=True)
        value: R = await outcome(state, raise_on_failure)
        return value

    def _outcome(self, state: State, raise_on_failure: bool) -> R:
        """The value of a final run (or its error, raised or returned)."""
        from .models import TaskRun

        run = TaskRun.objects.only("result", "traceback", "task_key").get(pk=self.id)
        payload = bytes(run.result) if run.result is not None else None
        if state.is_completed():
            if not payload:
                return None  # type: ignore[return-value]
            value: R = loads(payload, task_key=run.task_key, field="result")
            return value
        error = self._failure(state, payload, run.traceback, run.task_key)
        if raise_on_failure:
            raise error
        return error  # type: ignore[return-value]

    def _failure(
        self, state: State, payload: bytes | None, tb: str, task_key: str
    ) -> BaseException:
        if payload:
            try:
                exc = loads(payload, task_key=task_key, field="result")
            except Exception:  # a bad payload must not hide the failure itself
                exc = None
            if isinstance(exc, BaseException):
                return exc
        text = f"Task run {self.id} ended {state.name}: {state.message}"
        return TaskRunFailed(text, state=state, traceback=tb)

    def __reduce__(self) -> tuple[Any, ...]:
        return (TaskRunFuture, (str(self.id),))
