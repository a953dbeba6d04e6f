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
(PENDING -> SCHEDULED). A second request (:mod:`.stopping`) exits at once; what was running is
rescued later. A process under a supervisor obeys the supervisor's SIGTERM only, and leaves
"at once" to it.

What the process is executing and the outcomes it has not written yet are kept in its
journal (:mod:`.journal`), shared with the supervisor, which settles them if the process dies.

How one run is executed (deferred, atomic, cached; timeouts, retries, hooks) is in
:mod:`.running`; the outcome types and the statements that record them in :mod:`.outcomes`;
the outcomes of short runs waiting for the next claim in :mod:`.deferred`.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from types import FrameType
from typing import Any

import psycopg
from psycopg.types.json import Json

from .. import sql
from ..aio import is_async, leave_forked_child
from ..conf import task_settings
from ..limits.gate import LimitGate
from ..logs import for_run
from ..registry import registry
from ..schedules.declared import sync_schedules
from ..schedules.ticker import enqueue_due_ticks
from ..storable import describe_exception
from . import claimer
from .async_lane import AsyncCalls, AsyncLane
from .claimer import Claimer, RateWakes
from .connection import QueueConnection
from .deferred import DeferredOutcomes
from .descendants import kill_tree, reap_adopted
from .journal import ProcessJournal
from .maintenance import rescue
from .outcomes import ClaimedRun, TaskRunCancelled, TaskRunTimeout
from .running import (
    BATCH_WORK,
    MARK_RUNNING_AFTER,
    MAX_BATCH_SIZE,
    Execution,
    note_open_django_connections,
    refuse_run,
)
from .salvage import hand_back
from .stopping import AT_ONCE, GRACEFUL, StopRequests

__all__ = [
    "EXIT_GAVE_UP",
    "EXIT_RECYCLE",
    "ClaimedRun",
    "TaskRunCancelled",
    "TaskRunTimeout",
    "Worker",
    "worker_name",
]

#: Signals whose handlers runs must leave as they found them (``Worker._restore_signal_handlers``).
_KEPT_SIGNALS = tuple(map(int, (signal.SIGTERM, signal.SIGINT, signal.SIGALRM, signal.SIGUSR1)))
#: The C module under :mod:`signal` (no type stubs): its getsignal() without the enum wrapping.
_signal: Any = importlib.import_module("_signal")
#: Exit code of a worker process that stopped after ``max_tasks`` runs and wants a successor.
EXIT_RECYCLE = 75
#: Runs of async tasks one process runs at once (``runtaskworker --async-concurrency``).
DEFAULT_ASYNC_CONCURRENCY = 100
#: Exit code of a ``--burst`` worker process that gave up (:data:`BURST_ERRORS`): its
#: supervisor does not replace it, and exits with an error.
EXIT_GAVE_UP = 76

logger = logging.getLogger("django_tasks.worker")


def worker_name(pid: int | None = None) -> str:
    """How runs and worker rows name a worker process: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid() if pid is None else pid}"


def _leave_forked_child(run_id: uuid.UUID) -> None:
    """The task forked and its child came back here, into the worker's code: it must not
    go on as a second copy of the worker process (the same connections, journal and runs).
    It exits at once, writing nothing; the parent records the run."""
    leave_forked_child("The worker", for_run(run_id))


class Worker:
    """Executes background runs of the given queues until stopped."""

    #: What each slot thread claims with (:mod:`.claimer`; the test worker's admits quietly).
    claimer_class = Claimer

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
        journal: ProcessJournal | None = None,
        async_concurrency: int = DEFAULT_ASYNC_CONCURRENCY,
    ) -> None:
        conf = task_settings()
        self.queues = list(queues or [conf.DEFAULT_QUEUE])
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}.")
        self.concurrency = concurrency
        if async_concurrency < 1:
            raise ValueError(f"async_concurrency must be at least 1, got {async_concurrency}.")
        #: Runs of async tasks at once, in this process's async lane (:mod:`.async_lane`).
        self.async_concurrency = async_concurrency
        self.lane: AsyncLane | None = None
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
        self.schedule_interval = conf.SCHEDULE_INTERVAL
        #: The limits this worker knows (django_tasks.limits), reloaded by the control thread.
        self.gate = LimitGate()
        self.name = worker_name()
        self.processed = 0
        # Shared with the supervisor (what this process runs and has not written yet, its
        # count of runs); private memory when there is no supervisor.
        self.journal = journal or ProcessJournal.private()
        self.async_calls = AsyncCalls(self.journal, self.name)
        self.deferred = DeferredOutcomes(self.journal, self.name)
        self.claims = 0  # claim statements that returned runs
        self.recycle = False
        self.gave_up = False
        #: Each slot thread's :class:`.claimer.Claimer` (``.claimer``; the lane has its own),
        #: and the slots' shared heap of rate wake-ups.
        self._claimers = threading.local()
        self._rate_wakes = RateWakes()
        self._stopping = threading.Event()
        self._control_done = threading.Event()
        self._wake = threading.Condition()
        self._generation = 0
        self._requests = StopRequests()
        self._count_lock = threading.Lock()
        self._interruptible = False  # one slot on the main thread: timeouts and cancels work
        #: The signal handlers this worker runs with (put back after a run that changed them).
        self._handlers: dict[int, Any] = {}
        self._executing: uuid.UUID | None = None
        self._cancel_target: uuid.UUID | None = None
        # The run in hand, as the control thread sees it (see publish()).
        self._lock = threading.Lock()
        self._current: ClaimedRun | None = None
        self._current_since = 0.0
        self._current_started: datetime | None = None
        self._current_marked = False
        self.current_lost = False  # taken from this worker before its RUNNING row was written
        #: Recent duration of each task's runs (seconds), for adaptive claims and deferral.
        self.durations: dict[str, float] = {}
        #: Whether a run ends with ``close_old_connections()``, as a request does (not when
        #: the runs share a test's connection and transaction).
        self.closes_django_connections = True

    # -- lifecycle --------------------------------------------------------------------------

    def run(self) -> int:
        """Run until stopped (or, with ``burst``, until no run is ready). Returns the exit code."""
        on_main = threading.current_thread() is threading.main_thread()
        self._interruptible = on_main and self.concurrency == 1
        previous: dict[signal.Signals, Any] = {}
        if self.handle_signals and on_main:
            # Under a supervisor, SIGTERM is the supervisor's request (SIGINT, the terminal's,
            # is ignored: the supervisor got it too).
            wanted = [signal.SIGTERM] if self.parent_pid else [signal.SIGTERM, signal.SIGINT]
            for signum in wanted:
                previous[signum] = signal.signal(signum, self._on_signal)
        if self._interruptible:
            previous[signal.SIGALRM] = signal.signal(signal.SIGALRM, self._on_timeout)
            previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, self._on_cancel)
            self._handlers = {signum: _signal.getsignal(signum) for signum in _KEPT_SIGNALS}
        try:
            return self._run()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _run(self) -> int:
        note_open_django_connections()
        control_db = QueueConnection(self.alias, self._control_done.is_set)
        self._register(control_db)
        self._sync_schedules(control_db)
        self._limits_changed(control_db)  # before the first claim (a burst ends on none)
        logger.info(
            "Worker %s started: queues=%s concurrency=%d", self.name, self.queues, self.concurrency
        )
        self.journal.set_ready()
        listen_alias = task_settings().LISTEN_DATABASE_ALIAS
        listen_db = (
            QueueConnection(listen_alias, self._control_done.is_set)
            if listen_alias and listen_alias != self.alias
            else control_db
        )
        control = threading.Thread(
            target=self._control,
            args=(control_db, listen_db),
            name="django_tasks-control",
            daemon=True,
        )
        control.start()
        async_keys = sorted(t.key for t in registry.all() if t.is_async)
        if async_keys:
            self.lane = AsyncLane(self, async_keys, self.async_concurrency)
            self.lane.start()
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
        if self.lane is not None:
            self.lane.join()
        self.async_calls.close()
        self._control_done.set()
        control.join()
        control_db.execute(sql.WORKER_STOPPED, {"name": self.name}, give_up_on_stop=False)
        control_db.close()
        listen_db.close()
        logger.info("Worker %s stopped after %d runs", self.name, self.processed)
        if self.gave_up:
            return EXIT_GAVE_UP
        return EXIT_RECYCLE if self.recycle else 0

    def _register(
        self, db: QueueConnection, host: str | None = None, pid: int | None = None
    ) -> None:
        """Write this worker's row: live, its queues and concurrency."""
        params = {
            "name": self.name,
            "host": socket.gethostname() if host is None else host,
            "pid": os.getpid() if pid is None else pid,
            "queues": Json(self.queues),
            "concurrency": self.concurrency,
        }
        db.execute(sql.REGISTER_WORKER, params, give_up_on_stop=False)

    def _sync_schedules(self, db: QueueConnection) -> None:
        """Bring the Schedule table's declared rows up to this process's code and settings
        (a bad declaration is logged - the system check names it too - never fatal)."""
        try:
            sync_schedules(db)
        except Exception:
            logger.exception("Could not update the declared schedules")

    def _enqueue_due_ticks(self, db: QueueConnection) -> None:
        """Any live worker enqueues due ticks; the database keeps one run per tick."""
        try:
            ticks = enqueue_due_ticks(db)
        except psycopg.OperationalError:
            raise
        except Exception:  # a bug or a schema problem must not stop the control thread
            logger.exception("Could not enqueue due ticks")
            return
        if ticks.enqueued:
            logger.info("Enqueued the runs of %d due ticks", ticks.enqueued)

    def stop(self) -> None:
        """Take no new runs; running ones finish. Safe to call from any thread."""
        self._stopping.set()
        self._bump()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        request = self._requests.add(signum)
        if request == GRACEFUL:
            logger.info("Signal %d: finishing running runs, taking no new ones.", signum)
            self.stop()
        elif request == AT_ONCE and not self.parent_pid:
            logger.warning("Second signal: stopping at once; running runs will be rescued.")
            os._exit(1)
        # A supervised process leaves "at once" to its supervisor (which kills it): a service
        # manager that signals every process of the service must not add up to two requests.

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
        if self.lane is not None:
            self.lane.bump()

    # -- control thread: wake-ups, heartbeat, rescue, cancels, supervisor --------------------

    def _control(self, db: QueueConnection, listen: QueueConnection) -> None:
        """The control thread's loop; ``listen``: the connection it LISTENs on (``db``, or one
        straight to PostgreSQL behind a pooler: LISTEN_DATABASE_ALIAS)."""
        next_beat = next_look = 0.0
        listening_on: psycopg.Connection[Any] | None = None
        while not self._control_done.is_set():
            try:
                now = time.monotonic()
                if now >= next_beat:
                    self._beat(db)
                    next_beat = now + self.heartbeat_interval
                if now >= next_look and not self._stopping.is_set():
                    self._enqueue_due_ticks(db)
                    next_look = now + self.schedule_interval
                if listen.conn is None or listen.conn is not listening_on:
                    # A new connection (first start, or reopened after a database restart)
                    # listens afresh; runs enqueued meanwhile are found by claiming at once.
                    listen.execute(sql.LISTEN, None, give_up_on_stop=True)
                    listening_on = listen.conn
                    self._bump()
                    continue
                self._mark_long_run(db)
                wait = max(0.005, min(self._control_wait(), next_beat - time.monotonic()))
                cancel_requested = limits_changed = False
                for note in listen.conn.notifies(timeout=wait):
                    if note.channel == sql.CANCEL_CHANNEL:
                        cancel_requested = cancel_requested or note.payload == self.name
                    elif note.channel == sql.LIMITS_CHANNEL:
                        limits_changed = True
                    elif note.payload in self.queues:
                        self._bump()
                if cancel_requested:
                    self._check_cancels(db)
                if limits_changed:
                    self._limits_changed(db)
            except psycopg.OperationalError as exc:
                logger.warning("Control connection lost (%s); reconnecting", exc)
                for lost_db in {db, listen}:  # which one is not known: both, reopened on use
                    lost_db.note_lost()
                    lost_db.close()
                time.sleep(0.1)
            except Exception:
                # Never the end of the heartbeat: other workers would take this worker for
                # lost and rescue the runs it is still running.
                logger.exception(
                    "Control thread: unexpected error; going on in %.0f s", claimer.ERROR_BACKOFF
                )
                self._control_done.wait(claimer.ERROR_BACKOFF)

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
            self.deferred.flush(db)
            started = db.execute(
                sql.START,
                {"id": run.id, "worker": self.name, "started": self._current_started},
                give_up_on_stop=False,
            )
            self._current_marked = True
            self.current_lost = not started
        if not started:
            logger.warning(
                "Run %s was cancelled or taken before it started; stopping it",
                run.id,
                extra=for_run(run.id),
            )
            self._cancel_target = run.id
            if self._interruptible:
                os.kill(os.getpid(), signal.SIGUSR1)

    def _beat(self, db: QueueConnection) -> None:
        reap_adopted()  # daemons (other sessions) of runs, even while a long run goes on
        db.execute(sql.HEARTBEAT, {"name": self.name}, give_up_on_stop=True)
        rescue(db, rescuer=self.name, heartbeat_timeout=self.heartbeat_timeout)
        self._limits_changed(db)
        self._check_cancels(db)
        if self.parent_pid is not None and os.getppid() != self.parent_pid:
            self._orphaned(db)

    def _limits_changed(self, db: QueueConnection) -> None:
        """Reload the limits, and give waiting runs the slots that are free (a trigger does
        it when a slot frees; this catches a limit raised or removed, and any race)."""
        self.gate.reload(db)
        self.gate.release_waiting(db)

    def _orphaned(self, db: QueueConnection) -> None:
        """The supervisor was killed (or the fork server that forked this process): stop like
        on SIGTERM, but never outlive it for long.

        Without a supervisor nothing would enforce hard timeouts, so a run that does not finish
        within ``orphan_timeout`` is abandoned: the process marks itself stopped and exits,
        and the run is rescued like any run of a lost worker.
        """
        now = time.monotonic()
        if self._orphaned_at is None:
            logger.warning(
                "Parent process %d (the supervisor or its fork server) is gone: stopping.",
                self.parent_pid,
            )
            self._orphaned_at = now
            self.stop()
        elif now - self._orphaned_at > self.orphan_timeout:
            logger.warning(
                "Orphaned for %.0f s with a run still going: exiting.", self.orphan_timeout
            )
            db.execute(sql.WORKER_STOPPED, {"name": self.name}, give_up_on_stop=False)
            if os.getpgrp() == os.getpid():  # our own group: what the run started goes too
                kill_tree(os.getpid(), itself=False)
                os.killpg(os.getpid(), signal.SIGKILL)
            os._exit(1)

    def _check_cancels(self, db: QueueConnection) -> None:
        rows = db.execute(sql.CANCEL_REQUESTED, {"worker": self.name}, give_up_on_stop=True)
        wanted = {row[0] for row in rows}
        if wanted:
            self.async_calls.cancel(wanted, db)  # those of them running here as async runs
        current = self._executing
        if current is not None and current in wanted and self._cancel_target != current:
            self._cancel_target = current
            logger.info(
                "Run %s: cancel requested, interrupting it", current, extra=for_run(current)
            )
            if self._interruptible:
                os.kill(os.getpid(), signal.SIGUSR1)

    # -- one slot ---------------------------------------------------------------------------

    def _queue_connection(self) -> QueueConnection:
        """The connection a slot claims and records on (its own; see :mod:`..testing` for one
        that shares Django's)."""
        return QueueConnection(self.alias, self._stopping.is_set)

    def claimer(self) -> Claimer:
        """The calling slot thread's claimer (made at its first claim)."""
        found: Claimer | None = getattr(self._claimers, "claimer", None)
        if found is None:
            found = self._claimers.claimer = self.claimer_class(self, rate_wakes=self._rate_wakes)
        return found

    def _slot(self) -> None:
        db = self._queue_connection()
        claims = self.claimer()
        try:
            while not self._stopping.is_set():
                self._reap_orphans()
                generation = self._generation
                flushing = bool(self.deferred)
                runs = claims.claim_or_wait(db)
                if runs is None:
                    continue
                if not runs:
                    # A burst ends when nothing is ready - but a claim that wrote completions
                    # may have released downstream runs its own snapshot could not see (it
                    # looks once more, at once: a burst is run_ready() in tests, called after
                    # every request), and runs this worker sent to wait for a rate start
                    # soon: it waits for them.
                    if self.burst and flushing:
                        continue
                    if self.burst and not claims.rate_wakes:
                        return
                    claims.sleep(generation)
                    continue
                for index, run in enumerate(runs):
                    if self._stopping.is_set():
                        self._hand_back(db, runs[index:])
                        break
                    self._process(db, run)
        finally:
            self.deferred.flush(db)
            db.close()

    def _reap_orphans(self) -> None:
        """Between runs: reap the orphans of earlier runs this process adopted (a subreaper,
        :mod:`.descendants`), those of its own session too when no task code runs here -
        one slot, and no async run in flight."""
        idle = self.concurrency == 1 and (self.lane is None or self.lane.in_flight == 0)
        reap_adopted(every_session=idle)

    def _batch_limit(self) -> int:
        """How many runs to claim: the configured size, or - adaptive - about ``BATCH_WORK``
        seconds of the slowest task seen so far (one run while nothing is known yet).

        A claim costs a round trip and a commit whatever its size, so tiny runs are claimed by
        the dozens; slow ones one at a time, so that a worker never sits on runs another
        worker could start now. Processes with several slots (threads) claim one at a time.
        """
        if self.batch_size is not None:
            return self.batch_size
        if self.concurrency > 1 or not self.durations:
            return 1
        slowest = max(self.durations.values())
        return max(1, min(MAX_BATCH_SIZE, int(BATCH_WORK / max(slowest, 1e-6))))

    def _process(
        self,
        db: Any,
        run: ClaimedRun,
        execution: type[Execution] = Execution,
        attempt: int | None = None,
    ) -> None:
        """Execute one claimed run to its outcome (:class:`~.running.Execution`). The journal
        says which run this process is on meanwhile - from before its parameters are
        unpickled until its outcome is written or journaled - so that if the process dies, its
        supervisor knows which run took it down (see :mod:`.journal`)."""
        single = self.concurrency == 1 and execution is Execution
        if single:
            self.journal.begin(run.id, run.task_name, db.db_epoch())
        try:
            execution(self, db, run, attempt).execute()
        except KeyboardInterrupt:  # Ctrl-C in a worker without signal handlers: stop
            raise
        except BaseException as exc:
            self._failed_unexpectedly(db, run, exc)
        finally:
            if single:
                self.journal.end()
        with self._count_lock:  # one more run taken to an end, or to a retry
            self.processed += 1
            self.journal.count_processed()  # the supervisor's metrics read it there
            if self.max_tasks is not None and self.processed >= self.max_tasks:
                logger.info("Ran %d runs (--max-tasks-per-child): stopping", self.processed)
                self.recycle = True
                self.stop()

    def _failed_unexpectedly(self, db: Any, run: ClaimedRun, error: BaseException) -> None:
        """Something the Execution did not expect escaped it (a bug, a hook or a signal
        receiver raising ``SystemExit``): the run ends FAILED with that error - unless its
        outcome is already written or waits in the deferred outcomes - and the worker goes on.
        Left to end the process, it would hand the run back, to fail the next process too."""
        logger.error(
            "Run %s: the worker failed while executing it",
            run.id,
            exc_info=error,
            extra=for_run(run.id),
        )
        if self.deferred.holds(run.id):
            return
        message = f"The worker failed while executing this run: {describe_exception(error)}"
        try:
            refuse_run(db, run.id, self.name, message, error)
        except Exception:
            logger.exception("Run %s: could not record the failure", run.id)

    # -- what an Execution asks of its worker ---------------------------------------------

    def publish(self, run: ClaimedRun, started: datetime, marked: bool) -> None:
        """``run``'s function is about to be called (since ``started``, database clock;
        ``marked``: its RUNNING row is written): the control thread marks a deferred run
        RUNNING once it has gone on for MARK_RUNNING_AFTER."""
        with self._lock:
            self._current = run
            self._current_since = time.monotonic()
            self._current_started = started
            self._current_marked = marked
            self.current_lost = False

    def unpublish(self, task_key: str) -> bool:
        """The function returned: learn how long its task takes; returns whether the run was
        marked RUNNING meanwhile."""
        with self._lock:
            self._current = None
            marked = self._current_marked
        elapsed = time.monotonic() - self._current_since
        previous = self.durations.get(task_key)
        self.durations[task_key] = elapsed if previous is None else 0.8 * previous + 0.2 * elapsed
        return marked

    def call_interruptibly(
        self, run: ClaimedRun, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Call a run's function; on the main thread its timeout (SIGALRM) and a cancel
        (SIGUSR1) interrupt it with :class:`TaskRunTimeout` / :class:`TaskRunCancelled`."""
        self._executing = run.id
        pid = os.getpid()
        try:
            if is_async(fn):  # one async run here (its lane takes the others): on a loop
                return self._call_async(run, fn, args, kwargs)
            if self._interruptible and run.timeout:
                signal.setitimer(signal.ITIMER_REAL, run.timeout)
            return fn(*args, **kwargs)
        finally:
            if os.getpid() != pid:
                _leave_forked_child(run.id)
            if self._interruptible:
                signal.setitimer(signal.ITIMER_REAL, 0)
                self._restore_signal_handlers(run.id)
            self._executing = None

    def _restore_signal_handlers(self, run_id: uuid.UUID) -> None:
        """Put back the handlers a run changed (a library that resets SIGALRM or SIGUSR1 to
        their default action, code that ignores SIGTERM): left so, the next run's timeout or
        cancel would kill the process, and a stop request would go unheard."""
        for signum, handler in self._handlers.items():
            # _signal's own getsignal: signal.getsignal() wraps it in enums, 30 times slower
            # (4 us for the four, paid by every run).
            if _signal.getsignal(signum) is not handler:
                signal.signal(signum, handler)
                logger.warning(
                    "Run %s changed this worker's handler of %s: put back",
                    run_id,
                    signal.Signals(signum).name,
                    extra=for_run(run_id),
                )

    def _call_async(
        self, run: ClaimedRun, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """An async run in the slot (not in a lane: its task was not known as async when the
        process started): on the async loop, its timeout and a cancel through asyncio."""
        return self.async_calls.call(run, fn, args, kwargs)

    def _hand_back(self, db: QueueConnection, runs: Sequence[ClaimedRun]) -> None:
        self.deferred.flush(db)
        self._give_back(db, runs, "Handed back by a stopping worker.")

    def _give_back(
        self, db: QueueConnection, runs: Sequence[ClaimedRun], message: str, blame: bool = False
    ) -> None:
        """Claimed runs not started go back into the topic, their attempt given back (with
        ``blame``, counted as a crash of each: see :func:`.salvage.hand_back`)."""
        hand_back(db, self.name, [run.id for run in runs], message, blame=blame)
        logger.info("Handed back %d claimed runs", len(runs))
