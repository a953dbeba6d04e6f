"""async def tasks: awaited inline, submitted and mapped on an event loop, delayed and awaited
from async views, and run by worker processes many at once on their event loop - with the
states, retries, timeouts, cancels and rescues of any run (real PostgreSQL, real workers)."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import transaction
from django.http import HttpRequest, JsonResponse

from django_tasks import get_run_context, task
from django_tasks.cache_policies import INPUTS
from django_tasks.futures import TaskRunFailed, TaskRunFuture
from django_tasks.models import TaskRun, TaskRunState
from tests.taskapp import tasks
from tests.taskapp.models import Effect

from .conftest import drain, wait_for_live_workers, wait_until, worker_processes

# Typed as Any here: the type of an async task's futures (TaskRunFuture[Coroutine[...]]) does
# not yet say that their results are the coroutine's values (see docs/async.md).
add: Any = tasks.add
async_add: Any = tasks.async_add
async_context: Any = tasks.async_context
async_fails_first: Any = tasks.async_fails_first
async_record: Any = tasks.async_record
async_sleep: Any = tasks.async_sleep
async_too_slow: Any = tasks.async_too_slow

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("close_connections_of_sync_to_async"),
]


def history(run_id: Any) -> list[str]:
    states = TaskRunState.objects.filter(run_id=run_id).order_by("timestamp")
    return list(states.values_list("name", flat=True))


# -- inline, submit, map ------------------------------------------------------------------


def test_awaiting_an_async_task_runs_it_and_records_the_run():
    seen = asyncio.run(async_context())
    assert (seen["origin"], seen["attempt"]) == ("call", 1)
    from django_tasks.recorder import flush

    flush()
    run = TaskRun.objects.get(pk=seen["id"])
    assert (run.task_name, run.state_name) == ("async_context", "Completed")
    assert history(run.pk) == ["Pending", "Running", "Completed"]


def test_calling_an_async_task_with_wrong_arguments_fails_at_the_call():
    with pytest.raises(TypeError, match="Wrong arguments for task 'async_add'"):
        async_add(1)


def test_an_async_task_is_retried_inline():
    assert asyncio.run(async_fails_first("inline-retry")) == 1
    from django_tasks.recorder import flush

    flush()
    run = TaskRun.objects.get(task_name="async_fails_first")
    assert (run.state_name, run.attempts) == ("Completed", 2)
    assert "AwaitingRetry" in history(run.pk)


def test_an_inline_async_run_past_its_timeout_is_cancelled():
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"Timed out after 0\.5 s"):
        asyncio.run(async_too_slow(30))
    assert time.monotonic() - started < 10  # cancelled, not waited for
    from django_tasks.recorder import flush

    flush()
    assert TaskRun.objects.get(task_name="async_too_slow").state_type == "FAILED"


_overlap = {"now": 0, "most": 0}
_overlap_lock = threading.Lock()


@task
async def _overlapping(seconds: float) -> int:
    with _overlap_lock:
        _overlap["now"] += 1
        _overlap["most"] = max(_overlap["most"], _overlap["now"])
    try:
        await asyncio.sleep(seconds)
    finally:
        with _overlap_lock:
            _overlap["now"] -= 1
    return threading.get_ident()


overlapping: Any = _overlapping


def test_map_from_async_code_runs_the_coroutines_together_on_the_callers_loop():
    _overlap.update(now=0, most=0)

    async def caller() -> tuple[list[int], int]:
        futures = overlapping.map([0.3] * 5)
        results = [await future.aresult(timeout=30) for future in futures]
        return results, threading.get_ident()

    threads, caller_thread = asyncio.run(caller())
    assert set(threads) == {caller_thread}  # every coroutine ran on the caller's loop
    assert _overlap["most"] == 5


def test_submit_from_sync_code_runs_on_the_background_loop():
    futures = [async_add.submit(i, 1) for i in range(4)]
    assert [f.result(timeout=30) for f in futures] == [1, 2, 3, 4]
    failing = async_fails_first.submit("submitted-retry")
    assert failing.result(timeout=30) == 1
    assert failing.state.name == "Completed"


@task
async def _meet(barrier: asyncio.Barrier, n: int) -> int:
    """Returns once every run of ``barrier`` waits at it too: possible only if they all run at
    once (a run held back waits here until the timeout fails it)."""
    async with asyncio.timeout(5):
        await barrier.wait()
    return n


meet: Any = _meet
#: More runs than any thread pool here has threads (TASK_RUNNER_MAX_WORKERS, the loop's
#: default executor: min(32, CPUs + 4)).
AT_ONCE = 50


def test_runs_mapped_from_async_code_all_run_at_once_on_the_callers_loop():
    async def caller() -> list[int]:
        barrier = asyncio.Barrier(AT_ONCE)
        futures = meet.map(barrier, range(AT_ONCE))
        return [await future.aresult(timeout=60) for future in futures]

    assert asyncio.run(caller()) == list(range(AT_ONCE))
    from django_tasks.recorder import flush

    flush()
    runs = TaskRun.objects.filter(task_name="_meet")
    assert runs.filter(state_name="Completed", origin="submit").count() == AT_ONCE
    assert history(runs.earliest("created").pk) == ["Pending", "Running", "Completed"]


def test_runs_submitted_from_sync_code_all_run_at_once_on_the_background_loop():
    barrier = asyncio.Barrier(AT_ONCE)  # bound to the loop that first waits at it
    futures = [meet.submit(barrier, n) for n in range(AT_ONCE)]
    assert [future.result(timeout=60) for future in futures] == list(range(AT_ONCE))


def test_inline_awaits_gathered_all_run_at_once():
    async def caller() -> list[int]:
        barrier = asyncio.Barrier(AT_ONCE)
        return list(await asyncio.gather(*(meet(barrier, n) for n in range(AT_ONCE))))

    assert asyncio.run(caller()) == list(range(AT_ONCE))


_hook_states: list[tuple[str, str]] = []


@task(
    retries=1, on_completion=[lambda task, run, state: _hook_states.append((run.name, state.name))]
)
async def _chained(x: int, label: str) -> int:
    """Fails its first attempt for ``label`` "flaky" (one retry), else returns x + 1."""
    if label == "flaky" and get_run_context().attempt == 1:
        raise ConnectionError("first attempt")
    await asyncio.sleep(0)
    return x + 1


chained: Any = _chained


def test_runs_on_the_loop_keep_dependencies_retries_hooks_and_timeouts():
    _hook_states.clear()

    async def caller() -> tuple[int, Any]:
        first = chained.submit(1, "first")
        second = chained.submit(first, "flaky")  # an upstream future: waits for its result
        third = chained.submit(second, "third", wait_for=[first])
        too_slow = async_too_slow.submit(30)
        await too_slow.await_final()
        return await third.aresult(timeout=30), too_slow

    assert asyncio.run(caller())[0] == 4
    too_slow = asyncio.run(caller())[1]
    assert too_slow.state.name == "Failed"
    with pytest.raises(TimeoutError, match=r"Timed out after 0\.5 s"):
        too_slow.result()
    from django_tasks.recorder import flush

    flush()
    flaky = TaskRun.objects.filter(task_name="_chained", parameters_preview__label="flaky")
    assert history(flaky.earliest("created").pk) == [
        "Pending",
        "Running",
        "AwaitingRetry",
        "Pending",
        "Retrying",
        "Completed",
    ]
    assert sorted(_hook_states) == [("_chained", "Completed")] * 6


def test_wait_and_as_completed_wait_for_runs_on_the_background_loop():
    from django_tasks import as_completed, wait

    first = chained.submit(1, "first")
    second = chained.submit(first, "second")
    slow = async_sleep.submit(0.5, "slow")
    assert [f.id for f in as_completed([slow, second], timeout=30)] == [second.id, slow.id]
    assert wait([first, second, slow], timeout=30).not_done == set()
    assert second.result() == 3


def test_waiting_synchronously_on_the_loop_driving_the_run_is_an_error_not_a_hang():
    async def caller() -> str:
        future = async_sleep.submit(0.1, "waited for properly")
        with pytest.raises(RuntimeError, match="aresult"):
            future.result(timeout=5)
        with pytest.raises(RuntimeError, match="aresult"):
            future.wait(timeout=5)
        value: str = await future.aresult(timeout=30)
        future.result(timeout=0)  # final: nothing to wait for
        return value

    assert asyncio.run(caller()) == "waited for properly"


def test_a_runner_shut_down_with_wait_waits_for_its_async_runs_too():
    from django_tasks import ThreadPoolTaskRunner

    with ThreadPoolTaskRunner(max_workers=2) as runner:
        futures = [runner.submit(async_sleep, (0.3, f"r{i}"), {}) for i in range(5)]
    assert all(future.done() for future in futures)
    assert [future.result() for future in futures] == [f"r{i}" for i in range(5)]


def test_cancelling_an_inline_await_cancels_the_run():
    async def caller() -> None:
        await asyncio.wait_for(async_sleep(30, "cancelled inline"), 0.3)

    started = time.monotonic()
    with pytest.raises(TimeoutError):
        asyncio.run(caller())
    assert time.monotonic() - started < 10
    from django_tasks.recorder import flush

    flush()
    run = TaskRun.objects.get(task_name="async_sleep")
    assert (run.state_type, run.attempts) == ("CANCELLED", 1)  # retries=3: never retried
    assert history(run.pk) == ["Pending", "Running", "Cancelled"]


def test_an_inline_async_run_that_exits_ends_like_its_sync_twin():
    from tests.taskapp.poison import async_stops_like, stops_like

    with pytest.raises(SystemExit):
        stops_like("exit", "inline-sync-exit")
    with pytest.raises(SystemExit):
        asyncio.run(async_stops_like("exit", "inline-async-exit"))
    from django_tasks.recorder import flush

    flush()
    sync_run = TaskRun.objects.get(task_name="stops_like")
    async_run = TaskRun.objects.get(task_name="async_stops_like")
    assert (async_run.state_type, async_run.state_name, async_run.attempts) == (
        sync_run.state_type,
        sync_run.state_name,
        sync_run.attempts,
    )
    assert async_run.state_type == "CRASHED"
    assert Effect.objects.filter(label="inline-async-exit").count() == 1


def test_atomic_is_refused_for_async_tasks_at_decoration():
    with pytest.raises(TypeError, match="atomic=True is for sync tasks"):

        @task(atomic=True)
        async def atomic_async() -> None:
            return None


# -- adelay, aresult and async views -----------------------------------------------------


async def enqueue_view(request: HttpRequest) -> JsonResponse:
    """An async view: enqueue, then wait for the result without holding a thread."""
    future = await async_add.adelay(2, 3)
    return JsonResponse({"id": str(future.id)})


def _create_and_enqueue_then_fail(label: str) -> None:
    with transaction.atomic():
        Effect.objects.create(label=label)
        async_record.delay(label)
        raise RuntimeError("the view's transaction rolls back")


async def rolled_back_view(request: HttpRequest) -> JsonResponse:
    """The documented way to enqueue inside a transaction from async code: the writes and
    .delay() in one sync function run by sync_to_async."""
    try:
        await sync_to_async(_create_and_enqueue_then_fail)("rolled-back")
    except RuntimeError:
        return JsonResponse({"ok": False}, status=409)
    return JsonResponse({"ok": True})


def test_adelay_in_an_async_view_enqueues_and_aresult_waits_for_the_worker():
    response = asyncio.run(enqueue_view(HttpRequest()))
    run_id = __import__("json").loads(response.content)["id"]
    assert TaskRun.objects.get(pk=run_id).state_name == "Scheduled"  # committed by adelay
    drain()
    assert asyncio.run(TaskRunFuture(run_id).aresult(timeout=10)) == 5
    state = asyncio.run(TaskRunFuture(run_id).await_final(timeout=1))
    assert state.is_completed()


def test_a_run_enqueued_in_a_rolled_back_transaction_never_runs():
    response = asyncio.run(rolled_back_view(HttpRequest()))
    assert response.status_code == 409
    drain()
    assert not TaskRun.objects.exists()
    assert not Effect.objects.exists()


def test_aresult_gives_the_error_of_a_failed_background_run():
    future = async_too_slow.delay(30)
    drain()
    with pytest.raises(TaskRunFailed, match=r"ended TimedOut: Timed out after 0\.5 s"):
        asyncio.run(future.aresult(timeout=10))
    assert TaskRun.objects.get(pk=future.id).state_name == "TimedOut"
    with pytest.raises(TimeoutError, match="still Scheduled"):
        asyncio.run(async_add.delay(1, 1).aresult(timeout=0.05))


# -- in the worker -------------------------------------------------------------------------


def test_a_worker_runs_async_runs_concurrently_and_sync_runs_beside_them():
    _overlap.update(now=0, most=0)
    futures = [overlapping.delay(0.5) for _ in range(30)]
    sync_future = add.delay(2, 2)
    started = time.monotonic()
    worker = drain(async_concurrency=10)  # in this process: the coroutines count themselves
    elapsed = time.monotonic() - started
    loop_threads = {f.result(timeout=5) for f in futures}
    assert len(loop_threads) == 1  # one event loop ran them all
    assert sync_future.result(timeout=5) == 4
    assert worker.processed == 31
    assert _overlap["most"] == 10  # as many at once as --async-concurrency, never more
    # 30 runs of 0.5 s, 10 at once: three rounds, not thirty (generous for a loaded machine).
    assert elapsed < 8, elapsed
    # Their history says when each really ended (written after, with the batch).
    for run in TaskRun.objects.filter(task_name="_overlapping"):
        assert run.finished is not None
        assert run.started is not None
        assert 0.5 <= (run.finished - run.started).total_seconds() < 1.5


def test_async_background_runs_retry_time_out_and_use_the_async_orm():
    retried = async_fails_first.delay("bg-retry")
    slow = async_too_slow.delay(30)
    written = async_record.delay("bg-orm")
    drain()
    assert retried.result(timeout=5) == 1
    run = TaskRun.objects.get(pk=retried.id)
    assert run.attempts == 2
    assert "AwaitingRetry" in history(run.pk)
    slow_run = TaskRun.objects.get(pk=slow.id)
    assert (slow_run.state_name, slow_run.state_message) == (
        "TimedOut",
        "Timed out after 0.5 s (timeout_seconds).",
    )
    assert Effect.objects.get(pk=written.result(timeout=5)).label == "bg-orm"


def test_a_running_async_run_is_cancelled_and_the_others_go_on(start_worker):
    proc = start_worker("--async-concurrency", "5")
    wait_for_live_workers(1)
    long = async_sleep.delay(60, "long")
    others = [async_sleep.delay(0.2, f"o{i}") for i in range(5)]
    wait_until(lambda: long.state.is_running(), 30)
    assert long.cancel()
    wait_until(lambda: long.state.is_final(), 15)
    assert long.state.name == "Cancelled"
    assert [f.result(timeout=30) for f in others] == [f"o{i}" for i in range(5)]
    after = async_add.delay(20, 22)
    assert after.result(timeout=30) == 42  # the same process goes on
    assert proc.poll() is None


def test_kill_9_of_a_process_with_50_async_runs_in_flight_loses_none(start_worker):
    proc = start_worker("--async-concurrency", "100")
    wait_for_live_workers(1)
    futures = [async_sleep.delay(3, f"k{i}") for i in range(50)]
    wait_until(lambda: TaskRun.objects.filter(state_type="RUNNING").count() == 50, 60)
    (child,) = worker_processes(proc.pid)
    os.kill(child, signal.SIGKILL)
    assert [f.result(timeout=120) for f in futures] == [f"k{i}" for i in range(50)]
    runs = TaskRun.objects.filter(task_name="async_sleep")
    assert all(run.attempts == 2 for run in runs)  # rescued once, then completed
    crashed = TaskRunState.objects.filter(run__task_name="async_sleep", name="Crashed")
    assert crashed.values("run").distinct().count() == 50
    assert proc.poll() is None  # the supervisor started a new process


# -- caching, hooks and dependencies, as for sync tasks -------------------------------------

_hook_calls: list[tuple[str, str]] = []


@task(
    cache_policy=INPUTS,
    on_completion=[lambda task, run, state: _hook_calls.append((run.origin, state.name))],
)
async def _cached_double(n: int) -> int:
    await asyncio.sleep(0)
    return n * 2


cached_double: Any = _cached_double


def test_an_async_task_caches_and_calls_its_hooks_inline_and_in_the_worker():
    _hook_calls.clear()
    assert asyncio.run(cached_double(21)) == 42
    assert asyncio.run(cached_double(21, return_state=True)).name == "Cached"
    first, second = cached_double.delay(5), cached_double.delay(5)
    drain(async_concurrency=4)  # caching runs lease a lane connection for the key's lock
    assert (first.result(timeout=5), second.result(timeout=5)) == (10, 10)
    names = sorted(TaskRun.objects.get(pk=f.id).state_name for f in (first, second))
    assert names == ["Cached", "Completed"]
    assert ("call", "Completed") in _hook_calls
    assert ("delay", "Completed") in _hook_calls


def test_an_async_run_waits_for_its_upstream_and_takes_its_result():
    upstream = async_add.delay(1, 2)
    downstream = async_add.delay(upstream, 10)  # a future as an argument: an upstream run
    drain()
    assert downstream.result(timeout=5) == 13
    assert TaskRun.objects.get(pk=downstream.id).state_name == "Completed"
