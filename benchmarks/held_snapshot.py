"""The drain while one long transaction holds its snapshot (issue 25, goal 1), beside the raw
psycopg SKIP LOCKED queue under the same snapshot, in the same run.

    .venv/bin/python -m benchmarks.held_snapshot [--runs 20000] [--rounds 5] [--after 60]

A report query, a ``pg_dump`` or a session left idle in a transaction keeps the oldest
snapshot (the xmin horizon) back: VACUUM may then remove no row version that died after it,
so each claim walks over more dead index entries. This benchmark drains ``--runs`` no-op runs
with ``--concurrency`` worker processes (ours, then the raw consumer on its own table) three
times, the median as the baseline; opens a REPEATABLE READ transaction that reads the run
table and stays open; then, ``--rounds`` times, enqueues and drains ``--runs`` runs again in
each queue. It prints each round's rate as a ratio of the baseline of the same queue, with
the dead row versions PostgreSQL counts and the autovacuums of the queue tables so far; then
ends the transaction and drains once at once and once more ``--after`` seconds later
(autovacuum's default naptime is 60 s). Nothing is vacuumed by hand between drains:
autovacuum runs with its defaults, as in production.

The goal (issue 25): every round >= 0.8 x the baseline, and >= 0.95 x within 60 s after the
transaction ends.
"""

# ruff: noqa: I001 - benchmarks.run sets Django up: it must be imported before Django's models.
from __future__ import annotations

import argparse
import statistics
import time

from benchmarks.run import RAW_TABLE, ours_drain, raw, raw_drain, reset, settle

from django.core.management import call_command

from django_tasks.topic import open_worker_connection

DEAD = """SELECT relname, n_dead_tup, autovacuum_count FROM pg_stat_user_tables
WHERE relname IN ('django_tasks_taskrun', 'django_tasks_taskrunstate', 'bench_raw_job')"""


def dead_tuples() -> str:
    """PostgreSQL's count of dead row versions (the statistics lag a little), and how many
    times autovacuum has run on each queue table: it scans table and indexes in vain while
    the snapshot is held, beside the drains, on the same cores."""
    rows = {name: (dead, vacuums) for name, dead, vacuums in raw(DEAD)}
    runs, states = (
        rows.get("django_tasks_taskrun", (0, 0)),
        rows.get("django_tasks_taskrunstate", (0, 0)),
    )
    raw_table = rows.get("bench_raw_job", (0, 0))
    return (
        f"ours {runs[0] + states[0]:,}, raw {raw_table[0]:,} | ours {runs[1]}, raw {raw_table[1]}"
    )


def both(runs: int, concurrency: int) -> tuple[float, float]:
    """One drain of each queue, in the tables as they are."""
    return (
        ours_drain(runs, concurrency, settled=False),
        raw_drain(runs, concurrency, fresh=False),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--after", type=float, default=60.0)
    options = parser.parse_args()
    call_command("migrate", verbosity=0)
    reset()
    raw(RAW_TABLE)
    settle()
    # The baseline: the median of three drains of each queue (one drain varies by +-10 %).
    drains = [both(options.runs, options.concurrency) for _ in range(3)]
    base_ours = statistics.median(ours for ours, _ in drains)
    base_raw = statistics.median(raw_rate for _, raw_rate in drains)
    print(f"{options.runs:,} no-op runs a drain, {options.concurrency} processes")
    print(f"baseline (median of 3 drains): ours {base_ours:,.0f}/s, raw {base_raw:,.0f}/s")
    print(
        "| when | runs churned | ours / baseline | raw / baseline | dead row versions | "
        "autovacuums of the run table so far |"
    )
    print("|---|---|---|---|---|---|")
    holder = open_worker_connection()
    holder.autocommit = False
    holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    holder.execute("SELECT count(*) FROM django_tasks_taskrun").fetchone()  # the snapshot
    try:
        for round_ in range(1, options.rounds + 1):
            ours, raw_rate = both(options.runs, options.concurrency)
            print(
                f"| snapshot held, round {round_} | {round_ * options.runs:,} | "
                f"{ours / base_ours:.2f} | {raw_rate / base_raw:.2f} | {dead_tuples()} |"
            )
    finally:
        holder.rollback()
        holder.close()
    ended = time.monotonic()
    ours, raw_rate = both(options.runs, options.concurrency)
    print(
        f"| just after the transaction ended | | {ours / base_ours:.2f} | "
        f"{raw_rate / base_raw:.2f} | {dead_tuples()} |"
    )
    time.sleep(max(0.0, options.after - (time.monotonic() - ended)))
    ours, raw_rate = both(options.runs, options.concurrency)
    print(
        f"| {options.after:.0f} s after it ended | | {ours / base_ours:.2f} | "
        f"{raw_rate / base_raw:.2f} | {dead_tuples()} |"
    )
    reset()


if __name__ == "__main__":
    main()
