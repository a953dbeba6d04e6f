"""Chaos: kill -9 children and the supervisor, restart PostgreSQL, during a 2,000-run drain -
and the same with poison runs (tasks that kill their own process) mixed into the queue.

Afterwards every run is final and COMPLETED, every run's effect exists, no run is lost, and a
duplicated effect only ever belongs to a run that a kill interrupted (at-least-once delivery).
Poison runs end CRASHED, without taking any other run with them.
"""

import os
import signal
import time
from collections import Counter
from typing import Any

import pytest
from django.db import connection
from django.db.models import Count, Q

from django_tasks import TaskRunFuture
from django_tasks.models import TaskRun
from tests.taskapp.models import Effect
from tests.taskapp.poison import exit_process, segfault
from tests.taskapp.tasks import chaos_record

from .conftest import restart_database, wait_until, worker_log, worker_processes

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

TOTAL = 2000


def completed() -> int:
    return TaskRun.objects.filter(task_name="chaos_record", state_type="COMPLETED").count()


def kill_a_child(supervisor) -> bool:
    """kill -9 a worker process of ``supervisor`` that holds a run right now."""
    holders = (
        TaskRun.objects.filter(state_type__in=["PENDING", "RUNNING"])
        .exclude(worker="")
        .values_list("worker", flat=True)
        .distinct()
    )
    mine = worker_processes(supervisor.pid)
    for holder in holders:
        pid = int(holder.rsplit(":", 1)[1])
        if pid in mine:
            os.kill(pid, signal.SIGKILL)
            return True
    return False


def enqueue(poison: int) -> list[TaskRunFuture[Any]]:
    """TOTAL chaos runs, with ``poison`` poison runs spread among them."""
    if not poison:
        chaos_record.delay_many([(i,) for i in range(TOTAL)])
        return []
    poisoned: list[TaskRunFuture[Any]] = []
    step = TOTAL // poison
    for start in range(0, TOTAL, step):
        chaos_record.delay_many([(i,) for i in range(start, min(start + step, TOTAL))])
        poisoned.append(exit_process.delay(9) if len(poisoned) % 2 else segfault.delay())
    return poisoned


@pytest.mark.parametrize("poison", [0, 20], ids=["plain", "with-poison"])
def test_chaos_drain_loses_nothing(start_worker, poison):
    poisoned = enqueue(poison)
    supervisors = [start_worker("--concurrency", "2", "--batch-size", "5")]
    plan = [
        (150, "child"),
        (400, "supervisor"),
        (700, "database"),
        (1000, "child"),
        (1300, "supervisor"),
        (1600, "child"),
    ]
    done_actions: Counter[str] = Counter()
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        try:
            progress = completed()
        except Exception:  # the test's own connection may drop during the restart
            connection.close()
            continue
        if progress >= TOTAL:
            break
        if plan and progress >= plan[0][0]:
            action = plan[0][1]
            current = supervisors[-1]
            if action == "child":
                if kill_a_child(current):
                    done_actions["child"] += 1
                    plan.pop(0)
            elif action == "supervisor":
                current.send_signal(signal.SIGKILL)
                current.wait(10)
                done_actions["supervisor"] += 1
                supervisors.append(start_worker("--concurrency", "2", "--batch-size", "5"))
                plan.pop(0)
            else:
                if restart_database():
                    done_actions["database"] += 1
                plan.pop(0)
        time.sleep(0.02)
    connection.close()
    wait_until(lambda: all(f.state.is_final() for f in poisoned), timeout=60)

    runs = TaskRun.objects.filter(task_name="chaos_record")
    by_state = dict(runs.values_list("state_type").annotate(n=Count("id")))
    print(f"\nchaos: {TOTAL} runs, kills={dict(done_actions)}, final states={by_state}")
    assert by_state == {"COMPLETED": TOTAL}, worker_log(supervisors[-1])[-3000:]
    assert done_actions["child"] == 3
    assert done_actions["supervisor"] == 2

    labels = Counter(Effect.objects.values_list("label", flat=True))
    assert set(labels) == {f"chaos-{i}" for i in range(TOTAL)}  # every effect exists
    duplicated = {int(label.split("-")[1]) for label, n in labels.items() if n > 1}
    started_again = set(
        runs.annotate(starts=Count("states", filter=Q(states__type="RUNNING")))
        .filter(starts__gt=1)
        .values_list("parameters_preview__index", flat=True)
    )
    interrupted = set(
        runs.filter(
            Q(states__type="CRASHED") | Q(states__message__startswith="Rescued")
        ).values_list("parameters_preview__index", flat=True)
    )
    # A duplicate effect belongs to a run a kill interrupted: its history shows the crash
    # (CRASHED) or, for a short run whose states were still waiting to be written with the
    # next claim, the rescue of its claim ("Rescued: claimed by worker ..., which was lost").
    assert duplicated <= interrupted
    print(f"chaos: duplicated effects={len(duplicated)}, runs started again={len(started_again)}")
    for future in poisoned:  # final, and never more than MAX_CRASHES attempts
        run = TaskRun.objects.get(pk=future.id)
        assert run.state_type == "CRASHED", run.state_message
        assert 1 <= run.attempts <= 3
        assert "took down its worker process" in run.state_message or "lost" in run.state_message
    for supervisor in supervisors[:-1]:
        assert supervisor.poll() is not None
    supervisors[-1].send_signal(signal.SIGTERM)
    assert supervisors[-1].wait(30) == 0
