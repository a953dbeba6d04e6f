"""Ten million runs of history (issue 25, goal 2; issue 26's pages with one million): every
page and list against it, the drain
beside the same drain on an empty table, and the purge while workers drain.

    .venv/bin/python -m benchmarks.history [--runs 10000000] [--requests 20] [--purge 5000000]

Steps, in one run:

1. the drain of ``--drain`` no-op runs (2 processes) on the empty table: the baseline;
2. fills the table with SQL (``generate_series``): ``--runs`` finished runs over the last 30
   days - 20 tasks, 3 queues, a tag on one run in ten, one in fifty FAILED - each with its
   three history rows (PENDING, RUNNING, final), and 10,000 runs queued in a queue no worker
   serves;
3. requests each page ``--requests`` times as a superuser (Django's test client: server time,
   no network) and prints the median, the p95 and the queries of each; over 300 ms at p95 is
   marked;
4. the same drain again, beside the table of ten million: the ratio;
5. with ``--purge N``: ``taskruns purge`` of the N oldest runs (``--purge-rate``: its
   ``--max-rate``, 60,000 runs/s; 0 for none) while 2 worker processes drain, its rate, and the
   drain's rate against step 4's.
"""

# ruff: noqa: I001 - benchmarks.run sets Django up: it must be imported before Django's models.
from __future__ import annotations

import argparse
import io
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

from benchmarks.run import ours_drain, reset, settle

from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from django_tasks.retention import purge
from datetime import timedelta

TASKS = 20
SPAN_DAYS = 30

#: A version 7 id for run ``g`` of ``n``, created ``age`` ago (PostgreSQL before 18 has no
#: uuidv7()): the id's time prefix and ``created`` agree, as they do for real runs.
UUID7 = """(
    lpad(to_hex((extract(epoch FROM {created}) * 1000)::bigint), 12, '0')
    || '7' || substr(md5(g::text), 1, 3) || '8' || substr(md5(g::text), 4, 15)
)::uuid"""
CREATED = "(now() - interval '1 day' * %(span)s * (1 - g::float8 / %(n)s))"

FILL = f"""
WITH runs AS (
    INSERT INTO django_tasks_taskrun (id, task_key, task_name, name, origin, queue, priority,
        tags, state_type, state_name, state_message, scheduled_time, attempts, worker, retries,
        retry_delays, retry_jitter, timeout, parameters, parameters_preview, traceback,
        created, updated, started, finished, blocked, has_downstream)
    SELECT {UUID7.format(created=CREATED)}, 'k' || g %% {TASKS}, 'task_' || g %% {TASKS},
           'task_' || g %% {TASKS}, 'delay', (ARRAY['default', 'emails', 'reports'])[1 + g %% 3],
           0, CASE WHEN g %% 10 = 0 THEN '["nightly"]' ELSE '[]' END::jsonb,
           CASE WHEN g %% 50 = 0 THEN 'FAILED' ELSE 'COMPLETED' END,
           CASE WHEN g %% 50 = 0 THEN 'Failed' ELSE 'Completed' END,
           CASE WHEN g %% 50 = 0 THEN 'ValueError: bad input' ELSE '' END,
           {CREATED}, 1, 'gone', 0, '[]', NULL, NULL, '\\x00', '{{}}', '', {CREATED},
           {CREATED} + interval '2 seconds', {CREATED} + interval '1 second',
           {CREATED} + interval '2 seconds', 0, false
    FROM generate_series(%(start)s, %(stop)s) AS g
    RETURNING id, created, started, finished, state_type, state_name, state_message
)
INSERT INTO django_tasks_taskrunstate (run_id, type, name, message, timestamp, worker)
SELECT id, 'PENDING', 'Pending', '', created, 'gone' FROM runs
UNION ALL SELECT id, 'RUNNING', 'Running', '', started, 'gone' FROM runs
UNION ALL SELECT id, state_type, state_name, state_message, finished, 'gone' FROM runs
"""

QUEUED = """
INSERT INTO django_tasks_taskrun (id, task_key, task_name, name, origin, queue, priority, tags,
    state_type, state_name, state_message, scheduled_time, attempts, worker, retries,
    retry_delays, retry_jitter, timeout, parameters, parameters_preview, traceback, created,
    updated, blocked, has_downstream)
SELECT gen_random_uuid(), 'k1', 'task_1', 'task_1', 'delay', 'backlog', 0, '[]', 'SCHEDULED',
       'Scheduled', '', now(), 0, '', 0, '[]', NULL, NULL, '\\x00', '{}', '', now(), now(), 0,
       false
FROM generate_series(1, 10000)
"""


def fill(n: int, span_days: float = SPAN_DAYS, chunk: int = 500_000) -> None:
    """``n`` finished runs and their history, a chunk per statement."""
    with connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit = off")
        # Rows created in the past fire migration 0027's late-run trigger one by one; no slot
        # is summarised yet, so the fill skips triggers (a superuser's setting).
        cursor.execute("SET session_replication_role = replica")
        for start in range(1, n + 1, chunk):
            stop = min(n, start + chunk - 1)
            cursor.execute(FILL, {"n": n, "start": start, "stop": stop, "span": span_days})
        cursor.execute("SET session_replication_role = DEFAULT")
        cursor.execute(QUEUED)
    settle()


PIPELINE = """
WITH made AS (
    INSERT INTO django_tasks_taskrun (id, task_key, task_name, name, origin, queue, priority,
        tags, state_type, state_name, state_message, scheduled_time, attempts, worker, retries,
        retry_delays, retry_jitter, timeout, parameters, parameters_preview, traceback,
        created, updated, started, finished, blocked, has_downstream)
    SELECT gen_random_uuid(), 'kp', 'pipeline_step', 'step ' || g, 'delay', 'default', 0,
           '[]', 'COMPLETED', 'Completed', '', now(), 1, 'gone', 0, '[]', NULL, NULL, '\\x00',
           '{}', '', now(), now(), now(), now(), 0, true
    FROM generate_series(0, %(n)s - 1) AS g
    RETURNING id, name
), numbered AS (
    SELECT id, split_part(name, ' ', 2)::int AS g FROM made
)
INSERT INTO django_tasks_taskrundependency (downstream_id, upstream_id, kind, allow_failure)
SELECT d.id, u.id, 'wait_for', false
FROM numbered d JOIN numbered u
  ON d.g >= 25 AND u.g IN (d.g - 25, (d.g / 25 - 1) * 25 + (d.g %% 25 + 7) %% 25)
RETURNING downstream_id
"""


#: Retries among the history (one run in 500 made to retry another): the graph walk looks
#: them up by id at each step, and must not read them all at each step.
RETRIES = """
UPDATE django_tasks_taskrun SET retry_of_id = (
    SELECT id FROM django_tasks_taskrun AS other WHERE other.id < django_tasks_taskrun.id
    ORDER BY other.id DESC LIMIT 1)
WHERE task_name LIKE 'task\\_%%' AND abs(hashtext(id::text)) %% 500 = 0
"""


def pipeline(n: int = 500) -> str:
    """``n`` runs in layers of 25, each waiting for two of the layer before, beside a history
    with retries: the id of one of the last layer (its run page draws all ``n``)."""
    with connection.cursor() as cursor:
        cursor.execute(RETRIES, {})  # params: "%%" is "%"
        cursor.execute(PIPELINE, {"n": n})
        return str(cursor.fetchall()[-1][0])


def pages(client: Client, run_id: str) -> dict[str, tuple[str, dict[str, Any]]]:
    changelist = reverse("admin:django_tasks_taskrun_changelist")
    piped = pipeline()
    task_page = reverse("admin:django_tasks_taskrun_task")
    over_time = reverse("admin:django_tasks_taskrun_scatter")
    return {
        "admin list": (changelist, {}),
        "admin list, state = FAILED": (changelist, {"state_type__exact": "FAILED"}),
        "admin list, task": (changelist, {"task_name__exact": "task_7"}),
        "admin list, queue": (changelist, {"queue__exact": "emails"}),
        "admin list, tag": (changelist, {"tag": "nightly"}),
        "admin list, search by id": (changelist, {"q": run_id}),
        "admin list, search by name": (changelist, {"q": "task_7"}),
        "admin list, page 200": (changelist, {"p": "200"}),
        "admin list, queue backlog (no run started)": (changelist, {"queue__exact": "backlog"}),
        "run list's dots (its own request)": (over_time, {}),
        "run list's dots, search by name": (over_time, {"q": "task_7"}),
        "run list's dots, state = FAILED": (over_time, {"state_type__exact": "FAILED"}),
        "run list's dots, queue backlog (none started)": (over_time, {"queue__exact": "backlog"}),
        "admin run page": (reverse("admin:django_tasks_taskrun_change", args=[run_id]), {}),
        "run page, 500-run graph": (reverse("admin:django_tasks_taskrun_change", args=[piped]), {}),
        "run live JSON, 500-run graph": (
            reverse("admin:django_tasks_taskrun_live", args=[piped]),
            {"graph": "x", "logs_after": "0"},
        ),
        "task page 1 h": (task_page, {"name": "task_7", "window": "1h"}),
        "task page 24 h": (task_page, {"name": "task_7", "window": "24h"}),
        "task page 7 d": (task_page, {"name": "task_7", "window": "7d"}),
        "dashboard 1 h": ("/tasks/dashboard/", {"window": "1h"}),
        "dashboard 24 h": ("/tasks/dashboard/", {"window": "24h"}),
        "dashboard 7 d": ("/tasks/dashboard/", {"window": "7d"}),
        "API runs": ("/tasks/api/runs/", {}),
        "API runs, state = FAILED": ("/tasks/api/runs/", {"state": "FAILED"}),
        "API runs, task + queue": ("/tasks/api/runs/", {"task": "task_7", "queue": "emails"}),
        "API runs, tag": ("/tasks/api/runs/", {"tag": "nightly"}),
        "API runs, search": ("/tasks/api/runs/", {"search": "task_7"}),
        "API stats": ("/tasks/api/stats/", {}),
        "metrics": ("/tasks/metrics/", {}),
    }


def timed(call: Callable[[], Any], requests: int) -> tuple[float, float, float, int]:
    """The first call's time, the median and the p95 (ms) of ``requests`` calls, and the
    queries of the last (the first of a long window summarises its closed slots)."""
    times, queries = [], 0
    for _ in range(requests):
        with CaptureQueriesContext(connection) as captured:
            started = time.perf_counter()
            call()
            times.append((time.perf_counter() - started) * 1000)
        queries = len(captured.captured_queries)
    first = times[0]
    times.sort()
    p95 = times[min(len(times) - 1, round(0.95 * len(times)) - 1)]
    return first, statistics.median(times), p95, queries


def measure_pages(requests: int) -> None:
    User.objects.filter(username="bench").delete()
    User.objects.create_superuser("bench", "bench@example.com", "bench")
    client = Client()
    client.login(username="bench", password="bench")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id FROM django_tasks_taskrun WHERE state_type = 'FAILED' "
            "ORDER BY id DESC LIMIT 1"
        )
        run_id = str(cursor.fetchone()[0])
    print("| page | first ms | median ms | p95 ms | queries |")
    print("|---|---|---|---|---|")

    def get(url: str, params: dict[str, Any]) -> Callable[[], Any]:
        def call() -> None:
            response = client.get(url, params)
            assert response.status_code == 200, (url, response.status_code)

        return call

    for label, (url, params) in pages(client, run_id).items():
        first, median, p95, queries = timed(get(url, params), requests)
        mark = " **over 300 ms**" if p95 >= 300 else ""
        print(f"| {label} | {first:.0f} | {median:.0f} | {p95:.0f}{mark} | {queries} |", flush=True)
    cli = lambda: call_command("taskruns", "ls", stdout=io.StringIO(), stderr=io.StringIO())  # noqa: E731
    first, median, p95, queries = timed(cli, requests)
    print(f"| taskruns ls | {first:.0f} | {median:.0f} | {p95:.0f} | {queries} |", flush=True)


def purge_while_draining(n: int, drain_runs: int, alone: float, max_rate: float | None) -> None:
    """Purge the ``n`` oldest runs (at most ``max_rate`` a second) while 2 processes drain;
    rates of both."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT created FROM django_tasks_taskrun WHERE task_name LIKE 'task\\_%%' "
            "ORDER BY id OFFSET %s LIMIT 1",
            [n],
        )
        cutoff = cursor.fetchone()[0]
        cursor.execute("SELECT now()")
        age = cursor.fetchone()[0] - cutoff
    result: dict[str, float] = {}

    def run_purge() -> None:
        began = time.perf_counter()
        result["deleted"] = purge(age + timedelta(seconds=1), max_rate=max_rate)
        result["seconds"] = time.perf_counter() - began

    purger = threading.Thread(target=run_purge)
    purger.start()
    rates = []
    while purger.is_alive():
        rates.append(ours_drain(drain_runs, 2, settled=False))
    purger.join()
    deleted, seconds = result["deleted"], result["seconds"]
    print(f"purge: {deleted:,.0f} runs in {seconds:.1f} s = {deleted / seconds:,.0f} runs/s")
    print(
        f"drains meanwhile: {len(rates)}, median {statistics.median(rates):,.0f}/s = "
        f"{statistics.median(rates) / alone:.2f} of the drain without the purge"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10_000_000)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--drain", type=int, default=20_000)
    parser.add_argument("--purge", type=int, default=0)
    parser.add_argument("--span-days", type=float, default=SPAN_DAYS, help="runs created over")
    parser.add_argument("--purge-rate", type=float, default=60_000.0, help="0: unthrottled")
    options = parser.parse_args()
    call_command("migrate", verbosity=0)
    reset()
    settle()
    empty = statistics.median(ours_drain(options.drain, 2, settled=False) for _ in range(3))
    reset()
    print(f"drain on the empty table (median of 3): {empty:,.0f}/s", flush=True)
    began = time.perf_counter()
    fill(options.runs, options.span_days)
    print(f"filled {options.runs:,} runs in {time.perf_counter() - began:.0f} s", flush=True)
    measure_pages(options.requests)
    full = statistics.median(ours_drain(options.drain, 2) for _ in range(3))
    print(f"drain beside {options.runs:,} runs: {full:,.0f}/s = {full / empty:.2f} of empty")
    if options.purge:
        rate = options.purge_rate or None
        print(f"purge of {options.purge:,} runs, --max-rate {rate or 'none'}:")
        purge_while_draining(options.purge, options.drain, full, rate)


if __name__ == "__main__":
    main()
