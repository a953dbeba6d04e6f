"""One worker process: claims runs from the topic, executes them, records their states.

A :class:`Worker` runs ``concurrency`` slots. Each slot holds its own connection and loops
*claim a batch -> for each run: RUNNING, call the function outside any transaction,
COMPLETED / FAILED / AwaitingRetry*. With one slot on the main thread (how the supervisor runs
its children) a run can be interrupted: ``timeout_seconds`` raises :class:`TaskRunTimeout`
inside it (SIGALRM) and a cancel raises :class:`TaskRunCancelled` (SIGUSR1).

A control thread beside the slots LISTENs (waking idle slots on each NOTIFY; they also poll,
because LISTEN does not pass through PgBouncer in transaction mode), writes the heartbeat,
rescues runs of lost workers, notices cancel requests and the death of the supervisor.

Stopping (SIGTERM/SIGINT, :meth:`Worker.stop`, ``max_tasks`` reached, supervisor gone): no new
claims, the running run finishes, claimed runs not yet started are handed back
(PENDING -> SCHEDULED). A second signal exits at once; what was running is rescued later.
"""

from __future__ import annotations

import base64
import logging
import os
import signal
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import FrameType
from typing import TYPE_CHECKING, Any

import psycopg
from django.db import DatabaseError, close_old_connections
from django.db import transaction as db_transaction
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
from ..registry import UnknownTask, registry
from ..retries import delay_for
from ..serializers import PayloadError, PayloadSignatureError, dumps, loads, preview
from ..states import StateName, StateType
from ..transactions import TaskTransaction
from .connection import QueueConnection
from .maintenance import rescue

if TYPE_CHECKING:
    from ..tasks import Task

__all__ = [
    "EXIT_RECYCLE",
    "ClaimedRun",
    "TaskRunCancelled",
    "TaskRunTimeout",
    "Worker",
    "worker_name",
]

#: Exit code of a worker process that stopped after ``max_tasks`` runs and wants a successor.
EXIT_RECYCLE = 75

logger = logging.getLogger("django_tasks.worker")


class TaskRunTimeout(TimeoutError):
    """Raised inside a task that ran longer than its ``timeout_seconds``."""


class TaskRunCancelled(BaseException):
    """Raised inside a task whose run was cancelled (a BaseException, so that a broad
    ``except Exception`` in task code does not swallow it)."""


def worker_name(pid: int | None = None) -> str:
    """How runs and worker rows name a worker process: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid() if pid is None else pid}"


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


class Worker:
    """Executes background runs of the given queues until stopped."""

    def __init__(
        self,
        queues: Sequence[str] | None = None,
        *,
        concurrency: int = 1,
        batch_size: int | None = None,
        poll_interval: float | None = None,
        burst: bool = False,
        alias: str | None = None,
        handle_signals: bool = True,
        max_tasks: int | None = None,
        parent_pid: int | None = None,
        orphan_timeout: float = 30.0,
    ) -> None:
        conf = task_settings()
        self.queues = list(queues or [conf.DEFAULT_QUEUE])
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}.")
        self.concurrency = concurrency
        # An explicit batch size is obeyed exactly; without one, claims adapt (_batch_limit).
        self.batch_size = batch_size or conf.BATCH_SIZE
        self.poll_interval = conf.POLL_INTERVAL if poll_interval is None else poll_interval
        self.burst = burst
        self.alias = alias or conf.DATABASE_ALIAS
        self.handle_signals = handle_signals
        self.max_tasks = max_tasks
        self.parent_pid = parent_pid
        self.orphan_timeout = orphan_timeout
        self._orphaned_at: float | None = None
        self.heartbeat_interval = conf.HEARTBEAT_INTERVAL
        self.heartbeat_timeout = conf.HEARTBEAT_TIMEOUT
        self.late_after = conf.LATE_AFTER
        self.name = worker_name()
        self.processed = 0
        self.claims = 0  # claim statements that returned runs
        self.recycle = False
        self._stopping = threading.Event()
        self._control_done = threading.Event()
        self._wake = threading.Condition()
        self._generation = 0
        self._signals = 0
        self._count_lock = threading.Lock()
        self._interruptible = False  # one slot on the main thread: timeouts and cancels work
        self._executing: uuid.UUID | None = None
        self._cancel_target: uuid.UUID | None = None
        # Deferred-write bookkeeping, shared by the slot and the control thread.
        self._lock = threading.Lock()
        self._deferred: list[Deferred] = []
        self._current: ClaimedRun | None = None
        self._current_since = 0.0
        self._current_started: datetime | None = None
        self._current_marked = False
        self._current_lost = False
        self._durations: dict[str, float] = {}

    # -- lifecycle --------------------------------------------------------------------------

    def run(self) -> int:
        """Run until stopped (or, with ``burst``, until no run is ready). Returns the exit code."""
        on_main = threading.current_thread() is threading.main_thread()
        self._interruptible = on_main and self.concurrency == 1
        previous: dict[signal.Signals, Any] = {}
        if self.handle_signals and on_main:
            for signum in (signal.SIGTERM, signal.SIGINT):
                previous[signum] = signal.signal(signum, self._on_signal)
        if self._interruptible:
            previous[signal.SIGALRM] = signal.signal(signal.SIGALRM, self._on_timeout)
            previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, self._on_cancel)
        try:
            return self._run()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _run(self) -> int:
        control_db = QueueConnection(self.alias, self._control_done.is_set)
        control_db.execute(
            sql.REGISTER_WORKER,
            {
                "name": self.name,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "queues": Json(self.queues),
                "concurrency": self.concurrency,
            },
            give_up_on_stop=False,
        )
        logger.info(
            "Worker %s started: queues=%s concurrency=%d", self.name, self.queues, self.concurrency
        )
        control = threading.Thread(
            target=self._control, args=(control_db,), name="django_tasks-control", daemon=True
        )
        control.start()
        if self._interruptible:
            self._slot()
        else:
            slots = [
                threading.Thread(target=self._slot, name=f"django_tasks-{i}", daemon=True)
                for i in range(self.concurrency)
            ]
            for thread in slots:
                thread.start()
            for thread in slots:
                thread.join()
        self._control_done.set()
        control.join()
        control_db.execute(sql.WORKER_STOPPED, {"name": self.name}, give_up_on_stop=False)
        control_db.close()
        logger.info("Worker %s stopped after %d runs", self.name, self.processed)
        return EXIT_RECYCLE if self.recycle else 0

    def stop(self) -> None:
        """Take no new runs; running ones finish. Safe to call from any thread."""
        self._stopping.set()
        self._bump()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1
        if self._signals > 1:
            logger.warning("Second signal: stopping at once; running runs will be rescued.")
            os._exit(1)
        logger.info("Signal %d: finishing running runs, taking no new ones.", signum)
        self.stop()

    def _on_timeout(self, signum: int, frame: FrameType | None) -> None:
        if self._executing is not None:
            raise TaskRunTimeout("The run exceeded its timeout_seconds.")

    def _on_cancel(self, signum: int, frame: FrameType | None) -> None:
        if self._executing is not None and self._executing == self._cancel_target:
            raise TaskRunCancelled("The run was cancelled.")

    def _bump(self) -> None:
        with self._wake:
            self._generation += 1
            self._wake.notify_all()

    # -- control thread: wake-ups, heartbeat, rescue, cancels, supervisor --------------------

    def _control(self, db: QueueConnection) -> None:
        next_beat = 0.0
        listening_on: psycopg.Connection[Any] | None = None
        while not self._control_done.is_set():
            try:
                now = time.monotonic()
                if now >= next_beat:
                    self._beat(db)
                    next_beat = now + self.heartbeat_interval
                if db.conn is None or db.conn is not listening_on:
                    # A new connection (first start, or reopened after a database restart)
                    # listens afresh; runs enqueued meanwhile are found by claiming at once.
                    db.execute(sql.LISTEN, None, give_up_on_stop=True)
                    listening_on = db.conn
                    self._bump()
                    continue
                self._mark_long_run(db)
                wait = max(0.005, min(self._control_wait(), next_beat - time.monotonic()))
                cancel_requested = False
                for note in db.conn.notifies(timeout=wait):
                    if note.channel == sql.CANCEL_CHANNEL:
                        cancel_requested = cancel_requested or note.payload == self.name
                    elif note.payload in self.queues:
                        self._bump()
                if cancel_requested:
                    self._check_cancels(db)
            except psycopg.OperationalError as exc:
                logger.warning("Control connection lost (%s); reconnecting", exc)
                db.close()
                time.sleep(0.1)

    def _control_wait(self) -> float:
        """Short waits while a deferred run is going, so it is marked RUNNING in time."""
        with self._lock:
            if self._current is not None and not self._current_marked:
                return max(0.0, self._current_since + MARK_RUNNING_AFTER - time.monotonic())
        return 0.25

    def _mark_long_run(self, db: QueueConnection) -> None:
        """Write RUNNING for a deferred run that turned out long (and what waited before it)."""
        with self._lock:
            run = self._current
            if run is None or self._current_marked:
                return
            if time.monotonic() - self._current_since < MARK_RUNNING_AFTER:
                return
            self._write_deferred(db, self._take_deferred())
            started = db.execute(
                sql.START,
                {"id": run.id, "worker": self.name, "started": self._current_started},
                give_up_on_stop=False,
            )
            self._current_marked = True
            self._current_lost = not started
        if not started:
            logger.warning("Run %s was cancelled or taken before it started; stopping it", run.id)
            self._cancel_target = run.id
            if self._interruptible:
                os.kill(os.getpid(), signal.SIGUSR1)

    def _beat(self, db: QueueConnection) -> None:
        db.execute(sql.HEARTBEAT, {"name": self.name}, give_up_on_stop=True)
        rescue(db, rescuer=self.name, heartbeat_timeout=self.heartbeat_timeout)
        self._check_cancels(db)
        if self.parent_pid is not None and os.getppid() != self.parent_pid:
            self._orphaned(db)

    def _orphaned(self, db: QueueConnection) -> None:
        """The supervisor was killed: stop like on SIGTERM, but never outlive it for long.

        Without a supervisor nothing would enforce hard timeouts, so a run that does not finish
        within ``orphan_timeout`` is abandoned: the process marks itself stopped and exits,
        and the run is rescued like any run of a lost worker.
        """
        now = time.monotonic()
        if self._orphaned_at is None:
            logger.warning("Supervisor %d is gone: stopping.", self.parent_pid)
            self._orphaned_at = now
            self.stop()
        elif now - self._orphaned_at > self.orphan_timeout:
            logger.warning(
                "Orphaned for %.0f s with a run still going: exiting.", self.orphan_timeout
            )
            db.execute(sql.WORKER_STOPPED, {"name": self.name}, give_up_on_stop=False)
            os._exit(1)

    def _check_cancels(self, db: QueueConnection) -> None:
        rows = db.execute(sql.CANCEL_REQUESTED, {"worker": self.name}, give_up_on_stop=True)
        wanted = {row[0] for row in rows}
        current = self._executing
        if current is not None and current in wanted and self._cancel_target != current:
            self._cancel_target = current
            logger.info("Run %s: cancel requested, interrupting it", current)
            if self._interruptible:
                os.kill(os.getpid(), signal.SIGUSR1)

    # -- one slot ---------------------------------------------------------------------------

    def _slot(self) -> None:
        db = QueueConnection(self.alias, self._stopping.is_set)
        try:
            while not self._stopping.is_set():
                generation = self._generation
                flushing = bool(self._deferred)
                runs = self._claim(db)
                if not runs:
                    # A burst ends when nothing is ready - but a claim that wrote completions
                    # may have released downstream runs its own snapshot could not see.
                    if self.burst and not flushing:
                        return
                    self._sleep(generation)
                    continue
                for index, run in enumerate(runs):
                    if self._stopping.is_set():
                        self._hand_back(db, runs[index:])
                        break
                    self._process(db, run)
        finally:
            self._write_deferred(db, self._take_deferred())
            db.close()

    def _sleep(self, generation: int) -> None:
        """Wait for a NOTIFY seen after ``generation`` was read, a stop, or the poll interval.

        Comparing generations (not a shared Event) means a notification that arrives while
        this thread is claiming is not lost: the thread goes straight back to claiming.
        """
        with self._wake:
            self._wake.wait_for(lambda: self._generation != generation, self.poll_interval)

    def _claim(self, db: QueueConnection) -> list[ClaimedRun]:
        """Claim a batch from the first of our queues (in the order given) that has ready runs,
        writing the deferred completions of the previous batch in the same statement."""
        done = self._take_deferred()
        for queue in self.queues:
            params = {
                "queue": queue,
                "limit": self._batch_limit(),
                "worker": self.name,
                "late_after": self.late_after,
                **self._deferred_params(done),
            }
            # Completions must be written even while stopping: only an empty claim gives up.
            rows = db.execute(sql.CLAIM, params, give_up_on_stop=not done)
            self._check_flushed(done, {row[1] for row in rows if row[0] == "flushed"})
            done = []
            claimed = [
                ClaimedRun(
                    id=row[1],
                    task_key=row[2],
                    task_name=row[3],
                    parameters=bytes(row[4]),
                    timeout=row[5],
                    attempts=row[6],
                    retries=row[7],
                    retry_delays=tuple(row[8] or ()),
                    retry_jitter=row[9],
                    pending_at=row[10],
                    name=row[13],
                )
                for row in rows
                if row[0] == "claimed"
            ]
            if claimed:
                self.claims += 1
                return claimed
        return []

    def _batch_limit(self) -> int:
        """How many runs to claim: the configured size, or - adaptive - about ``BATCH_WORK``
        seconds of the slowest task seen so far (one run while nothing is known yet).

        A claim costs a round trip and a commit whatever its size, so tiny runs are claimed by
        the dozens; slow ones one at a time, so that a worker never sits on runs another
        worker could start now. Processes with several slots (threads) claim one at a time.
        """
        if self.batch_size is not None:
            return self.batch_size
        if self.concurrency > 1 or not self._durations:
            return 1
        slowest = max(self._durations.values())
        return max(1, min(MAX_BATCH_SIZE, int(BATCH_WORK / max(slowest, 1e-6))))

    def _take_deferred(self) -> list[Deferred]:
        with self._count_lock:
            done, self._deferred = self._deferred, []
        return done

    def _write_deferred(self, db: QueueConnection, done: list[Deferred]) -> None:
        if done:
            params = {"worker": self.name, **self._deferred_params(done)}
            rows = db.execute(sql.FLUSH, params, give_up_on_stop=False)
            self._check_flushed(done, {row[0] for row in rows})

    @staticmethod
    def _deferred_params(done: list[Deferred]) -> dict[str, Any]:
        return {
            "done": Json(
                [
                    {
                        "id": str(d.run.id),
                        "started": d.started.isoformat(),
                        "finished": d.finished.isoformat(),
                        "type": d.outcome.type.value,
                        "name": d.outcome.name,
                        "message": d.outcome.message,
                        "result": (
                            base64.b64encode(d.outcome.payload).decode()
                            if d.outcome.payload is not None
                            else None
                        ),
                        "preview": d.outcome.preview,
                        "traceback": d.outcome.traceback,
                    }
                    for d in done
                ]
            )
        }

    def _check_flushed(self, done: list[Deferred], written: set[uuid.UUID]) -> None:
        for item in done:
            if item.run.id not in written:
                self._discarded(item.run.id, item.outcome.name)

    @staticmethod
    def _discarded(run_id: uuid.UUID, outcome: str) -> None:
        logger.warning(
            "Run %s was taken from this worker while it ran (cancelled, rescued as lost, or by "
            "a supervisor's kill): its outcome %s is discarded",
            run_id,
            outcome,
        )

    def _hand_back(self, db: QueueConnection, runs: Sequence[ClaimedRun]) -> None:
        self._write_deferred(db, self._take_deferred())
        ids = [run.id for run in runs]
        db.execute(sql.HAND_BACK, {"ids": ids, "worker": self.name}, give_up_on_stop=False)
        logger.info("Handed back %d claimed runs", len(ids))

    # -- one run ----------------------------------------------------------------------------

    def _process(self, db: QueueConnection, run: ClaimedRun) -> None:
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
        if outcome is not None:
            call_hooks(task, self._context(task, run, args, kwargs), outcome_state(outcome))
        with self._count_lock:
            self.processed += 1
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
        self._write_deferred(db, self._take_deferred())  # earlier completions first
        started = db.execute(
            sql.START, {"id": run.id, "worker": self.name, "started": None}, give_up_on_stop=False
        )
        if not started:
            logger.warning("Run %s is no longer held by this worker; skipped", run.id)
            return None
        attempts = started[0][0]
        logger.debug("Run %s (%s) started", run.id, run.task_name)
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
            message = f"The run's transaction failed: {exc}"
            tb = traceback.format_exc()
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

        self._write_deferred(db, self._take_deferred())
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
            logger.warning("Cached result for run %s does not load; recomputing", run.id)
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
        logger.debug("Run %s (%s) started", run.id, run.task_name)
        attempts = run.attempts + 1
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
        with self._count_lock:
            self._deferred.append(Deferred(run, started, finished, outcome))
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
        parameters = dict(task.bind(args, kwargs).arguments)
        attempt = run.attempts + 1 if attempt is None else attempt
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
            tb = traceback.format_exc()
            return Outcome(
                StateType.FAILED, StateName.TIMED_OUT, message, None, None, tb, exception=exc
            )
        except TaskRunCancelled:
            return Outcome(
                StateType.CANCELLED, StateName.CANCELLED, "Cancelled while running.", None, None, ""
            )
        except BaseException as exc:
            tb = traceback.format_exc()
            try:
                payload: bytes | None = dumps(exc, what="exception")
            except PayloadError:
                payload = None
            message = f"{type(exc).__name__}: {exc}"
            return Outcome(
                StateType.FAILED, StateName.FAILED, message, payload, None, tb, exception=exc
            )
        finally:
            if close:  # not inside an atomic run's transaction: the caller closes after it
                close_old_connections()
        try:
            payload = dumps(value, what="result")
        except PayloadError as exc:
            tb = traceback.format_exc()
            return Outcome(
                StateType.FAILED, StateName.FAILED, str(exc), None, None, tb, exception=exc
            )
        return Outcome(
            StateType.COMPLETED, StateName.COMPLETED, "", payload, preview(value), "", value=value
        )

    def _finish(self, db: QueueConnection, run: ClaimedRun, outcome: Outcome) -> None:
        if finish_run(db, run.id, self.name, outcome):
            logger.debug("Run %s %s", run.id, outcome.name)
        else:
            self._discarded(run.id, outcome.name)

    def _retry(self, db: QueueConnection, run: ClaimedRun, outcome: Outcome, attempts: int) -> None:
        delay = delay_for(run.retry_delays, attempts, run.retry_jitter)
        message = f"{outcome.message} (attempt {attempts} of {run.retries + 1}; retrying)"
        retry_run(db, run.id, self.name, message, outcome.traceback, delay)
        logger.debug("Run %s failed; retry in %.1f s", run.id, delay)

    def _refuse(self, db: QueueConnection, run: ClaimedRun, message: str) -> None:
        logger.error("Run %s failed before starting: %s", run.id, message)
        db.execute(
            sql.REFUSE,
            {"id": run.id, "worker": self.name, "message": message},
            give_up_on_stop=False,
        )
        with self._count_lock:
            self.processed += 1


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


class _RollBack(Exception):
    """Leaves an atomic run's transaction so that its writes are rolled back."""


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
