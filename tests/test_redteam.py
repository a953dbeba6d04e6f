"""Red team of issue 24's fixes: each test asserts what should happen, and is marked xfail
(strict) while the defect it shows is there (see the red team's report)."""

from __future__ import annotations

from typing import Any

import pytest

from django_tasks.models import TaskRun, TaskRunState
from tests.taskapp.models import Effect
from tests.taskapp.redteam import closes_descriptors
from tests.taskapp.tasks import record

from .conftest import wait_until, worker_log

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def deaths(supervisor) -> int:
    return worker_log(supervisor).count(" died (")


def all_final(futures: list[Any]) -> bool:
    return all(f.state.is_final() for f in futures)


def names(run_id) -> list[str]:
    return list(TaskRunState.objects.filter(run_id=run_id).values_list("name", flat=True))


def test_a_task_that_closes_the_workers_descriptors_leaves_the_worker_working(start_worker):
    """Held: the worker's connections are reopened, the runs after it complete."""
    first = closes_descriptors.delay("closer")
    after = [record.delay(f"after-close-{i}") for i in range(3)]
    supervisor = start_worker("--batch-size", "1")
    wait_until(lambda: first.state.is_final(), timeout=60)
    wait_until(lambda: all(f.state.is_final() for f in after), timeout=60)
    run = TaskRun.objects.get(pk=first.id)
    print(run.state_type, run.state_message, [f.state for f in after], deaths(supervisor))
    assert run.state_type == "COMPLETED", run.state_message
    assert all(f.state.is_completed() for f in after)


def test_poison_on_a_later_attempt_in_an_atomic_or_caching_run_ends_each_cleanly(start_worker):
    """Held: a run that fails normally once and then kills its process on each retry ends
    CRASHED after MAX_CRASHES; an atomic run's writes are rolled back with its process; a
    caching run's key lock goes with its connection (a run of the same key is not stuck)."""
    from tests.taskapp.redteam import atomic_exit, cached_exit, fails_then_exits

    later = fails_then_exits.delay("later")
    atomic = atomic_exit.delay("atomic")
    cached = [cached_exit.delay(5), cached_exit.delay(5)]  # the same key
    after = [record.delay(f"after-{i}") for i in range(3)]
    start_worker("--batch-size", "2", "--concurrency", "2")
    wait_until(lambda: all_final([later, atomic, *cached, *after]), timeout=90)
    run = TaskRun.objects.get(pk=later.id)
    assert (run.state_type, run.crashes) == ("CRASHED", 3), run.state_message
    assert Effect.objects.filter(label="later").count() == 4  # 1 failure + 3 crashes
    assert atomic.state.type == "CRASHED"
    assert not Effect.objects.filter(label="atomic").exists()
    assert [f.state.type for f in cached] == ["CRASHED", "CRASHED"]
    assert all(f.state.is_completed() for f in after)
