"""``.submit()``/``.map()`` on the task runner: futures, wait/as_completed, unmapped,
dependencies (implicit and explicit, failed upstreams, a diamond) and batched recording."""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from typing import Any

import pytest

from django_tasks import (
    State,
    StateType,
    SubmittedFuture,
    TaskFutureList,
    ThreadPoolTaskRunner,
    allow_failure,
    as_completed,
    connect,
    flush,
    unmapped,
    wait,
)
from django_tasks.models import TaskRun, TaskRunDependency
from django_tasks.recorder import writer
from tests.taskapp.tasks import add, describe, explode, slow_echo, total

pytestmark = pytest.mark.django_db(transaction=True)


def times(run_id: uuid.UUID) -> tuple[datetime, datetime]:
    """When a recorded run started and finished."""
    run = TaskRun.objects.get(pk=run_id)
    assert run.started is not None
    assert run.finished is not None
    return run.started, run.finished


def history(run_id: uuid.UUID) -> list[str]:
    return list(TaskRun.objects.get(pk=run_id).states.values_list("name", flat=True))


def test_submit_returns_at_once_and_the_future_gives_state_and_result():
    started = time.monotonic()
    future = slow_echo.submit("x", 0.3)
    assert time.monotonic() - started < 0.2
    assert isinstance(future, SubmittedFuture)
    early: State = future.state
    assert early.type in (StateType.PENDING, StateType.RUNNING)
    assert not future.done()
    assert future.result(timeout=5) == "x"
    late: State = future.state
    assert late.type == StateType.COMPLETED
    assert future.wait().is_completed()
    flush()
    run = TaskRun.objects.get(pk=future.id)
    assert (run.origin, run.state_type, run.result_preview) == ("submit", "COMPLETED", "x")
    assert history(future.id) == ["Pending", "Running", "Completed"]


def test_submitted_runs_run_concurrently():
    started = time.monotonic()
    futures = [slow_echo.submit(i, 0.3) for i in range(4)]
    assert [f.result(timeout=5) for f in futures] == [0, 1, 2, 3]
    assert time.monotonic() - started < 0.9  # four 0.3 s runs at once, not one after another


def test_result_timeout_and_failure():
    slow = slow_echo.submit("late", 1.0)
    with pytest.raises(TimeoutError):
        slow.result(timeout=0.05)
    assert not slow.wait(0.01).is_final()
    failing = explode.submit("bang")
    with pytest.raises(RuntimeError, match="bang"):
        failing.result(timeout=5)
    error = failing.result(raise_on_failure=False)
    assert isinstance(error, RuntimeError)
    assert failing.state.type == StateType.FAILED
    assert slow.result(timeout=5) == "late"


def test_wrong_arguments_raise_at_submit_and_record_nothing():
    with pytest.raises(TypeError, match="Wrong arguments for task 'add'"):
        add.submit(1)
    with pytest.raises(TypeError, match="Wrong arguments"):
        add.map([1, 2], [3, 4], [5, 6])
    flush()
    assert not TaskRun.objects.exists()


def test_map_over_iterables_with_unmapped_and_keyword_arguments():
    futures = add.map([1, 2, 3], b=unmapped(10))
    assert isinstance(futures, TaskFutureList)
    assert futures.result(timeout=5) == [11, 12, 13]
    pairs = add.map(range(3), (i * 100 for i in range(3)))
    assert pairs.result(timeout=5) == [0, 101, 202]
    # A list passed unmapped reaches every run whole.
    sums = total.map(unmapped([1, 2]), offset=[0, 5])
    assert sums.result() == [3, 8]
    flush()
    assert TaskRun.objects.filter(task_name="add", origin="submit").count() == 6


def test_map_needs_equal_lengths_and_an_iterable():
    with pytest.raises(ValueError, match=r"different lengths: argument 0=3, b=2"):
        add.map([1, 2, 3], b=[1, 2])
    with pytest.raises(TypeError, match="at least one iterable"):
        add.map(1, 2)
    flush()
    assert not TaskRun.objects.exists()


def test_wait_and_as_completed():
    futures = [slow_echo.submit(name, delay) for name, delay in [("slow", 0.4), ("fast", 0.05)]]
    order = [f.result() for f in as_completed(futures, timeout=5)]
    assert order == ["fast", "slow"]
    pending = slow_echo.submit("pending", 1.0)
    done, not_done = wait([futures[0], pending], timeout=0.1)
    assert (done, not_done) == ({futures[0]}, {pending})
    with pytest.raises(TimeoutError):
        list(as_completed([pending], timeout=0.05))
    done, not_done = wait([pending])
    assert (done, not_done) == ({pending}, set())


def test_as_completed_and_wait_take_background_futures_too():
    background = add.delay(1, 2)  # no worker: it stays SCHEDULED
    submitted = add.submit(3, 4)
    assert list(as_completed([submitted], timeout=5)) == [submitted]
    done, not_done = wait([background, submitted], timeout=0.1)
    assert (done, not_done) == ({submitted}, {background})


def test_future_arguments_are_resolved_and_recorded_as_edges():
    first = add.submit(1, 2)
    second = add.submit(first, 10)  # implicit: waits for first, receives 3
    gathered = total.submit([first, second])  # futures inside a list
    assert gathered.result(timeout=5) == 16
    flush()
    edges = set(TaskRunDependency.objects.values_list("upstream_id", "downstream_id", "kind"))
    assert edges == {
        (first.id, second.id, "data"),
        (first.id, gathered.id, "data"),
        (second.id, gathered.id, "data"),
    }
    assert TaskRun.objects.get(pk=second.id).parameters_preview == {"a": 3, "b": 10}


def test_wait_for_orders_runs_without_passing_data():
    slow = slow_echo.submit("first", 0.3)
    after = slow_echo.submit("second", wait_for=[slow])
    assert after.result(timeout=5) == "second"
    flush()
    assert times(after.id)[0] >= times(slow.id)[1]
    edge = TaskRunDependency.objects.get()
    assert (edge.upstream_id, edge.downstream_id, edge.kind) == (slow.id, after.id, "wait_for")


def test_a_failed_upstream_stops_the_downstream_with_a_message():
    broken = explode.submit("upstream broke")
    downstream = add.submit(broken, 1)
    waiting = add.submit(1, 1, wait_for=[broken])
    with pytest.raises(Exception, match=f"Upstream run {broken.id} ended Failed"):
        downstream.result(timeout=5)
    state: State = waiting.wait(5)
    assert state.type == StateType.FAILED
    assert "RuntimeError: upstream broke; this run did not start" in state.message
    flush()
    assert history(downstream.id) == ["Pending", "Failed"]  # never ran
    assert TaskRun.objects.get(pk=downstream.id).attempts == 0


def test_allow_failure_passes_the_upstream_exception():
    broken = explode.submit("tolerated")
    described = describe.submit(allow_failure(broken))
    assert described.result(timeout=5) == "RuntimeError: tolerated"


def test_diamond_shaped_graph():
    top = slow_echo.submit(2, 0.05)
    left = add.submit(top, 1)
    right = add.submit(top, 10)
    bottom = total.submit([left, right])
    assert bottom.result(timeout=5) == 15
    flush()
    upstreams = TaskRunDependency.objects.filter(downstream_id=bottom.id)
    assert set(upstreams.values_list("upstream_id", flat=True)) == {left.id, right.id}
    assert times(bottom.id)[0] >= max(times(left.id)[1], times(right.id)[1])
    assert times(left.id)[0] >= times(top.id)[1]


def test_inline_calls_resolve_futures_too():
    first = add.submit(2, 2)
    assert add(first, 1) == 5  # type: ignore[arg-type]  # futures stand for their results


def test_own_runner_as_a_context_manager():
    with ThreadPoolTaskRunner(max_workers=2) as runner:
        futures = runner.map(add, ([1, 2], [3, 4]), {})
    assert [f.state.type for f in futures] == [StateType.COMPLETED] * 2
    assert futures.result() == [4, 6]


def test_a_thousand_submitted_runs_are_written_in_few_statements(monkeypatch):
    """Counted twice: by the writer, and by wrapping the connection it opens."""
    sent: list[str] = []
    open_connection = connect.open_worker_connection

    class Counting:
        def __init__(self) -> None:
            self.conn = open_connection()

        def execute(self, query: str, params: Any = None) -> Any:
            sent.append(query)
            return self.conn.execute(query, params)

        def close(self) -> None:
            self.conn.close()

    writer.close()  # the next record opens a new connection: the counting one
    monkeypatch.setattr(connect, "open_worker_connection", Counting)
    statements, events = writer.statements, writer.events
    futures = add.map(range(1000), unmapped(1))
    assert futures.result(timeout=60) == [i + 1 for i in range(1000)]
    assert flush()
    written = writer.events - events
    queries = writer.statements - statements
    assert written == 3000  # Pending, Running, Completed for each run
    assert queries == len(sent)
    assert len(sent) <= written / 50, f"{len(sent)} statements for {written} state events"
    assert TaskRun.objects.filter(origin="submit", state_type="COMPLETED").count() == 1000
