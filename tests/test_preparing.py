"""Whatever fails while a worker prepares a run - finding its task, loading its arguments - or
escapes the run's execution is that run's failure, with the real error: never the end of the
worker process, never a run handed back to fail the next process (issue 24, item 1)."""

from __future__ import annotations

import time
from typing import Any

import django
import pytest

from django_tasks import TaskRunFuture, sql
from django_tasks.models import TaskRun, TaskRunState
from django_tasks.worker.connection import QueueConnection
from django_tasks.worker.journal import ProcessJournal
from django_tasks.worker.running import refuse_run
from django_tasks.worker.salvage import salvage
from tests.taskapp.models import Effect
from tests.taskapp.poison import RaisesWhenLoaded, SlowToLoad, hook_exits
from tests.taskapp.tasks import add, async_record, describe, record

from .conftest import drain, wait_until, worker_log
from .test_salvage import DEAD, claim_all

pytestmark = pytest.mark.django_db(transaction=True)


def deaths(supervisor) -> int:
    return worker_log(supervisor).count(" died (")


def names(run_id) -> list[str]:
    return list(TaskRunState.objects.filter(run_id=run_id).values_list("name", flat=True))


@pytest.mark.slow
def test_arguments_that_raise_when_loaded_fail_their_run_and_the_process_lives(start_worker):
    """SystemExit, KeyboardInterrupt and RuntimeError raised while the worker unpickles a run's
    arguments: each run FAILED with the exception and its traceback, the runs between them
    complete, and one worker process did it all (before: SystemExit and KeyboardInterrupt
    ended the process, which handed the run back to the next one, for ever)."""
    kinds = ("SystemExit", "KeyboardInterrupt", "RuntimeError")
    bad: dict[str, TaskRunFuture[str]] = {}
    good: list[TaskRunFuture[int]] = []
    for kind in kinds:
        bad[kind] = describe.delay(RaisesWhenLoaded(kind))
        good.append(record.delay(f"after-{kind}"))
    supervisor = start_worker("--batch-size", "3")
    every: list[TaskRunFuture[Any]] = [*bad.values(), *good]
    wait_until(lambda: all(f.state.is_final() for f in every), timeout=60)

    for kind, future in bad.items():
        run = TaskRun.objects.get(pk=future.id)
        assert (run.state_type, run.state_name) == ("FAILED", "Failed"), run.state_message
        assert run.state_message.startswith("The parameters could not be unpickled: " + kind)
        assert "_raise_when_loaded" in run.traceback
        assert names(future.id) == ["Scheduled", "Pending", "Failed"]
    assert all(f.state.is_completed() for f in good)
    assert Effect.objects.filter(label__startswith="after-").count() == 3
    assert deaths(supervisor) == 0
    assert TaskRun.objects.values("worker").distinct().count() == 1


@pytest.mark.slow
def test_a_hook_that_raises_systemexit_does_not_end_the_worker(start_worker):
    """The run has completed when its hook raises SystemExit: it stays COMPLETED, the next run
    runs, the process lives."""
    first, second = hook_exits.delay("first"), hook_exits.delay("second")
    supervisor = start_worker("--batch-size", "2")
    wait_until(lambda: first.state.is_final() and second.state.is_final(), timeout=60)
    assert first.result() == "first"
    assert second.result() == "second"
    assert deaths(supervisor) == 0
    assert "a hook called sys.exit()" in worker_log(supervisor)


@pytest.mark.usefixtures("close_connections_of_sync_to_async")
def test_an_async_run_whose_arguments_do_not_load_fails_instead_of_running_for_ever():
    """An async lane writes RUNNING for its whole batch before each run is prepared: a run that
    cannot be prepared then is RUNNING, and must end FAILED all the same (before: the refusal
    matched PENDING runs only, and the run stayed RUNNING while its worker lived)."""
    broken = async_record.delay(RaisesWhenLoaded("RuntimeError"))  # type: ignore[arg-type]
    fine = async_record.delay("fine")
    drain()
    run = TaskRun.objects.get(pk=broken.id)
    assert run.state_type == "FAILED"
    assert "RuntimeError: this argument cannot be loaded here" in run.state_message
    assert names(broken.id) == ["Scheduled", "Pending", "Running", "Failed"]
    assert fine.state.is_completed()
    assert Effect.objects.filter(label="fine").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    "value",
    [
        pytest.param(RuntimeError("cannot be loaded here"), id="then-fails"),
        pytest.param("never-run", id="then-loads"),
    ],
)
def test_an_async_run_cancelled_while_it_is_prepared_ends_at_once_and_costs_no_other_run(
    start_worker, value
):
    """The lane writes RUNNING for its batch before each run is prepared; preparing one (its
    arguments take 2 s to load, here) cannot be interrupted. A cancel meanwhile ends it
    CANCELLED at once, and its coroutine never starts, whether its arguments then load or
    not (before: the run stayed CANCELLING - the refusal skipped it - until the supervisor
    killed the whole process after CANCEL_GRACE, 1 s here, with the async runs beside it)."""
    bystander = async_record.delay("bystander", 4.0)
    supervisor = start_worker()
    wait_until(lambda: TaskRun.objects.get(pk=bystander.id).state_type == "RUNNING", timeout=60)
    slow = async_record.delay(SlowToLoad(2.0, value))  # type: ignore[arg-type]
    wait_until(lambda: TaskRun.objects.get(pk=slow.id).state_type == "RUNNING", timeout=30)
    assert slow.cancel()
    state = slow.wait(timeout=30)
    assert (state.type, state.message) == (
        "CANCELLED",
        "Cancelled while it was being prepared: its coroutine never started.",
    )
    assert names(slow.id) == ["Scheduled", "Pending", "Running", "Cancelling", "Cancelled"]
    assert bystander.wait(timeout=30).is_completed(), bystander.state.message
    time.sleep(2.0)  # its arguments are loaded (or not) by now: the coroutine never ran
    assert not Effect.objects.filter(label="never-run").exists()
    assert TaskRun.objects.get(pk=slow.id).state_type == "CANCELLED"
    assert " died (" not in worker_log(supervisor)
    assert "overran" not in worker_log(supervisor)


def test_an_unexpected_error_in_the_execution_fails_that_run_and_the_worker_goes_on(
    monkeypatch,
):
    """A bug of the worker itself while it executes one run (here: calling it) ends that run
    FAILED with the bug's traceback; the next run completes."""
    from django_tasks.worker import running

    calls = {"n": 0}
    original = running.Execution._timed_call

    def broken_once(self, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("a bug in the worker")
        return original(self, **kwargs)

    monkeypatch.setattr(running.Execution, "_timed_call", broken_once)
    first, second = add.delay(1, 1), add.delay(2, 2)
    drain(batch_size=2)
    run = TaskRun.objects.get(pk=first.id)
    assert run.state_type == "FAILED"
    assert run.state_message == (
        "The worker failed while executing this run: RuntimeError: a bug in the worker"
    )
    assert "broken_once" in run.traceback
    assert second.result(timeout=5) == 4


@pytest.fixture
def db():
    conn = QueueConnection("default", lambda: False)
    yield conn
    conn.close()


def test_a_run_refused_while_it_is_being_cancelled_ends_failed(db):
    """A run the worker cannot see through (it fails to prepare it, or fails itself while
    executing it) that was asked to cancel meanwhile ends FAILED with the reason: left
    CANCELLING, nothing would end it but the supervisor's kill of its whole process."""
    future = add.delay(1, 1)
    (run,) = claim_all(db)
    start = {"id": run.id, "worker": DEAD, "started": None}
    assert db.execute(sql.START, start, give_up_on_stop=False)
    cancel = {"id": run.id, "message": "Cancel requested."}
    assert db.execute(sql.CANCEL, cancel, give_up_on_stop=False)[0][0] == "CANCELLING"
    assert refuse_run(db, run.id, DEAD, "The parameters could not be unpickled: boom", None)
    row = TaskRun.objects.get(pk=future.id)
    assert (row.state_type, row.state_message) == (
        "FAILED",
        "The parameters could not be unpickled: boom",
    )
    assert names(future.id) == ["Scheduled", "Pending", "Running", "Cancelling", "Failed"]


def test_runs_handed_back_by_processes_that_died_between_runs_end_after_max_crashes(db, settings):
    """A process that dies with no run of its own to blame (between runs, while preparing one)
    hands back what it had claimed; each such hand-back counts as a crash of those runs, so a
    run that takes every process that claims it down ends CRASHED after MAX_CRASHES instead of
    going round for ever. A death the supervisor caused (killed_because) does not count."""
    settings.DJANGO_TASKS = {"MAX_CRASHES": 3}
    future = add.delay(1, 1)
    claim_all(db)
    salvage(
        db,
        ProcessJournal.private(),
        worker=DEAD,
        rescuer="me",
        exitcode=-9,
        killed_because="the shutdown timeout",
    )
    assert TaskRun.objects.get(pk=future.id).crashes == 0
    for expected in ("SCHEDULED", "SCHEDULED", "CRASHED"):
        claim_all(db)
        settled = salvage(db, ProcessJournal.private(), worker=DEAD, rescuer="me", exitcode=1)
        assert TaskRun.objects.get(pk=future.id).state_type == expected
    assert settled.crashed == 1
    run = TaskRun.objects.get(pk=future.id)
    assert run.state_message == (
        f"Handed back: worker process {DEAD} died before starting it. It was handed back so 3 "
        f"times in a row (MAX_CRASHES): it is not claimed again."
    )
    assert run.finished is not None
    assert run.attempts == 1  # the attempts of its hand-backs were given back
    assert claim_all(db) == []


def test_batch_mates_of_a_run_that_killed_its_process_are_not_charged(db, settings):
    """The run being executed is blamed for the death; the others of its batch go back with
    no crash counted, however often it happens."""
    settings.DJANGO_TASKS = {"MAX_CRASHES": 2}
    mates = [add.delay(i, i) for i in range(2)]
    for _ in range(3):
        culprit = add.delay(9, 9)
        claim_all(db)
        journal = ProcessJournal.private()
        journal.begin(culprit.id, "add", time.time())
        salvage(db, journal, worker=DEAD, rescuer="me", exitcode=-11)
    for mate in mates:
        run = TaskRun.objects.get(pk=mate.id)
        assert (run.state_type, run.crashes) == ("SCHEDULED", 0)


if django.VERSION >= (6, 0):

    @pytest.mark.slow
    @pytest.mark.parametrize(
        ("late", "error"),
        [
            ("runtime", "RuntimeError: late_standard cannot be imported in this process"),
            # not "Unknown task": the ImportError that caused it, first
            ("import", "ModuleNotFoundError: No module named 'a_package_this_worker_lacks'"),
            ("name", "ImportError: cannot import name 'no_such_name' from 'json'"),
            ("attribute", "AttributeError: module 'posixpath' has no attribute 'no_such_function'"),
            ("queue", "InvalidTask: Queue 'emails' is not valid for backend"),
        ],
    )
    def test_a_django_task_the_worker_cannot_load_fails_with_the_real_error(
        start_worker, worker_env, late, error
    ):
        """A ``django.tasks`` Task whose module raises in the worker (old settings: its queue
        is not valid there; a module that fails at import): the run FAILED with that
        exception's type, message and traceback, the worker goes on (before: every worker
        process died on it, 321 times in 34 s, and the run stayed PENDING)."""
        from tests.taskapp.late_standard import late_mark

        result = late_mark.enqueue("late")
        after = record.delay("after the late task")
        supervisor = start_worker(
            "--queues", "other,default", env={**worker_env, "DJANGO_TASKS_TEST_LATE": late}
        )
        wait_until(lambda: after.state.is_final(), timeout=60)
        wait_until(lambda: TaskRun.objects.get(pk=result.id).state_type == "FAILED")
        run = TaskRun.objects.get(pk=result.id)
        assert run.state_message.startswith(
            "Task 'tests.taskapp.late_standard.late_mark' could not be loaded in this worker: "
            + error
        )
        assert "late_standard.py" in run.traceback
        assert after.state.is_completed()
        assert deaths(supervisor) == 0
        assert late_mark.get_result(result.id).status == "FAILED"

    def test_an_unknown_django_task_name_says_why_it_did_not_import():
        """A run naming a module path that does not import: the ImportError is in the
        message beside the usual advice."""
        future = add.delay(1, 1)
        TaskRun.objects.filter(pk=future.id).update(task_key="0" * 32, task_name="gone.away.task")
        drain()
        run = TaskRun.objects.get(pk=future.id)
        assert run.state_type == "FAILED"
        assert "Unknown task 'gone.away.task'" in run.state_message
        assert (
            "Importing 'gone.away.task' raised ModuleNotFoundError: No module named 'gone'"
            in run.state_message
        )
        assert "ModuleNotFoundError" in run.traceback
