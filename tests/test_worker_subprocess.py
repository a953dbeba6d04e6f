"""End to end with real ``manage.py runtaskworker`` subprocesses: signals, races, exactly once."""

import itertools
import signal
import time

import pytest
from django.db import transaction
from django.db.models import Count

from django_tasks.models import TaskRun, TaskRunState
from django_tasks.topic import enqueue
from tests.taskapp.models import Effect
from tests.taskapp.tasks import add, drop_my_connection, explode, record, sleep_then_record

from .conftest import wait_for_live_workers, wait_until, worker_log


def history(future):
    return list(TaskRunState.objects.filter(run_id=future.id).values_list("type", flat=True))


pytestmark = pytest.mark.django_db(transaction=True)


def test_end_to_end_history_result_and_failure(start_worker):
    worker = start_worker()
    ok, bad = add.delay(40, 2), explode.delay("from the worker")
    assert ok.result(timeout=30) == 42
    with pytest.raises(RuntimeError, match="from the worker"):
        bad.result(timeout=30)
    states = list(
        TaskRunState.objects.filter(run_id=ok.id).values_list("type", "name", "timestamp")
    )
    assert [(t, n) for t, n, _ in states] == [
        ("SCHEDULED", "Scheduled"),
        ("PENDING", "Pending"),
        ("RUNNING", "Running"),
        ("COMPLETED", "Completed"),
    ]
    stamps = [ts for *_, ts in states]
    assert all(a < b for a, b in itertools.pairwise(stamps))  # strictly increasing
    failed = TaskRun.objects.get(pk=bad.id)
    assert failed.state_type == "FAILED"
    assert "Traceback (most recent call last)" in failed.traceback
    assert "RuntimeError: from the worker" in failed.traceback
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(15) == 0
    log = worker_log(worker)
    assert f"[run {ok.id}] Run {ok.id} (add) started" in log  # -v 2 logs every run by id
    assert f"[run {ok.id}] Run {ok.id} Completed" in log
    assert f"[run {bad.id}] Run {bad.id} Failed" in log
    assert "[run -] Supervisor" in log  # a line about no run says so


def test_sigterm_lets_the_running_run_finish_and_leaves_the_rest(start_worker):
    long = sleep_then_record.delay(2.0, "long")
    later = [record.delay(f"later-{i}") for i in range(3)]
    worker = start_worker("--batch-size", "1")
    wait_until(lambda: long.state.is_running())
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(20) == 0, worker_log(worker)
    assert long.state.is_completed()
    assert list(Effect.objects.values_list("label", flat=True)) == ["long"]
    assert [f.state.type for f in later] == ["SCHEDULED"] * 3
    assert "finishing running runs" in worker_log(worker)


def test_sigterm_hands_back_claimed_runs_not_started(start_worker):
    long = sleep_then_record.delay(1.5, "long")
    later = [record.delay(f"later-{i}") for i in range(3)]
    worker = start_worker("--batch-size", "4")  # claims all four at once
    wait_until(lambda: long.state.is_running())
    assert all(f.state.type == "PENDING" for f in later)
    worker.send_signal(signal.SIGINT)
    assert worker.wait(20) == 0
    assert long.state.is_completed()
    for future in later:
        run = TaskRun.objects.get(pk=future.id)
        assert (run.state_type, run.state_message) == (
            "SCHEDULED",
            "Handed back by a stopping worker.",
        )


def test_second_signal_stops_at_once(start_worker):
    long = sleep_then_record.delay(30, "never")
    worker = start_worker()
    wait_until(lambda: long.state.is_running())
    holder = TaskRun.objects.get(pk=long.id).worker
    worker.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(10) == 1
    # The supervisor killed its child at once and settled the run it held (no retries left):
    # CRASHED, but not counted against the run (the supervisor killed it, not the task).
    state = long.state
    assert state.type == "CRASHED"
    assert state.message == (
        f"Worker process {holder} was killed by its supervisor (a second request to stop) "
        f"while running this run."
    )
    assert TaskRun.objects.get(pk=long.id).crashes == 0
    assert history(long)[-2:] == ["RUNNING", "CRASHED"]
    assert not Effect.objects.exists()


def test_future_scheduled_runs_wait_for_their_time(start_worker):
    soon = record.apply_async(args=("soon",), countdown=5)  # well after the worker is up
    now = record.delay("now")
    start_worker("--poll-interval", "0.2")
    assert now.result(timeout=30)
    assert soon.state.is_scheduled()
    soon.result(timeout=30)
    run = TaskRun.objects.get(pk=soon.id)
    assert run.started is not None
    assert run.started >= run.scheduled_time


@pytest.mark.slow
def test_two_workers_drain_1000_runs_each_exactly_once(start_worker):
    total = 1000
    workers = [start_worker("--batch-size", "5") for _ in range(2)]
    wait_for_live_workers(2)  # both ready: neither can drain it all before the other starts
    with transaction.atomic():  # one commit: both are woken by the same NOTIFY
        for i in range(total):
            enqueue(record, (f"run-{i}",), {}, queue="default", priority=0, scheduled_time=None)
    runs = TaskRun.objects.filter(task_name="record")
    wait_until(lambda: runs.filter(state_type="COMPLETED").count() == total, timeout=180)
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
    for worker in workers:
        assert worker.wait(60) == 0, worker_log(worker)
    assert runs.filter(state_type="COMPLETED").count() == total
    assert set(runs.values_list("worker", flat=True).distinct()).__len__() == 2  # both worked
    per_run = (
        TaskRunState.objects.filter(type__in=["RUNNING", "COMPLETED"])
        .values("run_id", "type")
        .annotate(n=Count("id"))
    )
    assert {row["n"] for row in per_run} == {1}
    assert len(per_run) == 2 * total
    labels = list(Effect.objects.values_list("label", flat=True))
    assert len(labels) == total == len(set(labels))  # every effect exactly once


def test_a_connection_a_task_broke_is_closed_before_the_next_run(start_worker):
    """As at the end of a request: the next run gets a fresh connection, not the dead one."""
    worker = start_worker("--batch-size", "1")
    broken = drop_my_connection.delay()
    with pytest.raises(Exception, match=r"terminat"):
        broken.result(timeout=30)
    after = record.delay("after the broken connection")
    assert Effect.objects.get(pk=after.result(timeout=30)).label == "after the broken connection"
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(15) == 0
