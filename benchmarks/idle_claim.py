"""The claim an idle worker sends when a NOTIFY wakes it - the one a new run's start waits for.

    DATABASE_URL=... .venv/bin/python -m benchmarks.idle_claim [--rounds 150]
        [--against PATH --latency-rounds 4 --latency-runs 300]

- the claim statement alone, on a connection idle for 20 ms (as a worker's is between runs),
  one ready run each time: without the flush CTEs (what an idle worker sends: nothing
  deferred to write) and with them, beside a raw ``UPDATE ... SKIP LOCKED`` claim and a
  ``SELECT 1`` on the same kind of idle connection (the round trip's floor), alternating;
- with ``--against PATH`` (another checkout, e.g. a clone at an earlier commit): enqueue ->
  start of an idle worker running this checkout's code and PATH's, interleaved with the raw
  LISTEN worker of :mod:`benchmarks.run`, p50 and p99 from the enqueue's INSERT.

Medians (and 90th percentiles) in microseconds; latencies in ms.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.core.management import call_command

from benchmarks import run as base
from django_tasks import sql
from django_tasks.connect import open_worker_connection
from tests.taskapp.tasks import noop

#: A worker's claim parameters (one run, nothing deferred, no limits, no floor).
PARAMS = {
    "queue": "default",
    "limit": 1,
    "worker": "bench",
    "late_after": 60.0,
    "done": "[]",
    "task_keys": [],
    "slot_queues": [],
    "slot_tags": [],
    "floor_priority": None,
    "floor_time": None,
}
IDLE = 0.02  # seconds a connection waits before each measured statement


def claim_alone(rounds: int) -> dict[str, list[float]]:
    """Each statement's round trip (seconds) on its own idle connection, ``rounds`` times."""
    base.reset()
    base.raw(base.RAW_TABLE)
    enqueuer = open_worker_connection()
    enqueuer.autocommit = True
    statements: dict[str, tuple[str, Any]] = {
        "ours, no flush (idle worker)": (sql.claim(flushes=False), PARAMS),
        "ours, with the flush CTEs": (sql.claim(flushes=True), PARAMS),
        "raw claim": (base.RAW_CLAIM_COMMITTED, ["raw"]),
        "SELECT 1": ("SELECT 1", None),
    }
    connections = {name: open_worker_connection() for name in statements}
    for conn in connections.values():
        conn.autocommit = True
    times: dict[str, list[float]] = {name: [] for name in statements}
    try:
        for _ in range(rounds):
            noop.delay()
            noop.delay()
            enqueuer.execute(base.RAW_INSERT, [base.PAYLOAD])
            for name, (query, params) in statements.items():
                time.sleep(IDLE)
                began = time.perf_counter()
                rows = connections[name].execute(query, params, prepare=True).fetchall()
                times[name].append(time.perf_counter() - began)
                assert rows, name  # each claim took a run
    finally:
        for conn in [enqueuer, *connections.values()]:
            conn.close()
    return times


def latency(rounds: int, runs: int, against: Path) -> dict[str, list[base.Latency]]:
    """Enqueue -> start, interleaved: this checkout, ``against``, the raw LISTEN worker."""
    measures: dict[str, Callable[[], base.Latency]] = {
        "this checkout": lambda: base.ours_latency(runs, 50),
        str(against): lambda: base.ours_latency(runs, 50, root=against),
        "raw LISTEN worker": lambda: base.raw_latency(runs, 50),
    }
    found: dict[str, list[base.Latency]] = {name: [] for name in measures}
    for _ in range(rounds):
        for name, measure in measures.items():
            found[name].append(measure())
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=150)
    parser.add_argument("--against", type=Path)
    parser.add_argument("--latency-rounds", type=int, default=4)
    parser.add_argument("--latency-runs", type=int, default=300)
    options = parser.parse_args(argv)
    call_command("migrate", verbosity=0)
    print("| statement, on a connection idle 20 ms | p50 us | p90 us |\n|---|---|---|")
    for name, values in claim_alone(options.rounds).items():
        values = sorted(values[10:])  # the first rounds prepare the statements
        p90 = values[int(len(values) * 0.9)]
        print(f"| {name} | {statistics.median(values) * 1e6:,.0f} | {p90 * 1e6:,.0f} |")
    if options.against is None:
        return
    found = latency(options.latency_rounds, options.latency_runs, options.against)
    print("\n| enqueue -> start, idle worker, 50 runs/s | p50 ms | p99 ms |\n|---|---|---|")
    for name, measured in found.items():
        p50, p99 = (statistics.median(m["created"][i] for m in measured) for i in (0, 1))
        print(f"| {name} | {p50:.2f} | {p99:.2f} |")
    base.reset()


if __name__ == "__main__":
    main()
