"""Values a careless or hostile caller passes: refused at the call with a message that names
what is wrong (nothing written, the caller's transaction still usable), or stored safely."""

from __future__ import annotations

import math
import socket
import uuid
from typing import Any

import pytest
from django.db import connection, transaction

from django_tasks import SerializationError, flush, task
from django_tasks.models import TaskRun, TaskRunLog
from django_tasks.recorder import writer
from tests.taskapp.tasks import add, slow_echo

from .conftest import drain

pytestmark = pytest.mark.django_db(transaction=True)

REFUSED_BY_POSTGRESQL = {
    "nan": (float("nan"), "NaN"),
    "infinity": (float("-inf"), "-Infinity"),
    "nul": ("a\x00b", "a\\x00b"),
    "surrogate": ("\udcff", "\\udcff"),
    "huge_int": (7**9000, "<int of 7606 digits>"),
}


@pytest.mark.parametrize("kind", REFUSED_BY_POSTGRESQL)
def test_arguments_postgresql_refuses_are_stored_safely(kind):
    """The signed pickle keeps the exact value; the preview - and the run name built from
    the arguments - show it escaped. The caller's transaction is never broken."""
    value, shown = REFUSED_BY_POSTGRESQL[kind]
    with transaction.atomic():
        future = slow_echo.delay(value)
        assert TaskRun.objects.filter(pk=future.id).exists()  # the transaction still works
    run = TaskRun.objects.get(pk=future.id)
    assert run.parameters_preview == {"value": shown, "seconds": 0.0}
    drain()
    result: Any = future.result(timeout=1)
    if kind == "nan":
        assert math.isnan(result)
    else:
        assert result == value
    assert TaskRun.objects.get(pk=future.id).result_preview == shown


@task(task_run_name="echo-{text}")
def named_by_its_argument(text: str) -> str:
    return text


def test_a_run_name_made_from_an_argument_is_storable():
    future = named_by_its_argument.delay("x\x00y")
    assert TaskRun.objects.get(pk=future.id).name == "echo-x\\x00y"


def test_a_structure_that_holds_itself_is_accepted_as_pickle_accepts_it():
    loop: list[object] = [1, 2]
    loop.append(loop)
    future = slow_echo.delay(loop)
    drain()
    result: Any = future.result(timeout=1)
    assert result[:2] == [1, 2]
    assert result[2] is result
    mapping: dict[str, object] = {}
    mapping["self"] = mapping
    echoed: Any = slow_echo(mapping)
    assert echoed["self"] is echoed  # inline too


def test_arguments_nested_too_deeply_to_pickle_are_refused_at_the_call():
    """A list nested 100,000 deep: a SerializationError saying so, nothing written (before:
    a bare RecursionError from looking for futures among the arguments)."""
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(SerializationError, match="excessively deep recursion"):
        slow_echo.delay(deep)
    assert TaskRun.objects.count() == 0
    slow_echo.apply_async(args=([1],), wait_for=[deep])  # no future in it: nothing to wait for
    assert TaskRun.objects.count() == 1


def test_open_files_and_sockets_are_refused_at_the_call(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("contents")
    with path.open() as handle, pytest.raises(SerializationError, match="open file or stream"):
        slow_echo.delay(handle)
    with socket.socket() as sock, pytest.raises(SerializationError, match="cannot be pickled"):
        slow_echo.delay(sock)
    assert TaskRun.objects.count() == 0


@pytest.mark.parametrize(
    ("countdown", "error", "message"),
    [
        (float("nan"), ValueError, "countdown must be a finite number of seconds, got nan"),
        (float("inf"), ValueError, "countdown must be a finite number of seconds, got inf"),
        (1e20, ValueError, "countdown must be at most 3153600000 seconds"),
        (10**30, ValueError, "countdown must be at most 3153600000 seconds"),
        (-0.5, ValueError, "countdown must not be negative"),
    ],
)
def test_countdown_errors_name_countdown(countdown, error, message):
    with transaction.atomic():
        with pytest.raises(error, match=message):
            add.apply_async((1, 2), countdown=countdown)
        assert TaskRun.objects.count() == 0  # nothing written, the transaction still usable


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"timeout_seconds": float("nan")}, "timeout_seconds must be a finite number"),
        ({"timeout_seconds": 1e300}, "timeout_seconds must be at most"),
        ({"retries": 1, "retry_delay_seconds": float("inf")}, "retry_delay_seconds must be a"),
        ({"retries": 1, "retry_delay_seconds": [1, float("nan")]}, "each retry_delay_seconds"),
        ({"name": "a\x00b"}, "must not hold NUL"),
        ({"tags": {"ok", "n\x00"}}, "must not hold NUL"),
    ],
)
def test_option_values_postgresql_would_refuse_fail_at_decoration(options, message):
    with pytest.raises(ValueError, match=message):
        task(**options)(lambda: None)


@task
def logs_and_echoes(value: object, line: str) -> object:
    from django_tasks import get_run_logger

    get_run_logger().info(line)
    return value


def test_inline_runs_with_refused_values_are_recorded_with_their_batch():
    """One NaN argument or NUL log line among inline runs: every run and line is written in
    the batch and flush() says so."""
    add(1, 2)
    logs_and_echoes(float("nan"), "a NUL: \x00")
    logs_and_echoes("\ud800", "fine")
    add(3, 4)
    assert flush() is True
    runs = TaskRun.objects.filter(origin="call")
    assert runs.count() == 4
    assert set(runs.values_list("state_type", flat=True)) == {"COMPLETED"}
    previews = sorted(
        str(p["value"])
        for p in runs.filter(task_name="logs_and_echoes").values_list(
            "parameters_preview", flat=True
        )
    )
    assert previews == ["NaN", "\\ud800"]
    lines = sorted(TaskRunLog.objects.values_list("message", flat=True))
    assert lines == ["a NUL: \\x00", "fine"]


def _log_line(run_id: object, message: str) -> dict[str, object]:
    return {
        "run_id": str(run_id),
        "timestamp": "2026-11-30T00:00:00+00:00",
        "level": 20,
        "logger": "x",
        "message": message,
    }


def test_the_writer_keeps_a_bad_record_apart_and_writes_the_rest(caplog):
    """Records that reach the writer unescaped (not through the run logger) are written
    escaped, alone; a record that cannot be written at all is given up alone, and flush()
    reports it."""
    caplog.set_level("WARNING", logger="django_tasks")
    add(1, 1)
    run_id = uuid.uuid4()
    writer.put_log(_log_line(run_id, "raw \x00 NUL"))
    writer.put_log(_log_line(run_id, "ordinary"))
    add(2, 2)
    assert flush() is True  # escaped is written, not lost
    assert TaskRun.objects.filter(task_name="add").count() == 2
    assert sorted(TaskRunLog.objects.values_list("message", flat=True)) == [
        "ordinary",
        "raw \\x00 NUL",
    ]
    assert "with escaped values" in caplog.text

    writer.put_log(_log_line("not-a-run-id", "lost for good"))
    add(3, 3)
    assert flush() is False  # one record could not be written: flush says so
    assert TaskRun.objects.filter(task_name="add").count() == 3
    assert "Could not record a run log line" in caplog.text
    add(4, 4)
    assert flush() is True  # reported once


def test_the_callers_transaction_survives_every_refused_value():
    with transaction.atomic():
        for value, _ in REFUSED_BY_POSTGRESQL.values():
            slow_echo.delay(value)
            slow_echo(value)
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM django_tasks_taskrun")
            assert cursor.fetchone()[0] == len(REFUSED_BY_POSTGRESQL)


# -- what an error quotes ----------------------------------------------------------------------

#: 10 MB passed by mistake where a key or a name goes.
HUGE = "x" * 10_000_000


def no_op(label: str) -> None: ...


@task(cache_key_fn=lambda context, parameters: [HUGE])  # type: ignore[arg-type, return-value]
def keyed_by_a_list(label: str) -> str:
    return label


def _markdown_with_a_huge_key() -> None:
    from django_tasks import create_markdown_artifact

    create_markdown_artifact("text", key=HUGE)


def _progress_that_is_no_number() -> None:
    from django_tasks.progress import _checked

    _checked(HUGE, None, "")


REFUSED_HUGE_VALUES = {
    "unique_key": lambda: add.delay(1, 2, unique_key=HUGE),  # type: ignore[call-arg]
    "queue": lambda: add.apply_async((1, 2), queue=HUGE),
    "task name": lambda: task(name=HUGE)(no_op),
    "tag": lambda: task(tags=[HUGE + "\x00"])(no_op),
    "rate_limit": lambda: task(rate_limit=HUGE)(no_op),
    "keyword argument": lambda: add.delay(1, 2, **{HUGE: 1}),
    "cache key": lambda: keyed_by_a_list("x"),
    "cron": lambda: __import__("django_tasks").cron(HUGE),
    "time zone": lambda: __import__("django_tasks").cron("0 3 * * *", tz=HUGE),
    "missed": lambda: __import__("django_tasks").every(minutes=1, missed=HUGE),
    "artifact key": _markdown_with_a_huge_key,
    "progress": _progress_that_is_no_number,
    "age": lambda: __import__("django_tasks.retention").retention.parse_age(HUGE),
    "task looked up": lambda: __import__("django_tasks.registry").registry.registry.by_name(HUGE),
}


@pytest.mark.parametrize("where", REFUSED_HUGE_VALUES)
def test_an_error_quotes_a_huge_value_cut_to_a_readable_size(where):
    """The 10 MB value is quoted by its first 200 characters and an ellipsis (and its length,
    when it is text): a message (a log line, a 400, a form error) of normal size."""
    with pytest.raises(Exception) as info:  # noqa: PT011 - each its own type; the text matters
        REFUSED_HUGE_VALUES[where]()
    message = str(info.value)
    assert len(message) < 1000, (where, len(message))
    assert "…" in message, message
    assert TaskRun.objects.count() == 0


def test_the_api_quotes_a_huge_window_cut(client):
    from django.contrib.auth.models import User

    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    response = client.get("/tasks/api/stats/", {"window": "x" * 1_000_000})
    assert response.status_code == 400
    assert len(response.content) < 1000
    assert b"1,000,000 characters" in response.content
