"""Transactional enqueue and bad input at the call site, against real PostgreSQL."""

import threading
from datetime import timedelta

import pytest
from django.db import transaction
from django.test import override_settings
from django.utils import timezone

from django_tasks import PayloadTooLarge, SerializationError, TaskRunFuture, task
from django_tasks.models import TaskRun
from django_tasks.sql import LISTEN
from tests.taskapp.tasks import add, on_other_queue


def _visible_to(conn, run_id) -> bool:
    return (
        conn.execute("SELECT 1 FROM django_tasks_taskrun WHERE id = %s", [run_id]).fetchone()
        is not None
    )


@pytest.mark.django_db(transaction=True)
def test_rollback_means_the_run_never_existed(second_connection):
    with transaction.atomic():
        future = add.delay(1, 2)
        assert TaskRun.objects.filter(pk=future.id).exists()  # our own transaction sees it
        transaction.set_rollback(True)
    assert not TaskRun.objects.exists()
    assert not _visible_to(second_connection, future.id)


@pytest.mark.django_db(transaction=True)
def test_worker_connection_sees_the_run_only_after_commit(second_connection):
    second_connection.execute(LISTEN)
    with transaction.atomic():
        future = add.delay(1, 2)
        assert not _visible_to(second_connection, future.id)
        assert list(second_connection.notifies(timeout=0.2)) == []  # NOTIFY waits for commit
    assert _visible_to(second_connection, future.id)
    notes = list(second_connection.notifies(timeout=2, stop_after=1))
    assert [n.payload for n in notes] == ["default"]


@pytest.mark.django_db(transaction=True)
def test_enqueued_run_row_and_history():
    future = add.delay(2, b=3)
    run = TaskRun.objects.get(pk=future.id)
    assert (run.state_type, run.state_name, run.origin, run.queue, run.task_key) == (
        "SCHEDULED",
        "Scheduled",
        "delay",
        "default",
        add.key,
    )
    assert run.parameters_preview == {"a": 2, "b": 3}
    assert list(run.states.values_list("type", "name")) == [("SCHEDULED", "Scheduled")]
    assert run.scheduled_time >= run.created - timedelta(seconds=1)
    assert future.state.is_scheduled()
    assert not future.state.is_final()
    assert future == TaskRunFuture(str(future.id))
    assert "TaskRunFuture" in repr(future)


@pytest.mark.django_db(transaction=True)
def test_apply_async_options_are_stored():
    when = timezone.now() + timedelta(hours=1)
    a = add.apply_async(args=(1,), kwargs={"b": 2}, queue="fast", priority=7, scheduled_time=when)
    b = on_other_queue.apply_async(countdown=30)
    run_a, run_b = TaskRun.objects.get(pk=a.id), TaskRun.objects.get(pk=b.id)
    assert (run_a.queue, run_a.priority, run_a.scheduled_time) == ("fast", 7, when)
    assert run_b.queue == "other"
    assert run_b.scheduled_time > timezone.now() + timedelta(seconds=25)


def _unpicklable_arg():
    return add.delay(threading.Lock(), 1)  # type: ignore[arg-type]


@override_settings(DJANGO_TASKS={"MAX_PAYLOAD_BYTES": 10_000})
def _oversize():
    return add.delay("x" * 20_000, "y")  # type: ignore[arg-type]


@task
def _local_helper() -> None:  # defined in a test module, not a tasks.py: still importable
    return None


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (_unpicklable_arg, SerializationError, "parameters cannot be pickled"),
        (_oversize, PayloadTooLarge, "over the limit of 10000 bytes"),
        (lambda: add.delay(1), TypeError, "Wrong arguments for task 'add'"),  # type: ignore[call-arg]
        (lambda: add.delay(1, 2, c=3), TypeError, "unexpected keyword argument 'c'"),  # type: ignore[call-arg]
        (lambda: add.apply_async((1, 2), queue="bad queue"), ValueError, "queue must be"),
        (lambda: add.apply_async((1, 2), priority=500), ValueError, "between -100 and 100"),
        (lambda: add.apply_async((1, 2), countdown=-1), ValueError, "must not be negative"),
        (lambda: add.apply_async((1, 2), countdown="soon"), TypeError, "number of seconds"),  # type: ignore[arg-type]
        (
            lambda: add.apply_async((1, 2), countdown=1, scheduled_time=timezone.now()),
            TypeError,
            "not both",
        ),
        (lambda: add.apply_async((1, 2), scheduled_time="now"), TypeError, "must be a datetime"),  # type: ignore[arg-type]
        (
            lambda: add.apply_async((1, 2), scheduled_time=timezone.now().replace(tzinfo=None)),
            ValueError,
            "timezone-aware",
        ),
    ],
)
def test_bad_input_raises_and_writes_nothing(call, error, message):
    with pytest.raises(error, match=message):
        call()
    assert TaskRun.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_tasks_workers_cannot_import_are_refused():
    def make():
        @task
        def nested() -> None: ...

        return nested

    with pytest.raises(ValueError, match="cannot run in the background"):
        make().delay()
    main_task = task(lambda: None)
    main_task.fn.__module__ = "__main__"
    with pytest.raises(ValueError, match="define it at module level"):
        main_task.delay()
    assert TaskRun.objects.count() == 0
    assert _local_helper.delay().id  # module-level functions are fine


def _prepared_enqueues(cursor) -> int:
    cursor.execute(
        "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s",
        ["%django_tasks_enqueue%"],
    )
    return int(cursor.fetchone()[0])


@pytest.mark.django_db(transaction=True)
def test_delay_is_a_prepared_statement_and_django_queries_stay_unprepared():
    from django.db import connection

    connection.close()
    with connection.cursor() as cursor:
        add.delay(1, 2)
        assert _prepared_enqueues(cursor) == 1  # prepared at once...
        for i in range(10):
            add.delay(i, i)
            assert TaskRun.objects.filter(task_name="add").count() == i + 2
        assert _prepared_enqueues(cursor) == 1  # ...and reused
        cursor.execute("SELECT count(*) FROM pg_prepared_statements")
        assert cursor.fetchone()[0] == 1  # the ORM's repeated query was not prepared
        assert connection.connection.prepare_threshold is None  # as Django set it


@pytest.mark.django_db(transaction=True)
def test_prepare_statements_false_prepares_nothing(settings):
    from django.db import connection

    settings.DJANGO_TASKS = {"PREPARE_STATEMENTS": False}
    connection.close()
    with connection.cursor() as cursor:
        future = add.delay(5, 6)
        add.delay(7, 8)
        assert _prepared_enqueues(cursor) == 0
    assert TaskRun.objects.get(pk=future.id).parameters_preview == {"a": 5, "b": 6}
