"""What enqueuing due ticks costs a worker: 1,000 schedules ticking every minute.

    DATABASE_URL=... .venv/bin/python -m benchmarks.schedules [--schedules 1000] [--rounds 3]

Each round puts every schedule's next tick on the last minute boundary (as at the start of a
minute, when all of them are due) and has one worker connection enqueue them with the code the
workers' control threads run (``enqueue_due_ticks``), until none is due. The CPU time of this
process for that is the work one minute of ticks costs; divided by 60 s it is the share of
one worker's CPU. The looks that find nothing due (SCHEDULE_INTERVAL apart, 60 a minute by
default) are measured too. The goal: under 5 % of one worker's CPU, both together.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--schedules", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from django_tasks.conf import task_settings
    from django_tasks.models import Schedule, TaskRun, TaskRunState
    from django_tasks.schedules.ticker import enqueue_due_ticks
    from django_tasks.schedules.timing import Every
    from django_tasks.worker.connection import QueueConnection

    call_command("migrate", verbosity=0)
    Schedule.objects.all().delete()
    Schedule.objects.bulk_create(
        Schedule(name=f"bench-{i}", task_name="noop", args=[], interval_seconds=60)
        for i in range(options.schedules)
    )
    db = QueueConnection("default", lambda: False)
    busy, walls, idle = [], [], []
    for _ in range(options.rounds):
        TaskRunState.objects.all().delete()
        TaskRun.objects.all().delete()
        boundary = Every(60).latest_at_or_before(db.db_time())
        Schedule.objects.update(next_tick=boundary)
        cpu, wall = time.process_time(), time.perf_counter()
        enqueued = 0
        while ticks := enqueue_due_ticks(db).enqueued:
            enqueued += ticks
        busy.append(time.process_time() - cpu)
        walls.append(time.perf_counter() - wall)
        assert enqueued == options.schedules, enqueued
        assert TaskRun.objects.count() == options.schedules
        looks = int(60 / task_settings().SCHEDULE_INTERVAL)
        cpu = time.process_time()
        for _ in range(looks):
            enqueue_due_ticks(db)
        idle.append(time.process_time() - cpu)
    db.close()
    Schedule.objects.all().delete()
    TaskRun.objects.all().delete()
    connection.close()
    tick_cpu, idle_cpu = statistics.median(busy), statistics.median(idle)
    print(
        f"{options.schedules:,} due ticks enqueued: {tick_cpu:.3f} s CPU, "
        f"{statistics.median(walls):.3f} s wall (median of {options.rounds})"
    )
    print(f"{looks} looks finding nothing due: {idle_cpu:.3f} s CPU")
    share = (tick_cpu + idle_cpu) / 60 * 100
    print(f"share of one worker's CPU per minute: {share:.2f} % (goal: under 5 %)")


if __name__ == "__main__":
    main()
