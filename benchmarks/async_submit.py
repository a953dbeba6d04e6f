"""Async runs in the caller's process - ``.map()`` and ``await`` from async code, ``.map()``
from sync code - against ``asyncio.gather`` of the bare coroutines, in the same run.

    .venv/bin/python -m benchmarks.async_submit [--runs 1000] [--seconds 0.5] [--rounds 3]

Each run of ``async_sleep_io`` (tests/taskapp/tasks.py) awaits ``asyncio.sleep(--seconds)``:
with every run on the loop at once, ``--runs`` of them take a little more than one sleep; a
cap of N threads would take ``runs / N`` sleeps. Prints the wall time of each way (medians of
the rounds) beside the bare ``gather`` and the time until the runs' records are written. The
goal: 1,000 runs of 0.5 s in < 1.5 s. Uses DATABASE_URL when set, else the embedded
PostgreSQL (database ``django_tasks_bench``).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable, Coroutine
from typing import Any

from benchmarks.run import reset
from django_tasks import flush
from tests.taskapp.tasks import async_sleep_io

task: Any = async_sleep_io


async def bare(runs: int, seconds: float) -> None:
    await asyncio.gather(*(task.fn(seconds) for _ in range(runs)))


async def mapped(runs: int, seconds: float) -> None:
    futures = task.map([seconds] * runs)
    await asyncio.gather(*(future.aresult() for future in futures))


async def awaited(runs: int, seconds: float) -> None:
    await asyncio.gather(*(task(seconds) for _ in range(runs)))


def timed_async(
    way: Callable[[int, float], Coroutine[Any, Any, None]], runs: int, seconds: float
) -> float:
    async def measured() -> float:
        started = time.perf_counter()
        await way(runs, seconds)
        return time.perf_counter() - started

    return asyncio.run(measured())


def timed_sync(runs: int, seconds: float) -> float:
    started = time.perf_counter()
    task.map([seconds] * runs).result()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1_000)
    parser.add_argument("--seconds", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    reset()
    runs, seconds = options.runs, options.seconds
    ways: dict[str, Callable[[], float]] = {
        "asyncio.gather of the bare coroutines": lambda: timed_async(bare, runs, seconds),
        ".map() from async code, aresult()": lambda: timed_async(mapped, runs, seconds),
        "await task(...) gathered": lambda: timed_async(awaited, runs, seconds),
        ".map() from sync code, result()": lambda: timed_sync(runs, seconds),
    }
    walls: dict[str, list[float]] = {name: [] for name in ways}
    recorded: list[float] = []
    for _ in range(options.rounds):
        for name, way in ways.items():
            walls[name].append(way())
        started = time.perf_counter()
        flush()
        recorded.append(time.perf_counter() - started)
    print(f"{runs:,} runs of asyncio.sleep({seconds}), medians of {options.rounds} rounds:")
    for name, values in walls.items():
        print(f"  {name}: {statistics.median(values):.2f} s")
    print(f"  then writing the rounds' last records (flush): {statistics.median(recorded):.2f} s")
    reset()


if __name__ == "__main__":
    main()
