"""Red team of issue 24's fixes: each test asserts what should happen, and is marked xfail
(strict) while the defect it shows is there (see the red team's report)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from django_tasks.models import TaskRun, TaskRunState
from tests.taskapp.models import Effect
from tests.taskapp.redteam import (
    async_exit_process,
    async_forks_and_returns,
    closes_descriptors,
    resets_signal,
)
from tests.taskapp.tasks import async_record, record, sleep_then_record, too_slow

from .conftest import process_alive, wait_until, worker_log

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def deaths(supervisor) -> int:
    return worker_log(supervisor).count(" died (")


def all_final(futures: list[Any]) -> bool:
    return all(f.state.is_final() for f in futures)


def names(run_id) -> list[str]:
    return list(TaskRunState.objects.filter(run_id=run_id).values_list("name", flat=True))


@pytest.mark.xfail(
    strict=True,
    reason="red team: a reset SIGALRM kills the next timed-out run's process, which is blamed",
)
def test_a_task_that_resets_sigalrm_does_not_turn_the_next_timeout_into_a_crash(start_worker):
    """A run puts SIGALRM back to its default action and completes; the next run of the
    process that overruns its timeout_seconds must end TIMED_OUT - not kill the process (the
    default action of SIGALRM) and end CRASHED, blamed for "taking down its worker process"."""
    first = resets_signal.delay("SIGALRM")
    slow = too_slow.delay(3.0)  # timeout_seconds=0.5
    supervisor = start_worker("--batch-size", "2")
    wait_until(lambda: first.state.is_final() and slow.state.is_final(), timeout=60)
    run = TaskRun.objects.get(pk=slow.id)
    print(run.state_type, run.state_name, run.state_message, names(slow.id), deaths(supervisor))
    assert (run.state_type, run.state_name) == ("FAILED", "TimedOut"), run.state_message
    assert deaths(supervisor) == 0


@pytest.mark.xfail(
    strict=True, reason="red team: a reset SIGUSR1 kills the process on the next cancel"
)
def test_a_task_that_resets_sigusr1_does_not_turn_the_next_cancel_into_a_crash(start_worker):
    """The same with SIGUSR1, the worker's cancel signal: the next cancel kills the process
    (its claimed batch handed back, a new process forked)."""
    resets_signal.delay("SIGUSR1")
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


@pytest.mark.xfail(
    strict=True, reason="red team: nothing kills the tree of a worker process that died"
)
def test_what_a_run_started_dies_with_a_worker_process_killed_from_outside(start_worker):
    """kill -9 of a worker process (the OOM killer, an operator): the supervisor settles its
    run (CRASHED) - and the processes the run started must not go on without it (a retry
    would start them again beside the old ones)."""
    from tests.taskapp.redteam import grandchild_then_wait

    future = grandchild_then_wait.delay("oom", 60.0)
    start_worker()
    wait_until(lambda: Effect.objects.filter(label="oom").exists(), timeout=60)
    sleeper = int(Effect.objects.get(label="oom").run_marker)
    worker = TaskRun.objects.get(pk=future.id).worker
    os.kill(int(worker.rsplit(":", 1)[1]), signal.SIGKILL)
    wait_until(lambda: future.state.is_final(), timeout=60)
    time.sleep(1)
    alive = process_alive(sleeper)
    if alive:
        os.kill(sleeper, signal.SIGKILL)
    print(future.state, "sleeper alive:", alive)
    assert not alive


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


@pytest.mark.xfail(strict=True, reason="red team: a subreaper never reaps orphans of its session")
def test_orphans_a_run_leaves_in_the_workers_session_are_reaped(start_worker):
    """A worker process is a child subreaper (issue 24, item 7): the orphans of what its runs
    start are given to it. reap_adopted() reaps only those of *another* session (setsid
    daemons); an orphan that stays in the worker's session - ``sh -c 'cmd &'``, ``nohup`` -
    ends as a zombie of the worker process for as long as it lives (init reaped them before),
    one per run: a long-lived worker fills the process table."""
    from tests.taskapp.redteam import backgrounds_a_command

    runs = [backgrounds_a_command.delay(f"bg-{i}") for i in range(10)]
    start_worker()
    wait_until(lambda: all_final(runs), timeout=60)
    worker = int(TaskRun.objects.get(pk=runs[0].id).worker.rsplit(":", 1)[1])
    time.sleep(2)  # the sleeps end; ten heartbeats pass (reap_adopted runs on each)
    zombies = [
        pid
        for pid in map(int, Path(f"/proc/{worker}/task/{worker}/children").read_text().split())
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    ]
    print("zombies of the worker process:", zombies)
    assert zombies == []
