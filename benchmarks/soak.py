"""A soak (issue 25, goal 3): a steady producer at about 70% of the measured drain capacity,
the built-in purge keeping history bounded, the server's autovacuum at its defaults (the run
tables carry their own settings: migration 0026) - reported each minute.

    .venv/bin/python -m benchmarks.soak [--minutes 30] [--share 0.7] [--processes 2]
                                        [--max-wal-size 8GB] [--warmup 0]

First drains 20,000 no-op runs with ``--processes`` worker processes: the capacity. Then, for
``--minutes``, a producer thread enqueues ``share x capacity`` runs a second (a batch every
100 ms) to a pool of the same size, while the purge runs once a minute (runs finished more
than two minutes before, at most 50,000 a second: ``django_tasks.purge_history``'s work). Each
minute it prints the runs that ended, the enqueue-to-start latency of the runs enqueued in
that minute (p50, p99: from the run's ``created`` to its ``started``), the workers' resident
memory, the size of the run table, its history table and the ready index, and the rows of
the run table. At the end it compares the last five minutes with the first five: latency p99
and rate within 10%, memory flat, sizes bounded. ``--warmup N``: N minutes first, printed
and left out of that comparison - the tables start empty, and fill up to their steady size
(the purge's two minutes of runs, and autovacuum's dead rows) in the first five or so.
"""

# ruff: noqa: I001 - benchmarks.run sets Django up: it must be imported before Django's models.
from __future__ import annotations

import argparse
import statistics
import time
from datetime import timedelta

from benchmarks.run import ours_drain, reset, settle, start_workers, stop_workers

from django.core.management import call_command
from django.db import connection

from tests.soak_probe import Period, Producer, Purger, measure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=int, default=30)
    parser.add_argument("--share", type=float, default=0.7)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=0, help="minutes before the soak's")
    parser.add_argument(
        "--max-wal-size",
        help="the server's max_wal_size for the soak (ALTER SYSTEM, reset at the end; needs a "
        "superuser), e.g. 8GB: at PostgreSQL's 1GB default a soak of thousands of runs a "
        "second checkpoints every 10-25 s",
    )
    options = parser.parse_args()
    call_command("migrate", verbosity=0)
    if options.max_wal_size:
        server_setting("max_wal_size", options.max_wal_size)
    reset()
    settle()
    capacity = ours_drain(20_000, options.processes)
    reset()
    rate = capacity * options.share
    print(f"capacity {capacity:,.0f}/s; producer at {rate:,.0f}/s for {options.minutes} min")
    with connection.cursor() as cursor:
        cursor.execute("SHOW max_wal_size")
        print(f"max_wal_size {cursor.fetchone()[0]}; autovacuum at the server's defaults")
    print(
        "| minute | runs ended | /s | latency p50 ms | p99 ms | workers' RSS MB | "
        "runs MB | history MB | ready index MB | rows |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    pool = start_workers(options.processes)
    producer, purger = Producer(rate), Purger(60, timedelta(minutes=2))
    producer.start()
    purger.start()
    rows: list[Period] = []
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT now()")
            start = soak_start = cursor.fetchone()[0]
        began = time.monotonic()
        for minute in range(1 - options.warmup, options.minutes + 1):
            # 5 s past the minute: its last runs have started (and mostly ended).
            elapsed = minute + options.warmup
            time.sleep(max(0.0, began + 60 * elapsed + 5 - time.monotonic()))
            end = start + timedelta(minutes=1)
            row = measure(start, end, soak_start, pool.pid)
            if minute > 0:
                rows.append(row)
            label = str(minute) if minute > 0 else f"warm-up {elapsed}"
            print(
                f"| {label} | {row.ended:,} | {row.ended / 60:,.0f} | {row.p50_ms:.1f} | "
                f"{row.p99_ms:.1f} | {row.rss_mb:.0f} | {row.runs_mb:.0f} | "
                f"{row.history_mb:.0f} | {row.ready_mb:.1f} | {row.rows:,} |",
                flush=True,
            )
            start = end
    finally:
        producer.stopped.set()
        purger.stopped.set()
        producer.join()
        stop_workers(pool)
        if options.max_wal_size:
            server_setting("max_wal_size", None)
    summarize(rows, purger.deleted)
    reset()


def server_setting(name: str, value: str | None) -> None:
    """``ALTER SYSTEM SET name = value`` (``RESET`` for None), then reload the configuration."""
    with connection.cursor() as cursor:
        if value is None:
            cursor.execute(f"ALTER SYSTEM RESET {name}")
        else:
            cursor.execute(f"ALTER SYSTEM SET {name} = %s", [value])
        cursor.execute("SELECT pg_reload_conf()")  # in effect shortly (the soak prints it)


def summarize(rows: list[Period], deleted: int) -> None:
    if len(rows) < 10:
        print(f"(fewer than 10 minutes: no first/last comparison; purged {deleted:,})")
        return
    first, last = rows[:5], rows[-5:]
    for label, field in [("runs ended a minute", "ended"), ("latency p99 ms", "p99_ms")]:
        a = statistics.median(getattr(row, field) for row in first)
        b = statistics.median(getattr(row, field) for row in last)
        print(f"{label}: first 5 min {a:,.1f}, last 5 min {b:,.1f} ({b / a:.2f}x)")
    print(f"workers' RSS: first {rows[0].rss_mb:.0f} MB, last {rows[-1].rss_mb:.0f} MB")
    tables = [row.runs_mb + row.history_mb for row in rows]
    print(f"run tables: largest {max(tables):.0f} MB, last {tables[-1]:.0f} MB")
    print(f"purged {deleted:,} runs")


if __name__ == "__main__":
    main()
