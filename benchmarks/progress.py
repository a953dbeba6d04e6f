"""What ``set_progress()`` costs: 10,000 calls in a tight loop inside one run (throttled to a
few writes a second), against the same loop without the calls.

    DATABASE_URL=... .venv/bin/python -m benchmarks.progress [--calls 10000] [--rounds 5]

The goal: under 100 ms for the 10,000 calls. Medians of the rounds.
"""

from __future__ import annotations

import argparse
import statistics
import time

from django.core.management import call_command

from benchmarks import run as base
from django_tasks import set_progress, task
from django_tasks.recorder import flush


@task(name="bench_progress")
def progress_loop(calls: int, report: bool) -> float:
    started = time.perf_counter()
    for done in range(calls):
        if report:
            set_progress(done + 1, calls, "copying")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args()
    call_command("migrate", verbosity=0)
    with_calls, without = [], []
    for _ in range(options.rounds):
        with_calls.append(progress_loop(options.calls, True))
        without.append(progress_loop(options.calls, False))
    flush()
    base.reset()
    spent = statistics.median(with_calls) - statistics.median(without)
    print(
        f"{options.calls:,} set_progress() calls in one run: {spent * 1000:.1f} ms "
        f"({spent / options.calls * 1e6:.2f} us a call; goal: under 100 ms in total)"
    )


if __name__ == "__main__":
    main()
