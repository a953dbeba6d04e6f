"""The pages that show artifacts, with a 600 KB markdown-table artifact and a 780 KB table
artifact attached to a run: the API's detail and list, the admin's artifact and run pages,
the dashboard. Issue 24 measured about 6 s for each (every view rendered the whole markdown).

    DATABASE_URL=... .venv/bin/python -m benchmarks.artifact_pages [--rounds 5]

Each page is requested ``--rounds`` times by a superuser with Django's test client, each time
as the first view in a new process would (the renderer's cache emptied), then once more warm;
prints the median and the warm time of each, in milliseconds.
"""

# ruff: noqa: I001 - benchmarks.run sets Django up: it must be imported before Django's models.
from __future__ import annotations

import argparse
import statistics
import time

from benchmarks.run import reset

from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client

from django_tasks.artifacts import render
from django_tasks.models import Artifact
from tests.taskapp.tasks import add


def markdown_table(size: int) -> str:
    lines = ["| id | name | value | note |", "|---|---|---|---|"]
    total = row = 0
    while total < size:
        lines.append(f"| {row} | name-{row} | {row * 3.14:.2f} | some *note* on {row} |")
        total += len(lines[-1]) + 1
        row += 1
    return "\n".join(lines)


def cold() -> None:
    """As the first view in a new process (the renderer keeps its latest renders)."""
    clear = getattr(getattr(render, "_clean_html", None), "cache_clear", None)
    if clear is not None:
        clear()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args()
    call_command("migrate", verbosity=0)
    reset()
    Artifact.objects.all().delete()
    run_id = add.delay(1, 2).id
    text = markdown_table(600_000)
    table = {
        "columns": ["id", "name", "value", "note"],
        "rows": [[i, f"name-{i}", i * 3.14, f"some note on {i}"] for i in range(15_000)],
    }
    markdown = Artifact.objects.create(key="report", type="markdown", data=text, run_id=run_id)
    Artifact.objects.create(key="table", type="table", data=table, run_id=run_id)
    User.objects.filter(username="bench").delete()
    User.objects.create_superuser("bench", "bench@example.com", "bench")
    client = Client()
    client.login(username="bench", password="bench")
    pages = {
        "API artifact detail": f"/tasks/api/artifacts/{markdown.id}/",
        "API artifact list": "/tasks/api/artifacts/",
        "admin artifact page": f"/admin/django_tasks/artifact/{markdown.id}/change/",
        "admin run page (both inline)": f"/admin/django_tasks/taskrun/{run_id}/change/",
        "dashboard": "/tasks/dashboard/",
    }
    print(f"markdown artifact: {len(text):,} characters; table artifact: 15,000 rows")
    print("| page | median ms (cold) | ms (warm) |")
    print("|---|---|---|")
    for label, url in pages.items():
        times = []
        for _ in range(options.rounds):
            cold()
            started = time.perf_counter()
            response = client.get(url)
            times.append(time.perf_counter() - started)
            assert response.status_code == 200, (url, response.status_code)
        started = time.perf_counter()
        client.get(url)
        warm = time.perf_counter() - started
        print(f"| {label} | {statistics.median(times) * 1000:.0f} | {warm * 1000:.0f} |")


if __name__ == "__main__":
    main()
