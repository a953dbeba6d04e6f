"""How long a worker pool takes to start: from launching ``manage.py runtaskworker
--concurrency 2`` to its first claim (a run waiting before the start is taken: PENDING), and to
that run's completion. The goal (issue 17): first claim within 1 s.

    DATABASE_URL=... .venv/bin/python -m benchmarks.startup [--rounds 5] [--concurrency 2]

Medians of the rounds; the interpreter and Django setup alone (``python -c "import django;
django.setup()"``) are printed beside them, the floor a freshly started process pays.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time

from django.core.management import call_command

from benchmarks import run as base
from django_tasks.models import TaskRun
from tests.taskapp.tasks import add


def one_start(concurrency: int) -> tuple[float, float]:
    base.reset()
    future = add.delay(1, 2)
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, str(base.ROOT / "manage.py"), "runtaskworker", "-v", "0",
         "--concurrency", str(concurrency)],
        cwd=base.ROOT,
        env=dict(os.environ),
        start_new_session=True,
    )  # fmt: skip
    claimed = completed = 0.0
    try:
        while not completed:
            state = TaskRun.objects.filter(pk=future.id).values_list("state_type", flat=True)[0]
            now = time.perf_counter() - started
            if state != "SCHEDULED" and not claimed:
                claimed = now
            if state == "COMPLETED":
                completed = now
            time.sleep(0.002)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    return claimed, completed


def django_setup() -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=base.ROOT,
        env=dict(os.environ),
        check=True,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=2)
    options = parser.parse_args()
    call_command("migrate", verbosity=0)
    claims, completions, setups = [], [], []
    for _ in range(options.rounds):
        claim, done = one_start(options.concurrency)
        claims.append(claim)
        completions.append(done)
        setups.append(django_setup())
        print(f"first claim {claim:.2f} s, completed {done:.2f} s", flush=True)
    base.reset()
    print(
        f"runtaskworker --concurrency {options.concurrency}: first claim after "
        f"{statistics.median(claims):.2f} s, run completed after "
        f"{statistics.median(completions):.2f} s (medians of {options.rounds}; goal: first "
        f"claim < 1 s); interpreter + Django setup alone: {statistics.median(setups):.2f} s"
    )


if __name__ == "__main__":
    main()
