"""Retry options (Prefect's names): delays as a number, a list or a callable, jitter, a retry
condition, inline and in the background, and a retry that outlives its worker process."""

from __future__ import annotations

import signal
import threading
from typing import Any

import pytest
from django.db import connection

from django_tasks import State, StateType, flush, task
from django_tasks.models import TaskRun
from django_tasks.retries import delay_for, exponential_backoff, resolve_delays
from django_tasks.sql import RETRY_DELAY
from django_tasks.worker import Worker
from tests.conftest import drain, wait_until
from tests.taskapp.models import Effect
from tests.taskapp.tasks import always_fails, fails_then_waits, fails_twice_listed, picky

pytestmark = pytest.mark.django_db(transaction=True)


def states(run_id: Any) -> list[tuple[str, str, str]]:
    return list(TaskRun.objects.get(pk=run_id).states.values_list("type", "name", "message"))


def gaps_before_retries(run_id: Any) -> list[float]:
    """Seconds from each AwaitingRetry to the Pending that followed it."""
    rows = list(TaskRun.objects.get(pk=run_id).states.values_list("name", "timestamp"))
    return [
        (rows[i + 1][1] - stamp).total_seconds()
        for i, (name, stamp) in enumerate(rows[:-1])
        if name == "AwaitingRetry"
    ]


# -- options -----------------------------------------------------------------------------------


def test_delays_resolve_from_number_list_and_callable():
    assert resolve_delays(5, 3) == (5.0,)
    assert resolve_delays([1, 2.5], 3) == (1.0, 2.5)
    assert resolve_delays(exponential_backoff(backoff_factor=10), 3) == (10.0, 20.0, 40.0)
    backoff = task(retries=4, retry_delay_seconds=exponential_backoff(backoff_factor=0.5))(
        lambda: None
    )
    assert backoff.options.retry_delays == (0.5, 1.0, 2.0, 4.0)
    # with_options recomputes a callable's delays for the new number of retries.
    assert backoff.with_options(retries=2).options.retry_delays == (0.5, 1.0)


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"retry_delay_seconds": [1, "x"]}, TypeError, "each retry_delay_seconds item"),
        ({"retry_delay_seconds": [1, -2]}, ValueError, "must not be negative"),
        ({"retry_delay_seconds": lambda n: 5}, TypeError, "must return a list"),
        ({"retry_delay_seconds": "10"}, TypeError, "number of seconds"),
        ({"retry_jitter_factor": -0.1}, ValueError, "retry_jitter_factor must not be negative"),
        ({"retry_condition_fn": "yes"}, TypeError, "retry_condition_fn must be callable"),
        ({"on_failure": print}, TypeError, "takes a list of functions"),
        ({"on_completion": ["nope"]}, TypeError, "each on_completion hook must be callable"),
        ({"task_run_name": 42}, TypeError, "task_run_name must be callable"),
    ],
)
def test_bad_retry_and_hook_options_fail_at_the_decorator(options, error, match):
    with pytest.raises(error, match=match):
        task(**options)


def test_delay_for_uses_each_entry_then_repeats_the_last():
    assert [delay_for((1.0, 2.0), attempt) for attempt in (1, 2, 3, 4)] == [1.0, 2.0, 2.0, 2.0]
    assert delay_for((), 3) == 0.0


def test_jitter_stays_within_its_factor_in_python_and_in_sql():
    samples = [delay_for((10.0,), 1, jitter=0.5) for _ in range(500)]
    assert min(samples) >= 5.0
    assert max(samples) <= 15.0
    assert max(samples) - min(samples) > 5  # it does vary
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {RETRY_DELAY} FROM (SELECT '[1, 10]'::jsonb AS retry_delays, "
            f"g AS attempts, 0.5::float8 AS retry_jitter FROM generate_series(1, 500) g) AS r"
        )
        sql_samples = [row[0] for row in cursor.fetchall()]
    first, later = sql_samples[0], sql_samples[1:]
    assert 0.5 <= first <= 1.5
    assert all(5.0 <= value <= 15.0 for value in later)
    assert max(later) - min(later) > 5
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {RETRY_DELAY} FROM (SELECT '[]'::jsonb AS retry_delays, 2 AS attempts, "
            "NULL::float8 AS retry_jitter) AS r"
        )
        assert cursor.fetchone()[0] == 0


# -- inline ------------------------------------------------------------------------------------


def test_inline_retries_follow_the_list_and_record_every_attempt():
    assert fails_twice_listed("inline") == 3
    flush()
    run = TaskRun.objects.get(name="fails_twice_listed")
    assert (run.state_type, run.attempts) == ("COMPLETED", 3)
    assert [(t, n) for t, n, _ in states(run.id)] == [
        ("PENDING", "Pending"),
        ("RUNNING", "Running"),
        ("SCHEDULED", "AwaitingRetry"),
        ("PENDING", "Pending"),
        ("RUNNING", "Retrying"),
        ("SCHEDULED", "AwaitingRetry"),
        ("PENDING", "Pending"),
        ("RUNNING", "Retrying"),
        ("COMPLETED", "Completed"),
    ]
    messages = [m for _, n, m in states(run.id) if n == "AwaitingRetry"]
    assert messages == [
        "ConnectionError: attempt 1 of inline failed (attempt 1 of 4; retrying)",
        "ConnectionError: attempt 2 of inline failed (attempt 2 of 4; retrying)",
    ]
    first, second = gaps_before_retries(run.id)
    assert 0.2 <= first < 0.35
    assert 0.4 <= second < 0.55


def test_inline_retries_spent_raise_the_last_error_and_keep_each_one():
    with pytest.raises(ValueError, match="attempt failed: twice"):
        always_fails("twice")
    flush()
    run = TaskRun.objects.get(task_name="always_fails")
    assert (run.state_type, run.attempts) == ("FAILED", 2)
    assert [m for t, _, m in states(run.id) if m] == [
        "ValueError: attempt failed: twice (attempt 1 of 2; retrying)",
        "ValueError: attempt failed: twice",
    ]


def test_inline_condition_refuses_a_retry():
    with pytest.raises(ValueError, match="attempt 1 of no-retry failed"):
        picky("no-retry", "value")
    assert Effect.objects.filter(label="no-retry").count() == 1
    assert picky("retried", "connection") == 2
    flush()
    assert TaskRun.objects.filter(task_name="picky", state_type="FAILED").get().attempts == 1


def test_a_condition_that_raises_means_no_retry(caplog):
    caplog.set_level("WARNING", logger="django_tasks")

    def broken(task: Any, task_run: Any, state: State) -> bool:
        raise KeyError("oops")

    flaky = fails_twice_listed.with_options(retry_condition_fn=broken)
    with pytest.raises(ConnectionError):
        flaky("broken-condition")
    assert Effect.objects.filter(label="broken-condition").count() == 1
    assert "retry_condition_fn of" in caplog.text


# -- background --------------------------------------------------------------------------------


def test_background_retries_follow_the_list():
    future = fails_twice_listed.delay("bg")
    wait = Worker(handle_signals=False, poll_interval=0.05)
    thread = threading.Thread(target=wait.run)
    thread.start()
    try:
        assert future.result(timeout=10) == 3
    finally:
        wait.stop()
        thread.join(10)
    run = TaskRun.objects.get(pk=future.id)
    assert run.attempts == 3
    assert [n for _, n, _ in states(run.id)] == [
        "Scheduled",
        "Pending",
        "Running",
        "AwaitingRetry",
        "Pending",
        "Retrying",
        "AwaitingRetry",
        "Pending",
        "Retrying",
        "Completed",
    ]
    first, second = gaps_before_retries(run.id)
    assert first >= 0.2
    assert second >= 0.4
    assert run.retry_delays == [0.2, 0.4]


def test_background_condition_refuses_a_retry():
    refused = picky.delay("bg-value", "value")
    retried = picky.delay("bg-connection", "connection")
    drain()  # the retry has no delay: the same burst runs it
    assert refused.state.type == StateType.FAILED
    assert TaskRun.objects.get(pk=refused.id).attempts == 1
    assert [n for _, n, _ in states(refused.id)][-2:] == ["Running", "Failed"]
    assert retried.result(timeout=1) == 2
    assert [n for _, n, _ in states(retried.id)].count("AwaitingRetry") == 1


def test_background_retry_survives_a_worker_restart(start_worker):
    future = fails_then_waits.delay("restart")
    first = start_worker("--concurrency", "1")
    wait_until(lambda: TaskRun.objects.get(pk=future.id).state_name == "AwaitingRetry")
    first.send_signal(signal.SIGTERM)
    assert first.wait(30) == 0
    assert TaskRun.objects.get(pk=future.id).state_name == "AwaitingRetry"
    second = start_worker("--concurrency", "1")
    assert future.result(timeout=30) == 2
    second.send_signal(signal.SIGTERM)
    assert second.wait(30) == 0
    workers = set(TaskRun.objects.get(pk=future.id).states.values_list("worker", flat=True))
    assert len(workers - {""}) == 2  # the first attempt and the retry ran in two processes


def test_retry_options_are_copied_onto_the_run():
    tuned = always_fails.with_options(
        retries=4, retry_delay_seconds=[1, 2], retry_jitter_factor=0.2
    )
    future = tuned.delay("copied")
    run = TaskRun.objects.get(pk=future.id)
    assert (run.retries, run.retry_delays, run.retry_jitter) == (4, [1.0, 2.0], 0.2)
