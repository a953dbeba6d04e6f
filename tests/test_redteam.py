"""Red team of issue 24's fixes: each test asserts what should happen, and is marked xfail
(strict) while the defect it shows is there (see the red team's report)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from django_tasks.models import TaskRun, TaskRunState
from tests.taskapp.models import Effect
from tests.taskapp.redteam import (
    async_exit_process,
    async_forks_and_returns,
    closes_descriptors,
    resets_signal,
    timed_record,
)
from tests.taskapp.tasks import async_record, record, sleep_then_record, too_slow

from .conftest import process_alive, session_pids, wait_until, worker_log

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def deaths(supervisor) -> int:
    return worker_log(supervisor).count(" died (")


def names(run_id) -> list[str]:
    return list(TaskRunState.objects.filter(run_id=run_id).values_list("name", flat=True))


def test_a_task_that_resets_sigalrm_does_not_turn_the_next_timeout_into_a_crash(start_worker):
    first = resets_signal.delay("SIGALRM")
    slow = too_slow.delay(3.0)  # timeout_seconds=0.5
    supervisor = start_worker("--batch-size", "2")
    wait_until(lambda: first.state.is_final() and slow.state.is_final(), timeout=60)
    run = TaskRun.objects.get(pk=slow.id)
    print(run.state_type, run.state_name, run.state_message, names(slow.id), deaths(supervisor))
    assert (run.state_type, run.state_name) == ("FAILED", "TimedOut"), run.state_message
    assert deaths(supervisor) == 0


def test_a_task_that_resets_sigusr1_does_not_turn_the_next_cancel_into_a_crash(start_worker):
    first = resets_signal.delay("SIGUSR1")
    slow = sleep_then_record.delay(20.0, "cancelled")
    supervisor = start_worker("--batch-size", "2")
    wait_until(lambda: TaskRun.objects.get(pk=slow.id).state_type == "RUNNING", timeout=60)
    slow.cancel()
    wait_until(lambda: slow.state.is_final(), timeout=60)
    run = TaskRun.objects.get(pk=slow.id)
    print(run.state_type, run.state_name, run.state_message, names(slow.id), deaths(supervisor))
    assert run.state_type == "CANCELLED", run.state_message
    assert deaths(supervisor) == 0


def test_a_task_that_closes_the_workers_descriptors_leaves_the_worker_working(start_worker):
    first = closes_descriptors.delay("closer")
    after = [record.delay(f"after-close-{i}") for i in range(3)]
    supervisor = start_worker("--batch-size", "1")
    wait_until(lambda: first.state.is_final(), timeout=60)
    wait_until(lambda: all(f.state.is_final() for f in after), timeout=60)
    run = TaskRun.objects.get(pk=first.id)
    print(run.state_type, run.state_message, [f.state for f in after], deaths(supervisor))
    print(worker_log(supervisor)[-3000:])
    assert run.state_type == "COMPLETED", run.state_message
    assert all(f.state.is_completed() for f in after)


def test_an_async_task_that_forks_neither_freezes_the_lane_nor_leaves_a_copy(start_worker):
    """The async twin of test_poison's forks_and_returns: the child returns into the lane's
    event loop. It shares the loop's epoll instance and self-pipe with the worker, takes the
    loop's wake-ups, and runs the other runs' coroutines a second time."""
    forker = async_forks_and_returns.delay("forker")
    supervisor = start_worker()
    wait_until(lambda: Effect.objects.filter(label="forker-forked").exists(), timeout=60)
    child = int(Effect.objects.get(label="forker-forked").run_marker)
    later = [async_record.delay(f"async-after-the-fork-{i}") for i in range(10)]
    try:
        wait_until(lambda: all(f.state.is_final() for f in [forker, *later]), timeout=20)
    finally:
        print(forker.state, [f.state.name for f in later], process_alive(child))
    assert forker.state.is_completed()
    assert all(f.state.is_completed() for f in later)
    assert not process_alive(child)


def test_an_async_run_that_kills_its_process_is_blamed_not_the_sync_run_beside_it(
    start_worker,
):
    sync_run = sleep_then_record.delay(3.0, "innocent-sync")
    supervisor = start_worker()
    wait_until(lambda: TaskRun.objects.get(pk=sync_run.id).state_type == "RUNNING", timeout=60)
    poison = async_exit_process.delay(0.5)
    wait_until(lambda: sync_run.state.is_final() and poison.state.is_final(), timeout=60)
    innocent = TaskRun.objects.get(pk=sync_run.id)
    culprit = TaskRun.objects.get(pk=poison.id)
    print(innocent.state_type, innocent.crashes, innocent.state_message, names(sync_run.id))
    print(culprit.state_type, culprit.crashes, culprit.state_message, names(poison.id))
    assert innocent.crashes == 0, innocent.state_message
    assert culprit.crashes == 1, culprit.state_message


def test_a_limit_row_with_a_bad_rate_costs_only_the_runs_under_it(start_worker):
    """A limit whose rate_interval was edited by SQL into NaN (no CHECK constraint stops it):
    admission fails for every batch that holds a run under the limit. The runs claimed in
    the same batch that no limit concerns must not pay for it."""
    from django.db import connection

    from django_tasks.models import Limit
    from tests.taskapp.tasks import limited_sleep

    Limit.objects.create(scope="tag", name="limited", rate="1/s")
    with connection.cursor() as cursor:
        cursor.execute("UPDATE django_tasks_limit SET rate_interval = 'NaN'")
    under = limited_sleep.delay(0.0, "under the bad limit")
    innocent = [record.delay(f"innocent-{i}") for i in range(3)]
    supervisor = start_worker("--batch-size", "4")
    wait_until(lambda: all(f.state.is_final() for f in [under, *innocent]), timeout=60)
    print([(f.state.type, f.state.message) for f in [under, *innocent]])
    assert all(f.state.is_completed() for f in innocent), innocent[0].state.message
