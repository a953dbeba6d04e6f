"""I/O-bound runs: ``async def`` runs on one worker process's event loop, against the ideal
and against sync runs of the same sleep.

    DATABASE_URL=... .venv/bin/python -m benchmarks.async_runs [--runs 5000] [--rounds 2]

``async_sleep_io`` (tests/taskapp/tasks.py) awaits ``asyncio.sleep(0.1)``; one worker process
with ``--async-concurrency 100`` can at best finish 1,000 of them a second (the ideal). The
same sleep as a sync task (``sleep_io``, ``time.sleep(0.1)``) with ``--concurrency 2`` is the
comparison: two processes, one run each at a time (20 runs/s at best). Runs per second from
the first enqueue to the last completion, workers started and idle first; medians of the
rounds. The goal: async >= 0.7 x ideal.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

from django.core.management import call_command

from benchmarks import run as base
from tests.taskapp.tasks import async_sleep_io, sleep_io

SECONDS = 0.1


def drain(task: Any, n: int, *worker_options: str) -> float:
    processes = 1 if "--async-concurrency" in worker_options else 2
    return base.ours_drain(n, processes, *worker_options, task=task, args=(SECONDS,))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5_000)
    parser.add_argument("--sync-runs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--async-concurrency", type=int, default=100)
    options = parser.parse_args()
    call_command("migrate", verbosity=0)
    concurrency = str(options.async_concurrency)
    rates: dict[str, list[float]] = {"async": [], "sync": []}
    for _ in range(options.rounds):
        base.reset()
        rates["async"].append(
            drain(async_sleep_io, options.runs, "--async-concurrency", concurrency)
        )
        base.reset()
        rates["sync"].append(drain(sleep_io, options.sync_runs))
        print(f"async: {rates['async'][-1]:,.0f} runs/s, sync: {rates['sync'][-1]:,.1f} runs/s")
    base.reset()
    ideal = options.async_concurrency / SECONDS
    median = {name: statistics.median(values) for name, values in rates.items()}
    print(
        f"async, 1 process, --async-concurrency {concurrency}: {median['async']:,.0f} runs/s "
        f"(ideal {ideal:,.0f}): {median['async'] / ideal:.2f} x ideal (goal >= 0.7)"
    )
    print(
        f"sync, --concurrency 2: {median['sync']:,.1f} runs/s (ideal {2 / SECONDS:,.0f}); "
        f"async / sync: {median['async'] / median['sync']:,.0f} x"
    )


if __name__ == "__main__":
    main()
