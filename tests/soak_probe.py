"""What a soak measures, shared by tests/test_soak.py (short, in CI) and benchmarks/soak.py
(30 minutes): a steady producer, a periodic purge, and each period's figures - runs ended,
enqueue-to-start latency, the pool's resident memory, the tables' sizes and row counts."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from django.db import connection

from django_tasks.ids import uuid7_floor
from django_tasks.retention import purge
from tests.taskapp.tasks import noop

__all__ = ["Period", "Producer", "Purger", "measure", "rss_mb"]

#: Runs (of the soak) that ended in the period, and the latency of those enqueued in it.
_PERIOD = """
SELECT count(*) FILTER (WHERE finished >= %(start)s AND finished < %(end)s),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM started - created))
           FILTER (WHERE created >= %(start)s AND created < %(end)s),
       percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM started - created))
           FILTER (WHERE created >= %(start)s AND created < %(end)s)
FROM django_tasks_taskrun WHERE id >= %(since)s
"""

_SIZES = """
SELECT pg_total_relation_size('django_tasks_taskrun'),
       pg_total_relation_size('django_tasks_taskrunstate'),
       pg_relation_size('django_tasks_ready_idx'),
       (SELECT count(*) FROM django_tasks_taskrun)
"""


@dataclass(frozen=True)
class Period:
    """One period of a soak (sizes in MB, latencies in ms)."""

    ended: int
    p50_ms: float
    p99_ms: float
    rss_mb: float
    runs_mb: float
    history_mb: float
    ready_mb: float
    rows: int


def rss_mb(pid: int) -> float:
    """Resident memory of a process, its children and the processes of its process group (a
    pool: the supervisor and its worker processes), in MB."""
    total = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            if int(proc.name) == pid or int(stat[1]) == pid or int(stat[2]) == pid:
                total += int(stat[21]) * 4096
        except (OSError, IndexError, ValueError):
            continue
    return total / 1e6


def measure(start: datetime, end: datetime, soak_start: datetime, pool: int) -> Period:
    """The figures of the period ``start..end`` of a soak begun at ``soak_start``: runs
    that ended in it (any run of the soak: one enqueued earlier ends in it when the workers
    fall behind), the latency of the runs enqueued in it, and the sizes at its end."""
    since = uuid7_floor(soak_start - timedelta(seconds=1))
    with connection.cursor() as cursor:
        cursor.execute(_PERIOD, {"start": start, "end": end, "since": since})
        ended, p50, p99 = cursor.fetchone()
        cursor.execute(_SIZES)
        runs, history, ready, rows = cursor.fetchone()
    return Period(
        ended=ended,
        p50_ms=(p50 or 0.0) * 1000,
        p99_ms=(p99 or 0.0) * 1000,
        rss_mb=rss_mb(pool),
        runs_mb=runs / 1e6,
        history_mb=history / 1e6,
        ready_mb=ready / 1e6,
        rows=rows,
    )


class Producer(threading.Thread):
    """Enqueues ``rate`` no-op runs a second, a batch every 100 ms, until stopped."""

    def __init__(self, rate: float) -> None:
        super().__init__(daemon=True)
        self.rate = rate
        self.stopped = threading.Event()
        self.enqueued = 0

    def run(self) -> None:
        began = time.monotonic()
        try:
            while not self.stopped.is_set():
                due = int((time.monotonic() - began) * self.rate) - self.enqueued
                if due > 0:
                    noop.delay_many([()] * due)
                    self.enqueued += due
                self.stopped.wait(0.1)
        finally:
            connection.close()


class Purger(threading.Thread):
    """Every ``every`` seconds, purges the runs finished more than ``older_than`` before, at
    most 50,000 a second (the built-in ``django_tasks.purge_history``'s default pace)."""

    def __init__(self, every: float, older_than: timedelta) -> None:
        super().__init__(daemon=True)
        self.every = every
        self.older_than = older_than
        self.stopped = threading.Event()
        self.deleted = 0

    def run(self) -> None:
        try:
            while not self.stopped.wait(self.every):
                self.deleted += purge(self.older_than, max_rate=50_000)
        finally:
            connection.close()
