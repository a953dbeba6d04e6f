"""Enqueuing due ticks: any live worker does it, the database keeps it to one run per tick.

Each worker's control thread looks for due schedules every ``SCHEDULE_INTERVAL`` seconds (one
indexed query; nothing else when none is due). For a due schedule it computes, from the
definition and the database's clock, the latest tick that is due and the next one after now,
then calls ``django_tasks_tick()`` (migration 0015): a compare-and-set of ``next_tick`` and
the insert of the run, in one statement and one transaction. Two workers that see the same
due tick both try; the second finds ``next_tick`` moved and writes nothing. A worker killed
before its commit wrote nothing, and the tick is still due for the others. The run also
carries ``(schedule, tick)`` under a unique constraint, so not even an edited ``next_tick``
can give a tick a second run.

Missed ticks (no worker ran for a while): the due ticks between ``next_tick`` and now are
never all run. ``missed="once"`` (the default) runs once, for the latest of them;
``missed="skip"`` runs nothing unless that latest tick is within ``SCHEDULE_MISSED_AFTER``
seconds of now (it is then simply on time).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from .. import json_input
from ..conf import task_settings
from ..registry import registry
from ..storable import storable_message
from ..tasks import check_queue
from ..topic import RunDocument
from .timing import Timing, timing_of

if TYPE_CHECKING:
    from ..worker.connection import QueueConnection

__all__ = ["Ticks", "enqueue_due_ticks"]

logger = logging.getLogger("django_tasks.schedules")

#: The arguments come as text, read by each schedule's own tick (json_input): a row that holds
#: JSON Python cannot read (nested a thousand levels deep, written in SQL) fails its own tick,
#: not the look at every due schedule.
DUE = """
SELECT id, name, task_name, cron, interval_seconds, timezone, args::text, kwargs::text, queue,
       missed, next_tick, clock_timestamp()
FROM django_tasks_schedule
WHERE enabled AND next_tick <= clock_timestamp()
ORDER BY next_tick
LIMIT %(limit)s
"""

TICK = """
SELECT django_tasks_tick(
    %(schedule)s, %(expected)s, %(following)s, %(run)s::jsonb, %(parameters)s::bytea,
    %(error)s
)
"""


@dataclass
class Ticks:
    """What one look at the due schedules did."""

    enqueued: int = 0
    skipped: int = 0  # missed ticks that missed="skip" let go
    taken: int = 0  # ticks another worker enqueued first
    failed: int = 0  # a schedule whose run could not be made (the error is on the schedule)


@dataclass(frozen=True)
class _Due:
    id: int
    name: str
    task_name: str
    cron: str
    interval_seconds: float | None
    timezone: str
    args: str  # JSON text
    kwargs: str
    queue: str
    missed: str
    next_tick: datetime
    now: datetime

    def timing(self) -> Timing:
        return timing_of(self.cron, self.interval_seconds, self.timezone)


def enqueue_due_ticks(db: QueueConnection, *, limit: int = 100) -> Ticks:
    """Enqueue the run of every due tick (at most ``limit`` schedules per call)."""
    ticks = Ticks()
    for row in db.execute(DUE, {"limit": limit}, give_up_on_stop=True):
        _tick(db, _Due(*row), ticks)
    return ticks


def _tick(db: QueueConnection, due: _Due, ticks: Ticks) -> None:
    params: dict[str, Any] = {
        "schedule": due.id,
        "expected": due.next_tick,
        "run": None,
        "parameters": None,
        "error": None,
    }
    try:
        timing = due.timing()
    except ValueError as exc:  # a row with a bad definition (SQL, older code): stop ticking it
        logger.warning("Schedule %s: bad definition, not ticking it: %s", due.name, exc)
        params.update(following=None, error=storable_message(f"Bad schedule, not ticking: {exc}"))
        _call(db, params, due, ticks)
        return
    params["following"] = timing.next_after(due.now)
    tick = timing.latest_at_or_before(due.now)
    if tick is None or tick < due.next_tick:  # next_tick was not one of its ticks
        tick = due.next_tick
    late = due.now - tick > timedelta(seconds=task_settings().SCHEDULE_MISSED_AFTER)
    if due.missed == "skip" and late:
        logger.info("Schedule %s: skipping the ticks missed since %s", due.name, due.next_tick)
        params["error"] = ""
        _call(db, params, due, ticks, skipped=True)
        return
    try:
        run = _run_of(due, tick)
    except Exception as exc:
        logger.warning("Schedule %s: cannot enqueue its run: %s", due.name, exc)
        params["error"] = storable_message(f"Tick {tick.isoformat()} not run: {exc}")
    else:
        extra = {"schedule_id": due.id, "tick": tick.isoformat()}
        params.update(run=run.document(extra), parameters=run.payload)
    _call(db, params, due, ticks)


def _run_of(due: _Due, tick: datetime) -> RunDocument:
    task = registry.by_name(due.task_name)
    args, kwargs = json_input.loads(due.args), json_input.loads(due.kwargs)
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise TypeError("args must be a JSON list and kwargs a JSON object.")
    queue = check_queue(due.queue) if due.queue else task.queue
    return RunDocument.build(
        task, tuple(args), dict(kwargs), queue, task.priority, scheduled_time=tick
    )


def _call(
    db: QueueConnection, params: dict[str, Any], due: _Due, ticks: Ticks, skipped: bool = False
) -> None:
    rows = db.execute(TICK, params, give_up_on_stop=True)
    run_id = rows[0][0] if rows else None
    if run_id is not None:
        ticks.enqueued += 1
        logger.debug("Schedule %s: enqueued run %s", due.name, run_id)
    elif params["run"] is not None:
        ticks.taken += 1
    elif skipped:
        ticks.skipped += 1
    else:
        ticks.failed += 1
