"""Executing one claimed run: the part of :class:`~.process.Worker` that calls a function.

Chooses how a run is executed - with RUNNING written first, deferred (short runs), atomic
(the function and COMPLETED in one transaction), cached (under the key's lock) - calls it
(interruptible by its timeout or a cancel), and records the outcome: retry, final state,
hooks. The claim loop, heartbeats and the control thread are in :mod:`.process`.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError, close_old_connections, connections
from django.db import transaction as db_transaction
from django.db.backends.signals import connection_created
from django.dispatch import receiver
from django.utils import timezone
from psycopg.types.json import Json

from .. import sql
from ..cache_policies import CacheKeyError
from ..caching import (
    CachedResult,
    cache_key,
    cache_lock,
    cached_message,
    django_execute,
    lookup,
    store,
)
from ..conf import task_settings
from ..context import TaskRunContext, run_context
from ..dependencies import collect_upstreams, resolve
from ..futures import State
from ..hooks import call_hooks, retry_allowed
from ..logs import for_run
from ..registry import UnknownTask, registry
from ..retries import delay_for
from ..serializers import PayloadError, PayloadSignatureError, dumps, loads, preview
from ..signals import run_finished, run_retried, run_started, send
from ..states import StateName, StateType
from ..storable import describe_exception, format_traceback, storable_message
from ..transactions import TaskTransaction
from .connection import QueueConnection
from .journal import ProcessJournal
from .outcomes import (
    ClaimedRun,
    Deferred,
    Outcome,
    TaskRunCancelled,
    TaskRunTimeout,
    finish_params,
    finish_run,
    outcome_state,
    retry_run,
)

if TYPE_CHECKING:
    from ..tasks import Task

__all__ = ["DEFER_BELOW", "RunMixin"]

logger = logging.getLogger("django_tasks.worker")

#: Runs of a task whose recent runs took less than this are executed without writing RUNNING
#: first (their completion is written with the next claim).
DEFER_BELOW = 0.01
#: A deferred run still going after this many seconds is marked RUNNING by the control thread.
MARK_RUNNING_AFTER = 0.02
#: Adaptive claims: at most this many runs, and about this many seconds of expected work.
MAX_BATCH_SIZE = 100
BATCH_WORK = 0.02
#: A microsecond, to keep a run's history strictly ordered when clocks tick alike.
_TICK = timedelta(microseconds=1)


_django_connected = False


@receiver(connection_created, dispatch_uid="django_tasks.worker.running")
def _note_django_connection(**kwargs: Any) -> None:
    """A task (or a hook) opened a Django connection: from now on each run ends, as a request
    does, with ``close_old_connections()``."""
    global _django_connected
    _django_connected = True


def note_open_django_connections() -> None:
    """A worker started in a process that already uses Django's connections (embedded, tests)
    closes them after runs from the start."""
    if any(c.connection is not None for c in connections.all(initialized_only=True)):
        _note_django_connection()


class _RollBack(Exception):
    """Leaves an atomic run's transaction so that its writes are rolled back."""


def _debug_run(run_id: uuid.UUID, message: str, *args: Any) -> None:
    """A ``-v 2`` line about a run, with its id; one level check per run otherwise."""
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug(message, run_id, *args, extra=for_run(run_id))


class RunMixin:
    """The per-run methods of a worker; the attributes below are set by ``Worker``."""

    name: str
    concurrency: int
    max_tasks: int | None
    processed: int
    journal: ProcessJournal
    recycle: bool
    _durations: dict[str, float]
    _lock: threading.Lock
    _count_lock: threading.Lock
    _interruptible: bool
    _executing: uuid.UUID | None
    _current: ClaimedRun | None
    _current_since: float
    _current_started: datetime | None
    _current_marked: bool
    _current_lost: bool

    def stop(self) -> None:
        raise NotImplementedError

    def _defer(self, db: QueueConnection, item: Deferred) -> None:
        raise NotImplementedError

    def _flush_deferred(self, db: QueueConnection) -> None:
        raise NotImplementedError

    @staticmethod
    def _discarded(run_id: uuid.UUID, outcome: str) -> None:
        logger.warning(
            "Run %s was taken from this worker while it ran (cancelled, rescued as lost, or by "
            "a supervisor's kill): its outcome %s is discarded",
            run_id,
            outcome,
            extra=for_run(run_id),
        )

    def _count_processed(self) -> None:
        """One more run taken to an end (or to a retry); under ``_count_lock``. Also in the
        journal, where the supervisor reads it (its metrics)."""
        self.processed += 1
        self.journal.count_processed()

    def _process(self, db: QueueConnection, run: ClaimedRun) -> None:
        """Execute one claimed run to its outcome. The journal says which run this process
        is on meanwhile - from before its parameters are unpickled until its outcome is
        written or journaled - so that if the process dies, its supervisor knows which run
        took it down (see :mod:`.journal`)."""
        single = self.concurrency == 1
        if single:
            self.journal.begin(run.id, run.task_name, db.db_epoch())
        try:
            self._execute(db, run)
        finally:
            if single:
                self.journal.end()

    def _execute(self, db: QueueConnection, run: ClaimedRun) -> None:
        try:
            task = registry.get(run.task_key)
        except UnknownTask:
            self._refuse(
                db,
                run,
                f"Unknown task {run.task_name!r} (key {run.task_key}): no task with this key is "
                f"registered in this worker. Is its module imported by an installed app's "
                f"tasks.py, and does the worker run the same code as the enqueuer?",
            )
            return
        try:
            args, kwargs = loads(run.parameters)
        except PayloadSignatureError as exc:
            self._refuse(db, run, f"Refused to unpickle the parameters: {exc}")
            return
        except Exception as exc:
            self._refuse(db, run, f"The parameters could not be unpickled: {exc!r}")
            return
        if collect_upstreams(args, kwargs):
            try:  # upstream runs have completed (or failed, where allow_failure lets them)
                args, kwargs = resolve(args, timeout=0), resolve(kwargs, timeout=0)
            except BaseException as exc:
                self._refuse(db, run, f"An upstream run's result could not be read: {exc!r}")
                return
        expected = self._durations.get(run.task_key, 0.0)
        # Deferred writes need the control thread to watch the one run in hand: only for a
        # process with a single slot (as the supervisor runs them).
        if task.options.caches:
            outcome = self._run_cached(db, run, task, args, kwargs)
        elif (
            self.concurrency > 1
            or run.timeout is not None
            or expected >= DEFER_BELOW
            or task.options.atomic
        ):
            outcome = self._run_now(db, run, task, args, kwargs)
        else:
            outcome = self._run_deferred(db, run, task, args, kwargs)
        hooks = task.options.on_completion or task.options.on_failure
        if outcome is not None and (hooks or run_finished.receivers):
            # Only when someone listens: a short run's whole bookkeeping is a few microseconds.
            state = outcome_state(outcome)
            send(run_finished, task, run_id=run.id, state=state)
            if hooks:
                call_hooks(task, self._context(task, run, args, kwargs), state)
        with self._count_lock:
            self._count_processed()
            if self.max_tasks is not None and self.processed >= self.max_tasks:
                logger.info("Ran %d runs (--max-tasks-per-child): stopping", self.processed)
                self.recycle = True
                self.stop()

    def _run_now(
        self,
        db: QueueConnection,
        run: ClaimedRun,
        task: Task[Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Outcome | None:
        """A run expected to be long (or with a timeout): RUNNING first, then the function.
        Returns the final outcome (``None`` when the run was retried or is no longer ours)."""
        self._flush_deferred(db)  # earlier completions first
        started = db.execute(
            sql.START, {"id": run.id, "worker": self.name, "started": None}, give_up_on_stop=False
        )
        if not started:
            logger.warning(
                "Run %s is no longer held by this worker; skipped", run.id, extra=for_run(run.id)
            )
            return None
        attempts = started[0][0]
        _debug_run(run.id, "Run %s (%s) started", run.task_name)
        if task.options.atomic:
            return self._run_atomic(db, run, task, args, kwargs, attempts)
        outcome, _, _ = self._timed_call(db, run, task, args, kwargs, attempts, marked=True)
        return self._record(db, task, run, outcome, attempts, args, kwargs)

    def _run_atomic(
        self,
        db: QueueConnection,
        run: ClaimedRun,
        task: Task[Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        attempts: int,
    ) -> Outcome | None:
        """An ``atomic=True`` run: the function's writes and the COMPLETED state commit in one
        transaction on Django's connection. If the function raises, or the run was taken
        from this worker meanwhile (rescued, cancelled), its writes are rolled back: a task
        whose effects are in the database has them exactly once."""
        alias = task_settings().DATABASE_ALIAS
        taken = False
        try:
            with db_transaction.atomic(using=alias):
                outcome, _, _ = self._timed_call(
                    db, run, task, args, kwargs, attempts, marked=True, close=False
                )
                if outcome.type != StateType.COMPLETED:
                    raise _RollBack
                if not django_execute(sql.FINISH, finish_params(run.id, self.name, outcome)):
                    taken = True
                    raise _RollBack
                txn = TaskTransaction(None)
                db_transaction.on_commit(lambda: txn._commit_background(task), using=alias)
        except _RollBack:
            pass
        except DatabaseError as exc:  # the commit itself failed: nothing of the run stays
            message = f"The run's transaction failed: {describe_exception(exc)}"
            tb = format_traceback(exc)
            outcome = Outcome(StateType.FAILED, StateName.FAILED, message, None, None, tb)
        finally:
            close_old_connections()
        if taken:
            self._discarded(run.id, outcome.name)
            return None
        if outcome.type == StateType.COMPLETED:
            return outcome
        return self._record(db, task, run, outcome, attempts, args, kwargs)

    def _run_cached(
        self,
        db: QueueConnection,
        run: ClaimedRun,
        task: Task[Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Outcome | None:
        """A run of a caching task: with its key locked, a recorded result ends it CACHED;
        otherwise it runs (RUNNING first) and its result is stored before the lock is let go,
        so that runs with the same key on other workers find it (see :mod:`..caching`)."""
        try:
            key = cache_key(task, self._context(task, run, args, kwargs))
        except CacheKeyError as exc:
            self._refuse(db, run, str(exc))
            return None

        def execute(query: str, params: dict[str, Any]) -> list[Any]:
            return db.execute(query, params, give_up_on_stop=False)

        self._flush_deferred(db)
        with cache_lock(key, execute):
            if key is not None and not task.options.refresh_cache:
                hit = lookup(key, execute)
                if hit is not None:
                    outcome = self._cache_hit(db, run, hit)
                    if outcome is not None:
                        return outcome
            outcome = self._run_now(db, run, task, args, kwargs)
            if key and outcome and outcome.type == StateType.COMPLETED and outcome.payload:
                store(key, task, run.id, outcome.payload, outcome.preview, execute)
            return outcome

    def _cache_hit(self, db: QueueConnection, run: ClaimedRun, hit: CachedResult) -> Outcome | None:
        """End the run CACHED with the record's result (``None``: the record did not load,
        so the run is computed instead)."""
        try:
            value = loads(hit.payload)
        except PayloadError:
            logger.warning(
                "Cached result for run %s does not load; recomputing", run.id, extra=for_run(run.id)
            )
            return None
        message = cached_message(hit)
        params = {
            "id": run.id,
            "worker": self.name,
            "message": message,
            "result": hit.payload,
            "preview": Json(hit.preview),
        }
        if not db.execute(sql.CACHE_HIT, params, give_up_on_stop=False):
            self._discarded(run.id, StateName.CACHED)
        return Outcome(
            StateType.COMPLETED, StateName.CACHED, message, hit.payload, hit.preview, "", value
        )

    def _run_deferred(
        self,
        db: QueueConnection,
        run: ClaimedRun,
        task: Task[Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Outcome | None:
        """A run expected to be short: the function first, its states written with the next
        claim - unless it ran long enough for the control thread to mark it RUNNING."""
        _debug_run(run.id, "Run %s (%s) started", run.task_name)
        attempts = run.attempts  # counted by the claim
        outcome, started, marked = self._timed_call(
            db, run, task, args, kwargs, attempts, marked=False
        )
        if marked:
            if self._current_lost:
                self._discarded(run.id, outcome.name)
                return None
            return self._record(db, task, run, outcome, attempts, args, kwargs)
        finished = max(db.db_time(), started + _TICK)
        if self._should_retry(task, run, outcome, attempts, args, kwargs):
            # Rare: write RUNNING with its real start, then the retry.
            db.execute(
                sql.START,
                {"id": run.id, "worker": self.name, "started": started},
                give_up_on_stop=False,
            )
            self._retry(db, run, outcome, attempts)
            return None
        self._defer(db, Deferred(run, started, finished, outcome))
        _debug_run(run.id, "Run %s %s", outcome.name)
        return outcome

    def _timed_call(
        self,
        db: QueueConnection,
        run: ClaimedRun,
        task: Task[Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        attempt: int,
        *,
        marked: bool,
        close: bool = True,
    ) -> tuple[Outcome, datetime, bool]:
        """Call the function, publishing what runs for the control thread; learn its duration."""
        started = db.db_time()
        if run.pending_at is not None:
            started = max(started, run.pending_at + _TICK)
        with self._lock:
            self._current = run
            self._current_since = time.monotonic()
            self._current_started = started
            self._current_marked = marked
            self._current_lost = False
        send(run_started, task, run_id=run.id, attempt=attempt)
        with run_context(self._context(task, run, args, kwargs, attempt)):
            outcome = self._call(run, task.fn, args, kwargs, close)
        with self._lock:
            self._current = None
            marked = self._current_marked
        elapsed = time.monotonic() - self._current_since
        previous = self._durations.get(run.task_key)
        self._durations[run.task_key] = (
            elapsed if previous is None else 0.8 * previous + 0.2 * elapsed
        )
        return outcome, started, marked

    @staticmethod
    def _context(
        task: Task[Any, Any],
        run: ClaimedRun,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        attempt: int | None = None,
    ) -> TaskRunContext:
        def parameters() -> dict[str, Any]:
            return dict(task.bind(args, kwargs).arguments)

        attempt = run.attempts if attempt is None else attempt
        return TaskRunContext(task, run.id, run.name or run.task_name, attempt, parameters, "delay")

    def _record(
        self,
        db: QueueConnection,
        task: Task[Any, Any],
        run: ClaimedRun,
        outcome: Outcome,
        attempts: int,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Outcome | None:
        """Retry the run or write its final state; the final outcome is returned for hooks."""
        if self._should_retry(task, run, outcome, attempts, args, kwargs):
            self._retry(db, run, outcome, attempts)
            return None
        self._finish(db, run, outcome)
        return outcome

    def _should_retry(
        self,
        task: Task[Any, Any],
        run: ClaimedRun,
        outcome: Outcome,
        attempts: int,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> bool:
        if outcome.type != StateType.FAILED or attempts > run.retries:
            return False
        context = self._context(task, run, args, kwargs, attempts)
        return retry_allowed(task, context, outcome_state(outcome))

    def _call(
        self,
        run: ClaimedRun,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        close: bool = True,
    ) -> Outcome:
        """Run the function, interruptible by its timeout or a cancel when on the main thread.

        Django connections the task opened are closed afterwards per CONN_MAX_AGE (or when
        broken), as at the end of a request.
        """
        self._executing = run.id
        try:
            try:
                if self._interruptible and run.timeout:
                    signal.setitimer(signal.ITIMER_REAL, run.timeout)
                value = fn(*args, **kwargs)
            finally:
                if self._interruptible:
                    signal.setitimer(signal.ITIMER_REAL, 0)
                self._executing = None
        except TaskRunTimeout as exc:
            message = f"Timed out after {run.timeout} s (timeout_seconds)."
            tb = format_traceback(exc)
            return Outcome(
                StateType.FAILED, StateName.TIMED_OUT, message, None, None, tb, exception=exc
            )
        except TaskRunCancelled:
            return Outcome(
                StateType.CANCELLED, StateName.CANCELLED, "Cancelled while running.", None, None, ""
            )
        except BaseException as exc:
            tb = format_traceback(exc)
            try:
                payload: bytes | None = dumps(exc, what="exception")
            except PayloadError:
                payload = None
            message = describe_exception(exc)
            return Outcome(
                StateType.FAILED, StateName.FAILED, message, payload, None, tb, exception=exc
            )
        finally:
            # Not inside an atomic run's transaction (the caller closes after it), and only
            # once Django has opened a connection in this process: with none, there is nothing
            # to close, and asking costs a tenth of a short run.
            if close and _django_connected:
                close_old_connections()
        try:
            payload = dumps(value, what="result")
        except PayloadError as exc:
            tb = format_traceback(exc)
            return Outcome(
                StateType.FAILED, StateName.FAILED, str(exc), None, None, tb, exception=exc
            )
        return Outcome(
            StateType.COMPLETED, StateName.COMPLETED, "", payload, preview(value), "", value=value
        )

    def _finish(self, db: QueueConnection, run: ClaimedRun, outcome: Outcome) -> None:
        if finish_run(db, run.id, self.name, outcome):
            _debug_run(run.id, "Run %s %s", outcome.name)
        else:
            self._discarded(run.id, outcome.name)

    def _retry(self, db: QueueConnection, run: ClaimedRun, outcome: Outcome, attempts: int) -> None:
        delay = delay_for(run.retry_delays, attempts, run.retry_jitter)
        sender = registry.get(run.task_key) if run.task_key in registry else None
        send(run_retried, sender, run_id=run.id, attempt=attempts, delay=delay)
        message = f"{outcome.message} (attempt {attempts} of {run.retries + 1}; retrying)"
        retry_run(db, run.id, self.name, message, outcome.traceback, delay)
        _debug_run(run.id, "Run %s failed; retry in %.1f s", delay)

    def _refuse(self, db: QueueConnection, run: ClaimedRun, message: str) -> None:
        message = storable_message(message)
        logger.error("Run %s failed before starting: %s", run.id, message, extra=for_run(run.id))
        db.execute(
            sql.REFUSE,
            {"id": run.id, "worker": self.name, "message": message},
            give_up_on_stop=False,
        )
        sender = registry.get(run.task_key) if run.task_key in registry else None
        state = State(StateType.FAILED, StateName.FAILED, message, timezone.now())
        send(run_finished, sender, run_id=run.id, state=state)
        with self._count_lock:
            self._count_processed()
