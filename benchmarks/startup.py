"""How long a worker pool takes to start: from launching ``manage.py runtaskworker
--concurrency 2`` to its first claim (a run waiting before the start is taken: PENDING), and to
that run's completion. The goal (issue 17): first claim within 1 s.

Both ways of starting worker processes are measured, interleaved: ``WORKER_START_METHOD``
"fork" (the default: forked by the fork server, Django set up once) and "spawn" (each a new
interpreter).

    DATABASE_URL=... .venv/bin/python -m benchmarks.startup [--rounds 5] [--concurrency 2]

Medians of the rounds; the interpreter and Django setup alone (``python -c "import django;
django.setup()"``) are printed beside them, the floor a freshly started process pays.
"""

from __future__ import annotations

import argparse
import json
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


def one_start(concurrency: int, method: str) -> tuple[float, float]:
    base.reset()
    future = add.delay(1, 2)
    settings = json.dumps({"WORKER_START_METHOD": method})
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, str(base.ROOT / "manage.py"), "runtaskworker", "-v", "0",
         "--concurrency", str(concurrency)],
        cwd=base.ROOT,
        env={**os.environ, "DJANGO_TASKS_TEST_SETTINGS": settings},
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


#: A raw worker's start: the interpreter, psycopg, a connection and one SKIP LOCKED claim.
RAW_START = """
import sys, psycopg
with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    conn.execute(
        "SELECT id FROM bench_raw_job WHERE state_type = 'SCHEDULED' "
        "ORDER BY priority DESC, scheduled_time LIMIT 10 FOR UPDATE SKIP LOCKED"
    ).fetchall()
"""


def raw_start() -> float:
    from django.db import connection
    from psycopg.conninfo import make_conninfo

    params = connection.get_connection_params()
    for key in ("cursor_factory", "context", "prepare_threshold"):
        params.pop(key, None)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", RAW_START, make_conninfo(**params)], check=True)
    return time.perf_counter() - started


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
    base.raw(base.RAW_TABLE)  # the raw worker's table (empty: its first claim finds nothing)
    claims: dict[str, list[float]] = {"fork": [], "spawn": []}
    completions: dict[str, list[float]] = {"fork": [], "spawn": []}
    setups, raws = [], []
    for _ in range(options.rounds):
        for method in claims:
            claim, done = one_start(options.concurrency, method)
            claims[method].append(claim)
            completions[method].append(done)
            print(f"{method}: first claim {claim:.2f} s, completed {done:.2f} s", flush=True)
        setups.append(django_setup())
        raws.append(raw_start())
    base.reset()
    for method in claims:
        print(
            f"runtaskworker --concurrency {options.concurrency}, {method}: first claim after "
            f"{statistics.median(claims[method]):.2f} s, run completed after "
            f"{statistics.median(completions[method]):.2f} s"
        )
    print(
        f"(medians of {options.rounds}; goal: first claim < 1 s); interpreter + Django setup "
        f"alone: {statistics.median(setups):.2f} s; a raw psycopg worker (interpreter, "
        f"connection, first claim): {statistics.median(raws):.2f} s"
    )


if __name__ == "__main__":
    main()
