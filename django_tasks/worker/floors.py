"""Claims that start where the last one ended while a long transaction holds its snapshot.

A claim reads the ready index (``django_tasks_ready_idx``: queue, priority DESC,
scheduled_time) from its start and stops after ``limit`` ready runs. Each claimed run leaves
an entry there pointing at a row version that died; VACUUM removes it, or the first scan that
finds the version dead to every transaction marks it as such, so normally nobody walks it
twice. While one transaction holds an old snapshot - a report, a ``pg_dump``, a session idle
in transaction - neither may happen: every claim walks all the entries of the runs claimed
since that snapshot began, a heap visit each (about 80 ns: 100,000 of them add 8 ms to every
claim; ``benchmarks/held_snapshot.py`` measures the drain).

So each claiming thread remembers, per queue, where its last claim ended in that index - its
*floor*, ``(priority, scheduled_time)``: the last run it claimed, or, after a claim that found
nothing ready, the default priority at the time that claim began - and its next claim starts
there (:func:`..sql.claim` with ``floored=True``): higher priorities first, then the floor's
priority from its time on, then lower priorities. New runs are scheduled now or later, so they
lie past the floor; what can lie behind it is a run handed back, one released by its upstream
run (it keeps its scheduled time) or one whose enqueue committed late. A plain claim, from the
index's start, finds those - as often as :data:`PLAIN_SHARE` of the thread's time allows:
after a plain claim that took 2 ms (the usual cost) the next may come 40 ms later, after one
that took 20 ms (a quarter of a million dead entries) 400 ms later. A floored claim that finds
nothing owes one: the thread claims plainly as soon as that is due, waking up for it if it
sleeps. So a run behind the floor waits a few tens of milliseconds at most normally, longer
only while a snapshot is held, when that is the price of a queue that keeps its speed. The
async lane, whose claims skip the sync runs (and the slot's the async ones), gains most: its
floor after an empty claim spares it the walk over every run of the other kind as well.
Nothing to set up, no privileges to see other sessions: the claims' own cost tells. Workers in
burst mode (``run_ready()``) always claim plainly: they stop when nothing is ready.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

__all__ = ["DEFAULT_PRIORITY", "IN_FLIGHT_MARGIN", "PLAIN_SHARE", "ClaimFloors", "Floor"]

#: The share of a claiming thread's time that plain claims may take: after a plain claim that
#: took ``t`` seconds, claims start from floors for ``t / PLAIN_SHARE`` seconds.
PLAIN_SHARE = 0.05

#: The priority of runs enqueued without one: the floor's after a claim that found nothing.
DEFAULT_PRIORITY = 0

#: How far before its start a plain claim that found nothing puts the floor (seconds). A run's
#: scheduled time is stamped when its INSERT runs, before its commit makes it visible: an
#: enqueue committing while the claim ran is behind the claim's start, and its NOTIFY's claim,
#: from a floor at that start, would miss it until the next plain claim (tens of milliseconds:
#: the p99 of an idle worker's latency). The margin walks the entries of the runs claimed in
#: those milliseconds, a few microseconds.
IN_FLIGHT_MARGIN = timedelta(milliseconds=50)

#: The columns of a claimed row (sql.CLAIM's final SELECT) that place it in the ready index.
_KIND, _PRIORITY, _SCHEDULED_TIME, _RATE_SLOT = 0, 11, 12, 16


@dataclass(frozen=True)
class Floor:
    """The ready index position of the last run a thread claimed from a queue."""

    priority: int
    scheduled_time: datetime


@dataclass
class ClaimFloors:
    """One claiming thread's floors, one per queue, and when it may next claim plainly."""

    floors: dict[str, Floor] = field(default_factory=dict)
    next_plain: float = 0.0
    #: Queues where a floored claim found nothing: a plain claim is owed as soon as it is due.
    owed: set[str] = field(default_factory=set)

    def start(self, queue: str, plain: bool) -> Floor | None:
        """Where the next claim from ``queue`` starts: its floor, or None - a plain claim -
        when there is no floor yet or ``plain`` (:meth:`plain_due`, read once for all the
        queues a worker asks in turn: each gets its plain claim)."""
        return None if plain else self.floors.get(queue)

    def plain_due(self) -> bool:
        """Whether plain claims are due (their share of the thread's time allows one)."""
        return time.monotonic() >= self.next_plain

    def claimed(
        self,
        queue: str,
        rows: Sequence[Sequence[Any]],
        floor: Floor | None,
        took: float,
        began: datetime,
    ) -> None:
        """After a claim from ``queue`` that started at ``floor`` (None: plain) at ``began``
        (the database's clock) and ``took`` seconds: move the floor to the last run the claim
        returned (rows in index order) or, when a plain claim found nothing, to ``began``;
        note a plain claim owed when a floored one found nothing."""
        if floor is None:
            self.next_plain = time.monotonic() + took / PLAIN_SHARE
            self.owed.discard(queue)
        # Runs of a rate's reserved start come first, out of index order: they do not count.
        placed = [row for row in rows if row[_KIND] == "claimed" and not row[_RATE_SLOT]]
        if placed:
            last = placed[-1]
            self.floors[queue] = Floor(last[_PRIORITY], last[_SCHEDULED_TIME])
        elif floor is None:
            known = self.floors.get(queue)
            priority = DEFAULT_PRIORITY if known is None else known.priority
            self.floors[queue] = Floor(priority, began - IN_FLIGHT_MARGIN)
        elif not any(row[_KIND] == "claimed" for row in rows):
            self.owed.add(queue)

    def owed_in(self) -> float | None:
        """Seconds until an owed plain claim is due (0: now), or None when none is owed."""
        if not self.owed:
            return None
        return max(0.0, self.next_plain - time.monotonic())
