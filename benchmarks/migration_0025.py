"""Migration 0025 (readable times) on a large run table, while the queue is in use.

    .venv/bin/python -m benchmarks.migration_0025 [--runs 1000000]

Fills the benchmark database with finished runs (and a few whose ``scheduled_time`` SQL set
to '-infinity' or a year BC), migrates back to 0024, then applies 0025 while a second
connection updates a run every 10 ms (as claims and finishes do), as during a deploy. Prints
how long the migration took and the slowest of those writes: the constraint is added ``NOT
VALID`` and then validated under a lock that lets writers go on, so a write should never wait
for the table scan - beside it, for comparison, the same constraint added the plain way (one
``ALTER TABLE ... ADD CONSTRAINT``, which scans the table under an exclusive lock).
"""

# ruff: noqa: I001 - benchmarks.run sets Django up: it must be imported before Django's models.
from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable

from benchmarks.admin_list import fill
from benchmarks.run import reset, settle

from django.core.management import call_command
from django.db import connection

from django_tasks.topic import open_worker_connection

CHECK = "scheduled_time BETWEEN '0001-01-02 00:00:00+00' AND '9999-12-30 00:00:00+00'"


def enqueues_while(action: Callable[[], object]) -> tuple[float, float, int]:
    """Run ``action``; meanwhile update a run every 10 ms from another connection. Returns
    the seconds ``action`` took, the slowest write's milliseconds and the writes made."""
    stop = threading.Event()
    slowest: list[float] = [0.0]
    made: list[int] = [0]

    def enqueue() -> None:
        conn = open_worker_connection()
        try:
            while not stop.is_set():
                started = time.perf_counter()
                conn.execute(
                    "UPDATE django_tasks_taskrun SET updated = updated "
                    "WHERE id = (SELECT id FROM django_tasks_taskrun ORDER BY id DESC LIMIT 1)"
                )
                slowest[0] = max(slowest[0], time.perf_counter() - started)
                made[0] += 1
                stop.wait(0.01)
        finally:
            conn.close()

    writer = threading.Thread(target=enqueue)
    writer.start()
    time.sleep(0.2)
    started = time.perf_counter()
    try:
        action()
    finally:
        took = time.perf_counter() - started
        time.sleep(0.2)
        stop.set()
        writer.join()
    return took, slowest[0] * 1000, made[0]


def plain_way() -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            f"ALTER TABLE django_tasks_taskrun ADD CONSTRAINT bench_plain CHECK ({CHECK})"
        )
        cursor.execute("ALTER TABLE django_tasks_taskrun DROP CONSTRAINT bench_plain")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=1_000_000)
    options = parser.parse_args()
    call_command("migrate", verbosity=0)
    reset()
    call_command("migrate", "django_tasks", "0024", verbosity=0)
    fill(options.runs)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE django_tasks_taskrun SET scheduled_time = CASE WHEN random() < 0.5 "
            "THEN '-infinity'::timestamptz ELSE '0044-03-15 BC'::timestamptz END "
            "WHERE id IN (SELECT id FROM django_tasks_taskrun ORDER BY random() LIMIT 10)"
        )
    settle()
    print(f"{options.runs:,} runs in the table, 10 of them with an unreadable scheduled_time")
    print("| what | seconds | slowest concurrent write (ms) | writes meanwhile |")
    print("|---|---|---|---|")
    took, slowest, made = enqueues_while(
        lambda: call_command("migrate", "django_tasks", "0025", verbosity=0)
    )
    print(f"| migration 0025 (NOT VALID, mend, VALIDATE) | {took:.2f} | {slowest:.0f} | {made} |")
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM django_tasks_taskrun WHERE NOT ({CHECK})")
        outside = cursor.fetchone()[0]
    assert outside == 0, outside
    took, slowest, made = enqueues_while(plain_way)
    print(f"| plain ADD CONSTRAINT (for comparison) | {took:.2f} | {slowest:.0f} | {made} |")
    call_command("migrate", verbosity=0)
    reset()


if __name__ == "__main__":
    main()
