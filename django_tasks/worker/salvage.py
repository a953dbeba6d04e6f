"""What a supervisor does when one of its worker processes dies: nothing the child knew is
lost, and the run that took it down is known.

From the child's journal (see :mod:`.journal`), before the child is marked stopped (so that
no other worker's rescue guesses first):

1. the outcomes the child computed and had not written yet are written, as it would have;
2. the run it was executing ends CRASHED with a message naming the task and the exit code or
   signal - retried if its retries allow and it has not crashed ``MAX_CRASHES`` times in a
   row, so a run that keeps killing processes is discarded instead of looping;
3. the runs it had claimed but not started are handed back, their attempt given back: a run
   is never executed again, nor charged an attempt, because another run of its batch died.
"""

from __future__ import annotations

import json
import logging
import signal
import uuid
from dataclasses import dataclass

from .. import sql
from ..conf import task_settings
from ..logs import for_run
from ..signals import run_crashed, send
from ..states import StateType
from .connection import QueueConnection
from .journal import ProcessJournal

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
    shutdown timeout), so the run it was executing is not to blame for its death."""
    written = _write_outcomes(db, journal, worker)
    crashed = retried = 0
    executing = journal.executing
    if executing is not None:
        how = how_it_died(exitcode)
        if killed_because is None:
            message = (
                f"Task {executing.task_name!r} took down its worker process {worker} ({how}) "
                f"while running this run."
            )
        else:
            message = (
                f"Worker process {worker} was killed by its supervisor ({killed_because}) "
                f"while running this run."
            )
        params = {
            "id": executing.run_id,
            "worker": worker,
            "started": executing.since,
            "message": message,
            "blame": killed_because is None,
            "rescuer": rescuer,
            "max_crashes": task_settings().MAX_CRASHES,
        }
        for row in db.execute(sql.CRASH_HELD, params, give_up_on_stop=False):
            crashed += 1
            retried += bool(row[1])
            send(run_crashed, None, run_id=row[0], retried=bool(row[1]))
            logger.warning(
                "Run %s: %s%s",
                row[0],
                message,
                " Retrying it." if row[1] else "",
                extra=for_run(row[0]),
            )
    # The runs it had not started go back. When no run of its own is known to have taken the
    # process down (it died between runs, or while preparing one before the journal said
    # which), the death counts as a crash of each: a run that kills every process that
    # claims it ends after MAX_CRASHES hand-backs instead of going round for ever.
    message = f"Handed back: worker process {worker} died before starting it."
    blame = executing is None and killed_because is None
    crashed += hand_back(db, worker, None, message, blame=blame)
    return Salvaged(written, crashed, retried)


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
