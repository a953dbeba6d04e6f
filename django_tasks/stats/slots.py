"""Window statistics from summaries of closed time slots.

The dashboard's long windows, the metrics endpoint and the API's ``stats/`` aggregated every
run of their window: with ten million runs of history (``benchmarks/history.py``) 0.7 s for
24 hours and 4 s for 7 days. A run's task, final state and duration never change once it has
finished, so a slot of ``SLOT_SECONDS`` whose runs have all finished is summarised once
(:class:`~.models.SlotStats`) and every later window reads the summary. Read from the runs
each time: the window's first, partial slot, the slots not closed yet, and any slot that still
holds a run waiting or running. "Closed" means ``GRACE`` after its end *and* before the oldest
open transaction began: a run enqueued in a transaction that has not committed yet is not
visible, and its id (its slot) is older than its commit.

Durations are kept as histograms of ``PER_DOUBLING`` buckets per doubling from 0.1 ms: a
percentile read from one is the geometric middle of its bucket, within 4.5% of the exact
value. Summaries older than ``KEEP`` are deleted; a run purged after its slot was summarised
still counts in it (:func:`~django_tasks.retention.purge` summarises first).
"""

from __future__ import annotations

import math
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.db import connections
from django.utils import timezone

from ..conf import task_settings
from ..horizon import oldest_snapshot
from ..ids import uuid7_floor
from ..states import FINAL_TYPES
from .models import SlotStats

__all__ = [
    "SLOT_SECONDS",
    "Cell",
    "Summary",
    "percentile",
    "summarise",
    "window_cells",
]

SLOT_SECONDS = 1800
GRACE = timedelta(minutes=5)  # ids come from the clocks of the hosts that enqueue
KEEP = timedelta(days=8)  # the dashboard's longest window and a day
BASE_SECONDS = 1e-4
PER_DOUBLING = 8
LAST_BUCKET = 255  # 2**32 x 0.1 ms: about five days

#: (slot index, task key, state type): a slot index times SLOT_SECONDS is a Unix time.
Cell = tuple[int, str, str]
_FINAL = frozenset(state.value for state in FINAL_TYPES)

#: Runs by the slot of their id (a version 7 id starts with its millisecond), task, state and
#: duration bucket (NULL: not both started and finished).
_CELLS = f"""
SELECT ('x' || left(replace(id::text, '-', ''), 12))::bit(48)::bigint / 1000 / {SLOT_SECONDS},
       task_key, state_type,
       CASE WHEN started IS NOT NULL AND finished IS NOT NULL THEN
           least({LAST_BUCKET}, floor({PER_DOUBLING} / ln(2.0::float8) * ln(greatest(
               extract(epoch FROM finished - started)::float8, {BASE_SECONDS}) / {BASE_SECONDS}
           )))::int
       END,
       count(*)
FROM django_tasks_taskrun
WHERE id >= %(lo)s{{upper}}
GROUP BY 1, 2, 3, 4
"""


@dataclass
class Summary:
    """The runs of a cell and their durations (bucket -> runs)."""

    runs: int = 0
    durations: Counter[int] = field(default_factory=Counter)


def bucket_seconds(bucket: int) -> float:
    """The geometric middle of a duration bucket."""
    return BASE_SECONDS * 2 ** ((bucket + 0.5) / PER_DOUBLING)


def percentile(durations: Counter[int], fraction: float) -> float | None:
    """The duration below which ``fraction`` of the runs fall (None: no duration)."""
    total = sum(durations.values())
    if not total:
        return None
    rank, seen = fraction * (total - 1), 0
    for bucket in sorted(durations):
        seen += durations[bucket]
        if seen > rank:
            return bucket_seconds(bucket)
    raise AssertionError("unreachable: the ranks are below the total")  # pragma: no cover


def window_cells(since: datetime, now: datetime | None = None) -> dict[Cell, Summary]:
    """Every run created since ``since``, by cell: summaries where they exist, the runs
    table for the rest; the closed slots read from the runs table are summarised on the way."""
    now = now or timezone.now()
    closable = _closable(since, now)
    stored = _load(closable)
    cells: dict[Cell, Summary] = defaultdict(Summary)
    for slot, rows in stored.items():
        for task_key, state, summary in rows:
            _add(cells[(slot, task_key, state)], summary)
    read = _read_runs(_gaps(since, closable, stored))
    for cell, summary in read.items():
        _add(cells[cell], summary)
    summarise(read, [slot for slot in closable if slot not in stored], now)
    return dict(cells)


def summarise(read: dict[Cell, Summary], slots: list[int], now: datetime) -> None:
    """Store the summaries of ``slots`` (read whole from the runs table) whose runs have all
    finished; a slot without runs gets an empty row."""
    by_slot: dict[int, list[tuple[Cell, Summary]]] = {slot: [] for slot in slots}
    for cell, summary in read.items():
        if cell[0] in by_slot:
            by_slot[cell[0]].append((cell, summary))
    rows = []
    for slot, items in by_slot.items():
        if any(state not in _FINAL for (_, _, state), _ in items):
            continue  # a run still waits or runs: read again next time
        start = datetime.fromtimestamp(slot * SLOT_SECONDS, tz=UTC)
        rows += [
            SlotStats(
                slot=start,
                task_key=task_key,
                state_type=state,
                runs=summary.runs,
                durations={str(b): n for b, n in summary.durations.items()},
            )
            for (_, task_key, state), summary in items
        ] or [SlotStats(slot=start, task_key="", state_type="", runs=0)]
    if rows:
        manager = SlotStats.objects.using(task_settings().DATABASE_ALIAS)
        manager.bulk_create(rows, ignore_conflicts=True)  # another reader stored it first
        manager.filter(slot__lt=now - KEEP).delete()


def _closable(since: datetime, now: datetime) -> list[int]:
    """The slots wholly in the window, closed, and recent enough to be kept."""
    closed = now - GRACE
    holder = oldest_snapshot()
    if holder is not None:
        closed -= timedelta(seconds=holder.seconds)
    first = math.ceil(max(since, now - KEEP).timestamp() / SLOT_SECONDS)
    end = math.floor(closed.timestamp() / SLOT_SECONDS)  # the first slot not closed
    return list(range(first, end))


def _load(slots: list[int]) -> dict[int, list[tuple[str, str, Summary]]]:
    if not slots:
        return {}
    start = datetime.fromtimestamp(slots[0] * SLOT_SECONDS, tz=UTC)
    stop = datetime.fromtimestamp((slots[-1] + 1) * SLOT_SECONDS, tz=UTC)
    stored: dict[int, list[tuple[str, str, Summary]]] = defaultdict(list)
    manager = SlotStats.objects.using(task_settings().DATABASE_ALIAS)
    rows = manager.filter(slot__gte=start, slot__lt=stop).values_list(
        "slot", "task_key", "state_type", "runs", "durations"
    )
    for slot_start, task_key, state, runs, durations in rows:
        slot = int(slot_start.timestamp()) // SLOT_SECONDS
        if task_key:  # not the empty slot's row
            counts = Counter({int(b): n for b, n in durations.items()})
            stored[slot].append((task_key, state, Summary(runs, counts)))
        else:
            stored.setdefault(slot, [])
    return stored


def _gaps(
    since: datetime, closable: list[int], stored: dict[int, list[tuple[str, str, Summary]]]
) -> list[tuple[datetime, datetime | None]]:
    """The stretches of the window no summary covers (the last one open-ended)."""
    gaps: list[tuple[datetime, datetime | None]] = []
    position = since
    for slot in closable:
        if slot in stored:
            start = datetime.fromtimestamp(slot * SLOT_SECONDS, tz=UTC)
            if position < start:
                gaps.append((position, start))
            position = start + timedelta(seconds=SLOT_SECONDS)
    gaps.append((position, None))
    return gaps


def _read_runs(gaps: list[tuple[datetime, datetime | None]]) -> dict[Cell, Summary]:
    """The runs of each stretch, by cell, through the primary key (time-ordered ids)."""
    cells: dict[Cell, Summary] = defaultdict(Summary)
    with connections[task_settings().DATABASE_ALIAS].cursor() as cursor:
        for start, stop in gaps:
            params: dict[str, uuid.UUID] = {"lo": uuid7_floor(start)}
            if stop is not None:
                params["hi"] = uuid7_floor(stop)
            upper = "" if stop is None else " AND id < %(hi)s"
            cursor.execute(_CELLS.format(upper=upper), params)
            for slot, task_key, state, bucket, count in cursor.fetchall():
                summary = cells[(slot, task_key, state)]
                summary.runs += count
                if bucket is not None:
                    summary.durations[bucket] += count
    return cells


def _add(into: Summary, summary: Summary) -> None:
    into.runs += summary.runs
    into.durations.update(summary.durations)
