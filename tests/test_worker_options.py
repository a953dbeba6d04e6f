"""Retries, timeouts, cancellation, lateness and bulk enqueue with an in-process Worker."""

import threading
from datetime import timedelta

import pytest
from django.utils import timezone

from django_tasks import TaskRunFailed
from django_tasks.models import TaskRun, TaskRunState
from django_tasks.worker import Worker
from tests.taskapp.models import Effect
from tests.taskapp.tasks import (
    add,
    always_fails,
    fails_first,
    noop,
    record,
    too_slow,
    too_slow_retried,
)

from .conftest import drain

pytestmark = pytest.mark.django_db(transaction=True)


def history(future):
    return list(
        TaskRunState.objects.filter(run_id=future.id).values_list("type", "name", "message")
    )


def test_failed_attempt_is_retried_then_completes():
    future = fails_first.delay("once")
    drain()
    assert future.result(timeout=1) == 1
    steps = history(future)
    assert [(t, n) for t, n, _ in steps] == [
        ("SCHEDULED", "Scheduled"),
        ("PENDING", "Pending"),
        ("RUNNING", "Running"),
        ("SCHEDULED", "AwaitingRetry"),
        ("PENDING", "Pending"),
        ("RUNNING", "Retrying"),
        ("COMPLETED", "Completed"),
    ]
    assert steps[3][2] == "ConnectionError: first attempt of once (attempt 1 of 3; retrying)"
    assert TaskRun.objects.get(pk=future.id).attempts == 2


def test_final_failure_keeps_every_attempts_error():
    future = always_fails.delay("x")
    drain()
    messages = [m for t, n, m in history(future) if n in ("AwaitingRetry", "Failed")]
    assert messages == [
        "ValueError: attempt failed: x (attempt 1 of 2; retrying)",
        "ValueError: attempt failed: x",
    ]
    run = TaskRun.objects.get(pk=future.id)
    assert (run.state_type, run.attempts) == ("FAILED", 2)
    with pytest.raises(ValueError, match="attempt failed"):
        future.result(timeout=1)


def test_timeout_interrupts_the_task():
    future = too_slow.delay(5)
    drain()
    run = TaskRun.objects.get(pk=future.id)
    assert (run.state_type, run.state_name) == ("FAILED", "TimedOut")
    assert run.state_message == "Timed out after 0.5 s (timeout_seconds)."
    assert run.duration is not None
    assert run.duration < 2
    assert "TaskRunTimeout" in run.traceback
    with pytest.raises(TaskRunFailed, match="TimedOut"):
        future.result(timeout=1)


def test_timed_out_run_is_retried_when_allowed():
    future = too_slow_retried.delay(5)
    drain()
    names = [n for _, n, _ in history(future)]
    assert names.count("AwaitingRetry") == 1
    assert names[-1] == "TimedOut"
    assert TaskRun.objects.get(pk=future.id).attempts == 2


def test_cancel_before_start():
    future = record.delay("never")
    assert future.cancel() is True
    assert future.state.type == "CANCELLED"
    assert future.cancel() is False  # already final
    drain()
    assert not Effect.objects.exists()
    assert [t for t, _, _ in history(future)] == ["SCHEDULED", "CANCELLED"]
    with pytest.raises(TaskRunFailed, match="Cancelled"):
        future.result(timeout=1)


def test_cancel_of_a_claimed_run_stops_it_before_start():
    from django_tasks.worker.connection import QueueConnection

    future = record.delay("never")
    worker = Worker(burst=True, handle_signals=False)
    worker.durations[record.key] = 1.0  # a long task: checked before it starts
    db = QueueConnection(worker.alias, lambda: False)
    [claimed] = worker.claimer().claim(db)
    assert future.cancel() is True  # PENDING -> CANCELLED
    worker._process(db, claimed)
    db.close()
    assert not Effect.objects.exists()
    assert future.state.type == "CANCELLED"


def test_late_runs_are_marked_when_taken():
    late = add.apply_async((1, 1), scheduled_time=timezone.now() - timedelta(seconds=30))
    on_time = add.delay(1, 2)
    drain()
    names = [n for _, n, _ in history(late)]
    assert names == ["Scheduled", "Late", "Pending", "Running", "Completed"]
    message = history(late)[1][2]
    assert message.startswith("Taken 3")
    assert message.endswith(" s after its scheduled time.")
    assert "Late" not in [n for _, n, _ in history(on_time)]


def test_delay_many_enqueues_in_one_statement(django_assert_num_queries):
    with django_assert_num_queries(1):
        futures = add.delay_many([(i, i) for i in range(500)] + [{"a": 1, "b": 1}])
    assert len(futures) == 501
    runs = TaskRun.objects.filter(task_name="add")
    assert runs.count() == 501
    assert TaskRunState.objects.filter(type="SCHEDULED").count() == 501
    assert runs.get(pk=futures[3].id).parameters_preview == {"a": 3, "b": 3}
    drain()
    assert futures[500].result(timeout=1) == 2
    assert add.delay_many([]) == []


@pytest.mark.parametrize(
    ("items", "error", "message"),
    [
        ([(1, 2), (1,)], TypeError, "Wrong arguments"),
        ([(1, 2), [1, 2]], TypeError, "tuples .* or dicts"),
        ([(1, 2), (threading.Lock(), 1)], TypeError, "parameters cannot be pickled"),
    ],
)
def test_delay_many_bad_item_writes_nothing(items, error, message):
    with pytest.raises(error, match=message):
        add.delay_many(items)
    assert not TaskRun.objects.exists()


def test_delay_many_options():
    futures = noop.delay_many([(), ()], queue="bulk", priority=9, countdown=60)
    run = TaskRun.objects.get(pk=futures[0].id)
    assert (run.queue, run.priority) == ("bulk", 9)
    assert run.scheduled_time > timezone.now() + timedelta(seconds=50)
