"""Testing code that enqueues runs: capture what a view enqueued, then run it here.

A test of a view that calls ``.delay()`` wants to know which runs the view enqueued, and then
to see what they do - without starting ``runtaskworker``::

    from django_tasks.testing import captured_runs, run_ready

    def test_signup_sends_the_welcome_mail(client):
        with captured_runs() as runs:
            client.post("/signup/", {"email": "ada@example.com"})
        assert runs.task_names == ["send_welcome"]
        assert run_ready() == 1                # executed here, by the worker's own code
        assert runs[0].result() == "ada@example.com"

:func:`captured_runs` collects the runs enqueued inside the block (``.delay()``,
``apply_async()``, ``delay_many()``) as futures. :func:`run_ready` runs every ready run - the
captured ones and any other - in this process, through the same code as ``runtaskworker``
(claim, payload check, retries, caching, hooks, dependencies, states and history), until none
is ready; runs scheduled for later are left alone. Concurrency and rate limits apply as in a
worker, but it never waits for a rate: the runs a rate holds back stay SCHEDULED
(``run_ready(limits=False)`` ignores the limits). It works in Django's ``TestCase`` (and
pytest-django's ``db`` fixture), where the test's transaction is never committed: the runs are
claimed and executed on the test's own connection, inside that transaction, so the task sees
what the test created and everything rolls back with it. In ``TransactionTestCase`` (pytest's
``transactional_db``) the same happens in autocommit.

What it leaves out, for the sake of running inside a test's transaction: one run at a time,
in this thread (``timeout_seconds`` is enforced, with ``SIGALRM``, only on the main thread); no
heartbeat, rescue or ``LISTEN`` (nothing else runs meanwhile); run log lines are written by the
batched writer on its own connection, so under ``TestCase`` they are not kept.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
from django.db import connections
from psycopg.types.json import JsonbLoader, JsonLoader

from . import sql
from .futures import TaskRunFuture
from .limits.gate import LimitGate
from .signals import run_enqueued
from .states import StateType
from .worker.claimer import Claimer
from .worker.connection import QueueConnection
from .worker.outcomes import ClaimedRun
from .worker.process import Worker

__all__ = ["CapturedRuns", "captured_runs", "run_ready"]


class CapturedRuns(list[TaskRunFuture[Any]]):
    """The futures of the runs enqueued inside a :func:`captured_runs` block, in order."""

    def __init__(self) -> None:
        super().__init__()
        #: The task names of the runs, in the same order.
        self.task_names: list[str] = []

    @property
    def ids(self) -> list[uuid.UUID]:
        return [future.id for future in self]

    def of(self, task: Any) -> list[TaskRunFuture[Any]]:
        """The captured runs of ``task`` (a task, or its name)."""
        name = task if isinstance(task, str) else task.name
        return [f for f, n in zip(self, self.task_names, strict=True) if n == name]

    def _add(self, task_name: str, run_id: uuid.UUID) -> None:
        self.append(TaskRunFuture(run_id))
        self.task_names.append(task_name)


@contextlib.contextmanager
def captured_runs() -> Iterator[CapturedRuns]:
    """Collect the runs enqueued in this process inside the block (see the module docstring)."""
    captured = CapturedRuns()

    def receiver(sender: Any, run_id: uuid.UUID, **kwargs: Any) -> None:
        captured._add(getattr(sender, "name", str(sender)), run_id)

    uid = f"django_tasks.testing.{id(captured)}"
    run_enqueued.connect(receiver, weak=False, dispatch_uid=uid)
    try:
        yield captured
    finally:
        run_enqueued.disconnect(dispatch_uid=uid)


def run_ready(queues: Sequence[str] | None = None, *, limits: bool = True) -> int:
    """Run every ready run (of ``queues``, default all) in this process until none is ready;
    returns how many executions that took (a retried run counts once per attempt). See the
    module docstring.

    Limits apply as in a worker - the ``Limit`` rows (tags, queues) and tasks'
    ``rate_limit=`` - but run_ready() never waits for a rate: a run a rate holds back stays
    SCHEDULED (AwaitingRateLimit, its start reserved) and run_ready() returns. Three runs of
    a task with ``rate_limit="1/m"`` make one execution; the other two wait, as they would for
    a worker. ``limits=False`` runs every ready run whatever the limits (none is sent to
    wait, no rate's clock moves): for a test of what the tasks do, not of their limits."""
    if queues is None:
        queues = _ready_queues()
    if not queues:
        return 0
    worker = _TestWorker(list(queues), burst=True, handle_signals=False)
    worker.closes_django_connections = False
    if not limits:
        worker.gate = _NoLimits()
    worker.run()
    return worker.processed


def _ready_queues() -> list[str]:
    from .models import TaskRun

    rows = TaskRun.objects.filter(state_type=StateType.SCHEDULED).values_list("queue", flat=True)
    return sorted(set(rows))


class _DjangoQueueConnection(QueueConnection):
    """The queue's statements on Django's own connection - and so inside the test's
    transaction, when there is one. Never closed here: it is Django's."""

    def __init__(self, alias: str) -> None:
        super().__init__(alias, lambda: False)
        self.prepare = False  # Django's cursors bind on the client

    def open(self) -> psycopg.Connection[Any]:
        connection = connections[self.alias]
        connection.ensure_connection()
        self.conn = connection.connection
        assert self.conn is not None
        return self.conn

    def execute(
        self, query: str, params: dict[str, Any] | None = None, *, give_up_on_stop: bool
    ) -> list[Any]:
        # psycopg's own loaders, not the ones Django registers on its connection (which give
        # JSON as text): the worker's code reads rows as on its own connection.
        with psycopg.Cursor(self.open()) as cursor:
            cursor.adapters.register_loader("jsonb", JsonbLoader)
            cursor.adapters.register_loader("json", JsonLoader)
            cursor.execute(query, params)
            return cursor.fetchall() if cursor.description else []

    def close(self) -> None:
        self.conn = None


class _TestClaimer(Claimer):
    def admit(self, db: QueueConnection, claimed: list[ClaimedRun]) -> list[ClaimedRun]:
        """The worker's admission, without the wake-ups for the runs a rate sent back to wait:
        a burst waits for them, run_ready() leaves them waiting (see :func:`run_ready`)."""
        return self.worker.gate.admit(db, claimed, self.worker.name).runs


class _TestWorker(Worker):
    """A burst worker with one slot in this thread, on Django's connection."""

    def _queue_connection(self) -> QueueConnection:
        return _DjangoQueueConnection(self.alias)

    def _run(self) -> int:
        db = self._queue_connection()
        self._register(db, host="test", pid=0)
        self._limits_changed(db)  # the limits, loaded as a worker does before its first claim
        try:
            self._slot()  # async runs too, one at a time (no lane: one connection, the test's)
        finally:
            self.async_calls.close()
        db.execute(sql.WORKER_STOPPED, {"name": self.name}, give_up_on_stop=False)
        return 0

    claimer_class = _TestClaimer


class _NoLimits(LimitGate):
    """The gate of ``run_ready(limits=False)``: no limit concerns any run."""

    def reload(self, db: QueueConnection) -> None:
        pass

    def release_waiting(self, db: QueueConnection) -> None:
        pass

    @property
    def rates(self) -> bool:
        return False

    def concerns(self, run: ClaimedRun) -> bool:
        return False
