"""Bulk enqueue against raw psycopg in the same run: ``delay_many()`` of 20,000 no-op runs
(each checked, pickled, signed, previewed, with its history row and one NOTIFY) against
psycopg's pipelined ``executemany`` of the same run rows in one transaction, and ``COPY``.

    DATABASE_URL=... .venv/bin/python -m benchmarks.bulk [--runs 20000] [--rounds 3]

Rounds alternate; medians. The goal: delay_many >= 1.0 x executemany.
"""

from __future__ import annotations

import argparse
import statistics
import time

from django.core.management import call_command

from benchmarks import run as base
from django_tasks.topic import open_worker_connection
from tests.taskapp.tasks import add

RAW_COPY = f"COPY bench_raw_job {base.RAW_COLUMNS} FROM STDIN"


def raw_copy(n: int) -> float:
    """The same rows as ``base.raw_bulk``, by COPY (ids and times made by the client)."""
    import uuid
    from datetime import UTC, datetime

    base.raw(base.RAW_TABLE)
    conn = open_worker_connection()
    started = time.perf_counter()
    now = datetime.now(tz=UTC)
    with conn.transaction(), conn.cursor() as cur, cur.copy(RAW_COPY) as copy:
        for _ in range(n):
            copy.write_row(
                (uuid.uuid4(), "k", "noop", "noop", "delay", "default", 0, "[]", "SCHEDULED",
                 "Scheduled", "", now, 0, "", 0, "[]", None, None, base.PAYLOAD, "{}", "",
                 now, now, 0, False)
            )  # fmt: skip
    elapsed = time.perf_counter() - started
    conn.close()
    return n / elapsed


def ours(n: int) -> float:
    base.reset()
    started = time.perf_counter()
    add.delay_many([(1, 2)] * n)
    return n / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    call_command("migrate", verbosity=0)
    rates: dict[str, list[float]] = {"delay_many": [], "executemany": [], "copy": []}
    for _ in range(options.rounds):
        rates["executemany"].append(base.raw_bulk(options.runs))
        rates["delay_many"].append(ours(options.runs))
        rates["copy"].append(raw_copy(options.runs))
        print("  ".join(f"{k} {v[-1]:,.0f}/s" for k, v in rates.items()), flush=True)
    base.reset()
    base.raw("DROP TABLE IF EXISTS bench_raw_job")
    median = {name: statistics.median(values) for name, values in rates.items()}
    for name, value in median.items():
        print(f"{name:>12}: {value:9,.0f} runs/s (median of {options.rounds})")
    ratio = median["delay_many"] / median["executemany"]
    print(f"delay_many / executemany: {ratio:.2f} (goal >= 1.0)")
    print(f"delay_many / copy: {median['delay_many'] / median['copy']:.2f}")


if __name__ == "__main__":
    main()
