"""A worker process's async lane: up to ``--async-concurrency`` runs of ``async def`` tasks
at once, their coroutines on one event loop.

The process's slot claims runs of sync tasks only; the lane claims runs of the async tasks
the process knows - as many as it has free places - and gives each to a thread that
executes it as any run is executed (:class:`~.running.Execution`: RUNNING, retries, caching,
hooks, the outcome), while the coroutine itself runs on the lane's loop (:mod:`..aio`). So a
sync run never waits for the loop, nor an async run for a sync one, and the run machinery is
the one every run goes through. The lane's statements share a few connections
(:class:`SharedConnection`), not one per run.

A timeout or a cancel cancels the run's coroutine (:class:`AsyncCalls`); one that ignores
it is left behind after :func:`~..aio.cancel_grace` and its run ends all the same, before the
supervisor would kill the process. Nothing a coroutine raises or does to the loop (stop it,
``SystemExit``) reaches the other runs (:func:`~..aio.run_contained`,
:class:`~..aio.LoopThread`). A coroutine that blocks the loop (a sync sleep, heavy CPU work)
delays every async run of its process - such work belongs in a sync task. If the process
dies, its RUNNING async runs are rescued as any run of a lost worker is (CRASHED, retried as
their retries allow); runs it had claimed and not started are handed back.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .. import sql
from ..aio import Ended, LoopThread, RunTimeout, call_on_loop
from ..logs import for_run
from ..registry import UnknownTask, registry
from ..states import StateName, StateType
from .connection import QueueConnection
from .deferred import log_discarded
from .journal import ProcessJournal
from .outcomes import (
    ClaimedRun,
    Outcome,
    TaskRunCancelled,
    TaskRunTimeout,
    finish_params,
    finish_run,
)

if TYPE_CHECKING:
    from .process import Worker

__all__ = ["AsyncCalls", "AsyncLane", "SharedConnection"]

logger = logging.getLogger("django_tasks.worker")

#: Connections the lane's threads share (statements are short; runs wait on the loop).
LANE_CONNECTIONS = 4


class _JournaledSteps:
    """Each step of one run's coroutine, in the process's journal: if the process dies in a
    step, its supervisor knows whose code took it down (:mod:`.salvage`)."""

    __slots__ = ("_journal", "_run_id", "_task_name")

    def __init__(self, journal: ProcessJournal, run: ClaimedRun) -> None:
        self._journal, self._run_id, self._task_name = journal, run.id, run.task_name

    def begin(self) -> None:
        self._journal.step(self._run_id, self._task_name)

    def end(self) -> None:
        self._journal.stepped()


#: A lane's run cancelled while it was being prepared (RUNNING is written for a claimed batch
#: at once, each run's arguments loaded after): ended at once, its coroutine never started.
CANCELLED_BEFORE_START = Outcome(
    StateType.CANCELLED,
    StateName.CANCELLED,
    "Cancelled while it was being prepared: its coroutine never started.",
    None,
    None,
    "",
)


class AsyncCalls:
    """The asyncio tasks of the runs worker ``worker`` is executing, by run id, on one loop
    (started on first use, and again if task code broke it): a timeout or a cancel ends the
    run's task, not the process. Each step of their coroutines is told to ``journal``."""

    def __init__(self, journal: ProcessJournal, worker: str) -> None:
        self.journal, self.worker = journal, worker
        self._lock = threading.Lock()
        self._loop: LoopThread | None = None
        self._tasks: dict[uuid.UUID, asyncio.Task[Ended]] = {}
        self._cancelled: set[uuid.UUID] = set()
        #: The lane's runs whose coroutines have not started yet (being prepared).
        self._unstarted: set[uuid.UUID] = set()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or not self._loop.alive:
                self._loop = LoopThread("django_tasks-async")
            return self._loop.loop

    def call(
        self,
        run: ClaimedRun,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """Run the coroutine of ``fn`` for ``run``; wait for it in this thread. Its timeout
        raises :class:`TaskRunTimeout`, a cancel :class:`TaskRunCancelled`, as for sync runs;
        what the coroutine raised is raised here (``SystemExit`` too: the loop never sees it).
        """

        def started(task: asyncio.Task[Ended]) -> None:
            with self._lock:
                self._tasks[run.id] = task
                self._unstarted.discard(run.id)
                if run.id in self._cancelled:  # asked before the task existed: never starts
                    task.cancel()

        try:
            return call_on_loop(
                fn,
                args,
                kwargs,
                loop=self.loop,
                timeout=run.timeout,
                started=started,
                steps=_JournaledSteps(self.journal, run),
            )
        except RunTimeout as exc:
            raise TaskRunTimeout(str(exc)) from exc
        except asyncio.CancelledError:
            with self._lock:
                asked = run.id in self._cancelled
            if asked:
                raise TaskRunCancelled from None
            raise
        finally:
            with self._lock:
                self._tasks.pop(run.id, None)
                self._cancelled.discard(run.id)

    def running(self) -> set[uuid.UUID]:
        with self._lock:
            return set(self._tasks)

    def expect(self, run_ids: list[uuid.UUID]) -> None:
        """The lane is about to write RUNNING for these runs; each is prepared (its arguments
        loaded) before its coroutine starts."""
        with self._lock:
            self._unstarted.update(run_ids)

    def forget(self, run_id: uuid.UUID) -> None:
        """The lane is done with the run (executed, refused or skipped)."""
        with self._lock:
            self._unstarted.discard(run_id)
            self._cancelled.discard(run_id)

    def cancel(self, run_ids: set[uuid.UUID], db: QueueConnection) -> int:
        """Cancel the asyncio tasks of those runs (a cancel the control thread was told of;
        it tells again at each look while the run is CANCELLING: one cancel is enough). A
        run whose coroutine has not started - it is being prepared, which cannot be
        interrupted and may take long - ends CANCELLED at once, on ``db``: left CANCELLING,
        it would have the supervisor kill the process, and every run in it, after
        ``CANCEL_GRACE``. Its coroutine's task is cancelled as soon as it exists, before the
        coroutine starts (:meth:`call`)."""
        with self._lock:
            new = {
                i
                for i in run_ids
                if i not in self._cancelled and (i in self._tasks or i in self._unstarted)
            }
            tasks = [self._tasks[i] for i in new if i in self._tasks]
            unstarted = [i for i in new if i in self._unstarted]
            self._cancelled |= new
            loop = self._loop
        for task in tasks:
            assert loop is not None
            loop.loop.call_soon_threadsafe(task.cancel)
        for run_id in unstarted:
            if finish_run(db, run_id, self.worker, CANCELLED_BEFORE_START):
                logger.info("Run %s: cancelled before it started", run_id, extra=for_run(run_id))
        return len(tasks) + len(unstarted)

    def close(self) -> None:
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is not None:
            loop.stop()


class SharedConnection:
    """What an :class:`~.running.Execution` asks of its connection, over a few connections
    shared by the lane's threads: each statement borrows one (``execute``); a run whose
    statements must share a session (a cache key's advisory lock) leases one for a while."""

    def __init__(
        self, make: Callable[[], QueueConnection], size: int, clock: QueueConnection
    ) -> None:
        self.clock = clock  # the lane's claiming connection: open, its clock offset measured
        self._all = [make() for _ in range(size)]
        self._free: queue.SimpleQueue[QueueConnection] = queue.SimpleQueue()
        for db in self._all:
            self._free.put(db)

    @contextmanager
    def lease(self) -> Iterator[QueueConnection]:
        db = self._free.get()
        try:
            yield db
        finally:
            self._free.put(db)

    def execute(self, query: str, params: Any, *, give_up_on_stop: bool) -> list[Any]:
        with self.lease() as db:
            return db.execute(query, params, give_up_on_stop=give_up_on_stop)

    def db_time(self) -> datetime:
        return self.clock.db_time()

    def db_epoch(self) -> float:
        return self.clock.db_epoch()

    def close(self) -> None:
        for db in self._all:
            db.close()


class _Finish:
    __slots__ = ("done", "finished", "outcome", "run_id", "written")

    def __init__(self, run_id: uuid.UUID, outcome: Outcome, finished: datetime) -> None:
        self.run_id, self.outcome, self.finished = run_id, outcome, finished
        self.done = threading.Event()
        self.written = False


class Finisher:
    """Writes the final states of the lane's runs: whatever has ended while the previous
    write went on, in one transaction and one round trip (many runs end within a few
    milliseconds of each other on a busy loop). The run's thread waits for its write, so
    hooks still see their run's state recorded."""

    def __init__(self, worker: str, db: QueueConnection) -> None:
        self.worker, self.db = worker, db
        self._queue: queue.SimpleQueue[_Finish | None] = queue.SimpleQueue()
        self._idle = threading.Condition()
        self._put = 0
        self.written = 0  # final states written so far (or given up on)
        self._thread = threading.Thread(target=self._write, name="django_tasks-finish", daemon=True)
        self._thread.start()

    def finish(
        self, run_id: uuid.UUID, outcome: Outcome, finished: datetime, *, wait: bool
    ) -> bool:
        """Write the run's final state - with ``wait``, before returning whether it was
        written (``False``: the run was no longer this worker's); without, in the background
        (the run's place frees at once; a discarded outcome is logged by the writer)."""
        item = _Finish(run_id, outcome, finished)
        with self._idle:
            self._put += 1
        self._queue.put(item)
        if not wait:
            return True
        item.done.wait()
        return item.written

    def wait_idle(self) -> None:
        """Return once every final state given so far is written."""
        with self._idle:
            self._idle.wait_for(lambda: self.written == self._put)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def _write(self) -> None:
        stop = False
        while not stop:
            batch: list[_Finish] = []
            item = self._queue.get()
            while item is not None:
                batch.append(item)
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            else:
                stop = True
            if batch:
                self._write_batch(batch)

    def _write_batch(self, batch: list[_Finish]) -> None:
        try:
            params = [finish_params(i.run_id, self.worker, i.outcome, i.finished) for i in batch]
            results = self.db.execute_many(sql.FINISH, params)
            for item, rows in zip(batch, results, strict=True):
                item.written = bool(rows)
                if not rows:
                    log_discarded(item.run_id, item.outcome.name)
        except Exception:  # one outcome refused as it is: each on its own, as a slot does
            for item in batch:
                try:
                    item.written = finish_run(self.db, item.run_id, self.worker, item.outcome)
                    if not item.written:
                        log_discarded(item.run_id, item.outcome.name)
                except Exception:
                    logger.exception("Run %s: its outcome could not be written", item.run_id)
        finally:
            for item in batch:
                item.done.set()
            with self._idle:
                self.written += len(batch)
                self._idle.notify_all()


class AsyncLane:
    """Claims and executes ``worker``'s async runs (those of ``task_keys``), ``size`` at once."""

    def __init__(self, worker: Worker, task_keys: list[str], size: int) -> None:
        self.worker = worker
        self.task_keys = task_keys
        self.size = size
        self._in_flight = 0
        #: Places freed so far, under ``wake``: the lane sleeps until one frees (or a NOTIFY).
        self.freed = 0
        self.wake = threading.Condition()
        #: The lane's claims (its floors, its rate wakes, its errors in a row).
        self.claimer = worker.claimer_class(worker, lane=self)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.finisher: Finisher | None = None

    def bump(self) -> None:
        """A NOTIFY or a stop: the lane looks again."""
        with self.wake:
            self.wake.notify_all()

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._claims, name="django_tasks-async-claims", daemon=True
        )
        self._thread.start()

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    def _claims(self) -> None:
        """Claim while there are free places; each claimed run goes to a thread."""
        from .running import AsyncExecution

        worker = self.worker
        claim_db = worker._queue_connection()
        size = min(LANE_CONNECTIONS, self.size)
        shared = SharedConnection(worker._queue_connection, size, clock=claim_db)
        self.finisher = Finisher(worker.name, worker._queue_connection())
        pool = ThreadPoolExecutor(self.size, thread_name_prefix="django_tasks-async")

        def execute(run: ClaimedRun, attempt: int | None) -> None:
            try:
                worker._process(shared, run, execution=AsyncExecution, attempt=attempt)
            except Exception:  # recorded by the Execution; a bug must not stop the lane
                logger.exception("Async run %s could not be executed", run.id)
            finally:
                worker.async_calls.forget(run.id)
                with self.wake:  # a free place: the lane claims again
                    with self._lock:
                        self._in_flight -= 1
                    self.freed += 1
                    self.wake.notify_all()

        seen = -1  # final states written when a burst last found nothing to claim
        try:
            while not worker._stopping.is_set():
                generation, freed = worker._generation, self.freed
                free = self.size - self.in_flight
                # A claim costs a round trip and a commit: with runs in flight, claim for a
                # tenth of the places at once rather than for each place that frees.
                worth = free >= max(1, self.size // 10) or free == self.size
                runs = self.claimer.claim_or_wait(claim_db, limit=free) if worth else []
                if runs is None:
                    continue
                if not runs:
                    if worker.burst and free == self.size and not self.claimer.rate_wakes:
                        # Done - unless final states written since the last look released
                        # downstream runs (as the slot's completions do): one more claim.
                        self.finisher.wait_idle()
                        if self.finisher.written == seen:
                            return
                        seen = self.finisher.written
                        continue
                    self.claimer.sleep(generation, freed)
                    continue
                with self._lock:
                    self._in_flight += len(runs)
                worker.async_calls.expect([run.id for run in runs])
                attempts = self._start(claim_db, runs)
                for run in runs:
                    pool.submit(execute, run, attempts.get(run.id))
        finally:
            pool.shutdown(wait=True)  # stopping: the runs in flight finish
            self.finisher.close()
            self.finisher.db.close()
            shared.close()
            claim_db.close()

    def _start(self, db: QueueConnection, runs: list[ClaimedRun]) -> dict[uuid.UUID, int]:
        """Write RUNNING for a claimed batch in one round trip (their coroutines start at
        once); returns each started run's attempt. A caching task's runs are left PENDING:
        a cache hit ends them without running (:meth:`~.running.Execution._run_cached`)."""
        starting = [run.id for run in runs if not _caches(run.task_key)]
        if not starting:
            return {}
        params = [{"id": i, "worker": self.worker.name, "started": None} for i in starting]
        results = db.execute_many(sql.START, params)
        return {i: rows[0][0] for i, rows in zip(starting, results, strict=True) if rows}


def _caches(task_key: str) -> bool:
    try:
        return registry.get(task_key).options.caches
    except UnknownTask:
        return False
