"""Retention: delete finished runs (and their history) older than a cutoff, in short batches.

The claim query reads a partial index of ready runs only, so history does not slow the queue;
purging keeps the table, its indexes and the admin's pages at a size worth keeping.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.db import connections
from django.utils import timezone

from . import sql
from .conf import task_settings
from .states import FINAL_TYPES, StateType
from .stats.slots import KEEP, window_cells
from .storable import shown
from .validation import MAX_SECONDS

__all__ = ["AgeOutOfRange", "parse_age", "purge"]

_AGE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class AgeOutOfRange(ValueError):
    """An age written correctly but longer than a century."""


def parse_age(text: str) -> timedelta:
    """``"7d"``, ``"12h"``, ``"30m"``, ``"45s"``, ``"2w"`` -> a timedelta, at most a century
    (longer is :class:`AgeOutOfRange`, not an ``OverflowError`` from deep inside)."""
    match = _AGE_RE.match(text)
    if not match:
        raise ValueError(f"Age must look like 7d, 12h, 30m, 45s or 2w, got {shown(text)}.")
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds > MAX_SECONDS:
        raise AgeOutOfRange(f"Age must be at most a century ({MAX_SECONDS // 86400}d), got {text}.")
    return timedelta(seconds=seconds)


def purge(
    older_than: timedelta,
    states: Iterable[StateType | str] = FINAL_TYPES,
    *,
    batch_size: int = 10_000,
    max_rate: float | None = None,
) -> int:
    """Delete runs in ``states`` (final states only) finished before ``now - older_than``.

    ``max_rate``: at most that many runs a second on average - the purge pauses after each
    batch until its pace falls back to it - so that a purge beside busy workers leaves them the
    database's CPU (``benchmarks/history.py``: unthrottled, 137,000 runs/s on 2 cores, and the
    workers' drain halved meanwhile)."""
    if max_rate is not None and not max_rate > 0:
        raise ValueError(f"max_rate must be a positive number of runs a second, got {max_rate}.")
    wanted = sorted({StateType(s) for s in states})
    unfinished = [s for s in wanted if s not in FINAL_TYPES]
    if unfinished:
        raise ValueError(
            f"Only finished runs can be purged; {', '.join(unfinished)} runs are still in use."
        )
    age = older_than.total_seconds()
    params: dict[str, Any] = {
        "states": [s.value for s in wanted],
        "age": age,
        "limit": batch_size,
    }
    if older_than < KEEP:  # the dashboard's windows keep counting what is deleted
        window_cells(timezone.now() - KEEP)
    deleted = 0
    began = time.monotonic()
    with connections[task_settings().DATABASE_ALIAS].cursor() as cursor:
        while True:
            cursor.execute(sql.PURGE, params)
            batch: int = cursor.rowcount
            deleted += batch
            if batch < batch_size:
                break
            if max_rate is not None:
                time.sleep(max(0.0, began + deleted / max_rate - time.monotonic()))
        cursor.execute(sql.PURGE_WORKERS, {"age": age})
    return deleted
