"""What limits cost when they do not bind: a drain of no-op runs with a tag concurrency limit
and a rate limit far above what the workers reach, against the same drain without, and the
raw psycopg SKIP LOCKED drain, in the same run. Then how evenly a rate that binds spaces its
starts: the most starts in any second beside the rate.

    DATABASE_URL=... .venv/bin/python -m benchmarks.limits [--runs 20000] [--rounds 2]
        [--binding-runs 10000] [--binding-seconds 8]

``limited_noop`` (tests/taskapp/tasks.py) has the tag ``bench`` - limited here to 1,000,000 at
once - and ``rate_limit="999999999/s"``: every claimed batch of it asks the database for
admission, and every run that held a slot fires the trigger that looks for waiting runs.
Each round drains raw, then unlimited and limited - in turn first, so that neither always runs
second. Medians; and, as this machine's speed drifts from one drain to the next, also the
median of each round's own limited / unlimited (its two drains are neighbours in time). The
goal: limited >= 0.9 x unlimited.

The rate that binds: ``fifty_a_second`` (``rate_limit="50/s"``), ``--binding-runs`` queued at
once for two pools of ``--concurrency`` processes, which run for ``--binding-seconds`` (the
first seconds are the pools reserving a start for each run, while the reserved starts that
come meanwhile start). The goal: at most N + 10 % in any second (the start clock allows
N + 1), and about N a second all along.
"""

from __future__ import annotations

import argparse
import statistics
import time

from django.core.management import call_command

from benchmarks import run as base
from django_tasks.models import Limit, RateState
from tests.starts import busiest, starts
from tests.taskapp.tasks import fifty_a_second, limited_noop, noop


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--binding-runs", type=int, default=10_000)
    parser.add_argument("--binding-seconds", type=float, default=8.0)
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
    binding_rate(options.binding_runs, options.binding_seconds, options.concurrency)


LIVE_WORKERS = "SELECT count(*) FROM django_tasks_worker WHERE stopped IS NULL"


def binding_rate(runs: int, seconds: float, concurrency: int) -> None:
    """Two pools on a queue of ``runs`` runs of a task with a rate of 50/s, for ``seconds``:
    the most starts in any second (and half second), beside the rate. The rate's clocks are
    reset first: a previous run left them minutes ahead (the starts reserved for its runs)."""
    base.reset()
    RateState.objects.all().delete()
    base.settle()
    pools = [base.start_workers(concurrency), base.start_workers(concurrency)]
    try:
        base.wait_for(LIVE_WORKERS, 2 * concurrency, timeout=60)
        fifty_a_second.delay_many([(f"r{i}",) for i in range(runs)])
        time.sleep(seconds)
    finally:
        for pool in pools:
            base.stop_workers(pool)
    times = starts("fifty_a_second")
    span = (times[-1] - times[0]).total_seconds()
    print(
        f"binding rate 50/s, {runs:,} queued on 2 pools: at most {busiest(times, 1.0)} starts "
        f"in any 1 s ({busiest(times, 0.5)} in any 0.5 s); {len(times)} starts in {span:.1f} s "
        f"= {(len(times) - 1) / span:.1f}/s (goal: <= 55 in any 1 s)"
    )
    base.reset()


if __name__ == "__main__":
    main()
