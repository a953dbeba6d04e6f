"""What limits cost when they do not bind: a drain of no-op runs with a tag concurrency limit
and a rate limit far above what the workers reach, against the same drain without, and the
raw psycopg SKIP LOCKED drain, in the same run.

    DATABASE_URL=... .venv/bin/python -m benchmarks.limits [--runs 20000] [--rounds 2]

``limited_noop`` (tests/taskapp/tasks.py) has the tag ``bench`` - limited here to 1,000,000 at
once - and ``rate_limit="999999999/s"``: every claimed batch of it asks the database for
admission, and every run that held a slot fires the trigger that looks for waiting runs.
Each round drains raw, then unlimited and limited - in turn first, so that neither always runs
second. Medians; and, as this machine's speed drifts from one drain to the next, also the
median of each round's own limited / unlimited (its two drains are neighbours in time). The
goal: limited >= 0.9 x unlimited.
"""

from __future__ import annotations

import argparse
import statistics

from django.core.management import call_command

from benchmarks import run as base
from django_tasks.models import Limit
from tests.taskapp.tasks import limited_noop, noop


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=2)
    options = parser.parse_args()
    call_command("migrate", verbosity=0)
    Limit.objects.all().delete()
    Limit.objects.create(scope="tag", name="bench", concurrency=1_000_000)
    rates: dict[str, list[float]] = {"raw": [], "unlimited": [], "limited": []}
    drains = [("unlimited", noop), ("limited", limited_noop)]
    for round_ in range(options.rounds):
        base.reset()
        rates["raw"].append(base.raw_drain(options.runs, options.concurrency))
        for name, task in drains if round_ % 2 == 0 else drains[::-1]:
            base.reset()
            rates[name].append(base.ours_drain(options.runs, options.concurrency, task=task))
            print(f"{name}: {rates[name][-1]:,.0f} runs/s", flush=True)
    Limit.objects.all().delete()
    base.reset()
    median = {name: statistics.median(values) for name, values in rates.items()}
    for name, value in median.items():
        print(f"{name:>10}: {value:8,.0f} runs/s (median of {options.rounds})")
    print(f"limited / unlimited: {median['limited'] / median['unlimited']:.2f} (goal >= 0.9)")
    paired = statistics.median(
        limited / unlimited
        for limited, unlimited in zip(rates["limited"], rates["unlimited"], strict=True)
    )
    print(f"limited / unlimited, median of the rounds' own: {paired:.2f}")
    print(f"unlimited / raw: {median['unlimited'] / median['raw']:.2f}")


if __name__ == "__main__":
    main()
