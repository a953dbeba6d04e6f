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

import json
import math
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.db import connections, transaction
from django.utils import timezone

from ..conf import task_settings
from ..horizon import oldest_snapshot
from ..ids import uuid7_floor
from ..states import FINAL_TYPES
from .models import SlotStats

__all__ = [
    "LATE_RUN_LOCK",
    "SLOT_SECONDS",
    "Cell",
    "Summary",
    "Window",
    "percentile",
    "summarise",
    "task_slots",
    "window_cells",
]

SLOT_SECONDS = 1800
GRACE = timedelta(minutes=5)  # ids come from the clocks of the hosts that enqueue
KEEP = timedelta(days=8)  # the dashboard's longest window and a day
BASE_SECONDS = 1e-4
PER_DOUBLING = 8
LAST_BUCKET = 40 * PER_DOUBLING - 1  # 2**40 x 0.1 ms: three years

#: The advisory lock between the summaries and the trigger of migration 0027, which deletes
#: the summary of a slot when a run's row arrives more than GRACE after its id was made (an
#: inline run is written when it ends; a recorder's batch retried after an outage).
LATE_RUN_LOCK = 0x646A_745F_736C_6F74  # "djt_slot"

#: (slot index, task key, state type): a slot index times SLOT_SECONDS is a Unix time.
Cell = tuple[int, str, str]
_FINAL = frozenset(state.value for state in FINAL_TYPES)

#: The runs of one slot's ids (a version 7 id starts with its millisecond) by task, state and
#: duration bucket (NULL: not both started and finished).
_RUNS = f"""
SELECT task_key, state_type,
       CASE WHEN started IS NOT NULL AND finished IS NOT NULL THEN
           least({LAST_BUCKET}, floor({PER_DOUBLING} / ln(2.0::float8) * ln(greatest(
               extract(epoch FROM finished - started)::float8, {BASE_SECONDS}) / {BASE_SECONDS}
           )))::int
       END,
       count(*)
FROM django_tasks_taskrun
WHERE id >= %(lo)s{{upper}}
GROUP BY 1, 2, 3
"""

#: The stored summaries of a stretch of slots: runs by cell (an empty slot's row included)...
_STORED_RUNS = """
SELECT (extract(epoch FROM slot)::bigint / %(size)s)::bigint, task_key, state_type, runs
FROM django_tasks_slotstats WHERE slot >= %(start)s AND slot < %(stop)s
"""
#: ... and their durations by task, merged in the database (a week: 336 slots x tasks x states).
_STORED_DURATIONS = """
SELECT task_key, bucket::int, sum(n::bigint)::bigint
FROM django_tasks_slotstats, jsonb_each_text(durations) AS d(bucket, n)
WHERE slot >= %(start)s AND slot < %(stop)s AND task_key <> ''
GROUP BY 1, 2
"""


@dataclass
class Summary:
    """The runs of a cell and their durations (bucket -> runs)."""

    runs: int = 0
    durations: Counter[int] = field(default_factory=Counter)


@dataclass
class Window:
    """The runs of a window: by cell, and the durations of each task."""

    runs: Counter[Cell] = field(default_factory=Counter)
    durations: defaultdict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))

    def add(self, cell: Cell, summary: Summary) -> None:
        self.runs[cell] += summary.runs
        self.durations[cell[1]].update(summary.durations)


def bucket_seconds(bucket: int) -> float:
    """The geometric middle of a duration bucket."""
    return BASE_SECONDS * 2 ** ((bucket + 0.5) / PER_DOUBLING)


def percentile(durations: Counter[int], fraction: float) -> float | None:
    """The duration below which ``fraction`` of the runs fall, interpolated between the two
    runs around that rank as ``percentile_cont`` does (None: no duration)."""
    total = sum(durations.values())
    if not total:
        return None
    rank = fraction * (total - 1)
    low, high = _at(durations, math.floor(rank)), _at(durations, math.ceil(rank))
    return low + (high - low) * (rank - math.floor(rank))


def _at(durations: Counter[int], index: int) -> float:
    """The duration of the run at ``index`` in duration order (its bucket's middle)."""
    seen = 0
    for bucket in sorted(durations):
        seen += durations[bucket]
        if seen > index:
            return bucket_seconds(bucket)
    raise AssertionError("unreachable: the index is below the total")  # pragma: no cover


def window_cells(since: datetime, now: datetime | None = None) -> Window:
    """Every run created since ``since``: summaries where they exist, the runs table for the
    rest; the closed slots read from the runs table are summarised on the way."""
    now = now or timezone.now()
    closable = _closable(since, now)
    window, stored = _load(closable)
    missing = [slot for slot in closable if slot not in stored]
    gaps = _gaps(since, closable, stored)
    if missing:
        alias = task_settings().DATABASE_ALIAS
        with transaction.atomic(using=alias), connections[alias].cursor() as cursor:
            # Held from before the read to the commit of the summaries: a late run's insert
            # (see LATE_RUN_LOCK) waits for it, then deletes what it made stale. Not waited
            # for: whoever holds it, the runs are read and nothing is stored this time.
            cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [LATE_RUN_LOCK])
            locked = cursor.fetchone()[0]
            read = _read_runs(gaps, now)
            if locked:
                summarise(read, missing, now)
    else:
        read = _read_runs(gaps, now)
    for cell, summary in read.items():
        window.add(cell, summary)
    return window


#: One task's stored summaries of a stretch of slots, slot by slot (the task page's series).
_STORED_TASK = """
SELECT (extract(epoch FROM slot)::bigint / %(size)s)::bigint, state_type, runs, durations::text
FROM django_tasks_slotstats
WHERE slot >= %(start)s AND slot < %(stop)s AND task_key = ANY(%(keys)s)
"""
_STORED_SLOTS = """
SELECT DISTINCT (extract(epoch FROM slot)::bigint / %(size)s)::bigint
FROM django_tasks_slotstats WHERE slot >= %(start)s AND slot < %(stop)s
"""


def task_slots(
    keys: list[str], since: datetime, now: datetime | None = None
) -> dict[int, dict[str, Summary]]:
    """The runs of the tasks ``keys`` since ``since``, slot by slot and state by state, with
    their durations per slot: summaries where they exist, the runs table for the rest (a
    window no summary covers yet is summarised first, as :func:`window_cells` does)."""
    now = now or timezone.now()
    closable = _closable(since, now)
    stored = _stored_slots(closable)
    if any(slot not in stored for slot in closable):
        window_cells(since, now)  # summarise the closed slots (once), then read them
        stored = _stored_slots(closable)
    series: dict[int, dict[str, Summary]] = defaultdict(lambda: defaultdict(Summary))
    if stored:
        with connections[task_settings().DATABASE_ALIAS].cursor() as cursor:
            cursor.execute(_STORED_TASK, {**_stretch(closable), "keys": keys})
            for slot, state, runs, durations in cursor.fetchall():
                summary = series[slot][state]
                summary.runs += runs
                summary.durations.update({int(b): n for b, n in json.loads(durations).items()})
    wanted = set(keys)
    for (slot, task_key, state), summary in _read_runs(_gaps(since, closable, stored), now).items():
        if task_key in wanted:
            series[slot][state].runs += summary.runs
            series[slot][state].durations.update(summary.durations)
    return series


def _stretch(slots: list[int]) -> dict[str, int | datetime]:
    return {
        "size": SLOT_SECONDS,
        "start": datetime.fromtimestamp(slots[0] * SLOT_SECONDS, tz=UTC),
        "stop": datetime.fromtimestamp((slots[-1] + 1) * SLOT_SECONDS, tz=UTC),
    }


def _stored_slots(slots: list[int]) -> set[int]:
    if not slots:
        return set()
    with connections[task_settings().DATABASE_ALIAS].cursor() as cursor:
        cursor.execute(_STORED_SLOTS, _stretch(slots))
        return {row[0] for row in cursor.fetchall()}


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
    first = max(math.ceil(since.timestamp() / SLOT_SECONDS), _first_kept(now))
    end = math.floor(closed.timestamp() / SLOT_SECONDS)  # the first slot not closed
    return list(range(first, end))


def _first_kept(now: datetime) -> int:
    return math.ceil((now - KEEP).timestamp() / SLOT_SECONDS)


def _load(slots: list[int]) -> tuple[Window, set[int]]:
    """The summaries of ``slots`` that are stored, and which slots they are."""
    window, stored = Window(), set[int]()
    if not slots:
        return window, stored
    params = _stretch(slots)
    with connections[task_settings().DATABASE_ALIAS].cursor() as cursor:
        cursor.execute(_STORED_RUNS, params)
        for slot, task_key, state, runs in cursor.fetchall():
            stored.add(slot)
            if task_key:  # not an empty slot's row
                window.runs[(slot, task_key, state)] += runs
        cursor.execute(_STORED_DURATIONS, params)
        for task_key, bucket, runs in cursor.fetchall():
            window.durations[task_key][bucket] += runs
    return window, stored


def _gaps(
    since: datetime, closable: list[int], stored: set[int]
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


def _read_runs(gaps: list[tuple[datetime, datetime | None]], now: datetime) -> dict[Cell, Summary]:
    """The runs of each stretch by cell, a slot per statement through the primary key
    (time-ordered ids): the slot is the statement's, not computed for each run. The last
    statement is open-ended - it also counts runs whose ids are ahead of this clock."""
    cells: dict[Cell, Summary] = defaultdict(Summary)
    with connections[task_settings().DATABASE_ALIAS].cursor() as cursor:
        for slot, start, stop in _slot_ranges(gaps, now):
            params: dict[str, uuid.UUID] = {"lo": uuid7_floor(start)}
            if stop is not None:
                params["hi"] = uuid7_floor(stop)
            upper = "" if stop is None else " AND id < %(hi)s"
            cursor.execute(_RUNS.format(upper=upper), params)
            for task_key, state, bucket, count in cursor.fetchall():
                summary = cells[(slot, task_key, state)]
                summary.runs += count
                if bucket is not None:
                    summary.durations[bucket] += count
    return cells


def _slot_ranges(
    gaps: list[tuple[datetime, datetime | None]], now: datetime
) -> Iterator[tuple[int, datetime, datetime | None]]:
    """Each stretch cut at the slots' edges - what is older than ``KEEP`` in one piece,
    labelled with its first slot (no chart reaches it, nothing is summarised there) - the
    open-ended one ending with the current slot."""
    kept = datetime.fromtimestamp(_first_kept(now) * SLOT_SECONDS, tz=UTC)
    for start, stop in gaps:
        position = start
        if position < kept:
            end = kept if stop is None else min(kept, stop)
            yield int(position.timestamp()) // SLOT_SECONDS, position, end
            position = end
        while stop is None or position < stop:
            slot = int(position.timestamp()) // SLOT_SECONDS
            edge = datetime.fromtimestamp((slot + 1) * SLOT_SECONDS, tz=UTC)
            if stop is None and edge > now:
                yield slot, position, None
                break
            end = edge if stop is None else min(edge, stop)
            yield slot, position, end
            position = end
