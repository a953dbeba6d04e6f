"""``run_ready()`` (django_tasks.testing) per call, against the same run claimed and
completed by raw psycopg in the same run.

    .venv/bin/python -m benchmarks.run_ready [--calls 50]

A test suite calls ``run_ready()`` after each request that enqueued something; its overhead
is paid once per test. Measures, as the median of ``--calls`` calls: ``run_ready()`` with one
ready no-op run, with none, and a raw psycopg claim (UPDATE ... SKIP LOCKED) plus the
function call and a completion of one row. Before issue 24 a call that ran something slept
one POLL_INTERVAL (1 s) before it returned.
Uses DATABASE_URL when set, else the embedded PostgreSQL (database ``django_tasks_bench``).
"""

from __future__ import annotations

import argparse
import statistics
import time

from django.core.management import call_command

from benchmarks.run import RAW_CLAIM, RAW_INSERT, RAW_TABLE, reset
from django_tasks.testing import run_ready
from django_tasks.topic import open_worker_connection
from tests.taskapp.tasks import noop

RAW_DONE = "UPDATE bench_raw_job SET state_type = 'COMPLETED' WHERE id = ANY(%s)"


def ours(calls: int, enqueue: bool) -> list[float]:
    timings = []
    for _ in range(calls):
        if enqueue:
            noop.delay()
        started = time.perf_counter()
        ran = run_ready()
        timings.append(time.perf_counter() - started)
        assert ran == (1 if enqueue else 0)
    return timings


def raw(calls: int) -> list[float]:
    timings = []
    with open_worker_connection() as conn:
        conn.execute(RAW_TABLE)
        for _ in range(calls):
            conn.execute(RAW_INSERT, [b""])
            started = time.perf_counter()
            rows = conn.execute(RAW_CLAIM, ["raw"]).fetchall()
            for _row in rows:
                noop.fn()
            conn.execute(RAW_DONE, [[row[0] for row in rows]])
            timings.append(time.perf_counter() - started)
            assert len(rows) == 1
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=50)
    options = parser.parse_args()
    call_command("migrate", verbosity=0)  # a new benchmark database has no tables yet
    reset()
    one = statistics.median(ours(options.calls, enqueue=True)) * 1000
    none = statistics.median(ours(options.calls, enqueue=False)) * 1000
    baseline = statistics.median(raw(options.calls)) * 1000
    print(f"| run_ready(), one ready run | {one:.2f} ms |")
    print(f"| run_ready(), nothing ready | {none:.2f} ms |")
    print(f"| raw psycopg: claim + call + complete one row | {baseline:.2f} ms |")
    print(f"| overhead per call (one run - raw) | {one - baseline:.2f} ms (goal <= 50 ms) |")


if __name__ == "__main__":
    main()
