"""Django's ``django.tasks`` on our backend (Django 6): validation, enqueue in the caller's
transaction, results, and the worker running standard Django task code."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from datetime import timedelta
from typing import Any

import django
import pytest

from .conftest import ROOT

if django.VERSION < (6, 0):

    def test_the_backend_says_it_needs_django_6():
        """On Django 5.2 the import fails with a message; the app itself works unchanged."""
        done = subprocess.run(
            [sys.executable, "-c", "import django_tasks.backends"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 1
        assert "needs Django 6.0 or newer" in done.stderr
        assert f"this is Django {django.get_version()}" in done.stderr

else:
    from django.core.management import call_command
    from django.db import transaction
    from django.tasks import TaskResultStatus, task, task_backends
    from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist, TaskResultMismatch
    from django.tasks.signals import task_enqueued
    from django.test import override_settings
    from django.utils import timezone

    from django_tasks.backends import PostgresBackend
    from django_tasks.backends.results import STATUS
    from django_tasks.models import TaskRun
    from tests.taskapp.models import Effect
    from tests.taskapp.standard import (
        add_json,
        async_cancels_itself,
        async_double,
        async_exits,
        async_fails,
        async_marks,
        async_with_context,
        chained,
        exits,
        fails,
        flaky,
        interrupted,
        mark,
        odd_value,
        own_id,
        returns_a_set,
        sleeps,
        tuned,
        with_context,
    )

    from .conftest import drain, session_pids, wait_until, worker_log

    pytestmark = pytest.mark.django_db(transaction=True)

    def test_flags():
        backend = task_backends["default"]
        assert isinstance(backend, PostgresBackend)
        assert backend.supports_defer
        assert backend.supports_priority
        assert backend.supports_get_result
        assert backend.supports_async_task is True  # run as coroutines on the worker's loop

    def _refused(func: Any, message: str, **options: Any) -> None:
        with pytest.raises(InvalidTask) as info:
            task(func, **options) if options else task(func)
        assert str(info.value) == message

    def test_validation_keeps_djangos_messages_word_for_word():
        def local(a: int) -> int:
            return a

        _refused(local, "Task function must be defined at a module level.")
        with pytest.raises(InvalidTask) as info:
            add_json.using(priority=101)
        assert str(info.value) == "priority must be a whole number between -100 and 100."
        with pytest.raises(InvalidTask) as info:
            add_json.using(run_after=timezone.now().replace(tzinfo=None))
        assert str(info.value) == "run_after must be an aware datetime."
        with pytest.raises(InvalidTask) as info:
            add_json.using(queue_name="x")
        assert str(info.value) == "Queue 'x' is not valid for backend."
        with pytest.raises(InvalidTask) as info:
            task(takes_context=True)(_no_context)  # type: ignore[arg-type]
        assert str(info.value) == (
            "Task takes context but does not have a first argument of 'context'."
        )

    def test_a_run_after_the_run_row_cannot_hold_is_refused_before_anything_is_written():
        from datetime import UTC, datetime

        with pytest.raises(InvalidTask) as info:
            add_json.using(run_after=datetime(1, 1, 1, tzinfo=UTC))
        assert str(info.value) == (
            "run_after must lie between 0001-01-02 and 9999-12-30 (UTC), "
            "got 0001-01-01T00:00:00+00:00."
        )
        assert not TaskRun.objects.exists()

    def test_an_empty_queues_setting_turns_the_queue_check_off():
        backend = {"BACKEND": "django_tasks.backends.PostgresBackend", "QUEUES": []}
        with override_settings(TASKS={"default": backend}):
            assert add_json.using(queue_name="anything").queue_name == "anything"

    def test_enqueue_returns_a_ready_result_and_signals_once():
        seen: list[tuple[Any, Any]] = []

        def receiver(sender: Any, task_result: Any, **kwargs: Any) -> None:
            seen.append((sender, task_result.id))

        task_enqueued.connect(receiver)
        try:
            result = tuned.enqueue((1, 2), flag=True)  # type: ignore[arg-type]
        finally:
            task_enqueued.disconnect(receiver)
        assert result.status == TaskResultStatus.READY
        assert result.args == [[1, 2]]  # JSON-normalised: the tuple is a list
        assert result.kwargs == {"flag": True}
        assert result.enqueued_at is not None
        assert timezone.is_aware(result.enqueued_at)
        assert (result.started_at, result.last_attempted_at, result.finished_at) == (
            None,
            None,
            None,
        )
        assert result.errors == []
        assert result.worker_ids == []
        assert result.backend == "default"
        assert isinstance(result.id, str)
        assert len(result.id) < 64
        assert seen == [(PostgresBackend, result.id)]
        run = TaskRun.objects.get(pk=result.id)
        assert (run.queue, run.priority, run.task_name) == ("other", 10, tuned.module_path)

    def test_arguments_that_are_not_json_write_nothing_and_send_nothing():
        seen: list[Any] = []
        task_enqueued.connect(seen.append)
        try:
            with pytest.raises(TypeError, match="Unsupported type"):
                add_json.enqueue({1, 2}, 3)  # type: ignore[arg-type]
        finally:
            task_enqueued.disconnect(seen.append)
        assert seen == []
        assert not TaskRun.objects.exists()

    def test_enqueue_inside_a_rolled_back_transaction_never_runs():
        def view() -> None:
            with transaction.atomic():
                result = mark.enqueue("rolled back")
                assert TaskRun.objects.filter(pk=result.id).exists()  # in the transaction
                raise RuntimeError("the view failed")

        with pytest.raises(RuntimeError, match="the view failed"):
            view()
        assert not TaskRun.objects.exists()
        drain()
        assert not Effect.objects.exists()

    def test_get_result_equals_the_enqueued_result_and_rebuilds_the_task():
        later = timezone.now() + timedelta(hours=1, microseconds=123)
        result = tuned.using(priority=-5, queue_name="default", run_after=later).enqueue([3])
        again = task_backends["default"].get_result(result.id)
        assert again == result
        assert again.task.priority == -5
        assert again.task.queue_name == "default"
        assert again.task.run_after == later  # to the microsecond
        assert again.task.backend == "default"
        assert tuned.get_result(result.id) == result
        with pytest.raises(TaskResultMismatch):
            add_json.get_result(result.id)
        for bad in ("nope", "", "0" * 36, "\x00", str(TaskRun._meta.pk.default())):
            with pytest.raises(TaskResultDoesNotExist):
                task_backends["default"].get_result(bad)

    def test_the_worker_runs_it_successfully():
        result = add_json.enqueue(20, 22)
        drain()
        result.refresh()
        assert result.status == TaskResultStatus.SUCCESSFUL
        assert result.return_value == 42
        assert result.attempts == len(result.worker_ids) == 1
        assert result.enqueued_at is not None
        assert result.started_at is not None
        assert result.finished_at is not None
        assert result.enqueued_at <= result.started_at <= result.finished_at
        assert result.last_attempted_at == result.started_at
        assert result.errors == []

    @pytest.mark.parametrize(
        ("task_", "args", "path", "line"),
        [
            (fails, ("broken",), "builtins.ValueError", "ValueError: broken\n"),
            (exits, (), "builtins.SystemExit", "SystemExit: 2\n"),
            (returns_a_set, (), "builtins.TypeError", "TypeError: Unsupported type"),
        ],
    )
    def test_any_exception_fails_the_run_with_one_error_per_attempt(task_, args, path, line):
        result = task_.enqueue(*args)
        after = add_json.enqueue(1, 1)
        drain()
        result.refresh()
        assert result.status == TaskResultStatus.FAILED
        [error] = result.errors
        assert error.exception_class_path == path
        assert line in error.traceback
        assert error.traceback.endswith("\n")
        with pytest.raises(ValueError, match="Task failed"):
            _ = result.return_value
        assert task_backends["default"].get_result(after.id).return_value == 2  # the worker went on

    def test_takes_context_gets_the_attempt_from_one():
        result = with_context.enqueue("ctx")
        drain()
        assert task_backends["default"].get_result(result.id).return_value == 1
        assert Effect.objects.get().label == f"ctx:1:{result.id}"

    def test_async_tasks_run_as_coroutines_on_the_workers_loop(close_connections_of_sync_to_async):
        """``async def`` Tasks: accepted at definition, run by the worker's own async code
        (their adapter is a coroutine function), results, context, errors and the ORM."""
        from django_tasks.registry import registry
        from django_tasks.worker.running import find_task

        double, ctx = async_double.enqueue(21), async_with_context.enqueue("a")
        broken, exited, marked = (
            async_fails.enqueue("async broke"),
            async_exits.enqueue(),
            (async_marks.enqueue("from a coroutine")),
        )
        sync_after = add_json.enqueue(1, 2)
        drain()
        get = task_backends["default"].get_result
        assert get(double.id).return_value == 42
        assert get(ctx.id).return_value == f"a:1:{ctx.id}"
        assert get(marked.id).return_value == "from a coroutine"
        assert Effect.objects.filter(label="from a coroutine").count() == 1
        failed = get(broken.id)
        assert failed.status == TaskResultStatus.FAILED
        [error] = failed.errors
        assert error.exception_class_path == "builtins.ValueError"
        assert "ValueError: async broke\n" in error.traceback
        assert get(exited.id).status == TaskResultStatus.FAILED
        assert get(exited.id).errors[0].exception_class_path == "builtins.SystemExit"
        assert get(sync_after.id).return_value == 3
        run = TaskRun.objects.get(pk=double.id)
        assert run.state_type == "COMPLETED"
        # The worker saw a coroutine function: its async path ran it, not async_to_sync.
        adapter = find_task(run.task_key, run.task_name)
        assert adapter.is_async
        assert registry.get(run.task_key) is adapter

    def test_an_async_task_raising_cancelled_error_itself_fails_with_a_django_error(
        close_connections_of_sync_to_async,
    ):
        result = async_cancels_itself.enqueue()
        drain()
        result.refresh()
        assert result.status == TaskResultStatus.FAILED
        [error] = result.errors
        assert error.exception_class_path == "asyncio.exceptions.CancelledError"
        assert "cancelled inside the task" in error.traceback

    def test_async_tasks_outlive_a_broken_connection_of_djangos_sync_thread(
        close_connections_of_sync_to_async,
    ):
        """The result's reads and writes run in asgiref's sync thread, no request's: a
        connection the server dropped there is replaced, as a request's would be."""
        import asyncio

        from asgiref.sync import sync_to_async
        from django.db import connection

        first = async_double.enqueue(1)
        drain()
        assert task_backends["default"].get_result(first.id).return_value == 2

        def backend_pid() -> int:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                return int(cursor.fetchone()[0])

        async def its_pid() -> int:
            return await sync_to_async(backend_pid)()

        pid = asyncio.run(its_pid())
        with connection.cursor() as cursor:  # the test's own connection
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
        results = [async_double.enqueue(n) for n in (2, 3)]
        drain()
        get = task_backends["default"].get_result
        assert [get(r.id).return_value for r in results] == [4, 6]

    def test_a_real_worker_process_runs_async_tasks_and_sends_the_signals(start_worker):
        result, marked = async_double.enqueue(2), async_marks.enqueue("async in a worker")
        start_worker("--queues", "default")
        get = task_backends["default"].get_result
        wait_until(lambda: get(result.id).is_finished and get(marked.id).is_finished, timeout=60)
        assert get(result.id).return_value == 4
        assert get(marked.id).return_value == "async in a worker"
        labels = set(Effect.objects.values_list("label", flat=True))
        assert "async-signal:started:RUNNING:PostgresBackend" in labels
        assert "async-signal:finished:SUCCESSFUL:PostgresBackend" in labels

    def test_priority_then_fifo_order():
        for label, priority in [("low-1", -1), ("high-1", 5), ("low-2", -1), ("high-2", 5)]:
            mark.using(priority=priority).enqueue(label)
        drain(batch_size=1)
        labels = list(Effect.objects.order_by("id").values_list("label", flat=True))
        assert [x for x in labels if not x.startswith("signal")] == [
            "high-1",
            "high-2",
            "low-1",
            "low-2",
        ]

    def test_a_past_run_after_goes_before_later_enqueues_of_the_same_priority():
        mark.enqueue("enqueued now")
        mark.using(run_after=timezone.now() - timedelta(hours=1)).enqueue("ready an hour ago")
        drain(batch_size=1)
        labels = list(Effect.objects.order_by("id").values_list("label", flat=True))
        assert [x for x in labels if not x.startswith("signal")] == [
            "ready an hour ago",
            "enqueued now",
        ]

    def test_a_deferred_run_starts_about_when_it_is_due(start_worker):
        worker = start_worker()
        wait_until(lambda: "started" in worker_log(worker), timeout=60)
        due = timezone.now() + timedelta(seconds=2)
        result = mark.using(run_after=due).enqueue("due")
        wait_until(lambda: task_backends["default"].get_result(result.id).is_finished, 30)
        started = task_backends["default"].get_result(result.id).started_at
        assert started is not None
        assert due <= started < due + timedelta(seconds=1.5)  # POLL_INTERVAL 0.5 s here

    def test_a_future_run_after_does_not_start_early():
        result = mark.using(run_after=timezone.now() + timedelta(hours=1)).enqueue("later")
        drain()
        assert task_backends["default"].get_result(result.id).status == TaskResultStatus.READY

    def test_a_real_worker_process_runs_it_and_sends_the_signals(start_worker):
        result = mark.enqueue("from a worker")
        start_worker()
        wait_until(lambda: task_backends["default"].get_result(result.id).is_finished, timeout=60)
        final = task_backends["default"].get_result(result.id)
        assert final.status == TaskResultStatus.SUCCESSFUL
        assert final.return_value == "from a worker"
        labels = set(Effect.objects.values_list("label", flat=True))
        assert "signal:started:RUNNING:PostgresBackend" in labels
        assert "signal:finished:SUCCESSFUL:PostgresBackend" in labels
        # Like any run: in our tables, with its history.
        run = TaskRun.objects.get(pk=result.id)
        assert run.state_type == "COMPLETED"
        assert final.worker_ids == [run.worker]

    def test_every_state_maps_to_one_of_djangos_four():
        from django_tasks.states import StateType

        assert set(STATUS) == set(StateType.values)
        assert set(STATUS.values()) == set(TaskResultStatus)

    def test_a_system_check_when_the_app_is_not_installed(settings):
        from django.apps import apps

        assert task_backends["default"].check() == []
        real = apps.is_installed
        try:
            apps.is_installed = lambda app_name: app_name != "django_tasks"  # type: ignore[method-assign]
            [error] = task_backends["default"].check()
        finally:
            apps.is_installed = real  # type: ignore[method-assign]
        assert error.id == "django_tasks.E010"

    def test_retries_through_djangos_task_decorator_each_attempt_visible():
        """``@task(retries=2)`` (Django 6.1 passes it to our task_class): two failed attempts,
        each a TaskError, then success; attempts == len(worker_ids)."""
        result = flaky.enqueue("flaky")
        drain()
        final = task_backends["default"].get_result(result.id)
        assert final.status == TaskResultStatus.SUCCESSFUL
        assert final.return_value == 3
        assert final.attempts == len(final.worker_ids) == 3
        assert [e.exception_class_path for e in final.errors] == ["builtins.ConnectionError"] * 2
        assert "attempt 1 of flaky failed" in final.errors[0].traceback
        assert final.started_at is not None
        assert final.last_attempted_at is not None
        assert final.started_at < final.last_attempted_at

    def test_retry_options_from_the_backend_options_and_checked():
        backend = {
            "BACKEND": "django_tasks.backends.PostgresBackend",
            "QUEUES": [],
            "OPTIONS": {"RETRIES": 4},
        }
        with override_settings(TASKS={"default": backend}):
            backend_object = task_backends["default"]
            assert isinstance(backend_object, PostgresBackend)
            options = backend_object.retry_options(add_json)
            assert options == {"retries": 4, "retry_delay_seconds": 0}
            with pytest.raises(InvalidTask, match="retries must not be negative"):
                task(retries=-1)(_module_level)  # type: ignore[call-overload]

    def test_a_worker_killed_mid_run_is_rescued_and_the_lost_attempt_shown(start_worker):
        result = sleeps.enqueue(30, "killed")
        first = start_worker()
        wait_until(
            lambda: task_backends["default"].get_result(result.id).status == "RUNNING",
            timeout=60,
        )
        for pid in session_pids(first.pid):
            os.kill(pid, signal.SIGKILL)
        first.wait(10)
        assert TaskRun.objects.get(pk=result.id).state_type == "RUNNING"  # nobody noticed yet
        start_worker()  # its rescue finds the dead worker's run: CRASHED, then retried
        wait_until(
            lambda: len(task_backends["default"].get_result(result.id).worker_ids) == 2,
            timeout=60,
        )
        final = task_backends["default"].get_result(result.id)
        assert [e.exception_class_path for e in final.errors] == [
            "django_tasks.backends.results.WorkerCrashed"
        ]
        assert final.errors[0].exception_class.__name__ == "WorkerCrashed"
        assert final.status in (TaskResultStatus.RUNNING, TaskResultStatus.READY)

    def test_async_variants():
        import asyncio

        from asgiref.sync import sync_to_async
        from django.db import connections

        async def scenario() -> tuple[Any, Any]:
            result = await add_json.aenqueue(2, 3)
            await sync_to_async(drain)()
            again = await task_backends["default"].aget_result(result.id)
            await result.arefresh()
            await sync_to_async(connections.close_all)()  # the executor thread's connection
            return result, again

        result, again = asyncio.run(scenario())
        assert result.status == again.status == TaskResultStatus.SUCCESSFUL
        assert result.return_value == again.return_value == 5

    def test_task_and_result_pickle():
        import pickle

        result = tuned.using(priority=3).enqueue([1], flag=True)
        copied = pickle.loads(pickle.dumps(result))
        assert copied == result
        assert pickle.loads(pickle.dumps(flaky)) == flaky
        assert pickle.loads(pickle.dumps(flaky)).retries == 2

    def test_runs_appear_in_the_admin_like_any_other(admin_client):
        result = mark.enqueue("in the admin")
        page = admin_client.get(f"/admin/django_tasks/taskrun/{result.id}/change/")
        assert page.status_code == 200
        assert mark.module_path in page.content.decode()
        listed = admin_client.get("/tasks/api/runs/").json()["results"]
        assert [run["id"] for run in listed] == [result.id]
        out = io.StringIO()
        call_command("taskruns", "ls", "--json", stdout=out)
        assert [row["id"] for row in json.loads(out.getvalue())] == [result.id]

    # Adapted from Django's own backend tests (tests/tasks/test_immediate_backend.py), on a
    # real queue and worker.

    def test_alias_and_options():
        backend = task_backends["default"]
        assert backend.alias == "default"
        assert backend.options == {}
        assert backend.queues == {"default", "other"}

    def test_a_failure_is_logged_by_django_with_its_exception(caplog):
        result = fails.enqueue("logged")
        with caplog.at_level("DEBUG", logger="django.tasks"):
            drain()
        [record] = [r for r in caplog.records if r.levelname == "ERROR"]
        assert f"id={result.id}" in record.getMessage()
        assert "state=FAILED" in record.getMessage()
        assert record.exc_info is not None
        assert record.exc_info[0] is ValueError
        started = [r.getMessage() for r in caplog.records if "state=RUNNING" in r.getMessage()]
        assert started == [f"Task id={result.id} path={fails.module_path} state=RUNNING"]

    def test_an_exception_chain_is_kept_in_the_traceback():
        result = chained.enqueue()
        drain()
        [error] = task_backends["default"].get_result(result.id).errors
        assert error.exception_class is ValueError
        assert "ValueError: This task failed" in error.traceback
        assert "The above exception was the direct cause" in error.traceback

    def test_a_keyboard_interrupt_inside_a_task_ends_it_failed_and_the_worker_goes_on():
        """Django's immediate backend lets it stop the process; a worker must not stop. The
        run is FAILED, as Django's result says, not a crash of the worker (the worker process
        ignores or handles SIGINT: the interrupt came from the Task's own code)."""
        result = interrupted.enqueue()
        after = add_json.enqueue(2, 2)
        drain()
        final = task_backends["default"].get_result(result.id)
        assert final.status == TaskResultStatus.FAILED
        [error] = final.errors
        assert error.exception_class is KeyboardInterrupt
        run = TaskRun.objects.get(pk=result.id)
        assert (run.state_type, run.state_message) == ("FAILED", "KeyboardInterrupt")
        assert task_backends["default"].get_result(after.id).return_value == 4

    def test_the_context_knows_the_result_id():
        result = own_id.enqueue()
        drain()
        assert task_backends["default"].get_result(result.id).return_value == result.id

    @pytest.mark.parametrize("priority", [True, False, 1.5, "1"])
    def test_a_priority_that_is_not_an_int_is_refused_before_anything_is_written(
        priority,
    ):
        """``True`` is an int to Python and passed Django's check, then failed in SQL."""
        with pytest.raises(InvalidTask, match="priority must be an int, got"):
            mark.using(priority=priority).enqueue("x")
        assert not TaskRun.objects.exists()

    def test_aenqueue_validates_too():
        import asyncio

        with pytest.raises(InvalidTask, match="Queue 'nowhere' is not valid for backend"):
            asyncio.run(mark.using(queue_name="nowhere").aenqueue("x"))
        assert not TaskRun.objects.exists()

    def _nested(depth: int) -> list[Any]:
        value: list[Any] = []
        for _ in range(depth):
            value = [value]
        return value

    def _circular() -> list[Any]:
        value: list[Any] = []
        value.append(value)
        return value

    @pytest.mark.parametrize(
        ("value", "reason"),
        [
            (float("nan"), "NaN and infinities"),
            (float("inf"), "NaN and infinities"),
            ("a\x00b", "refuses NUL"),
            ({"k\x00": 1}, "refuses NUL"),
            ("lone \ud800 surrogate", "a lone surrogate ('\\ud800')"),
            ({"\udfff": 1}, "a lone surrogate"),
            (10**5000, "an integer has more digits than Python writes out"),
            (_nested(100_000), "nested too deeply"),
            (_circular(), "nested too deeply (or hold themselves)"),
        ],
        ids=[
            "nan",
            "inf",
            "nul",
            "nul-key",
            "surrogate",
            "surrogate-key",
            "huge-int",
            "deep",
            "circular",
        ],
    )
    def test_arguments_jsonb_refuses_are_a_clear_error_and_write_nothing(value, reason):
        seen: list[Any] = []
        task_enqueued.connect(seen.append)
        try:
            with pytest.raises(ValueError, match="The arguments cannot be stored") as info:
                tuned.enqueue([value])
            assert reason in str(info.value)
            assert len(str(info.value)) < 200
        finally:
            task_enqueued.disconnect(seen.append)
        assert seen == []
        assert not TaskRun.objects.exists()

    @pytest.mark.parametrize(
        ("kind", "message"),
        [
            ("nan", "The return value cannot be stored: NaN"),
            ("nul", "The return value cannot be stored: PostgreSQL's jsonb refuses NUL"),
            ("surrogate", "The return value cannot be stored: a lone surrogate"),
            ("raise", "ValueError: message with a NUL"),
        ],
    )
    def test_a_return_value_or_error_jsonb_refuses_fails_the_attempt_clearly(kind, message):
        result = odd_value.enqueue(kind)
        after = add_json.enqueue(1, 2)
        drain()
        final = task_backends["default"].get_result(result.id)
        assert final.status == TaskResultStatus.FAILED
        [error] = final.errors
        assert message in error.traceback
        assert "\x00" not in error.traceback  # stored escaped
        assert TaskRun.objects.get(pk=result.id).state_type == "FAILED"
        assert task_backends["default"].get_result(after.id).return_value == 3


def _module_level(label: str) -> str:
    return label


def _no_context(label: str) -> str:
    return label
