import time
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from django_tasks.models import TaskRun, TaskRunState, Worker
from django_tasks.retention import parse_age, purge
from django_tasks.worker import Worker as Executor
from tests.taskapp.tasks import add, explode, noop

pytestmark = pytest.mark.django_db(transaction=True)


def age_runs(days: float) -> None:
    past = timezone.now() - timedelta(days=days)
    TaskRun.objects.update(created=past, finished=past)


def test_purge_deletes_old_finished_runs_with_their_history(capsys):
    done = [add.delay(1, i) for i in range(5)]
    failed = explode.delay()
    Executor(burst=True, handle_signals=False).run()
    age_runs(10)
    waiting = noop.delay()  # SCHEDULED: never purged
    fresh = add.delay(2, 2)
    Executor(burst=True, handle_signals=False).run()  # finished just now: too young
    call_command("taskruns", "purge", "--older-than", "7d", "--state", "COMPLETED")
    assert "Deleted 5 runs" in capsys.readouterr().out
    remaining = set(TaskRun.objects.values_list("id", flat=True))
    assert remaining == {failed.id, waiting.id, fresh.id}
    assert not TaskRunState.objects.filter(run_id__in=[f.id for f in done]).exists()
    assert purge(timedelta(days=7), batch_size=1) == 1  # the failed one, in batches of one
    assert set(TaskRun.objects.values_list("id", flat=True)) == {waiting.id, fresh.id}


def test_purge_removes_long_stopped_worker_rows():
    Executor(burst=True, handle_signals=False).run()
    Worker.objects.update(stopped=timezone.now() - timedelta(days=30))
    purge(timedelta(days=7))
    assert not Worker.objects.exists()


@pytest.mark.parametrize(
    ("text", "seconds"), [("7d", 604800), ("12h", 43200), ("30m", 1800), ("1.5s", 1.5)]
)
def test_parse_age(text, seconds):
    assert parse_age(text).total_seconds() == seconds


def test_bad_purge_requests():
    with pytest.raises(CommandError, match="Age must look like"):
        call_command("taskruns", "purge", "--older-than", "soon")
    with pytest.raises(CommandError, match="--batch-size"):
        call_command("taskruns", "purge", "--older-than", "1d", "--batch-size", "0")
    with pytest.raises(ValueError, match="RUNNING runs are still in use"):
        purge(timedelta(days=1), ["RUNNING"])


def test_a_purge_with_a_max_rate_paces_itself(capsys):
    """30 runs in batches of 10 at 100 runs/s: it pauses after each full batch until its
    pace falls back to the rate - 0.3 s in all - and deletes them all."""
    done = [add.delay(1, i) for i in range(30)]
    Executor(burst=True, handle_signals=False).run()
    age_runs(10)
    began = time.monotonic()
    call_command(
        "taskruns", "purge", "--older-than", "7d", "--batch-size", "10", "--max-rate", "100"
    )
    assert time.monotonic() - began >= 0.29
    assert "Deleted 30 runs" in capsys.readouterr().out
    assert not TaskRun.objects.filter(id__in=[f.id for f in done]).exists()


@pytest.mark.parametrize("rate", ["0", "-5", "nan", "inf", "1e10"])
def test_a_max_rate_that_is_not_a_positive_rate_is_refused(rate):
    add.delay(1, 1)
    with pytest.raises(CommandError, match="--max-rate must be from 1 to"):
        call_command("taskruns", "purge", "--older-than", "0s", "--max-rate", rate)
    if not float(rate) > 0:  # 0, -5, NaN: refused by purge() itself too
        with pytest.raises(ValueError, match="max_rate must be a positive number"):
            purge(timedelta(0), max_rate=float(rate))
    assert TaskRun.objects.count() == 1  # nothing written, nothing deleted


def test_the_built_in_purge_task_deletes_old_runs_and_can_be_scheduled():
    from django.core import checks
    from django.test import override_settings

    from django_tasks.housekeeping import purge_history
    from django_tasks.models import Schedule
    from django_tasks.schedules.declared import sync_schedules
    from django_tasks.worker.connection import QueueConnection

    done = [add.delay(1, i) for i in range(3)]
    Executor(burst=True, handle_signals=False).run()
    age_runs(10)
    future = purge_history.delay(older_than="7d", max_rate=1000.0)
    Executor(burst=True, handle_signals=False).run()
    assert future.result(timeout=5) == 3
    assert set(TaskRun.objects.values_list("id", flat=True)) == {future.id}
    assert not TaskRun.objects.filter(id__in=[f.id for f in done]).exists()
    declared = {
        "purge history": {
            "task": "django_tasks.purge_history",
            "cron": "17 * * * *",
            "kwargs": {"older_than": "14d"},
        }
    }
    with override_settings(DJANGO_TASKS={"SCHEDULES": declared}):
        errors = [m for m in checks.run_checks() if m.id and m.id.startswith("django_tasks.")]
        assert errors == []
        db = QueueConnection("default", lambda: False)
        try:
            sync_schedules(db)
        finally:
            db.close()
        schedule = Schedule.objects.get(name="purge history")
    assert (schedule.task_name, schedule.kwargs) == (
        "django_tasks.purge_history",
        declared["purge history"]["kwargs"],
    )


def test_the_built_in_purge_task_fails_on_a_bad_age():
    from django_tasks.housekeeping import purge_history

    future = purge_history.delay(older_than="soon")
    Executor(burst=True, handle_signals=False).run()
    run = TaskRun.objects.get(id=future.id)
    assert run.state_type == "FAILED"
    assert "Age must look like" in run.state_message
