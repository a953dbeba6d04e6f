"""Claims that start where the last one ended while a long transaction holds its snapshot.

A claim reads the ready index (``django_tasks_ready_idx``: queue, priority DESC,
scheduled_time) from its start and stops after ``limit`` ready runs. Each claimed run leaves
an entry there pointing at a row version that died; VACUUM removes it, or the first scan that
finds the version dead to every transaction marks it as such, so normally nobody walks it
twice. While one transaction holds an old snapshot - a report, a ``pg_dump``, a session idle
in transaction - neither may happen: every claim walks all the entries of the runs claimed
since that snapshot began, a heap visit each (about 80 ns: 100,000 of them add 8 ms to every
claim; ``benchmarks/held_snapshot.py`` measures the drain).

So each claiming thread remembers, per queue, the index position of the last run it claimed -
its *floor*, ``(priority, scheduled_time)`` - and its next claim starts there
(:func:`..sql.claim` with ``floored=True``): higher priorities first, then the floor's
priority from its time on, then lower priorities. New runs are scheduled now or later, so they
lie past the floor; what can lie behind it is a run handed back, one released by its upstream
run (it keeps its scheduled time) or one whose enqueue committed late. A plain claim, from the
index's start, finds those - as often as :data:`PLAIN_SHARE` of the thread's time allows:
a plain claim that took 2 ms (the usual cost) may be followed by another 40 ms later, one that
took 20 ms (250,000 dead entries) only 400 ms later. So such a run waits a few tens of
milliseconds at most normally, longer only while a snapshot is held, when it is the price of
a queue that keeps its speed. Nothing to set up, nor privileges to see other sessions: the
claims' own cost tells. Workers in burst mode (``run_ready()``) always claim plainly: they stop
when nothing is ready.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["PLAIN_SHARE", "ClaimFloors", "Floor"]

#: The share of a claiming thread's time that plain claims may take: after a plain claim that
#: took ``t`` seconds, claims start from floors for ``t / PLAIN_SHARE`` seconds.
PLAIN_SHARE = 0.05

#: The columns of a claimed row (sql.CLAIM's final SELECT) that place it in the ready index.
_KIND, _PRIORITY, _SCHEDULED_TIME, _RATE_SLOT = 0, 11, 12, 16


@dataclass(frozen=True)
class Floor:
    """The ready index position of the last run a thread claimed from a queue."""

    priority: int
    scheduled_time: datetime


@dataclass
class ClaimFloors:
    """One claiming thread's floors, one per queue, and when it must next claim plainly."""

    floors: dict[str, Floor] = field(default_factory=dict)
    next_plain: float = 0.0

    def starts(self, queue: str) -> list[Floor | None]:
        """Where the next claims from ``queue`` start, in turn until one finds runs: its floor,
        then the index's start (None); or only the index's start when there is no floor yet
        or a plain claim is due. A floored claim that finds nothing is followed by a plain one
        at once, so a run released behind the floor does not wait for the next poll."""
        floor = self.floors.get(queue)
        if floor is None or time.monotonic() >= self.next_plain:
            return [None]
        return [floor, None]

    def claimed(
        self, queue: str, rows: Sequence[Sequence[Any]], floor: Floor | None, took: float
    ) -> None:
        """Move ``queue``'s floor to the last run the claim returned (rows in index order);
        after a plain claim, set when the next one may be, from what this one ``took``."""
        if floor is None:
            self.next_plain = time.monotonic() + took / PLAIN_SHARE
        # Runs of a rate's reserved start come first, out of index order: they do not count.
        placed = [row for row in rows if row[_KIND] == "claimed" and not row[_RATE_SLOT]]
        if placed:
            last = placed[-1]
            self.floors[queue] = Floor(last[_PRIORITY], last[_SCHEDULED_TIME])
