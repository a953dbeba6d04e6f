"""The batched writer: survives a lost connection, lets go of an idle one; and the small
public pieces of task semantics (State.result, the run context, settings checks, runners)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.core.checks import run_checks
from django.db import connection
from django.test import override_settings

from django_tasks import State, StateType, ThreadPoolTaskRunner, flush, get_run_context, task
from django_tasks import recorder as recorder_module
from django_tasks.cache_policies import INPUTS, CachePolicy
from django_tasks.models import TaskRun
from django_tasks.runners import TaskRunner, get_task_runner
from tests.taskapp.tasks import add

from .conftest import count

pytestmark = pytest.mark.django_db(transaction=True)


def writer_connections() -> int:
    return count(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name = 'django_tasks worker'"
    )


def test_the_writer_reconnects_after_losing_its_connection(caplog):
    caplog.set_level("WARNING", logger="django_tasks")
    add(1, 1)
    assert flush()
    assert writer_connections() == 1
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = 'django_tasks worker'"
        )
    add(2, 2)
    assert flush()
    assert TaskRun.objects.filter(task_name="add").count() == 2
    assert "Recording 1 runs failed (try 1)" in caplog.text


def test_an_idle_writer_closes_its_connection(monkeypatch):
    monkeypatch.setattr(recorder_module, "IDLE_CLOSE", 0.2)
    add(1, 2)
    assert flush()
    add(1, 3)  # the writer waits with the new (short) idle time from now on
    assert flush()
    deadline = time.monotonic() + 5
    while writer_connections() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert writer_connections() == 0
    add(1, 4)  # and opens a new one when there is something to write
    assert flush()
    assert TaskRun.objects.filter(task_name="add").count() == 3


def test_the_first_record_after_an_idle_wait_is_written_within_the_flush_interval():
    """The writer sleeps for IDLE_CLOSE (5 s) when nothing waits; the first record of a batch
    wakes it, so that a running run's log line reaches its page in a fraction of a second."""
    add(1, 2)
    assert flush()  # from now on the writer waits the idle time
    time.sleep(0.3)
    started = time.monotonic()
    add(2, 3)  # no flush(): the writer alone must write it
    while TaskRun.objects.filter(task_name="add").count() < 2:
        assert time.monotonic() - started < 2.0, "the record waited for the idle timeout"
        time.sleep(0.02)


def test_state_result_and_run_context_details():
    error = ValueError("x")
    failed = State(StateType.FAILED, "Failed", "x", None, exception=error)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="x"):
        failed.result()
    assert failed.result(raise_on_failure=False) is error
    assert State(StateType.COMPLETED, "Completed", "", None, data=3).result() == 3  # type: ignore[arg-type]

    @task
    def inspect_context() -> tuple[int, str]:
        context = get_run_context()
        return context.run_count, context.task_key

    assert inspect_context() == (1, inspect_context.key)


@pytest.mark.parametrize("key", ["RECORD_MODE", "WORKER_START_METHOD"])
def test_settings_with_choices_are_checked(key):
    with override_settings(DJANGO_TASKS={key: "later"}):
        errors = [e for e in run_checks() if e.id == "django_tasks.E006"]
    assert len(errors) == 1
    assert key in errors[0].msg
    assert "'later'" in errors[0].msg


def test_policy_arithmetic_refuses_other_types():
    with pytest.raises(TypeError):
        INPUTS + "x"  # type: ignore[operator]
    with pytest.raises(TypeError):
        INPUTS - 3  # type: ignore[operator]
    with pytest.raises(NotImplementedError):
        CachePolicy().compute_key(None, {})  # type: ignore[arg-type]


class InlineRunner(TaskRunner):
    """A runner that runs each submitted run at once, in the caller's thread."""

    def _start(self, future: Any, call: Any) -> None:
        future._inner.set_result(call())


def test_the_task_runner_is_configurable(monkeypatch):
    from django_tasks import runners

    monkeypatch.setattr(runners, "_default", None)
    with override_settings(DJANGO_TASKS={"TASK_RUNNER": "tests.test_recorder.InlineRunner"}):
        runner = get_task_runner()
        assert isinstance(runner, InlineRunner)
        future = add.submit(2, 5)
        assert future.done()  # ran before submit returned
        assert future.result() == 7
        assert future.task_run_id == future.id
        assert "add" in repr(future)
    monkeypatch.setattr(runners, "_default", None)
    assert isinstance(get_task_runner(), ThreadPoolTaskRunner)


def test_done_callbacks_and_a_runner_that_fails():
    seen: list[Any] = []
    future = add.submit(1, 2)
    future.add_done_callback(seen.append)
    assert future.result(timeout=5) == 3
    assert seen == [future]

    class Broken(TaskRunner):
        def _start(self, future: Any, call: Any) -> None:
            future._inner.set_exception(RuntimeError("no threads today"))

    broken = Broken().submit(add, (1, 1), {})
    assert broken.state.type == StateType.CRASHED
    with pytest.raises(RuntimeError, match="no threads today"):
        broken.result()


def test_flush_says_so_when_records_are_given_up(monkeypatch, caplog):
    """A database that stays away for five tries, or a record that cannot even be prepared:
    those records are given up on, alone, and flush() returns False (once)."""
    import psycopg

    add(1, 1)
    assert flush()

    def no_database(*args: Any, **kwargs: Any) -> Any:
        raise psycopg.OperationalError("the database is away")

    monkeypatch.setattr("time.sleep", lambda seconds: None)  # the writer's backoff
    monkeypatch.setattr("django_tasks.connect.open_worker_connection", no_database)
    recorder_module.writer.close()  # the next record starts a writer without a connection
    add(2, 2)
    assert flush() is False
    assert "Gave up recording 1 runs and log lines: the database is away" in caplog.text
    monkeypatch.undo()

    def broken_take(self: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(recorder_module.RunRecord, "take", broken_take)
    add(3, 3)
    assert flush() is False
    assert "Could not prepare 1 run records" in caplog.text
    monkeypatch.undo()
    add(4, 4)
    assert flush() is True
    assert TaskRun.objects.filter(task_name="add").count() == 2  # the 1st and the 4th
