"""Drain and enqueue rates of django_tasks against a raw psycopg SKIP LOCKED baseline.

Both run in the same process run, on the same database, with the same table shape, so the
ratio is what matters (absolute numbers depend on the machine).

    .venv/bin/python -m benchmarks.drain [--runs 5000] [--processes 1 2]

Uses ``DATABASE_URL`` when set, else the embedded PostgreSQL; the data goes to a separate
database (``django_tasks_bench`` on the embedded server) that is emptied first.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
os.environ.setdefault("DJANGO_TASKS_DB_NAME", "django_tasks_bench")
sys.path.insert(0, str(ROOT))

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402

from django_tasks.topic import open_worker_connection  # noqa: E402
from tests.taskapp.tasks import noop  # noqa: E402

RAW_TABLE = """
DROP TABLE IF EXISTS bench_raw_job;
CREATE TABLE bench_raw_job (LIKE django_tasks_taskrun INCLUDING DEFAULTS);
ALTER TABLE bench_raw_job ADD PRIMARY KEY (id);
CREATE INDEX bench_raw_ready ON bench_raw_job (queue, priority DESC, scheduled_time)
    WHERE state_type = 'SCHEDULED';
"""
RAW_INSERT = """
INSERT INTO bench_raw_job (id, task_key, task_name, name, origin, queue, priority, tags,
    state_type, state_name, state_message, scheduled_time, attempts, worker, parameters,
    parameters_preview, traceback, created, updated)
VALUES (gen_random_uuid(), 'k', 'noop', 'noop', 'delay', 'default', 0, '[]', 'SCHEDULED',
    'Scheduled', '', now(), 0, '', %s, '{}', '', now(), now())
"""
RAW_CLAIM = """
UPDATE bench_raw_job SET state_type = 'RUNNING', worker = %s, updated = now()
WHERE id IN (SELECT id FROM bench_raw_job WHERE state_type = 'SCHEDULED' AND queue = 'default'
             ORDER BY priority DESC, scheduled_time LIMIT 10 FOR UPDATE SKIP LOCKED)
RETURNING id, parameters
"""
RAW_DONE = "UPDATE bench_raw_job SET state_type = 'COMPLETED', updated = now() WHERE id = ANY(%s)"


def raw_drain_process(worker: str) -> None:
    conn = open_worker_connection()
    while True:
        with conn.transaction():
            rows = conn.execute(RAW_CLAIM, [worker]).fetchall()
            if not rows:
                break
            conn.execute(RAW_DONE, [[row[0] for row in rows]])
    conn.close()


def raw_baseline(runs: int, processes: int) -> float:
    conn = open_worker_connection()
    conn.execute(RAW_TABLE)
    payload = b"x" * 64
    with conn.cursor() as cur, conn.transaction():
        cur.executemany(RAW_INSERT, [[payload]] * runs)
    conn.close()
    started = time.perf_counter()
    pool = [
        multiprocessing.Process(target=raw_drain_process, args=(f"raw-{i}",))
        for i in range(processes)
    ]
    for proc in pool:
        proc.start()
    for proc in pool:
        proc.join()
    return runs / (time.perf_counter() - started)


def enqueue_rate(runs: int, *, in_one_transaction: bool) -> float:
    started = time.perf_counter()
    if in_one_transaction:
        with transaction.atomic():
            for _ in range(runs):
                noop.delay()
    else:
        for _ in range(runs):
            noop.delay()
    return runs / (time.perf_counter() - started)


def raw_enqueue_rate(runs: int) -> float:
    conn = open_worker_connection()
    conn.execute(RAW_TABLE)
    payload = b"x" * 64
    started = time.perf_counter()
    for _ in range(runs):
        conn.execute(RAW_INSERT, [payload])
        conn.execute("SELECT pg_notify('bench', 'default')")
    rate = runs / (time.perf_counter() - started)
    conn.close()
    return rate


def worker_drain(runs: int, processes: int) -> float:
    enqueue_rate(runs, in_one_transaction=True)
    env = dict(os.environ, DJANGO_TASKS_TEST_DB=connection.settings_dict["NAME"])
    command = [sys.executable, str(ROOT / "manage.py"), "runtaskworker", "--burst", "-v", "0"]
    started = time.perf_counter()
    pool = [subprocess.Popen(command, cwd=ROOT, env=env) for _ in range(processes)]
    for proc in pool:
        if proc.wait() != 0:
            raise SystemExit("worker failed")
    return runs / (time.perf_counter() - started)


def reset() -> None:
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE django_tasks_taskrun, django_tasks_taskrunstate")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5000)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    options = parser.parse_args(argv)
    call_command("migrate", verbosity=0)
    reset()
    rows: list[tuple[str, float, float]] = []
    single = min(options.runs, 2000)
    raw_enq = raw_enqueue_rate(single)
    ours_enq = enqueue_rate(single, in_one_transaction=False)
    rows.append(("enqueue, one per commit (+NOTIFY)", ours_enq, raw_enq))
    reset()
    for processes in options.processes:
        raw = raw_baseline(options.runs, processes)
        reset()
        ours = worker_drain(options.runs, processes)
        reset()
        rows.append((f"drain {options.runs} no-op runs, {processes} worker process(es)", ours, raw))
    version = connection.cursor().connection.info.server_version
    print(f"\nPostgreSQL {version}; runs/s (higher is better)\n")
    print(f"| {'measure':<48} | {'django_tasks':>12} | {'raw psycopg':>11} | {'ratio':>5} |")
    print(f"|{'-' * 50}|{'-' * 14}|{'-' * 13}|{'-' * 7}|")
    for label, ours_rate, raw_rate in rows:
        ratio = ours_rate / raw_rate
        print(f"| {label:<48} | {ours_rate:>12,.0f} | {raw_rate:>11,.0f} | {ratio:>5.2f} |")
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS bench_raw_job")


if __name__ == "__main__":
    main()
