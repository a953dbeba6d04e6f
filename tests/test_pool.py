"""The supervised worker pool with real subprocesses: SIGSTOP, kill -9, hard limits, recycling."""

import os
import signal

import pytest

from django_tasks.models import TaskRun, TaskRunState, Worker
from tests.taskapp.models import Effect
from tests.taskapp.tasks import (
    ignores_cancel,
    ignores_timeout,
    record,
    sleep_then_record,
    sleep_then_record_retry,
)

from .conftest import process_alive, wait_until, worker_log

pytestmark = pytest.mark.django_db(transaction=True)


def history(future):
    return list(TaskRunState.objects.filter(run_id=future.id).values_list("type", "name", "worker"))


def holder_pid(future) -> int:
    worker = TaskRun.objects.get(pk=future.id).worker
    return int(worker.rsplit(":", 1)[1])


def test_frozen_worker_is_rescued_by_another(start_worker):
    run = sleep_then_record_retry.delay(1.0, "rescued")
    frozen = start_worker()
    wait_until(lambda: run.state.is_running())
    child = holder_pid(run)
    os.kill(child, signal.SIGSTOP)  # alive but silent: no heartbeat
    try:
        start_worker()  # a second worker notices the silence and rescues the run
        assert run.result(timeout=30) == "rescued"
    finally:
        os.kill(child, signal.SIGCONT)
    steps = history(run)
    names = [n for _, n, _ in steps]
    assert names == [
        "Scheduled",
        "Pending",
        "Running",
        "Crashed",
        "AwaitingRetry",
        "Pending",
        "Retrying",
        "Completed",
    ]
    crashed = steps[3]
    assert crashed[2] == f"{os.uname().nodename}:{child}"
    assert TaskRun.objects.get(pk=run.id).state_message == ""
    frozen.send_signal(signal.SIGTERM)
    assert frozen.wait(20) == 0
    # The frozen child woke up, finished its copy, and found the run was no longer its own:
    # at-least-once means this run's effect happened twice, and nothing else did.
    assert f"Run {run.id} was taken from this worker" in worker_log(frozen)
    assert list(Effect.objects.values_list("label", flat=True)) == ["rescued", "rescued"]


def test_killed_child_is_replaced_and_its_run_retried(start_worker):
    run = sleep_then_record_retry.delay(1.0, "after-kill")
    supervisor = start_worker()
    wait_until(lambda: run.state.is_running())
    first_child = holder_pid(run)
    os.kill(first_child, signal.SIGKILL)
    assert run.result(timeout=30) == "after-kill"
    names = [n for _, n, _ in history(run)]
    assert names[2:5] == ["Running", "Crashed", "AwaitingRetry"]
    assert holder_pid(run) != first_child  # the replacement child ran the retry
    assert "died (killed by signal SIGKILL)" in worker_log(supervisor)
    dead = Worker.objects.get(name__endswith=f":{first_child}")
    assert dead.stopped is not None


def test_task_ignoring_its_timeout_is_killed(start_worker):
    stubborn = ignores_timeout.delay(60)
    after = record.delay("after")
    supervisor = start_worker("--batch-size", "1")
    stubborn_state = wait_until(lambda: (s := stubborn.state).is_final() and s, timeout=30)
    assert (stubborn_state.type, stubborn_state.name) == ("FAILED", "TimedOut")
    assert "ignored it and was killed" in stubborn_state.message
    assert after.result(timeout=30)  # the replacement child goes on with the queue
    assert "overran" in worker_log(supervisor)


def test_cancel_running_run_interrupts_it(start_worker):
    long = sleep_then_record.delay(30, "never")
    start_worker()
    wait_until(lambda: long.state.is_running())
    assert long.cancel() is True
    final = long.wait(timeout=15)
    assert (final.type, final.name) == ("CANCELLED", "Cancelled")
    assert final.message == "Cancelled while running."
    types = [t for t, _, _ in history(long)]
    assert types[-3:] == ["RUNNING", "CANCELLING", "CANCELLED"]
    assert not Effect.objects.exists()


def test_cancel_ignored_is_enforced_by_killing(start_worker):
    stubborn = ignores_cancel.delay(60)
    start_worker()
    wait_until(lambda: stubborn.state.is_running())
    stubborn.cancel()
    final = stubborn.wait(timeout=20)
    assert final.type == "CANCELLED"
    assert "killed after the cancel grace period" in final.message


def test_max_tasks_per_child_recycles_processes(start_worker):
    futures = [record.delay(f"r{i}") for i in range(6)]
    supervisor = start_worker("--max-tasks-per-child", "2", "--batch-size", "1")
    for future in futures:
        future.result(timeout=60)
    holders = {TaskRun.objects.get(pk=f.id).worker for f in futures}
    assert len(holders) == 3  # 2 runs per child process
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(20) == 0
    assert worker_log(supervisor).count("recycled (--max-tasks-per-child)") >= 2


def test_burst_replaces_recycled_children(start_worker):
    futures = [record.delay(f"b{i}") for i in range(5)]
    supervisor = start_worker("--burst", "--max-tasks-per-child", "2", "--batch-size", "1")
    assert supervisor.wait(60) == 0
    assert all(f.state.is_completed() for f in futures)


def test_shutdown_timeout_kills_and_rescues(start_worker):
    long = sleep_then_record.delay(30, "never")
    supervisor = start_worker("--shutdown-timeout", "0.5")
    wait_until(lambda: long.state.is_running())
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(20) == 0
    assert long.state.type == "CRASHED"
    assert "Shutdown timeout" in worker_log(supervisor)


def test_orphans_finish_their_run_then_exit(start_worker):
    run = sleep_then_record.delay(1.0, "orphan finished it")
    supervisor = start_worker()
    wait_until(lambda: run.state.is_running())
    child = holder_pid(run)
    supervisor.send_signal(signal.SIGKILL)
    assert run.result(timeout=15) == "orphan finished it"
    wait_until(lambda: not process_alive(child), timeout=10)


def test_orphan_with_a_stuck_run_exits_and_the_run_is_rescued(start_worker):
    stuck = ignores_cancel.delay(120)
    supervisor = start_worker("--shutdown-timeout", "1")
    wait_until(lambda: stuck.state.is_running())
    child = holder_pid(stuck)
    supervisor.send_signal(signal.SIGKILL)
    wait_until(lambda: not process_alive(child), timeout=15)
    start_worker()  # any live worker rescues what the orphan held
    final = stuck.wait(timeout=15)
    assert final.type == "CRASHED"
    assert final.message == f"Worker {os.uname().nodename}:{child} was lost while running this run."
