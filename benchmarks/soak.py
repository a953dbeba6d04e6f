"""A soak (issue 25, goal 3): a steady producer at about 70% of the measured drain capacity,
the built-in purge keeping history bounded, autovacuum at its defaults - reported each minute.

    .venv/bin/python -m benchmarks.soak [--minutes 30] [--share 0.7] [--processes 2]

First drains 20,000 no-op runs with ``--processes`` worker processes: the capacity. Then, for
``--minutes``, a producer thread enqueues ``share x capacity`` runs a second (a batch every
100 ms) to a pool of the same size, while the purge runs once a minute (runs finished more
than two minutes before, at most 50,000 a second: ``django_tasks.purge_history``'s work). Each
minute it prints the runs that ended, the enqueue-to-start latency of the runs enqueued in
that minute (p50, p99: from the run's ``created`` to its ``started``), the workers' resident
memory, and the size of the run table, its history table and the ready index. At the end it
compares the last five minutes with the first five: latency p99 and rate within 10%, memory
flat, sizes bounded.
"""

# ruff: noqa: I001 - benchmarks.run sets Django up: it must be imported before Django's models.
from __future__ import annotations

import argparse
import statistics
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from benchmarks.run import ours_drain, reset, settle, start_workers, stop_workers

from django.core.management import call_command
from django.db import connection

from django_tasks.retention import purge
from tests.taskapp.tasks import noop

MINUTE = """
SELECT count(*) FILTER (WHERE finished >= %(start)s AND finished < %(end)s),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM started - created))
           FILTER (WHERE created >= %(start)s AND created < %(end)s),
       percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM started - created))
           FILTER (WHERE created >= %(start)s AND created < %(end)s)
FROM django_tasks_taskrun WHERE id >= %(since)s
"""
SIZES = """SELECT pg_total_relation_size('django_tasks_taskrun'),
       pg_total_relation_size('django_tasks_taskrunstate'),
       pg_relation_size('django_tasks_ready_idx')"""


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its descendants (the pool), in MB."""
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


class Producer(threading.Thread):
    """Enqueues ``rate`` runs a second, a batch every 100 ms, until stopped."""

    def __init__(self, rate: float) -> None:
        super().__init__(daemon=True)
        self.rate = rate
        self.stopped = threading.Event()
        self.enqueued = 0

    def run(self) -> None:
        began = time.monotonic()
        while not self.stopped.is_set():
            due = int((time.monotonic() - began) * self.rate) - self.enqueued
            if due > 0:
                noop.delay_many([()] * due)
                self.enqueued += due
            self.stopped.wait(0.1)
        connection.close()


class Purger(threading.Thread):
    """Purges runs finished more than two minutes ago, once a minute."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stopped = threading.Event()
        self.deleted = 0

    def run(self) -> None:
        while not self.stopped.wait(60):
            self.deleted += purge(timedelta(minutes=2), max_rate=50_000)
        connection.close()


def minute_row(start: Any, end: Any, soak_start: Any) -> tuple[int, float, float]:
    """Runs that ended in the minute (of every run of the soak: one enqueued minutes before
    ends in it when the workers fall behind), and the latency of those enqueued in it."""
    from django_tasks.ids import uuid7_floor

    with connection.cursor() as cursor:
        since = uuid7_floor(soak_start - timedelta(seconds=1))
        cursor.execute(MINUTE, {"start": start, "end": end, "since": since})
        done, p50, p99 = cursor.fetchone()
    return done, (p50 or 0.0) * 1000, (p99 or 0.0) * 1000


def sizes() -> tuple[float, float, float]:
    with connection.cursor() as cursor:
        cursor.execute(SIZES)
        runs, states, ready = cursor.fetchone()
    return runs / 1e6, states / 1e6, ready / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=int, default=30)
    parser.add_argument("--share", type=float, default=0.7)
    parser.add_argument("--processes", type=int, default=2)
    options = parser.parse_args()
    call_command("migrate", verbosity=0)
    reset()
    settle()
    capacity = ours_drain(20_000, options.processes)
    reset()
    rate = capacity * options.share
    print(f"capacity {capacity:,.0f}/s; producer at {rate:,.0f}/s for {options.minutes} min")
    print(
        "| minute | runs ended | /s | latency p50 ms | p99 ms | workers' RSS MB | "
        "runs MB | history MB | ready index MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    pool = start_workers(options.processes)
    producer, purger = Producer(rate), Purger()
    producer.start()
    purger.start()
    rows: list[tuple[int, float, float, float]] = []
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT now()")
            start = soak_start = cursor.fetchone()[0]
        began = time.monotonic()
        for minute in range(1, options.minutes + 1):
            # 5 s past the minute: its last runs have started (and mostly ended).
            time.sleep(max(0.0, began + 60 * minute + 5 - time.monotonic()))
            end = start + timedelta(minutes=1)
            done, p50, p99 = minute_row(start, end, soak_start)
            memory = rss_mb(pool.pid)
            runs_mb, states_mb, ready_mb = sizes()
            rows.append((done, p99, memory, runs_mb + states_mb))
            print(
                f"| {minute} | {done:,} | {done / 60:,.0f} | {p50:.1f} | {p99:.1f} | "
                f"{memory:.0f} | {runs_mb:.0f} | {states_mb:.0f} | {ready_mb:.1f} |",
                flush=True,
            )
            start = end
    finally:
        producer.stopped.set()
        purger.stopped.set()
        producer.join()
        stop_workers(pool)
    summarize(rows, purger.deleted)
    reset()


def summarize(rows: list[tuple[int, float, float, float]], deleted: int) -> None:
    if len(rows) < 10:
        print(f"(fewer than 10 minutes: no first/last comparison; purged {deleted:,})")
        return
    first, last = rows[:5], rows[-5:]

    def median(part: list[tuple[int, float, float, float]], column: int) -> float:
        return statistics.median(row[column] for row in part)

    for label, column in [("runs ended a minute", 0), ("latency p99 ms", 1)]:
        a, b = median(first, column), median(last, column)
        print(f"{label}: first 5 min {a:,.1f}, last 5 min {b:,.1f} ({b / a:.2f}x)")
    print(f"workers' RSS: first {rows[0][2]:.0f} MB, last {rows[-1][2]:.0f} MB")
    print(f"run tables: largest {max(r[3] for r in rows):.0f} MB, last {rows[-1][3]:.0f} MB")
    print(f"purged {deleted:,} runs")


if __name__ == "__main__":
    main()
