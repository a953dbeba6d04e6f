"""Executing one claimed run: :class:`Execution`, one per run a worker process takes.

Chooses how a run is executed - with RUNNING written first, deferred (short runs), atomic
(the function and COMPLETED in one transaction), cached (under the key's lock) - calls it
(interruptible by its timeout or a cancel, through the worker), and records the outcome:
retry, final state, hooks. An Execution holds what every step needs - the worker, its
connection, the run, its task and arguments, the attempt - so the steps take nothing else,
and the run context that the task, its hooks and its retry condition see is built once per
attempt. The claim loop, heartbeats and the control thread are in :mod:`.process`.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError, close_old_connections, connections
from django.db import transaction as db_transaction
from django.db.backends.signals import connection_created
from django.dispatch import receiver
from django.utils import timezone
from psycopg.types.json import Json

from .. import progress, sql
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
from ..manual_states import returned_state
from ..registry import UnknownTask, registry
from ..retries import delay_for
from ..serializers import PayloadError, PayloadSignatureError, dumps, loads, preview
from ..signals import run_finished, run_retried, run_started, send
from ..states import StateName, StateType, failure_state
from ..storable import describe_exception, format_traceback, storable_message
from ..transactions import TaskTransaction, commit_alone
from .connection import QueueConnection
from .deferred import log_discarded
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
    from .process import Worker

__all__ = [
    "DEFER_BELOW",
    "AsyncExecution",
    "Execution",
    "find_task",
    "note_open_django_connections",
    "refuse_run",
]

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


class Execution:
    """One claimed run on its way to an outcome in ``worker`` (see the module docstring)."""

    def __init__(
        self, worker: Worker, db: QueueConnection, run: ClaimedRun, started: int | None = None
    ) -> None:
        self.worker = worker
        self.db = db
        self.run = run
        self.attempt = run.attempts  # counted by the claim
        #: The attempt, when RUNNING was written with the run's batch (an async lane's).
        self.started = started
        self.task: Task[Any, Any] | None = None
        self.args: tuple[Any, ...] = ()
        self.kwargs: dict[str, Any] = {}
        self._context: TaskRunContext | None = None

    # -- from the claim to the outcome ------------------------------------------------------

    def execute(self) -> None:
        """Find the task and the arguments, run it the way it needs, call the hooks."""
        run = self.run
        task = self._prepare()
        if task is None:
            return
        expected = self.worker.durations.get(run.task_key, 0.0)
        # Deferred writes need the control thread to watch the one run in hand: only for a
        # process with a single slot (as the supervisor runs them).
        if task.options.caches:
            outcome = self._run_cached(task)
        elif self._defers(task, expected):
            outcome = self._run_deferred()
        else:
            outcome = self._run_now(task)
        if outcome is not None and _committed_alone(task, outcome):
            commit_alone(task)
        hooks = task.options.on_completion or task.options.on_failure
        if outcome is not None and (hooks or run_finished.receivers):
            # Only when someone listens: a short run's whole bookkeeping is a few microseconds.
            state = outcome_state(outcome)
            send(run_finished, task, run_id=run.id, state=state)
            if hooks:
                call_hooks(task, self.context(), state)

    def _prepare(self) -> Task[Any, Any] | None:
        """The run's task, with its arguments in ``args``/``kwargs`` - or ``None`` when the
        run cannot start, which is then that run's failure (FAILED, with the real error and
        its traceback). Whatever goes wrong here - a task module that raises on import, a
        ``django.tasks`` Task the worker's settings refuse, a payload that does not unpickle -
        must end this run, never the worker process: a process that died here would hand the
        run back to die again in the next one."""
        run = self.run
        if run.defect:
            self.refuse(f"The run's row could not be read: {run.defect}.")
            return None
        try:
            task = self.task = find_task(run.task_key, run.task_name)
        except UnknownTask as exc:
            self.refuse(_unknown_task(run, exc.__cause__), exc.__cause__)
            return None
        except BaseException as exc:
            self.refuse(
                f"Task {run.task_name!r} could not be loaded in this worker: "
                f"{describe_exception(exc)}",
                exc,
            )
            return None
        try:
            args, kwargs = loads(run.parameters, task_key=run.task_key, field="parameters")
        except PayloadSignatureError as exc:
            self.refuse(f"Refused to unpickle the parameters: {exc}")
            return None
        except BaseException as exc:
            self.refuse(f"The parameters could not be unpickled: {describe_exception(exc)}", exc)
            return None
        if collect_upstreams(args, kwargs):
            try:  # upstream runs have completed (or failed, where allow_failure lets them)
                args, kwargs = resolve(args, timeout=0), resolve(kwargs, timeout=0)
            except BaseException as exc:
                self.refuse(
                    f"An upstream run's result could not be read: {describe_exception(exc)}",
                    exc,
                )
                return None
        self.args, self.kwargs = args, kwargs
        return task

    def _defers(self, task: Task[Any, Any], expected: float) -> bool:
        """Whether to run it deferred: a short run in a single-slot process (the control
        thread watches the one run in hand), with no timeout and not atomic."""
        return not (
            self.worker.concurrency > 1
            or self.run.timeout is not None
            or expected >= DEFER_BELOW
            or task.options.atomic
        )

    def _run_now(self, task: Task[Any, Any]) -> Outcome | None:
        """A run expected to be long (or with a timeout): RUNNING first, then the function.
        Returns the final outcome (``None`` when the run was retried or is no longer ours)."""
        run, db = self.run, self.db
        self.worker.deferred.flush(db)  # earlier completions first
        started = db.execute(
            sql.START,
            {"id": run.id, "worker": self.worker.name, "started": None},
            give_up_on_stop=False,
        )
        if not started:
            logger.warning(
                "Run %s is no longer held by this worker; skipped", run.id, extra=for_run(run.id)
            )
            return None
        self.attempt = started[0][0]
        _debug_run(run.id, "Run %s (%s) started", run.task_name)
        if task.options.atomic:
            return self._run_atomic(task)
        outcome, _, _ = self._timed_call(marked=True)
        return self._record(outcome)

    def _run_atomic(self, task: Task[Any, Any]) -> Outcome | None:
        """An ``atomic=True`` run: the function's writes and the COMPLETED state commit in one
        transaction on Django's connection. If the function raises, or the run was taken
        from this worker meanwhile (rescued, cancelled), its writes are rolled back: a task
        whose effects are in the database has them exactly once."""
        alias = task_settings().DATABASE_ALIAS
        taken = False
        try:
            with db_transaction.atomic(using=alias):
                outcome, _, _ = self._timed_call(marked=True, close=False)
                if outcome.type != StateType.COMPLETED:
                    raise _RollBack
                params = finish_params(self.run.id, self.worker.name, outcome)
                if not django_execute(sql.FINISH, params):
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
            if self.worker.closes_django_connections:
                close_old_connections()
        if taken:
            log_discarded(self.run.id, outcome.name)
            return None
        if outcome.type == StateType.COMPLETED:
            return outcome
        return self._record(outcome)

    def _run_cached(self, task: Task[Any, Any]) -> Outcome | None:
        """A run of a caching task: with its key locked, a recorded result ends it CACHED;
        otherwise it runs (RUNNING first) and its result is stored before the lock is let go,
        so that runs with the same key on other workers find it (see :mod:`..caching`)."""
        try:
            key = cache_key(task, self.context())
        except CacheKeyError as exc:
            self.refuse(str(exc))
            return None
        db = self.db

        def execute(query: str, params: dict[str, Any]) -> list[Any]:
            return db.execute(query, params, give_up_on_stop=False)

        self.worker.deferred.flush(db)
        with cache_lock(key, execute):
            if key is not None and not task.options.refresh_cache:
                hit = lookup(key, execute)
                if hit is not None:
                    outcome = self._cache_hit(hit)
                    if outcome is not None:
                        return outcome
            outcome = self._run_now(task)
            if key and outcome and outcome.type == StateType.COMPLETED and outcome.payload:
                store(key, task, self.run.id, outcome.payload, outcome.preview, execute)
            return outcome

    def _cache_hit(self, hit: CachedResult) -> Outcome | None:
        """End the run CACHED with the record's result (``None``: the record did not load,
        so the run is computed instead)."""
        run, task = self.run, self.task
        assert task is not None
        try:
            value, payload = hit.load(task)
        except PayloadError:
            logger.warning(
                "Cached result for run %s does not load; recomputing", run.id, extra=for_run(run.id)
            )
            return None
        message = cached_message(hit)
        params = {
            "id": run.id,
            "worker": self.worker.name,
            "message": message,
            "result": payload,
            "preview": Json(hit.preview),
        }
        if not self.db.execute(sql.CACHE_HIT, params, give_up_on_stop=False):
            log_discarded(run.id, StateName.CACHED)
        return Outcome(
            StateType.COMPLETED, StateName.CACHED, message, payload, hit.preview, "", value
        )

    def _run_deferred(self) -> Outcome | None:
        """A run expected to be short: the function first, its states written with the next
        claim - unless it ran long enough for the control thread to mark it RUNNING."""
        run, db = self.run, self.db
        _debug_run(run.id, "Run %s (%s) started", run.task_name)
        outcome, started, marked = self._timed_call(marked=False)
        if marked:
            if self.worker.current_lost:
                log_discarded(run.id, outcome.name)
                return None
            return self._record(outcome)
        finished = max(db.db_time(), started + _TICK)
        if self._should_retry(outcome):
            # Rare: write RUNNING with its real start, then the retry.
            db.execute(
                sql.START,
                {"id": run.id, "worker": self.worker.name, "started": started},
                give_up_on_stop=False,
            )
            self._retry(outcome)
            return None
        self.worker.deferred.add(db, Deferred(run, started, finished, outcome))
        _debug_run(run.id, "Run %s %s", outcome.name)
        return outcome

    # -- calling the function ---------------------------------------------------------------

    def context(self) -> TaskRunContext:
        """The run as its code, hooks and retry condition see it (this attempt's)."""
        context = self._context
        if context is None or context.attempt != self.attempt:
            task, args, kwargs = self.task, self.args, self.kwargs
            assert task is not None

            def parameters() -> dict[str, Any]:
                return dict(task.bind(args, kwargs).arguments)

            run = self.run
            context = self._context = TaskRunContext(
                task, run.id, run.name or run.task_name, self.attempt, parameters, "delay"
            )
        return context

    def _timed_call(self, *, marked: bool, close: bool = True) -> tuple[Outcome, datetime, bool]:
        """Call the function, telling the control thread what runs; learn its duration."""
        run, worker = self.run, self.worker
        started = self.db.db_time()
        if run.pending_at is not None:
            started = max(started, run.pending_at + _TICK)
        worker.publish(run, started, marked)
        send(run_started, self.task, run_id=run.id, attempt=self.attempt)
        with run_context(self.context()):
            outcome = self._call(close)
        self._end_progress()
        marked = worker.unpublish(run.task_key)
        return outcome, started, marked

    def _end_progress(self) -> None:
        """The run's last ``set_progress()`` value is written before its outcome."""
        progress.writer.end(self.run.id, self._execute)

    def _execute(self, query: str, params: dict[str, Any]) -> list[Any]:
        return self.db.execute(query, params, give_up_on_stop=False)

    def _call(self, close: bool) -> Outcome:
        """The function's outcome: its result, or what it raised (a timeout, a cancel).

        Django connections the task opened are closed afterwards per CONN_MAX_AGE (or when
        broken), as at the end of a request.
        """
        task = self.task
        assert task is not None
        try:
            value = self._invoke(task)
        except TaskRunTimeout as exc:
            message = f"Timed out after {self.run.timeout} s (timeout_seconds)."
            tb = format_traceback(exc)
            return Outcome(
                StateType.FAILED, StateName.TIMED_OUT, message, None, None, tb, exception=exc
            )
        except TaskRunCancelled:
            return Outcome(
                StateType.CANCELLED, StateName.CANCELLED, "Cancelled while running.", None, None, ""
            )
        except BaseException as exc:
            state_type, name = failure_state(exc)
            return _failure(task, exc, state_type, name, describe_exception(exc))
        finally:
            # Not inside an atomic run's transaction (the caller closes after it), and only
            # once Django has opened a connection in this process: with none, there is nothing
            # to close, and asking costs a tenth of a short run.
            if close and _django_connected and self.worker.closes_django_connections:
                close_old_connections()
        return _returned(task, value)

    def _invoke(self, task: Task[Any, Any]) -> Any:
        return self.worker.call_interruptibly(self.run, task.fn, self.args, self.kwargs)

    # -- recording the outcome --------------------------------------------------------------

    def _record(self, outcome: Outcome) -> Outcome | None:
        """Retry the run or write its final state; the final outcome is returned for hooks."""
        if self._should_retry(outcome):
            self._retry(outcome)
            return None
        run = self.run
        if finish_run(self.db, run.id, self.worker.name, outcome):
            _debug_run(run.id, "Run %s %s", outcome.name)
        else:
            log_discarded(run.id, outcome.name)
        return outcome

    def _should_retry(self, outcome: Outcome) -> bool:
        if outcome.type != StateType.FAILED or self.attempt > self.run.retries:
            return False
        task = self.task
        assert task is not None
        return retry_allowed(task, self.context(), outcome_state(outcome))

    def _retry(self, outcome: Outcome) -> None:
        run, attempt = self.run, self.attempt
        delay = delay_for(run.retry_delays, attempt, run.retry_jitter)
        send(run_retried, self.task, run_id=run.id, attempt=attempt, delay=delay)
        message = f"{outcome.message} (attempt {attempt} of {run.retries + 1}; retrying)"
        retry_run(self.db, run.id, self.worker.name, message, outcome.traceback, delay)
        _debug_run(run.id, "Run %s failed; retry in %.1f s", delay)

    def refuse(self, message: str, error: BaseException | None = None) -> None:
        """End a run this worker cannot start FAILED: unknown task, bad payload or key, an
        error while preparing it (``error``: its traceback is kept)."""
        run = self.run
        message = storable_message(message)
        logger.error("Run %s failed before starting: %s", run.id, message, extra=for_run(run.id))
        refuse_run(self.db, run.id, self.worker.name, message, error)
        state = State(StateType.FAILED, StateName.FAILED, message, timezone.now())
        send(run_finished, self.task, run_id=run.id, state=state)


def _returned(task: Task[Any, Any], value: Any) -> Outcome:
    """The outcome of a function that returned ``value`` - a state it returned ends the run in
    that state (:mod:`..manual_states`)."""
    try:
        state = returned_state(value)
    except TypeError as exc:  # a state that is not final
        return _failure(task, exc, StateType.FAILED, StateName.FAILED, str(exc))
    if state is not None and state.type != StateType.COMPLETED:
        assert state.exception is not None
        return _failure(task, state.exception, state.type, state.name, state.message, tb="")
    name, message = (state.name, state.message) if state else (StateName.COMPLETED, "")
    if state is not None:
        value = state.data
    try:
        payload = dumps(value, what="result", task_key=task.key)
    except PayloadError as exc:
        tb = format_traceback(exc)
        return Outcome(StateType.FAILED, StateName.FAILED, str(exc), None, None, tb, exception=exc)
    return Outcome(StateType.COMPLETED, name, message, payload, preview(value), "", value=value)


def _failure(
    task: Task[Any, Any],
    exc: BaseException,
    state_type: StateType,
    name: str,
    message: str,
    tb: str | None = None,
) -> Outcome:
    """A run that ended with ``exc``: the exception kept (signed) for ``result()`` to raise
    when it can be pickled, with its traceback."""
    try:
        payload: bytes | None = dumps(exc, what="exception", task_key=task.key)
    except PayloadError:
        payload = None
    traceback = format_traceback(exc) if tb is None else tb
    return Outcome(state_type, name, message, payload, None, traceback, exception=exc)


def _committed_alone(task: Task[Any, Any], outcome: Outcome) -> bool:
    """A run that is not atomic and completed by running (not from the cache): its own
    transaction committed (see :func:`~..transactions.commit_alone`)."""
    return (
        bool(task.options.on_commit)  # first: most tasks have no hooks (a per-run check)
        and outcome.type == StateType.COMPLETED
        and outcome.name != StateName.CACHED
        and not task.options.atomic
    )


def find_task(task_key: str, task_name: str) -> Task[Any, Any]:
    """The task a run names (:meth:`..registry.TaskRegistry.find`: registered in this
    process, or made by a resolver such as the ``django.tasks`` backend's). Raises
    :class:`UnknownTask` - with the reason as its cause - or whatever loading it raised."""
    return registry.find(task_key, task_name)


def _unknown_task(run: ClaimedRun, cause: BaseException | None) -> str:
    message = (
        f"Unknown task {run.task_name!r} (key {run.task_key}): no task with this key is "
        f"registered in this worker. Is its module imported by an installed app's tasks.py, "
        f"and does the worker run the same code as the enqueuer?"
    )
    if cause is not None:
        message += f" Importing {run.task_name!r} raised {describe_exception(cause)}"
    elif any(task.name == run.task_name for task in registry.all()):
        message += (
            f" A task called {run.task_name!r} is registered here under another key (its "
            f"function moved or was renamed): the worker runs other code than the process "
            f"that enqueued the run - restart it (with DEBUG on it restarts on changes)."
        )
    return message


def refuse_run(
    db: Any, run_id: uuid.UUID, worker: str, message: str, error: BaseException | None
) -> bool:
    """Write FAILED for a run ``worker`` holds, PENDING or RUNNING (see ``sql.REFUSE``);
    ``False`` when it no longer holds it."""
    params = {
        "id": run_id,
        "worker": worker,
        "message": storable_message(message),
        "traceback": format_traceback(error) if error is not None else "",
    }
    return bool(db.execute(sql.REFUSE, params, give_up_on_stop=False))


class AsyncExecution(Execution):
    """A run of an ``async def`` task in the process's async lane (:mod:`.async_lane`): RUNNING
    is always written first (other runs go on meanwhile, so nothing is deferred), the
    coroutine runs on the lane's loop, and the statements share the lane's connections."""

    db: Any  # a SharedConnection

    def _defers(self, task: Task[Any, Any], expected: float) -> bool:
        return False

    def _run_cached(self, task: Task[Any, Any]) -> Outcome | None:
        """The cache key's advisory lock belongs to a session: one connection for the run."""
        shared = self.db
        with shared.lease() as db:
            self.db = db
            try:
                return super()._run_cached(task)
            finally:
                self.db = shared

    def _run_now(self, task: Task[Any, Any]) -> Outcome | None:
        if self.started is None:  # not started with its batch (a caching task's run)
            return super()._run_now(task)
        self.attempt = self.started
        _debug_run(self.run.id, "Run %s (%s) started", self.run.task_name)
        outcome, _, _ = self._timed_call(marked=True)
        return self._record(outcome)

    def _record(self, outcome: Outcome) -> Outcome | None:
        """The final state goes with the lane's other final states (one round trip), written
        in the background - unless hooks or ``run_finished`` receivers are to see it
        recorded. Until it is written the run is RUNNING: if the process dies meanwhile, it is
        rescued as any running run of a lost worker."""
        lane, task = self.worker.lane, self.task
        if self._should_retry(outcome) or lane is None or lane.finisher is None:
            return super()._record(outcome)
        assert task is not None
        hooks = task.options.on_completion or task.options.on_failure
        wait = bool(hooks or run_finished.receivers)
        if lane.finisher.finish(self.run.id, outcome, self.db.db_time(), wait=wait):
            _debug_run(self.run.id, "Run %s %s", outcome.name)
        return outcome

    def _timed_call(self, *, marked: bool, close: bool = True) -> tuple[Outcome, datetime, bool]:
        started = self.db.db_time()
        send(run_started, self.task, run_id=self.run.id, attempt=self.attempt)
        with run_context(self.context()):
            outcome = self._call(close)
        self._end_progress()
        return outcome, started, True

    def _invoke(self, task: Task[Any, Any]) -> Any:
        return self.worker.async_calls.call(self.run, task.fn, self.args, self.kwargs)
