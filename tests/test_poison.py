"""One bad task must never hurt the others: real worker subprocesses running tasks that kill
their process, return or raise what PostgreSQL refuses, log it, or leave processes behind."""

from __future__ import annotations

import math
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from django.db.models import Count, Q

from django_tasks import TaskRunFailed, TaskRunFuture
from django_tasks.models import TaskRun, TaskRunLog, TaskRunState
from tests.taskapp.models import Effect
from tests.taskapp.poison import (
    REFUSED_VALUES,
    async_logs_refused,
    async_raises_refused,
    async_returns_refused,
    atomic_exit,
    backgrounds_a_command,
    cached_exit,
    closes_descriptors,
    daemon_and_done,
    daemon_then_hang,
    daemon_then_ignore_cancel,
    exit_process,
    exit_process_retried,
    fails_then_exits,
    forks_and_returns,
    grandchild_then_hang,
    grandchild_then_wait,
    logs_refused,
    raises_refused,
    resets_signal,
    returns_refused,
    segfault,
)
from tests.taskapp.tasks import async_record, record, sleep_then_record, too_slow

from .conftest import drain, process_alive, wait_until, worker_log

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def names(future) -> list[str]:
    return list(TaskRunState.objects.filter(run_id=future.id).values_list("name", flat=True))


def all_final(futures) -> bool:
    return all(f.state.is_final() for f in futures)


def assert_ran_exactly_once(futures, labels) -> None:
    """Each ordinary run COMPLETED, its effect written once and one RUNNING row each."""
    for future, label in zip(futures, labels, strict=True):
        assert future.state.is_completed(), (label, future.state)
        assert names(future).count("Running") == 1, (label, names(future))
    counts = dict(
        Effect.objects.filter(label__in=labels).values_list("label").annotate(n=Count("id"))
    )
    assert counts == dict.fromkeys(labels, 1)


def deaths(supervisor) -> int:
    return worker_log(supervisor).count(" died (")


@pytest.mark.parametrize(
    "options",
    [("--concurrency", "2"), ("--concurrency", "1", "--batch-size", "4")],
    ids=["two-processes-adaptive", "one-process-batches-of-4"],
)
def test_poison_runs_end_crashed_and_the_runs_around_them_complete_once(start_worker, options):
    """os._exit() and a segfault, each among ordinary runs (in the same claim batches when
    batches are 4): the poison runs end CRASHED after one attempt, with a message that names
    the task and how its process died; every ordinary run completes exactly once."""
    labels = [f"ordinary-{i}" for i in range(6)]
    ordinary = [record.delay(label) for label in labels[:2]]
    exits = exit_process.delay(1)
    ordinary += [record.delay(label) for label in labels[2:4]]
    crashes = segfault.delay()
    ordinary += [record.delay(label) for label in labels[4:]]
    supervisor = start_worker(*options)
    wait_until(lambda: all_final([*ordinary, exits, crashes]), timeout=60)

    assert_ran_exactly_once(ordinary, labels)
    for future, task_name, how in (
        (exits, "exit_process", "exit code 1"),
        (crashes, "segfault", "signal SIGSEGV"),
    ):
        run = TaskRun.objects.get(pk=future.id)
        assert (run.state_type, run.attempts) == ("CRASHED", 1), run.state_message
        assert f"Task {task_name!r}" in run.state_message
        assert how in run.state_message
        assert names(future)[-3:] == ["Pending", "Running", "Crashed"]
    assert deaths(supervisor) == 2  # one process per poison run, no loop
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(20) == 0


def test_a_run_that_keeps_killing_its_process_is_discarded(start_worker):
    """retries=10, but after MAX_CRASHES (3) deaths in a row the run is final: never claimed
    again, however many retries it had left."""
    poison = exit_process_retried.delay()
    after = record.delay("after the discarded run")
    supervisor = start_worker("--batch-size", "1")
    final = poison.wait(timeout=60)
    assert final.type == "CRASHED"
    assert "3 times in a row" in final.message
    assert "not claimed again" in final.message
    run = TaskRun.objects.get(pk=poison.id)
    assert run.attempts == 3
    assert Effect.objects.filter(label="exit_process_retried").count() == 3
    assert after.result(timeout=30)
    assert deaths(supervisor) == 3


def expected_preview(kind: str) -> object:
    return {
        "nan": "NaN",
        "nul": "before\\x00after",
        "surrogate": "lone \\ud800 surrogate",
        "huge_int": "<int of 5001 digits>",
    }[kind]


def test_values_postgresql_refuses_are_recorded_and_the_worker_lives(start_worker):
    """Each refused value as a result, in an exception and in a log line, between ordinary
    runs in the same batches: one worker process does it all, nothing is lost or repeated."""
    labels, ordinary, returned, raised, logged = [], [], {}, {}, {}
    for kind in REFUSED_VALUES:
        returned[kind] = returns_refused.delay(kind)
        raised[kind] = raises_refused.delay(kind)
        logged[kind] = logs_refused.delay(kind)
        labels.append(f"between-{kind}")
        ordinary.append(record.delay(labels[-1]))
    bad_str = raises_refused.delay("bad_str")
    everything = [*ordinary, *returned.values(), *raised.values(), *logged.values(), bad_str]
    supervisor = start_worker("--batch-size", "5")
    wait_until(lambda: all_final(everything), timeout=60)

    assert deaths(supervisor) == 0
    assert (
        TaskRun.objects.filter(pk__in=[f.id for f in everything])
        .values("worker")
        .distinct()
        .count()
        == 1
    )
    assert_ran_exactly_once(ordinary, labels)
    for kind, future in returned.items():
        value = future.result(timeout=1)  # the exact value, from the signed pickle
        if kind == "nan":
            assert math.isnan(value)
        else:
            assert value == REFUSED_VALUES[kind]
        assert TaskRun.objects.get(pk=future.id).result_preview == expected_preview(kind)
    raised_messages = {
        "nan": "ValueError: refused nan: nan",
        "nul": "ValueError: refused nul: before\\x00after",
        "surrogate": "ValueError: refused surrogate: lone \\ud800 surrogate",
        # str() of that exception itself fails (the int is too long to print)
        "huge_int": "ValueError: <str() failed: ValueError: Exceeds the limit",
    }
    for kind, future in raised.items():
        run = TaskRun.objects.get(pk=future.id)
        assert run.state_type == "FAILED"
        assert run.state_message.startswith(raised_messages[kind]), run.state_message
        assert "Traceback (most recent call last)" in run.traceback
        assert "\x00" not in run.traceback
    logged_ids = [f.id for f in logged.values()]
    # Log lines reach the table in the worker's next batch (a fraction of a second later).
    wait_until(lambda: TaskRunLog.objects.filter(run_id__in=logged_ids).count() >= len(logged))
    for kind, future in logged.items():
        assert future.result(timeout=1) == kind
        messages = [log.message for log in TaskRunLog.objects.filter(run_id=future.id)]
        assert len(messages) == 1
        if kind == "huge_int":  # the line cannot be formatted: kept with the reason
            assert messages[0].startswith("logged %s: %s [could not format its arguments: ")
        else:
            assert messages[0] == f"logged {kind}: {expected_preview(kind)}".replace("NaN", "nan")
    bad = TaskRun.objects.get(pk=bad_str.id)
    assert bad.state_type == "FAILED"
    assert bad.state_message.startswith("BadStr: <str() failed: RuntimeError: __str__ refuses>")
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(20) == 0


def test_a_50_mb_exception_message_is_capped(start_worker):
    future = raises_refused.delay("huge")
    start_worker()
    final = future.wait(timeout=60)
    assert final.type == "FAILED"
    run = TaskRun.objects.get(pk=future.id)
    limit = 64 * 1024
    for text in (
        run.state_message,
        run.traceback,
        TaskRunState.objects.get(run_id=future.id, type="FAILED").message,
    ):
        assert len(text) <= limit
        assert "[cut: " in text
    with pytest.raises(TaskRunFailed):
        future.result(timeout=1)


def test_a_runs_grandchild_dies_with_it_on_a_timeout_kill(start_worker):
    future = grandchild_then_hang.delay(60)
    supervisor = start_worker("--batch-size", "1")
    marker = wait_until(lambda: Effect.objects.filter(label="grandchild").first(), timeout=30)
    sleeper = int(marker.run_marker)
    assert process_alive(sleeper)
    final = future.wait(timeout=30)
    assert (final.type, final.name) == ("FAILED", "TimedOut")
    wait_until(lambda: not process_alive(sleeper), timeout=10)
    assert "overran" in worker_log(supervisor)


@pytest.mark.parametrize("how", ["timeout", "cancel"])
def test_a_runs_daemon_in_a_new_session_dies_with_it_on_a_kill(start_worker, how):
    """A daemon the run started in a session of its own (setsid, its parent gone): not in the
    worker's process group, but in its tree (the worker process is a child subreaper), so the
    supervisor's kill for an ignored timeout or cancel reaches it too."""
    hangs = daemon_then_hang if how == "timeout" else daemon_then_ignore_cancel
    future = hangs.delay(60)
    supervisor = start_worker("--batch-size", "1")
    marker = wait_until(lambda: Effect.objects.filter(label="daemon").first(), timeout=30)
    daemon = int(marker.run_marker)
    assert process_alive(daemon)
    assert _session(daemon) == daemon  # it leads a session of its own
    if how == "cancel":
        wait_until(lambda: future.state.is_running(), timeout=30)
        assert future.cancel()
    final = future.wait(timeout=30)
    expected = ("FAILED", "TimedOut") if how == "timeout" else ("CANCELLED", "Cancelled")
    assert (final.type, final.name) == expected
    wait_until(lambda: not process_alive(daemon), timeout=10)
    assert "overran" in worker_log(supervisor)


def test_a_daemon_that_outlives_its_run_is_reaped_by_the_worker_when_it_ends(start_worker):
    """The worker process adopts its runs' orphans (a subreaper) and reaps them once they
    end: no zombie is left for as long as the worker lives."""
    future = daemon_and_done.delay()
    start_worker("--batch-size", "1")
    daemon = future.result(timeout=30)
    assert _parent(daemon) in worker_processes_of(future)
    os.kill(daemon, signal.SIGKILL)
    wait_until(lambda: not Path(f"/proc/{daemon}").exists(), timeout=10)


def _session(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[3])


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def worker_processes_of(future) -> set[int]:
    holder = TaskRun.objects.get(pk=future.id).worker
    return {int(holder.rsplit(":", 1)[1])}


def test_a_child_forked_by_a_task_that_returns_never_acts_as_the_worker(start_worker):
    """The task forks and its child returns from the task too: the child exits at once,
    without writing anything, and the parent records the run and goes on."""
    forked = forks_and_returns.delay("forked")
    after = record.delay("after the fork")
    supervisor = start_worker("--batch-size", "2")
    assert forked.result(timeout=30) == "parent"
    assert after.state.is_final() or after.wait(timeout=30)
    assert after.state.is_completed()
    assert names(forked) == ["Scheduled", "Pending", "Running", "Completed"]
    assert Effect.objects.filter(label="after the fork").count() == 1
    log = worker_log(supervisor)
    assert "a process forked by a run" in log
    assert deaths(supervisor) == 0


def test_a_run_that_resets_sigalrm_leaves_the_next_runs_timeout_working(start_worker):
    """A run puts SIGALRM back to its default action (as some libraries do) and completes:
    the worker puts its handler back, so the next run that overruns its timeout_seconds ends
    TIMED_OUT (before: SIGALRM's default action killed the process, and that run was blamed
    for taking it down)."""
    first = resets_signal.delay("SIGALRM")
    slow = too_slow.delay(3.0)  # timeout_seconds=0.5
    supervisor = start_worker("--batch-size", "2")
    wait_until(lambda: first.state.is_final() and slow.state.is_final(), timeout=60)
    run = TaskRun.objects.get(pk=slow.id)
    assert (run.state_type, run.state_name) == ("FAILED", "TimedOut"), run.state_message
    assert deaths(supervisor) == 0
    assert "changed this worker's handler of SIGALRM: put back" in worker_log(supervisor)


def test_a_run_that_resets_sigusr1_leaves_the_next_cancel_working(start_worker):
    """The same with SIGUSR1, the worker's cancel signal (before: the next cancel killed the
    process)."""
    resets_signal.delay("SIGUSR1")
    slow = sleep_then_record.delay(20.0, "cancelled")
    supervisor = start_worker("--batch-size", "2")
    wait_until(lambda: TaskRun.objects.get(pk=slow.id).state_type == "RUNNING", timeout=60)
    slow.cancel()
    wait_until(lambda: slow.state.is_final(), timeout=60)
    run = TaskRun.objects.get(pk=slow.id)
    assert run.state_type == "CANCELLED", run.state_message
    assert deaths(supervisor) == 0


def test_what_a_run_started_dies_with_a_worker_process_killed_from_outside(start_worker):
    """kill -9 of a worker process (the OOM killer, an operator): the supervisor settles its
    run (CRASHED) and kills the processes the run started, still in the dead process's group
    (before: they went on, and a retry would start them again beside the old ones)."""
    future = grandchild_then_wait.delay("oom", 60.0)
    start_worker()
    wait_until(lambda: Effect.objects.filter(label="oom").exists(), timeout=60)
    sleeper = int(Effect.objects.get(label="oom").run_marker)
    assert process_alive(sleeper)
    worker = TaskRun.objects.get(pk=future.id).worker
    os.kill(int(worker.rsplit(":", 1)[1]), signal.SIGKILL)
    wait_until(lambda: future.state.is_final(), timeout=60)
    assert future.state.type == "CRASHED"
    wait_until(lambda: not process_alive(sleeper), timeout=10)


def test_orphans_a_run_leaves_in_the_workers_own_session_are_reaped(start_worker):
    """``sh -c 'cmd &'`` (as ``nohup cmd &`` or a start script does) orphans ``cmd`` in the
    worker's own session; the worker process, a subreaper, adopts it and reaps it once it
    ends, between runs (before: a zombie per run for as long as the worker lived)."""
    runs = [backgrounds_a_command.delay(f"bg-{i}") for i in range(10)]
    start_worker()
    wait_until(lambda: all_final(runs), timeout=60)
    worker = int(TaskRun.objects.get(pk=runs[0].id).worker.rsplit(":", 1)[1])
    time.sleep(1)  # each run's `sleep 0.2` has ended
    wait_until(lambda: _zombies_of(worker) == [], timeout=10)


def _zombies_of(pid: int) -> list[int]:
    children = [
        int(child)
        for task in Path(f"/proc/{pid}/task").iterdir()
        for child in (task / "children").read_text().split()
    ]
    return [c for c in children if _stat_field(c, 0) == "Z"]


def _stat_field(pid: int, index: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[index]
    except OSError:
        return None


def test_poison_never_runs_twice_because_of_a_batch_mate(start_worker):
    """The runs in a poison run's claim batch that had already run are not run again: their
    outcomes outlive the process that computed them."""
    labels = [f"mate-{i}" for i in range(3)]
    mates = [record.delay(label) for label in labels]
    poison = exit_process.delay(7)
    start_worker("--batch-size", "4")
    wait_until(lambda: all_final([*mates, poison]), timeout=60)
    assert_ran_exactly_once(mates, labels)
    assert not TaskRun.objects.filter(
        Q(pk__in=[m.id for m in mates]) & Q(states__message__startswith="Rescued")
    ).exists()
    assert "exit code 7" in poison.state.message


@pytest.mark.usefixtures("close_connections_of_sync_to_async")
def test_async_runs_with_values_postgresql_refuses_end_recorded_beside_the_others():
    """The async lane writes final states in batches (its Finisher): a value PostgreSQL
    refuses in one run's result, exception or log line must not take its batch mates down."""
    returned = {k: TaskRunFuture[Any](async_returns_refused.delay(k).id) for k in REFUSED_VALUES}
    raised = {kind: async_raises_refused.delay(kind) for kind in REFUSED_VALUES}
    # Not huge_int: pytest's own log capture, in this process, raises on a line it cannot
    # format (a worker process keeps the line with the reason: the test above).
    logged = {
        kind: TaskRunFuture[str](async_logs_refused.delay(kind).id)
        for kind in REFUSED_VALUES
        if kind != "huge_int"
    }
    ordinary = [async_record.delay(f"async-between-{i}") for i in range(5)]
    drain()  # the worker ends its burst cleanly (exit 0), the lane alive to the end

    for kind, future in returned.items():
        value = future.result(timeout=1)
        if kind == "nan":
            assert math.isnan(value)
        else:
            assert value == REFUSED_VALUES[kind]
        assert TaskRun.objects.get(pk=future.id).result_preview == expected_preview(kind)
    for kind, future in raised.items():
        run = TaskRun.objects.get(pk=future.id)
        assert run.state_type == "FAILED", (kind, run.state_message)
        assert run.state_message.startswith("ValueError: "), run.state_message
        assert "\x00" not in run.traceback
        assert "\x00" not in run.state_message
    for kind, future in logged.items():
        assert future.result(timeout=1) == kind
    logged_ids = [f.id for f in logged.values()]
    wait_until(lambda: TaskRunLog.objects.filter(run_id__in=logged_ids).count() >= len(logged))
    assert "\x00" not in "".join(
        TaskRunLog.objects.filter(run_id__in=logged_ids).values_list("message", flat=True)
    )
    assert sorted(Effect.objects.values_list("label", flat=True)) == sorted(
        f"async-between-{i}" for i in range(5)
    )
    assert all(f.result(timeout=1) for f in ordinary)


def test_a_task_that_closes_the_workers_descriptors_leaves_the_worker_working(start_worker):
    """The worker's connections are reopened, the runs after it complete."""
    first = closes_descriptors.delay("closer")
    after = [record.delay(f"after-close-{i}") for i in range(3)]
    start_worker("--batch-size", "1")
    wait_until(lambda: first.state.is_final(), timeout=60)
    wait_until(lambda: all(f.state.is_final() for f in after), timeout=60)
    run = TaskRun.objects.get(pk=first.id)
    assert run.state_type == "COMPLETED", run.state_message
    assert all(f.state.is_completed() for f in after)


def test_poison_on_a_later_attempt_in_an_atomic_or_caching_run_ends_each_cleanly(start_worker):
    """A run that fails normally once and then kills its process on each retry ends
    CRASHED after MAX_CRASHES; an atomic run's writes are rolled back with its process; a
    caching run's key lock goes with its connection (a run of the same key is not stuck)."""
    later = fails_then_exits.delay("later")
    atomic = atomic_exit.delay("atomic")
    cached = [cached_exit.delay(5), cached_exit.delay(5)]  # the same key
    after = [record.delay(f"after-{i}") for i in range(3)]
    start_worker("--batch-size", "2", "--concurrency", "2")
    wait_until(lambda: all_final([later, atomic, *cached, *after]), timeout=90)
    run = TaskRun.objects.get(pk=later.id)
    assert (run.state_type, run.crashes) == ("CRASHED", 3), run.state_message
    assert Effect.objects.filter(label="later").count() == 4  # 1 failure + 3 crashes
    assert atomic.state.type == "CRASHED"
    assert not Effect.objects.filter(label="atomic").exists()
    assert [f.state.type for f in cached] == ["CRASHED", "CRASHED"]
    assert all(f.state.is_completed() for f in after)
