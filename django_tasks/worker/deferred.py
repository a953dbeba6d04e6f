"""Outcomes of short runs waiting to be written with the worker's next claim.

A short run is executed without writing RUNNING first; its outcome (RUNNING and the final
state, with their real times) is written in the same statement and commit as the next claim,
so that round trips and commits per run fall to about one per batch. Until then each outcome
is kept in the process's journal (:mod:`.journal`) as the JSON the statement takes: if the
process dies first, its supervisor writes them (:mod:`.salvage`), and nothing it computed is
lost or computed again.

A run taken from the worker meanwhile (cancelled, or rescued because the worker looked lost)
is left alone by the statement, and its outcome is discarded with a warning. An outcome the
database refuses as it is ends its run FAILED with the reason; the others are written.
"""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from .. import sql
from ..logs import for_run
from .connection import QueueConnection
from .journal import ProcessJournal
from .outcomes import Deferred, unrecordable

__all__ = ["DeferredOutcomes", "Taken", "log_discarded"]

logger = logging.getLogger("django_tasks.worker")


def log_discarded(run_id: uuid.UUID, outcome: str) -> None:
    """Say that an outcome was not written because the run is no longer this worker's."""
    logger.warning(
        "Run %s was taken from this worker while it ran (cancelled, rescued as lost, or by "
        "a supervisor's kill): its outcome %s is discarded",
        run_id,
        outcome,
        extra=for_run(run_id),
    )


@dataclass(frozen=True)
class Taken:
    """Outcomes taken to be written: the runs, their JSON array, and how many bytes of the
    journal they fill (forgotten once written)."""

    items: list[Deferred]
    entries: str
    size: int

    NONE: ClassVar[Taken]


Taken.NONE = Taken([], "[]", 0)


class DeferredOutcomes:
    """The deferred outcomes of one worker process (``worker`` is its name in runs)."""

    def __init__(self, journal: ProcessJournal, worker: str) -> None:
        self.journal = journal
        self.worker = worker
        self._lock = threading.Lock()  # the claiming thread and the control thread
        self._items: list[Deferred] = []

    def __bool__(self) -> bool:
        return bool(self._items)

    def holds(self, run_id: uuid.UUID) -> bool:
        """Whether ``run_id``'s outcome waits here to be written."""
        with self._lock:
            return any(item.run.id == run_id for item in self._items)

    def add(self, db: QueueConnection, item: Deferred) -> None:
        """Keep a short run's outcome to write with the next claim. One the journal has no
        room for is written now (with those before it)."""
        entry = item.entry()
        for _ in range(2):
            with self._lock:
                if self.journal.add(entry):
                    self._items.append(item)
                    return
            self.flush(db)  # room for it, unless it is larger than the journal
        self.write(db, Taken([item], f"[{entry.decode()}]", 0))

    def flush(self, db: QueueConnection) -> None:
        """Write the outcomes now (before a long run, when stopping)."""
        self.write(db, self.take())

    def take(self) -> Taken:
        """The outcomes not written yet; the journal keeps them until :meth:`written`."""
        with self._lock:
            if not self._items:
                return Taken.NONE
            items, self._items = self._items, []
            size = self.journal.size
            return Taken(items, self.journal.entries(size), size)

    def write(self, db: QueueConnection, taken: Taken) -> None:
        """Write outcomes taken: in one statement, or - if the database refuses one of them -
        one by one, a refused one ending its run FAILED with the reason."""
        if not taken.items:
            return
        params = {"worker": self.worker, "done": taken.entries}
        try:
            rows = db.execute(sql.FLUSH, params, give_up_on_stop=False)
        except Exception:
            rows = [row for item in taken.items for row in self._write_one(db, item)]
        self.written(taken, {row[0] for row in rows})

    def _write_one(self, db: QueueConnection, item: Deferred) -> list[Any]:
        params = {"worker": self.worker, "done": f"[{item.entry().decode()}]"}
        try:
            return db.execute(sql.FLUSH, params, give_up_on_stop=False)
        except Exception as exc:
            logger.error("Run %s: its outcome was refused: %s", item.run.id, exc)
            failed = replace(item, outcome=unrecordable(item.outcome, exc))
            params["done"] = f"[{failed.entry().decode()}]"
            return db.execute(sql.FLUSH, params, give_up_on_stop=False)

    def written(self, taken: Taken, ids: set[uuid.UUID]) -> None:
        """The outcomes ``taken`` are in the database, those of runs in ``ids`` at least: the
        others had been taken from this worker."""
        with self._lock:
            self.journal.written(taken.size)
        for item in taken.items:
            if item.run.id not in ids:
                log_discarded(item.run.id, item.outcome.name)
