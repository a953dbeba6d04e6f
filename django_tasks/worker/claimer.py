"""One claiming thread of a worker process: a slot, or the async lane.

A :class:`Claimer` holds what belongs to one thread that claims: which runs it takes (every
task's; with an async lane, the slot all but the lane's and the lane only its own), where its
next claim starts in the ready index (its floors, :mod:`.floors`), when runs it sent to wait
for a rate may start (a heap), how many claims failed in a row, and how it sleeps between
claims (the slot on the worker's condition, the lane on its own, which also wakes when one of
its places frees). The :class:`~.process.Worker` gives each slot thread one
(:meth:`~.process.Worker.claimer`); the lane makes its own.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import psycopg

from .. import sql
from ..storable import describe_exception
from .connection import QueueConnection
from .deferred import Taken
from .floors import ClaimFloors
from .outcomes import ClaimedRun

if TYPE_CHECKING:
    from .async_lane import AsyncLane
    from .process import Worker

__all__ = ["BURST_ERRORS", "ERROR_BACKOFF", "Claimer", "RateWakes"]

logger = logging.getLogger("django_tasks.worker")

#: Seconds a thread waits after an unexpected error (a bug, a statement the database refuses
#: for a reason other than the connection) before it tries again.
ERROR_BACKOFF = 1.0
#: Claims failing in a row (for a reason other than the connection) after which a ``--burst``
#: worker stops: a burst is a job that must end, and a claim that failed this often will fail
#: again (a bug, a schema older than the code). A worker that is not a burst goes on trying.
BURST_ERRORS = 3


class RateWakes:
    """When runs sent to wait for a rate may start (monotonic clock): a heap behind a lock,
    shared by a process's slot threads (any idle slot wakes for a run another slot's claim
    sent to wait; two slots must not pop the same entry)."""

    def __init__(self) -> None:
        self._heap: list[float] = []
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        with self._lock:
            return bool(self._heap)

    def push(self, at: float) -> None:
        with self._lock:
            heapq.heappush(self._heap, at)

    def wait(self, now: float) -> float | None:
        """0 when one is due (it is taken, with every other due one), else the seconds to
        the next; ``None`` when none is waited for."""
        with self._lock:
            heap = self._heap
            if heap and heap[0] <= now:
                while heap and heap[0] <= now:
                    heapq.heappop(heap)
                return 0.0
            return heap[0] - now if heap else None


class Claimer:
    """Claims for one thread of ``worker``: a slot's (``lane`` None) or the async lane's."""

    def __init__(
        self, worker: Worker, lane: AsyncLane | None = None, rate_wakes: RateWakes | None = None
    ) -> None:
        self.worker = worker
        self.lane = lane
        #: Where this thread's next claim starts, per queue (:mod:`.floors`).
        self.floors = ClaimFloors()
        #: When runs sent to wait for a rate may start (monotonic clock, a heap): the slots
        #: share one (any idle slot wakes for a run another slot's claim sent to wait).
        self.rate_wakes = RateWakes() if rate_wakes is None else rate_wakes
        #: Claims that failed in a row (unexpected errors).
        self.errors = 0

    def tasks(self) -> tuple[str, list[str]]:
        """Which runs this thread claims: ``("all", [])``, or ``"only"`` / ``"except"`` the
        async lane's task keys."""
        if self.lane is not None:
            return "only", self.lane.task_keys
        if self.worker.lane is not None:
            return "except", self.worker.lane.task_keys
        return "all", []

    def sleep(self, generation: int, freed: int = 0) -> None:
        """Wait for a NOTIFY seen after ``generation`` was read, a stop, or the poll interval
        (the async lane: also for a place freed since ``freed`` was read, on its own
        condition, so that the slot does not wake for each async run that ends).

        Comparing generations (not a shared Event) means a notification that arrives while
        this thread is claiming is not lost: the thread goes straight back to claiming.
        """
        worker, lane = self.worker, self.lane
        timeout = worker.poll_interval
        owed = self.floors.owed_in()  # a plain claim owed (.floors): wake for it
        if owed is not None:
            if owed == 0.0:
                return
            timeout = min(timeout, owed)
        rate = self.rate_wakes.wait(time.monotonic())  # a run sent to wait for a rate
        if rate == 0.0:  # ... may start now
            return
        if rate is not None:  # ... or then
            timeout = min(timeout, rate)
        if lane is not None:
            with lane.wake:
                lane.wake.wait_for(
                    lambda: worker._generation != generation or lane.freed != freed, timeout
                )
            return
        with worker._wake:
            worker._wake.wait_for(lambda: worker._generation != generation, timeout)

    def claim_or_wait(
        self, db: QueueConnection, limit: int | None = None
    ) -> list[ClaimedRun] | None:
        """:meth:`claim`, or ``None`` after an unexpected error, logged and waited out.

        A thread that claims must outlive a bug or a statement the database refuses: the
        async lane or a slot thread that ended would leave its runs to other workers without
        a word, and a slot on the main thread would end the process - its supervisor would
        start another at once, again and again."""
        worker = self.worker
        try:
            runs = self.claim(db, limit)
        except Exception:
            self.errors += 1
            if worker.burst and self.errors >= BURST_ERRORS:
                logger.exception(
                    "Could not claim runs %d times in a row; this burst gives up", self.errors
                )
                worker.gave_up = True
                worker.stop()
                return None
            logger.exception("Could not claim runs; trying again in %.0f s", ERROR_BACKOFF)
            worker._stopping.wait(ERROR_BACKOFF)
            return None
        self.errors = 0
        return runs

    def claim(self, db: QueueConnection, limit: int | None = None) -> list[ClaimedRun]:
        """Claim the next runs that may start: a batch, less the runs a limit sent back to
        wait (:meth:`admit`); when a limit sent back the whole batch, claim again at once -
        other runs may be ready - instead of sleeping. When the admission fails, the runs
        under a limit are handed back (:meth:`_not_admitted`) and the others start."""
        while True:
            claimed = self.claim_batch(db, limit)
            if not claimed:
                return []
            try:
                admitted = self.admit(db, claimed)
            except Exception as exc:
                admitted = self._not_admitted(db, claimed, exc)
            if admitted:
                return admitted

    def _not_admitted(
        self, db: QueueConnection, claimed: list[ClaimedRun], error: Exception
    ) -> list[ClaimedRun]:
        """After the admission of ``claimed`` failed with ``error``: the runs a limit concerns
        are handed back (held by a live worker, nobody would run them), each hand-back counted
        as a crash of the run - an admission that always fails would hand them round for ever
        - unless two admissions merely collided. The runs no limit concerns needed no
        admission: returned, to start now. With none, ``error`` is raised (the claim is
        retried after a pause)."""
        gate = self.worker.gate
        limited = [run for run in claimed if gate.concerns(run)]
        message = f"Handed back: the worker could not admit it ({describe_exception(error)})."
        collided = isinstance(error, psycopg.errors.TransactionRollback)
        self.worker._give_back(db, limited, message, blame=not collided)
        free = [run for run in claimed if not gate.concerns(run)]
        if not free:
            raise error
        logger.error(
            "Could not admit %d claimed run(s) under a limit; handed back (%d start)",
            len(limited),
            len(free),
            exc_info=error,
        )
        return free

    def claim_batch(self, db: QueueConnection, limit: int | None = None) -> list[ClaimedRun]:
        """Claim a batch from the first of the worker's queues (in the order given) that has
        ready runs, writing the deferred completions of the previous batch in the same
        statement (a slot's: the lane leaves them to the slot). The lane claims up to
        ``limit`` runs."""
        worker, gate = self.worker, self.worker.gate
        done = Taken.NONE if self.lane is not None else worker.deferred.take()
        tasks, keys = self.tasks()
        floors = self.floors
        plain = worker.burst or floors.plain_due()
        for queue in worker.queues:
            floor = floors.start(queue, plain)
            params = {
                "queue": queue,
                "limit": worker._batch_limit() if limit is None else limit,
                "worker": worker.name,
                "late_after": worker.late_after,
                "done": done.entries,
                "task_keys": keys,
                "slot_queues": gate.slot_queues,
                "slot_tags": gate.slot_tags,
                "floor_priority": floor and floor.priority,
                "floor_time": floor and floor.scheduled_time,
            }
            claim = sql.claim(
                limits=gate.concurrency,
                tasks=tasks,
                rates=gate.rates,
                floored=floor is not None,
                flushes=bool(done.items),
            )
            began = time.monotonic()
            rows = self._claim_rows(db, claim, params, done)
            took = time.monotonic() - began  # the clock offset is known once connected:
            floors.claimed(queue, rows, floor, took, db.db_time() - timedelta(seconds=took))
            done = Taken.NONE
            claimed = [ClaimedRun.from_claim(row, queue) for row in rows if row[0] == "claimed"]
            if claimed:
                worker.claims += 1
                return claimed
        return []

    def _claim_rows(
        self, db: QueueConnection, claim: str, params: dict[str, Any], done: Taken
    ) -> list[Any]:
        """Run one claim statement, writing the deferred completions ``done`` with it."""
        deferred = self.worker.deferred
        try:
            # Completions must be written even while stopping: only an empty claim gives up.
            rows = db.execute(claim, params, give_up_on_stop=not done.items)
        except Exception:  # the database refused a completion: write them one by one
            if not done.items:
                raise
            deferred.write(db, done)
            done = Taken.NONE
            rows = db.execute(claim, {**params, "done": "[]"}, give_up_on_stop=True)
        deferred.written(done, {row[1] for row in rows if row[0] == "flushed"})
        return rows

    def admit(self, db: QueueConnection, claimed: list[ClaimedRun]) -> list[ClaimedRun]:
        """The claimed runs that may start now (:mod:`..limits.gate`); a run that waits for a
        rate wakes this thread when it may start."""
        admission = self.worker.gate.admit(db, claimed, self.worker.name)
        offset = time.monotonic() - db.db_epoch()
        for start in admission.wake_at:
            self.rate_wakes.push(start.timestamp() + offset)
        return admission.runs
