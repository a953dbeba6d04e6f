"""``.submit()`` against a bare thread pool, and how many statements record the runs.

    .venv/bin/python -m benchmarks.submit [--runs 1000] [--rounds 5]

Submits ``--runs`` no-op runs with ``.map()`` and gathers their results, against the same
number of calls of the bare function on a ``ThreadPoolExecutor`` of the same size; prints the
per-run overhead and the statements the batched writer sent for their state events.
Uses DATABASE_URL when set, else the embedded PostgreSQL (database ``django_tasks_bench``).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import statistics
import time

from benchmarks.run import reset
from django_tasks import flush, unmapped
from django_tasks.conf import task_settings
from django_tasks.recorder import writer
from django_tasks.runners import get_task_runner
from tests.taskapp.tasks import add


def bare(runs: int, threads: int) -> float:
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(add.fn, range(runs), [1] * runs))
    assert results[-1] == runs
    return time.perf_counter() - started


def submitted(runs: int) -> tuple[float, float, int, int]:
    """Seconds to get every result, seconds until recorded too, statements, state events."""
    flush()
    statements, events = writer.statements, writer.events
    started = time.perf_counter()
    results = add.map(range(runs), unmapped(1)).result()
    gathered = time.perf_counter() - started
    assert results[-1] == runs
    flush()
    recorded = time.perf_counter() - started
    return gathered, recorded, writer.statements - statements, writer.events - events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args()
    reset()
    runner = get_task_runner()
    threads = getattr(runner, "_pool")._max_workers  # noqa: B009 - same size as the runner
    submitted(50)  # warm up: threads, the writer's connection
    bare_times, gathered_times, recorded_times = [], [], []
    statements = events = 0
    for _ in range(options.rounds):
        reset()
        bare_times.append(bare(options.runs, threads))
        gathered, recorded, statements, events = submitted(options.runs)
        gathered_times.append(gathered)
        recorded_times.append(recorded)
    n = options.runs
    print(f"{n} no-op runs, {threads} threads, median of {options.rounds} rounds")
    print(f"  bare ThreadPoolExecutor: {statistics.median(bare_times) / n * 1e6:8.1f} us/run")
    print(f"  .map() results gathered: {statistics.median(gathered_times) / n * 1e6:8.1f} us/run")
    print(f"  ... and all recorded:    {statistics.median(recorded_times) / n * 1e6:8.1f} us/run")
    print(
        f"  last round: {events} state events written in {statements} statements "
        f"({events / max(statements, 1):.0f} events per statement); "
        f"RECORD_BATCH_SIZE={task_settings().RECORD_BATCH_SIZE}"
    )


if __name__ == "__main__":
    main()
