"""An async run that attacks its event loop ends like its sync twin and nothing else is hurt:
real worker pools run coroutines that raise SystemExit, KeyboardInterrupt or GeneratorExit,
stop or close the loop, raise while being cancelled or swallow every cancel, fork, shut the
loop's executor or kill their process - beside async runs claimed before and after them and
a sync run of the same process."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from django_tasks.aio import LoopThread, call_on_loop
from django_tasks.futures import TaskRunFuture
from django_tasks.models import TaskRun, TaskRunState
from tests.taskapp.models import Effect
from tests.taskapp.poison import (
    async_exit_process,
    async_forks_and_returns,
    async_refuses_cancel,
    async_refuses_timeout,
    async_shuts_executor,
    async_stops_like,
    async_to_thread,
    exit_process,
    stops_like,
)
from tests.taskapp.tasks import async_record, async_sleep, sleep_io, sleep_then_record

from .conftest import FAST_WORKER_SETTINGS, drain, process_alive, wait_until, worker_log

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.slow,
    pytest.mark.usefixtures("close_connections_of_sync_to_async"),
]

# Typed as Any: the futures of async tasks do not say yet that results are the values.
async_stops: Any = async_stops_like
refuses_timeout: Any = async_refuses_timeout
refuses_cancel: Any = async_refuses_cancel
sleeping: Any = async_sleep
forks_and_returns: Any = async_forks_and_returns

#: Graces long enough that a worker process which ends such runs itself is never overtaken by
#: its supervisor's kill on a loaded machine (the kill is what these runs used to cause).
GRACES = {"TIMEOUT_GRACE": 3.0, "CANCEL_GRACE": 4.0}


@pytest.fixture
def pool(start_worker: Any, worker_env: dict[str, str]) -> Any:
    """One worker process with an async lane (and its slot for sync runs)."""
    env = dict(worker_env)
    env["DJANGO_TASKS_TEST_SETTINGS"] = json.dumps({**FAST_WORKER_SETTINGS, **GRACES})
    return start_worker("--concurrency", "1", "--async-concurrency", "20", env=env)


def names(future: Any) -> list[str]:
    rows = TaskRunState.objects.filter(run_id=future.id).order_by("timestamp")
    return list(rows.values_list("name", flat=True))


def outcome(future: Any) -> tuple[str, str, int]:
    run = TaskRun.objects.get(pk=future.id)
    return run.state_type, run.state_name, run.attempts


def marks(label: str) -> int:
    return Effect.objects.filter(label=label).count()


def started_async_runs(count: int, seconds: float) -> list[Any]:
    """``count`` async runs that sleep ``seconds``, running when this returns."""
    futures = [sleeping.delay(seconds, f"before-{i}") for i in range(count)]
    wait_until(lambda: all(f.state.is_running() for f in futures), 30)
    return futures


def assert_nothing_else_hurt(pool: Any, before: list[Any], culprit: Any) -> None:
    """Async runs claimed before the culprit complete, and so do async and sync runs claimed
    after it, each run once; the process never died; nothing stays RUNNING; SIGTERM still
    stops the pool cleanly."""
    after = [sleeping.delay(0.1, f"after-{i}") for i in range(5)]
    sync_after = sleep_io.delay(0.1)
    for future in [*before, *after]:
        assert future.result(timeout=30).startswith(("before-", "after-"))
        assert names(future).count("Running") == 1, names(future)  # never rescued or retried
    assert sync_after.wait(timeout=30).is_completed()
    log = worker_log(pool)
    assert " died (" not in log
    assert "overran" not in log  # the supervisor never killed the process
    assert culprit.state.is_final()
    assert not TaskRun.objects.filter(state_type__in=["RUNNING", "CANCELLING"]).exists()
    pool.send_signal(signal.SIGTERM)
    assert pool.wait(30) == 0


@pytest.mark.parametrize("how", ["exit", "interrupt", "generator_exit"])
def test_an_async_run_raising_a_base_exception_ends_like_its_sync_twin(pool, how):
    """SystemExit and KeyboardInterrupt escape an asyncio task into its loop: the lane's loop
    stopped, and every async run of the process stayed RUNNING for good."""
    before = started_async_runs(5, 3.0)
    culprit = async_stops.delay(how, f"async-{how}")
    twin = stops_like.delay(how, f"sync-{how}")
    wait_until(lambda: culprit.state.is_final() and twin.state.is_final(), 30)
    assert outcome(culprit) == outcome(twin)
    assert marks(f"async-{how}") == marks(f"sync-{how}")
    expected = {"exit": "CRASHED", "interrupt": "CRASHED", "generator_exit": "FAILED"}[how]
    assert outcome(culprit)[0] == expected
    assert_nothing_else_hurt(pool, before, culprit)


def test_an_async_run_that_stops_its_loop_completes_and_the_loop_goes_on(pool):
    before = started_async_runs(5, 3.0)
    culprit = async_stops.delay("stop_loop", "async-stop")
    assert culprit.result(timeout=30) == "went on after stopping the loop"
    assert "stopped by task code" in worker_log(pool)
    assert_nothing_else_hurt(pool, before, culprit)


def test_an_async_run_that_closes_its_loop_fails_and_the_loop_goes_on(pool):
    before = started_async_runs(5, 3.0)
    culprit = async_stops.delay("close_loop", "async-close")
    state = culprit.wait(timeout=30)
    assert (state.type, state.message) == (
        "FAILED",
        "RuntimeError: Cannot close a running event loop",
    )
    assert_nothing_else_hurt(pool, before, culprit)


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("raise_in_finally", ("FAILED", "Failed", "ValueError: raised while being cancelled")),
        ("exit_in_finally", ("CRASHED", "Crashed", "SystemExit: 4")),
        ("swallow", ("FAILED", "TimedOut", "Timed out after 0.5 s (timeout_seconds).")),
    ],
)
def test_an_async_run_that_fights_its_timeout_ends_without_hurting_the_process(pool, how, expected):
    """Past its timeout the coroutine raises while cancelled (its outcome, as a sync task's
    exception raised while it is interrupted) or swallows every cancel: the run ends TIMED_OUT
    within the grace, so the supervisor does not kill the process - whose sync run would
    have crashed with it."""
    before = started_async_runs(5, 6.0)
    sync_beside = sleep_io.delay(4.0)
    wait_until(lambda: sync_beside.state.is_running(), 30)
    culprit = refuses_timeout.delay(how, f"timeout-{how}")
    state = culprit.wait(timeout=30)
    assert (state.type, state.name, state.message) == expected
    wait_until(lambda: marks(f"timeout-{how}-cancelled") == 1, 30)
    if how == "swallow":
        assert "ignored its cancel" in worker_log(pool)
    assert sync_beside.wait(timeout=30).is_completed()
    assert names(sync_beside).count("Running") == 1
    assert_nothing_else_hurt(pool, before, culprit)


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("swallow", ("CANCELLED", "Cancelled", "Cancelled while running.")),
        ("exit_in_finally", ("CRASHED", "Crashed", "SystemExit: 4")),
    ],
)
def test_a_cancelled_async_run_that_fights_the_cancel_ends_without_hurting_the_process(
    pool, how, expected
):
    """A cancel request, swallowed for good (the run ends CANCELLED within the grace, before
    the supervisor's kill) or answered by SystemExit (CRASHED, as a sync task's exit)."""
    before = started_async_runs(5, 8.0)
    sync_beside = sleep_io.delay(8.0)
    wait_until(lambda: sync_beside.state.is_running(), 30)
    culprit = refuses_cancel.delay(how, f"cancel-{how}")
    wait_until(lambda: culprit.state.is_running(), 30)
    assert TaskRunFuture(culprit.id).cancel()
    state = culprit.wait(timeout=30)
    assert (state.type, state.name, state.message) == expected
    wait_until(lambda: marks(f"cancel-{how}-cancelled") == 1, 30)
    if how == "swallow":
        assert "ignored its cancel" in worker_log(pool)
    assert sync_beside.wait(timeout=30).is_completed()
    assert names(sync_beside).count("Running") == 1
    assert_nothing_else_hurt(pool, before, culprit)


# -- the loop itself, in this process ------------------------------------------------------


def _exit_soon() -> None:
    raise SystemExit(5)


async def _spawns_an_exit() -> str:
    """Not the run's own coroutine: a callback it schedules raises SystemExit."""
    asyncio.get_running_loop().call_soon(_exit_soon)
    await asyncio.sleep(0.1)
    return "went on"


async def _sleeps_long() -> str:
    await asyncio.sleep(60)
    return "too late"


def test_an_exit_outside_the_runs_coroutine_does_not_stop_a_loop_of_ours(caplog):
    loop = LoopThread("test-loop")
    try:
        assert call_on_loop(_spawns_an_exit, (), {}, loop=loop.loop) == "went on"
        assert loop.alive
        assert "SystemExit escaped to the event loop test-loop" in caplog.text
    finally:
        loop.stop()


def test_a_thread_waiting_on_a_loop_that_broke_gets_an_error_not_a_hang():
    loop = LoopThread("test-loop")
    selector = loop.loop._selector  # type: ignore[attr-defined]
    # The loop's next wait for I/O fails: an error escapes run_forever() and ends its thread.
    threading.Timer(0.3, lambda: loop.loop.call_soon_threadsafe(selector.close)).start()
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="The event loop running the run's coroutine is gone"):
        call_on_loop(_sleeps_long, (), {}, loop=loop.loop)
    assert time.monotonic() - started < 10
    assert not loop.alive


# -- a coroutine that forks ----------------------------------------------------------------


def test_a_child_forked_by_an_async_run_exits_and_the_lane_goes_on(start_worker):
    """The child of an os.fork() in a coroutine returns into the lane's event loop: it must
    exit, not live on as a copy of the lane that shares the loop's epoll instance and
    wake-up pipe with the worker - taking its wake-ups (a later run stayed RUNNING for good)
    and running the other runs' coroutines a second time."""
    forker = forks_and_returns.delay("forker")
    supervisor = start_worker()
    wait_until(lambda: Effect.objects.filter(label="forker-forked").exists(), timeout=60)
    child = int(Effect.objects.get(label="forker-forked").run_marker)
    later = [async_record.delay(f"async-after-the-fork-{i}") for i in range(10)]
    wait_until(lambda: forker.state.is_final() and all(f.state.is_final() for f in later), 20)
    assert forker.result() == "parent"
    assert all(f.state.is_completed() for f in later)
    wait_until(lambda: not process_alive(child), 10)
    assert Effect.objects.filter(label="forker").count() == 1  # its coroutine ran once
    log = worker_log(supervisor)
    assert "The event loop django_tasks-async: a process forked by a run returned into it" in log
    assert " died (" not in log


def _append_pid(path: Path) -> None:
    with path.open("a") as marks:
        marks.write(f"{os.getpid()}\n")


def _pids(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def _exit_code(pid: int, timeout: float = 10) -> int | None:
    """The exit code of our child ``pid`` - ``None`` if it is still alive after ``timeout``
    (then it is killed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


async def _mark_when(ready: asyncio.Future[None], path: Path) -> None:
    await ready
    _append_pid(path)


#: Tasks started by the coroutines below (the loop keeps only weak references to its tasks).
_started: set[asyncio.Future[Any]] = set()


async def _forks_beside_another_step(path: Path) -> int:
    """Forks in the same pass of the loop as another task's step, due just after this one:
    the child returns from the coroutine at once."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    _started.add(asyncio.ensure_future(_mark_when(ready, path)))  # waits for ``ready`` next
    loop.call_later(0.05, ready.set_result, None)
    await ready  # woken first: the other task's step is next in the same pass
    return os.fork()


def test_a_process_forked_by_a_runs_coroutine_runs_nothing_more_of_the_loop(tmp_path):
    """The child leaves as soon as the forking step is over: not even the step of another
    task already due in that pass of the loop runs in it (it would run twice: in the worker
    and in the child)."""
    loop = LoopThread("test-loop")
    marks = tmp_path / "marks"
    try:
        child = call_on_loop(_forks_beside_another_step, (marks,), {}, loop=loop.loop)
        assert _exit_code(child) == 0
        wait_until(lambda: _pids(marks), 10)
        time.sleep(0.2)
        assert _pids(marks) == [os.getpid()]  # the other task stepped here, and only here
        assert call_on_loop(_sleeps_then, (0.01, "the loop goes on"), {}, loop=loop.loop) == (
            "the loop goes on"
        )
    finally:
        loop.stop()


async def _ticks(path: Path) -> None:
    """Not a run: a task that marks the process running it every 0.1 s."""
    while True:
        _append_pid(path)
        await asyncio.sleep(0.1)


def _fork_in_callback(children: list[int]) -> None:
    """Not a run's coroutine: a callback that forks; its child returns into the loop."""
    pid = os.fork()
    if pid:
        children.append(pid)


async def _sleeps_then(seconds: float, value: str) -> str:
    await asyncio.sleep(seconds)
    return value


def test_a_process_forked_by_a_callback_on_a_loop_of_ours_never_runs_the_loop_on(tmp_path):
    """A fork outside any run's coroutine (a callback, a task a run started): the child's loop
    stops after the pass under way and the child exits - it never waits for I/O on the
    parent's epoll instance nor runs the parent's tasks (the ticker) a second time."""
    loop = LoopThread("test-loop")
    ticks = tmp_path / "ticks"
    children: list[int] = []
    ticker = asyncio.run_coroutine_threadsafe(_ticks(ticks), loop.loop)
    try:
        wait_until(lambda: _pids(ticks), 10)
        loop.loop.call_soon_threadsafe(_fork_in_callback, children)
        wait_until(lambda: children, 10)
        assert _exit_code(children[0]) == 0
        time.sleep(0.3)
        assert set(_pids(ticks)) == {os.getpid()}
        assert call_on_loop(_sleeps_then, (0.01, "goes on"), {}, loop=loop.loop) == "goes on"
    finally:
        ticker.cancel()
        loop.stop()


# -- a coroutine that shuts the loop's default executor ------------------------------------


async def _shuts_executor() -> str:
    await asyncio.get_running_loop().shutdown_default_executor()
    return "shut"


async def _to_thread() -> str:
    return await asyncio.to_thread(lambda: "went on in a thread")


def test_task_code_cannot_shut_the_default_executor_of_a_loop_of_ours(caplog):
    """Every run on the loop shares its default executor: shut by one of them, every later
    asyncio.to_thread() on the loop failed ("Executor shutdown has been called")."""
    loop = LoopThread("test-loop")
    try:
        assert call_on_loop(_to_thread, (), {}, loop=loop.loop) == "went on in a thread"
        assert call_on_loop(_shuts_executor, (), {}, loop=loop.loop) == "shut"
        assert call_on_loop(_to_thread, (), {}, loop=loop.loop) == "went on in a thread"
        shut = "Task code asked to shut the default executor of the event loop test-loop"
        assert shut in caplog.text
    finally:
        loop.stop()


def test_an_async_run_that_shuts_the_loops_executor_does_not_fail_the_runs_after_it(caplog):
    """A worker's async run awaits loop.shutdown_default_executor() and completes; the async
    runs after it that use asyncio.to_thread() complete too (they failed for as long as the
    process lived)."""
    first = async_shuts_executor.delay("first")
    after = [async_to_thread.delay(f"after-{i}") for i in range(3)]
    drain()
    assert TaskRun.objects.get(pk=first.id).state_type == "COMPLETED"
    states = [TaskRun.objects.get(pk=f.id) for f in after]
    assert [(r.state_type, r.state_message) for r in states] == [("COMPLETED", "")] * 3
    assert "asked to shut the default executor of the event loop django_tasks-async" in (
        caplog.text
    )


# -- a coroutine that kills its process: who is blamed -------------------------------------


def worker_deaths(supervisor: Any) -> int:
    """Worker processes the supervisor saw die (not the runs' messages, which say "died" too)."""
    return len(re.findall(r"Worker process \d+ died \(", worker_log(supervisor)))


def test_an_async_run_that_kills_its_process_is_blamed_not_the_sync_run_beside_it(start_worker):
    """An async run calls os._exit() while the process's slot runs a sync run: the async run
    took the process down (its coroutine was taking a step) - it is the one named and charged
    a crash (MAX_CRASHES); the sync run is lost with the process, charged nothing (it was
    named and charged, and the culprit rescued as a run of a lost worker)."""
    sync_run = sleep_then_record.delay(3.0, "innocent-sync")
    supervisor = start_worker()
    wait_until(lambda: TaskRun.objects.get(pk=sync_run.id).state_type == "RUNNING", timeout=60)
    poison = async_exit_process.delay(0.5)
    wait_until(lambda: sync_run.state.is_final() and poison.state.is_final(), timeout=60)
    innocent = TaskRun.objects.get(pk=sync_run.id)
    culprit = TaskRun.objects.get(pk=poison.id)
    worker = culprit.worker
    assert (culprit.state_type, culprit.crashes) == ("CRASHED", 1)
    assert culprit.state_message == (
        f"Task 'async_exit_process' took down its worker process {worker} (exit code 1) "
        f"while running this run."
    )
    assert (innocent.state_type, innocent.crashes) == ("CRASHED", 0)
    assert innocent.state_message == (
        f"Worker process {worker} died (exit code 1) while running this run: run {poison.id} "
        f"of task 'async_exit_process' took it down."
    )
    wait_until(lambda: worker_deaths(supervisor), 10)  # logged once its runs are settled
    assert worker_deaths(supervisor) == 1


def test_a_death_beside_async_runs_awaiting_names_no_run_and_charges_each(start_worker):
    """A sync run kills its process while async runs of the process await (none is taking a
    step): any of them may have done it - a thread of an async run as well - so none is
    named, and each is charged the crash (before: the sync run was named as the culprit).
    The async runs are retried (retries=3) and complete in the next process."""
    sleepers = [sleeping.delay(5.0, f"awaiting-{i}") for i in range(3)]
    start_worker()
    wait_until(lambda: all(f.state.is_running() for f in sleepers), 60)
    killer = exit_process.delay(7)
    assert killer.wait(timeout=60).type == "CRASHED"
    assert [f.result(timeout=60) for f in sleepers] == [f"awaiting-{i}" for i in range(3)]
    dead = TaskRun.objects.get(pk=killer.id).worker
    unknown = (
        f"Worker process {dead} died (exit code 7) while running this run and other runs "
        f"(async runs in flight): which one took it down is not known."
    )
    killed = TaskRun.objects.get(pk=killer.id)
    assert (killed.crashes, killed.state_message) == (1, unknown)
    for future in sleepers:
        crashed = TaskRunState.objects.get(run_id=future.id, type="CRASHED")
        assert (crashed.message, crashed.worker) == (unknown, dead)
        assert TaskRun.objects.get(pk=future.id).crashes == 1
