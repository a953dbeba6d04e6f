# Futures stand for their results as arguments; the task signatures say the result types.
# mypy: disable-error-code="arg-type, list-item"
"""Dependencies between background runs: stored as edges, released by the database when an
upstream ends, failed downstream runs that never start, allow_failure, a diamond."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from django_tasks import TaskRunFuture, allow_failure
from django_tasks.models import TaskRun, TaskRunDependency
from tests.taskapp.tasks import add, describe, explode, total

from .conftest import count, drain

pytestmark = pytest.mark.django_db(transaction=True)


def row(future: TaskRunFuture[Any]) -> TaskRun:
    return TaskRun.objects.get(pk=future.id)


def names(future: TaskRunFuture[Any]) -> list[str]:
    return list(row(future).states.values_list("name", flat=True))


def started(future: TaskRunFuture[Any]) -> datetime:
    value = row(future).started
    assert value is not None
    return value


def finished(future: TaskRunFuture[Any]) -> datetime:
    value = row(future).finished
    assert value is not None
    return value


def claimable() -> int:
    return count(
        "SELECT count(*) FROM django_tasks_taskrun WHERE state_type = 'SCHEDULED' AND blocked = 0"
    )


def test_a_future_argument_blocks_the_run_until_its_upstream_completes():
    upstream = add.delay(1, 2)
    downstream = add.delay(upstream, 10)
    assert (row(downstream).blocked, row(upstream).has_downstream) == (1, True)
    assert claimable() == 1  # only the upstream
    edge = TaskRunDependency.objects.get()
    assert (edge.upstream_id, edge.downstream_id, edge.kind) == (upstream.id, downstream.id, "data")
    drain()  # the upstream completes, the trigger releases the downstream, the burst takes it
    assert downstream.result(timeout=1) == 13
    assert row(downstream).blocked == 0
    assert names(downstream) == ["Scheduled", "Pending", "Running", "Completed"]
    assert started(downstream) >= finished(upstream)


def test_wait_for_without_data():
    first = add.delay(1, 1)
    second = add.apply_async(args=(2, 2), wait_for=[first])
    assert row(second).blocked == 1
    assert TaskRunDependency.objects.get().kind == "wait_for"
    drain()
    assert second.result(timeout=1) == 4


def test_a_failed_upstream_fails_the_downstream_without_running_it():
    broken = explode.delay("no good")
    downstream = add.delay(broken, 1)
    waiting = total.apply_async(args=([1],), wait_for=[broken])
    further = add.delay(downstream, 1)  # two levels down: fails in cascade
    worker = drain()
    assert worker.processed == 1  # only the upstream ran
    for future in (downstream, waiting):
        run = row(future)
        assert (run.state_type, run.attempts) == ("FAILED", 0)
        assert run.state_message == (
            f"Upstream run {broken.id} (explode) ended Failed: RuntimeError: no good; "
            f"this run did not start."
        )
        assert names(future) == ["Scheduled", "Failed"]
    assert row(further).state_type == "FAILED"
    assert f"Upstream run {downstream.id} (add) ended Failed" in row(further).state_message
    with pytest.raises(Exception, match="this run did not start"):
        downstream.result(timeout=1)


def test_allow_failure_runs_the_downstream_with_the_exception():
    broken = explode.delay("tolerated")
    described = describe.delay(allow_failure(broken))
    drain()
    assert described.result(timeout=1) == "RuntimeError: tolerated"


def test_upstreams_already_finished_when_the_downstream_is_enqueued():
    done = add.delay(2, 3)
    broken = explode.delay("early")
    drain()
    ready = add.delay(done, 1)
    assert row(ready).blocked == 0
    failed = add.delay(broken, 1)
    assert row(failed).state_type == "FAILED"
    assert names(failed) == ["Scheduled", "Failed"]
    drain()
    assert ready.result(timeout=1) == 6


def test_diamond():
    top = add.delay(1, 1)
    left = add.delay(top, 10)
    right = add.delay(top, 100)
    bottom = total.delay([left, right])
    assert row(bottom).blocked == 2
    drain()
    assert bottom.result(timeout=1) == 114
    assert started(bottom) >= max(finished(left), finished(right))


def test_unknown_upstream_raises_and_writes_nothing():
    ghost: TaskRunFuture[int] = TaskRunFuture("01890000-0000-7000-8000-000000000000")
    with pytest.raises(ValueError, match="Unknown upstream run"):
        add.delay(ghost, 1)
    assert not TaskRun.objects.exists()
    assert not TaskRunDependency.objects.exists()


def test_delay_many_refuses_futures():
    upstream = add.delay(1, 1)
    with pytest.raises(TypeError, match="delay_many\\(\\) does not take futures"):
        add.delay_many([(upstream, 1)])
    assert TaskRun.objects.count() == 1


def test_submitted_futures_are_resolved_before_the_background_run_is_enqueued():
    local = add.submit(20, 1)
    future = add.delay(local, 1)
    assert row(future).parameters_preview == {"a": 21, "b": 1}
    assert not TaskRunDependency.objects.filter(downstream_id=future.id).exists()
    drain()
    assert future.result(timeout=1) == 22
