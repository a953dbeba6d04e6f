"""``django.tasks`` enqueue through our backend against our own ``.delay()``, same run.

    DATABASE_URL=... .venv/bin/python -m benchmarks.django_enqueue [--runs 2000]

One commit per call (autocommit), alternating rounds, medians; Django 6 only. Both send one
statement per call (the backend's JSON document travels in the run's document).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from django_tasks.models import TaskRun
    from tests.taskapp.standard import add_json
    from tests.taskapp.tasks import add

    call_command("migrate", verbosity=0)
    rates: dict[str, list[float]] = {"delay": [], "django enqueue": []}
    for _ in range(options.rounds):
        for name, call in (("delay", add.delay), ("django enqueue", add_json.enqueue)):
            start = time.perf_counter()
            for i in range(options.runs):
                call(i, i)
            rates[name].append(options.runs / (time.perf_counter() - start))
            TaskRun.objects.all().delete()
    connection.close()
    for name, values in rates.items():
        print(f"{name:>15}: {statistics.median(values):8,.0f} runs/s (median of {len(values)})")
    ratio = statistics.median(rates["django enqueue"]) / statistics.median(rates["delay"])
    print(f"{'ratio':>15}: {ratio:.2f}")


if __name__ == "__main__":
    main()
