"""The rows where a hand-written psycopg queue used to be ahead, each beside its raw baseline
measured in the same run: enqueue -> start latency, bulk and single enqueue, with the drain
and the start-up they must not cost.

    DATABASE_URL=... .venv/bin/python -m benchmarks.against_raw [--rounds 3]

- enqueue -> start, idle worker, 50 runs/s, p50 and p99: ``noop.delay()`` against INSERT +
  NOTIFY to a raw LISTEN worker; goal <= 1.1x;
- bulk enqueue of ``--bulk-runs`` in one call: ``delay_many()`` against pipelined
  ``executemany`` (COPY printed too); goal >= 1.0x;
- single enqueue, one commit each: ``.delay()`` against a one-statement INSERT (and INSERT +
  NOTIFY); goal >= 0.8x;
- drain of ``--drain-runs``, 2 and 4 processes: ``runtaskworker`` against a claim of 10 per
  transaction; goal >= 1.0x;
- start-up: ``runtaskworker --concurrency 2`` to its first claim; goal <= 0.5 s.

Every pair alternates over ``--rounds`` rounds (this kind of machine is noisy); medians. The
latency of both sides is the time from the enqueue's commit - the row's ``created``, the
server's clock at the insert - to the server's clock when the task started: the claim's
``started`` for the raw worker, our run's RUNNING time (the worker's clock when it called the
function, written later with its outcome: :mod:`django_tasks.worker.journal`). The raw
worker claims and marks its rows done, without calling anything; a second raw worker, whose
claim commits before it would call the task (as ours: the attempt is counted durably first),
is printed beside it.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from django.core.management import call_command

from benchmarks import run as base
from benchmarks.bulk import raw_copy
from benchmarks.startup import one_start
from tests.taskapp.tasks import noop


def _median_of(rounds: int, *measures: Callable[[], float]) -> list[float]:
    """Each measure ``rounds`` times, alternating; the median of each."""
    values: list[list[float]] = [[] for _ in measures]
    for _ in range(rounds):
        for i, measure in enumerate(measures):
            values[i].append(measure())
    return [statistics.median(v) for v in values]


def _row(label: str, ours: str, raw: str, ratio: float | None, goal: str) -> str:
    shown = f"{ratio:.2f}" if ratio is not None else ""
    line = f"| {label} | {ours} | {raw} | {shown} | {goal} |"
    print(line, flush=True)
    return line


def latency_rows(rounds: int, runs: int) -> list[str]:
    """Against the raw LISTEN worker of ``benchmarks/run.py`` (its ``started``: its claim's
    clock, before the claim commits) - the goal's baseline - and against the same worker
    whose claim commits before it would call the task, as ours does ("claim committed");
    from the enqueue's INSERT (the row's ``created``) and from its commit (when it returned
    to the enqueuer)."""
    found: dict[str, list[base.Latency]] = {"ours": [], "raw": [], "claim committed": []}
    for _ in range(rounds):
        found["ours"].append(base.ours_latency(runs, 50))
        found["raw"].append(base.raw_latency(runs, 50))
        found["claim committed"].append(base.raw_latency(runs, 50, committed=True))
    rows = []
    for since in ("created", "committed"):
        for index, label in enumerate(("p50", "p99")):
            ours, raw, committed = (
                statistics.median(measured[since][index] for measured in found[name])
                for name in ("ours", "raw", "claim committed")
            )
            rows.append(
                _row(
                    f"enqueue -> start from its {'INSERT' if since == 'created' else 'commit'}"
                    f", idle worker, 50 runs/s, {label}",
                    f"{ours:.2f} ms",
                    f"{raw:.2f} ms (LISTEN)",
                    ours / raw,
                    "<= 1.1",
                )
            )
            rows.append(
                _row(
                    "    the same vs a raw worker whose claim commits first",
                    "",
                    f"{committed:.2f} ms",
                    ours / committed,
                    "",
                )
            )
    return rows


def bulk_rows(rounds: int, runs: int) -> list[str]:
    ours, executemany, copy = _median_of(
        rounds,
        lambda: base.ours_bulk(runs),
        lambda: base.raw_bulk(runs),
        lambda: raw_copy(runs),
    )
    return [
        _row(
            f"bulk enqueue, {runs:,} runs, one call",
            f"{ours:,.0f}/s",
            f"{executemany:,.0f}/s (executemany)",
            ours / executemany,
            ">= 1.0",
        ),
        _row("    the same by COPY (one table, no history)", "", f"{copy:,.0f}/s", None, ""),
    ]


def single_rows(rounds: int, runs: int) -> list[str]:
    ours, insert, notify = _median_of(
        rounds * 3,  # short: more rounds
        lambda: base.ours_single(runs),
        lambda: base.raw_single(runs, notify=False),
        lambda: base.raw_single(runs, notify=True),
    )
    return [
        _row(
            "single enqueue, one commit each",
            f"{ours:,.0f}/s",
            f"{insert:,.0f}/s (INSERT)",
            ours / insert,
            ">= 0.8",
        ),
        _row("    vs INSERT + NOTIFY", "", f"{notify:,.0f}/s", ours / notify, ""),
    ]


def drain_rows(rounds: int, runs: int) -> tuple[list[str], float]:
    """The drains' rows and our rate with 2 processes (the start-up's steady rate)."""
    rows, steady = [], 0.0
    for processes in (2, 4):

        def raw(processes: int = processes) -> float:
            base.reset()
            return base.raw_drain(runs, processes)

        def ours(processes: int = processes) -> float:
            base.reset()
            return base.ours_drain(runs, processes)

        o, r = _median_of(rounds, ours, raw)
        steady = steady or o
        rows.append(
            _row(
                f"drain {runs:,} no-op runs, {processes} processes",
                f"{o:,.0f}/s",
                f"{r:,.0f}/s (claim 10)",
                o / r,
                ">= 1.0",
            )
        )
    return rows, steady


def startup_rows(rounds: int, runs: int, steady: float) -> list[str]:
    """Start-up two ways: the first claim after ``runtaskworker`` is started with a run
    waiting (``benchmarks/startup.py``), and "wall - steady": ``runs`` runs waiting, the time
    from starting ``runtaskworker --concurrency 2`` until they are all done, less the time
    the same drain takes with the workers already up (``steady``, runs/s)."""
    claims = [one_start(2, "fork")[0] for _ in range(rounds)]
    walls = []
    for _ in range(rounds):
        base.reset()
        futures = noop.delay_many([()] * runs)
        started = time.perf_counter()
        proc = base.start_workers(2, wait=False)
        try:
            ids = [future.id for future in futures]
            finished = base.wait_done(base.OURS_LEFT, last=("django_tasks_taskrun", ids))
        finally:
            base.stop_workers(proc)
        walls.append(finished - started)
    wall = statistics.median(walls)
    return [
        _row(
            "start-up: runtaskworker --concurrency 2 to its first claim",
            f"{statistics.median(claims):.2f} s",
            "",
            None,
            "",
        ),
        _row(
            f"start-up: wall - steady, {runs:,} runs waiting",
            f"{wall - runs / steady:.2f} s",
            f"(wall {wall:.2f} s)",
            None,
            "<= 0.5 s",
        ),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-runs", type=int, default=300)
    parser.add_argument("--bulk-runs", type=int, default=20_000)
    parser.add_argument("--single-runs", type=int, default=1000)
    parser.add_argument("--drain-runs", type=int, default=20_000)
    options = parser.parse_args(argv)
    call_command("migrate", verbosity=0)
    base.reset()
    print("| measure | django_tasks | raw psycopg | ratio | goal |\n|---|---|---|---|---|")
    drains, steady = drain_rows(options.rounds, options.drain_runs)
    rows = [
        *latency_rows(options.rounds, options.latency_runs),
        *bulk_rows(options.rounds, options.bulk_runs),
        *single_rows(options.rounds, options.single_runs),
        *drains,
        *startup_rows(options.rounds, options.drain_runs, steady),
    ]
    base.reset()
    base.raw("DROP TABLE IF EXISTS bench_raw_job")
    version = base.raw("SHOW server_version")[0][0]
    print(f"\nPostgreSQL {version}; medians of {options.rounds} alternating rounds\n")
    print("| measure | django_tasks | raw psycopg | ratio | goal |\n|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
