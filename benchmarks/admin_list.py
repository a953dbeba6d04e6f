"""The admin's run list with a million runs in the table: time and queries per page.

    .venv/bin/python -m benchmarks.admin_list [--runs 1000000]

Fills the benchmark database (``django_tasks_bench``, emptied first) with finished runs of
the last days, as months of use would leave them, then requests the run list as a superuser
with Django's test client: the first page, filtered pages and a search, five times each,
and prints the median time and the number of queries of each.
"""

# ruff: noqa: I001 - benchmarks.run sets Django up: it must be imported before Django's models.
from __future__ import annotations

import argparse
import statistics
import time

from benchmarks.run import OLD_UUID7, RAW_COLUMNS, reset, settle

from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

PAGES = {
    "first page": {},
    "state = FAILED": {"state_type__exact": "FAILED"},
    "task = report": {"task_name__exact": "report"},
    "created in the last hour": {"created": "1h"},
    "search by task name": {"q": "report"},
    "search by run id": {"q": "RUN_ID"},
}


def fill(n: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO django_tasks_taskrun {RAW_COLUMNS}
            SELECT {OLD_UUID7}, 'k', CASE WHEN g %% 7 = 0 THEN 'report' ELSE 'old' END,
                   'old', 'delay', 'default', 0, '[]',
                   CASE WHEN g %% 50 = 0 THEN 'FAILED' ELSE 'COMPLETED' END,
                   CASE WHEN g %% 50 = 0 THEN 'Failed' ELSE 'Completed' END, '',
                   now() - interval '1 day', 1, 'gone', 0, '[]', NULL, NULL, '\\x00', '{{}}',
                   '', now() - interval '1 day', now() - interval '1 day', 0, false
            FROM generate_series(1, %s) AS g
            """,
            [n],
        )
        cursor.execute(
            "SELECT id FROM django_tasks_taskrun ORDER BY id LIMIT 1 OFFSET %s", [n // 2]
        )
        return str(cursor.fetchone()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=1_000_000)
    options = parser.parse_args()
    call_command("migrate", verbosity=0)
    reset()
    run_id = fill(options.runs)
    settle()
    User.objects.filter(username="bench").delete()
    User.objects.create_superuser("bench", "bench@example.com", "bench")
    client = Client()
    client.login(username="bench", password="bench")
    url = reverse("admin:django_tasks_taskrun_changelist")
    print(f"{options.runs:,} runs in the table")
    print("| page | median ms | queries |")
    print("|---|---|---|")
    for label, params in PAGES.items():
        query = {k: (run_id if v == "RUN_ID" else v) for k, v in params.items()}
        times, queries = [], 0
        for _ in range(5):
            with CaptureQueriesContext(connection) as captured:
                started = time.perf_counter()
                response = client.get(url, query)
                times.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, response.status_code
            queries = len(captured.captured_queries)
        print(f"| {label} | {statistics.median(times):.0f} | {queries} |")
    reset()


if __name__ == "__main__":
    main()
