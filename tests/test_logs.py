"""Run logs: get_run_logger() and log_prints, stored per run in batches."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from django_tasks import MissingContextError, flush, get_run_logger
from django_tasks.logs import RunIdFilter, for_run
from django_tasks.models import TaskRun, TaskRunLog
from django_tasks.worker import Worker
from tests.taskapp.tasks import chatty, printer

pytestmark = pytest.mark.django_db(transaction=True)


def lines(run_id: uuid.UUID) -> list[tuple[str, str]]:
    flush()
    return [(log.level_name, log.message) for log in TaskRunLog.objects.filter(run_id=run_id)]


def test_inline_run_logs_are_stored_with_the_run():
    assert chatty(1) == 1
    flush()
    run = TaskRun.objects.get()
    assert lines(run.id) == [("INFO", "hello 1"), ("WARNING", "careful")]
    assert {log.logger for log in run.logs.all()} == {"django_tasks.run"}


def test_background_run_logs_are_stored_with_the_run():
    future = chatty.delay(2)
    assert Worker(burst=True, handle_signals=False).run() == 0
    assert lines(future.id) == [("INFO", "hello 2"), ("WARNING", "careful")]


def test_submitted_runs_keep_their_own_lines():
    futures = chatty.map([3, 4])
    futures.wait()
    first, second = futures
    assert lines(first.id)[0] == ("INFO", "hello 3")
    assert lines(second.id)[0] == ("INFO", "hello 4")


def test_log_prints_sends_print_to_the_run_log(capsys):
    assert printer(5) == 5
    flush()
    run = TaskRun.objects.get()
    assert lines(run.id) == [("INFO", "printed 5")]
    captured = capsys.readouterr()
    assert "printed 5" not in captured.out
    assert "left alone" in captured.err
    print("outside a run")
    assert "outside a run" in capsys.readouterr().out


def test_the_run_logger_needs_a_run():
    with pytest.raises(MissingContextError):
        get_run_logger()


def test_purge_deletes_logs_with_their_runs():
    from django_tasks.retention import purge

    chatty(6)
    flush()
    TaskRun.objects.update(created="2020-01-01T00:00:00Z", finished="2020-01-01T00:00:00Z")
    assert purge(timedelta(minutes=1)) == 1
    assert not TaskRunLog.objects.exists()


def test_run_id_filter_names_the_run_on_every_line():
    import io
    import logging

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RunIdFilter())
    handler.setFormatter(logging.Formatter("%(task_run_id)s %(name)s %(message)s"))
    ours = logging.getLogger("django_tasks")
    level = ours.level
    ours.setLevel(logging.INFO)  # another test's runtaskworker -v 0 may have raised it
    ours.addHandler(handler)
    try:
        chatty(5)  # its run logger's lines, inside the run
        logging.getLogger("django_tasks.worker").warning("about a run", extra=for_run("r-1"))
        logging.getLogger("django_tasks.worker").warning("about nothing")
    finally:
        ours.removeHandler(handler)
        ours.setLevel(level)
    flush()
    run_id = TaskRun.objects.get().id
    assert stream.getvalue().splitlines() == [
        f"{run_id} django_tasks.run hello 5",
        f"{run_id} django_tasks.run careful",
        "r-1 django_tasks.worker about a run",
        "- django_tasks.worker about nothing",
    ]
