"""What a supervisor does when one of its worker processes dies: nothing the child knew is
lost, and the run that took it down is known.

From the child's journal (see :mod:`.journal`), before the child is marked stopped (so that
no other worker's rescue guesses first):

1. the outcomes the child computed and had not written yet are written, as it would have;
2. the run that took it down ends CRASHED with a message naming the task and the exit code
   or signal - retried if its retries allow and it has not crashed ``MAX_CRASHES`` times in
   a row, so a run that keeps killing processes is discarded instead of looping. That run is
   the async run whose coroutine was taking a step on the lane's loop (its code alone runs
   there), else the sync run it was executing, if no async run was in flight. The other runs
   it was running (the sync run, the async runs in flight) end CRASHED too - retried as their
   retries allow - without that crash counting against them. With async runs in flight and
   none in a step, the culprit is not known (a thread of any of them may have done it): each
   run counts the crash, and none is named;
3. the runs it had claimed but not started are handed back, their attempt given back: a run
   is never executed again, nor charged an attempt, because another run of its batch died.
"""

from __future__ import annotations

import json
import logging
import signal
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .. import sql
from ..conf import task_settings
from ..logs import for_run
from ..signals import run_crashed, send
from ..states import StateType
from .connection import QueueConnection
from .journal import Executing, ProcessJournal, Stepping

__all__ = ["Salvaged", "hand_back", "how_it_died", "salvage"]

logger = logging.getLogger("django_tasks.worker")


@dataclass(frozen=True)
class Salvaged:
    written: int
    crashed: int
    retried: int


def how_it_died(exitcode: int | None) -> str:
    """``exit code 1`` or ``killed by signal SIGSEGV``."""
    if exitcode is None:
        return "exit code unknown"
    if exitcode < 0:
        try:
            return f"killed by signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"


def salvage(
    db: QueueConnection,
    journal: ProcessJournal,
    *,
    worker: str,
    rescuer: str,
    exitcode: int | None,
    killed_because: str | None = None,
) -> Salvaged:
    """Settle the runs of ``worker``, a child process that died (see the module docstring).

    ``killed_because``: the supervisor killed the child itself (a second request to stop, the
    shutdown timeout), so no run it was executing is to blame for its death."""
    written = _write_outcomes(db, journal, worker)
    crashes = _Crashes(db, worker, rescuer, how_it_died(exitcode))
    executing = journal.executing
    if killed_because is not None:
        message = (
            f"Worker process {worker} was killed by its supervisor ({killed_because}) "
            f"while running this run."
        )
        if executing is not None:
            crashes.held(executing.run_id, executing.since, message, blame=False)
        crashes.others(message, blame=False)
    else:
        _blame(crashes, executing, journal.stepping)
    # The runs it had not started go back. When no run of its own is known to have been
    # running (it died between runs, or while preparing one before the journal said which),
    # the death counts as a crash of each: a run that kills every process that claims it
    # ends after MAX_CRASHES hand-backs instead of going round for ever.
    message = f"Handed back: worker process {worker} died before starting it."
    blame = not crashes.settled and killed_because is None
    discarded = hand_back(db, worker, None, message, blame=blame)
    return Salvaged(written, crashes.crashed + discarded, crashes.retried)


def _blame(crashes: _Crashes, executing: Executing | None, stepping: Stepping | None) -> None:
    """Crash the runs a child held when it died of its own accord (not killed by its
    supervisor), blaming the one whose code was running if it is known: the async run whose
    coroutine was taking a step (its code alone runs on the loop), else the sync run in hand
    if it was the only run in flight. With async runs in flight and none of them in a step,
    the culprit is not known (a thread of any run may have done it): each counts a crash,
    the sync run with them, and none is named."""
    worker, how = crashes.worker, crashes.how
    if stepping is not None:
        culprit = f"Task {stepping.task_name!r} took down its worker process {worker} ({how})"
        since = executing.since if executing and executing.run_id == stepping.run_id else None
        crashes.held(stepping.run_id, since, f"{culprit} while running this run.", blame=True)
        beside = (
            f"Worker process {worker} died ({how}) while running this run: run "
            f"{stepping.run_id} of task {stepping.task_name!r} took it down."
        )
        if executing is not None and executing.run_id != stepping.run_id:
            crashes.held(executing.run_id, executing.since, beside, blame=False)
        crashes.others(beside, blame=False)
        return
    unknown = (
        f"Worker process {worker} died ({how}) while running this run and other runs (async "
        f"runs in flight): which one took it down is not known."
    )
    besides = [executing.run_id] if executing is not None else []
    in_flight = crashes.others(unknown, blame=True, besides=besides)
    if executing is None:
        return
    if not in_flight:
        unknown = (
            f"Task {executing.task_name!r} took down its worker process {worker} ({how}) "
            f"while running this run."
        )
    crashes.held(executing.run_id, executing.since, unknown, blame=True)


class _Crashes:
    """Crashes the runs a dead child held (CRASHED, retried as their retries allow), counting
    them and sending ``run_crashed`` for each."""

    def __init__(self, db: QueueConnection, worker: str, rescuer: str, how: str) -> None:
        self.db, self.worker, self.rescuer, self.how = db, worker, rescuer, how
        self.settled: list[uuid.UUID] = []  # runs it held that were running (crashed here)
        self.crashed = self.retried = 0

    def held(self, run_id: uuid.UUID, since: datetime | None, message: str, *, blame: bool) -> None:
        """The run the journal names (PENDING or RUNNING; ``since``: when it started)."""
        params = {
            "id": run_id,
            "worker": self.worker,
            "started": since,
            "message": message,
            "blame": blame,
            "rescuer": self.rescuer,
            "max_crashes": task_settings().MAX_CRASHES,
        }
        self.settled.append(run_id)
        for row in self._crash(sql.CRASH_HELD, params):
            logger.warning(
                "Run %s: %s%s",
                row[0],
                message,
                " Retrying it." if row[1] else "",
                extra=for_run(row[0]),
            )

    def others(self, message: str, *, blame: bool, besides: list[uuid.UUID] | None = None) -> int:
        """The RUNNING runs it held besides those settled and ``besides`` (its async runs in
        flight)."""
        params = {
            "worker": self.worker,
            "settled": [*self.settled, *(besides or [])],
            "message": message,
            "blame": blame,
            "rescuer": self.rescuer,
            "max_crashes": task_settings().MAX_CRASHES,
        }
        rows = self._crash(sql.CRASH_HELD_WITH, params)
        self.settled.extend(row[0] for row in rows)
        if rows:
            logger.warning(
                "%d runs of worker process %s crashed with it (%d retried): %s",
                len(rows),
                self.worker,
                sum(1 for row in rows if row[1]),
                message,
            )
        return len(rows)

    def _crash(self, query: str, params: dict[str, Any]) -> list[Any]:
        rows = self.db.execute(query, params, give_up_on_stop=False)
        for row in rows:
            self.crashed += 1
            self.retried += bool(row[1])
            send(run_crashed, None, run_id=row[0], retried=bool(row[1]))
        return rows


def hand_back(
    db: QueueConnection,
    worker: str,
    ids: list[uuid.UUID] | None,
    message: str,
    *,
    blame: bool,
) -> int:
    """Put ``worker``'s claimed runs that did not start (``ids``, or all when ``None``) back
    into the topic, their attempt given back. With ``blame`` each hand-back counts as a crash
    of the run (see ``sql.HAND_BACK``). Returns how many runs ended CRASHED for it."""
    params = {
        "worker": worker,
        "ids": ids,
        "message": message,
        "blame": blame,
        "max_crashes": task_settings().MAX_CRASHES,
    }
    discarded = 0
    for run_id, state_type, _ in db.execute(sql.HAND_BACK, params, give_up_on_stop=False):
        if state_type == StateType.CRASHED:
            discarded += 1
            send(run_crashed, None, run_id=run_id, retried=False)
            logger.error(
                "Run %s: handed back too often (MAX_CRASHES): it ends CRASHED",
                run_id,
                extra=for_run(run_id),
            )
    return discarded


def _write_outcomes(db: QueueConnection, journal: ProcessJournal, worker: str) -> int:
    """Write the outcomes the child had not written (a no-op for those it had)."""
    if not journal.size:
        return 0
    try:
        entries = json.loads(journal.entries())
    except ValueError:  # the child died while changing its journal: too rare to piece together
        logger.error("Worker process %s left an unreadable journal: its runs go back", worker)
        return 0
    written = _flush(db, worker, entries)
    if written is None:  # one of them is refused: write the others
        written = sum(_flush(db, worker, [entry]) or 0 for entry in entries)
    return written


def _flush(db: QueueConnection, worker: str, entries: list[object]) -> int | None:
    try:
        rows = db.execute(
            sql.FLUSH, {"worker": worker, "done": json.dumps(entries)}, give_up_on_stop=False
        )
    except Exception as exc:
        logger.error("Outcomes left by worker process %s were refused: %s", worker, exc)
        return None
    return len(rows)
