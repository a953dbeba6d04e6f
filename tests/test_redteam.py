"""Red team of issue 24's fixes: each test asserts what should happen, and is marked xfail
(strict) while the defect it shows is there (see the red team's report)."""

from __future__ import annotations

from typing import Any

import pytest

from django_tasks.models import TaskRun, TaskRunState
from tests.taskapp.models import Effect
from tests.taskapp.redteam import (
    async_exit_process,
    async_forks_and_returns,
    closes_descriptors,
)
from tests.taskapp.tasks import async_record, record, sleep_then_record

from .conftest import process_alive, wait_until, worker_log

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


@pytest.mark.xfail(
    strict=True, reason="red team: an async task's fork leaves a copy of the lane's loop"
)
def test_an_async_task_that_forks_neither_freezes_the_lane_nor_leaves_a_copy(start_worker):
    """The async twin of test_poison's forks_and_returns: the child returns into the lane's
    event loop. It shares the loop's epoll instance and self-pipe with the worker, takes the
    loop's wake-ups, and runs the other runs' coroutines a second time."""
    forker = async_forks_and_returns.delay("forker")
    start_worker()
    wait_until(lambda: Effect.objects.filter(label="forker-forked").exists(), timeout=60)
    child = int(Effect.objects.get(label="forker-forked").run_marker)
    later = [async_record.delay(f"async-after-the-fork-{i}") for i in range(10)]
    try:
        wait_until(lambda: forker.state.is_final() and all_final(later), timeout=20)
    finally:
        print(forker.state, [f.state.name for f in later], process_alive(child))
    assert forker.state.is_completed()
    assert all(f.state.is_completed() for f in later)
    assert not process_alive(child)


@pytest.mark.xfail(
    strict=True, reason="red team: the sync run in hand is blamed for an async run's os._exit"
)
def test_an_async_run_that_kills_its_process_is_blamed_not_the_sync_run_beside_it(
    start_worker,
):
    """An async run calls os._exit() while the process's slot runs a sync run: the journal
    names the sync run, so it is the one CRASHED "for taking down its worker process" and
    charged a crash (MAX_CRASHES); the culprit is rescued as a run of a lost worker."""
    sync_run = sleep_then_record.delay(3.0, "innocent-sync")
    start_worker()
    wait_until(lambda: TaskRun.objects.get(pk=sync_run.id).state_type == "RUNNING", timeout=60)
    poison = async_exit_process.delay(0.5)
    wait_until(lambda: sync_run.state.is_final() and poison.state.is_final(), timeout=60)
    innocent = TaskRun.objects.get(pk=sync_run.id)
    culprit = TaskRun.objects.get(pk=poison.id)
    print(innocent.state_type, innocent.crashes, innocent.state_message, names(sync_run.id))
    print(culprit.state_type, culprit.crashes, culprit.state_message, names(poison.id))
    assert innocent.crashes == 0, innocent.state_message
    assert culprit.crashes == 1, culprit.state_message


@pytest.mark.xfail(strict=True, reason="red team: a failed admission charges the whole batch")
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
    start_worker("--batch-size", "4")
    wait_until(lambda: under.state.is_final() and all_final(innocent), timeout=60)
    print(under.state, [f.state for f in innocent])
    assert all(f.state.is_completed() for f in innocent), innocent[0].state.message


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


@pytest.mark.xfail(strict=True, reason="red team: REFUSE misses a CANCELLING async run")
def test_cancelling_an_async_run_whose_preparation_fails_costs_no_other_run(start_worker):
    """The lane writes RUNNING for its batch before each run is prepared. A cancel that comes
    while a run is being prepared makes it CANCELLING; its preparation then fails, and the
    refusal (sql.REFUSE: PENDING or RUNNING only) writes nothing: the run stays CANCELLING
    until the supervisor kills the whole process after CANCEL_GRACE - and the other async
    runs in flight there with it."""
    from tests.taskapp.redteam import SlowThenRaises

    bystander = async_record.delay("bystander", 4.0)
    start_worker()
    wait_until(lambda: TaskRun.objects.get(pk=bystander.id).state_type == "RUNNING", timeout=60)
    broken = async_record.delay(SlowThenRaises(2.0))  # type: ignore[arg-type]
    wait_until(lambda: TaskRun.objects.get(pk=broken.id).state_type == "RUNNING", timeout=30)
    broken.cancel()
    wait_until(lambda: broken.state.is_final() and bystander.state.is_final(), timeout=60)
    print(broken.state, bystander.state)
    assert broken.state.type in ("CANCELLED", "FAILED")
    assert bystander.state.is_completed(), bystander.state.message
