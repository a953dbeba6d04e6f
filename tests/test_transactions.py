"""Atomic tasks and grouped transactions: writes and results commit together or roll back
together; on_commit / on_rollback hooks; an idempotency key makes a re-run a no-op."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from django_tasks import TaskTransaction, flush, transaction
from django_tasks.models import ResultRecord, TaskRun
from django_tasks.worker import Worker
from tests.conftest import wait_until
from tests.taskapp.models import Effect
from tests.taskapp.tasks import EVENTS, add, atomic_write, slow_atomic, write_effect

from .conftest import drain

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _events() -> Iterator[None]:
    EVENTS.clear()
    yield
    EVENTS.clear()


def labels() -> list[str]:
    return sorted(Effect.objects.values_list("label", flat=True))


def runs(task_name: str) -> list[tuple[str, str]]:
    flush()
    return list(
        TaskRun.objects.filter(task_name=task_name)
        .order_by("id")
        .values_list("state_type", "state_name")
    )


def test_an_atomic_task_that_returns_keeps_its_writes_and_is_completed():
    assert atomic_write("kept") == 1
    assert labels() == ["kept"]
    assert runs("atomic_write") == [("COMPLETED", "Completed")]


def test_an_atomic_task_that_raises_leaves_no_writes_after_every_attempt():
    with pytest.raises(ValueError, match="gone fails"):
        atomic_write("gone", failures=5)
    assert EVENTS == ["attempt:gone", "attempt:gone"]  # retries=1: two attempts
    assert labels() == []
    assert runs("atomic_write") == [("FAILED", "Failed")]


def test_an_atomic_retry_starts_from_a_clean_slate():
    # The first attempt's row is rolled back, so the second attempt counts one row.
    assert atomic_write("retried", failures=1) == 1
    assert labels() == ["retried"]
    flush()
    run = TaskRun.objects.get(task_name="atomic_write")
    assert (run.state_type, run.attempts) == ("COMPLETED", 2)


def test_a_group_commits_together_and_calls_on_commit_after_the_commit():
    with transaction() as txn:
        assert write_effect("a") == "a"
        assert write_effect("b") == "b"
        assert EVENTS == []  # nothing before the commit
        assert runs("write_effect") == []  # recorded when the transaction ends
    assert txn.is_committed()
    assert labels() == ["a", "b"]
    assert EVENTS == ["commit:wrote:a,wrote:b"] * 2  # one hook call per run, in order
    assert runs("write_effect") == [("COMPLETED", "Completed")] * 2


def test_a_group_rolls_back_together_and_calls_on_rollback_in_reverse_order():
    seen: list[TaskTransaction] = []

    def group() -> None:
        with transaction() as txn:
            seen.append(txn)
            write_effect("c")
            write_effect("d")
            raise RuntimeError("change of plan")

    with pytest.raises(RuntimeError, match="change of plan"):
        group()
    txn = seen[0]
    assert txn.state == "ROLLED_BACK"
    assert labels() == []
    assert EVENTS == ["rollback:wrote:c,wrote:d"] * 2
    recorded = runs("write_effect")
    assert recorded == [("FAILED", "RolledBack")] * 2
    history = list(
        TaskRun.objects.filter(task_name="write_effect")
        .first()
        .states.values_list("name", flat=True)  # type: ignore[union-attr]
    )
    assert history == ["Pending", "Running", "RolledBack"]


def test_a_failing_task_rolls_back_the_group():
    def group() -> None:
        with transaction():
            write_effect("e")
            atomic_write("bad", failures=9)

    with pytest.raises(ValueError, match="bad fails"):
        group()
    assert labels() == []
    assert EVENTS[-1] == "rollback:wrote:e"


def test_an_idempotency_key_makes_a_rerun_a_no_op():
    with transaction(key="nightly-2026-11-25") as first:
        assert not first.is_committed()
        assert write_effect("once") == "once"
        assert add(1, 2) == 3
    with transaction(key="nightly-2026-11-25") as second:
        assert second.is_committed()  # committed before, under this key
        assert write_effect("once") == "once"  # the recorded result, no function call
        assert add(1, 2) == 3
    assert labels() == ["once"]
    assert runs("write_effect") == [("COMPLETED", "Completed"), ("COMPLETED", "Cached")]
    assert ResultRecord.objects.filter(key="txn:nightly-2026-11-25").exists()
    with transaction(key="nightly-2026-11-26"):
        write_effect("once")
    assert labels() == ["once", "once"]


def test_a_rolled_back_keyed_transaction_can_run_again():
    def group() -> None:
        with transaction(key="retry-me"):
            write_effect("first try")
            raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        group()
    with transaction(key="retry-me") as txn:
        assert not txn.is_committed()
        write_effect("second try")
    assert labels() == ["second try"]


def test_submitted_runs_are_not_part_of_the_transaction():
    def group() -> None:
        with transaction():
            assert write_effect.submit("outside").result(timeout=5) == "outside"
            raise RuntimeError("roll back")

    with pytest.raises(RuntimeError):
        group()
    assert labels() == ["outside"]


def test_a_background_atomic_run_that_raises_leaves_no_writes():
    future = atomic_write.delay("bg-gone", failures=5)
    drain()
    assert future.state.is_failed()
    assert labels() == []
    run = TaskRun.objects.get(pk=future.id)
    assert run.attempts == 2
    assert list(run.states.values_list("name", flat=True)) == [
        "Scheduled",
        "Pending",
        "Running",
        "AwaitingRetry",
        "Pending",
        "Retrying",
        "Failed",
    ]


def test_a_background_atomic_run_commits_its_writes_with_its_state():
    future = atomic_write.delay("bg-kept", failures=1)
    drain()
    assert future.result(timeout=1) == 1  # the failed attempt's row was rolled back
    assert labels() == ["bg-kept"]


def test_a_background_atomic_run_taken_away_rolls_its_writes_back(second_connection):
    """The run is cancelled while it runs: its COMPLETED cannot be written, so its effects
    are rolled back with it (exactly once: here, zero times)."""
    future = slow_atomic.delay("taken", 0.5)
    worker = Worker(handle_signals=False, poll_interval=0.05)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        wait_until(lambda: TaskRun.objects.get(pk=future.id).state_type == "RUNNING")
        second_connection.execute(
            "UPDATE django_tasks_taskrun SET worker = 'someone-else' WHERE id = %s", [future.id]
        )
        time.sleep(1.0)
    finally:
        worker.stop()
        thread.join(10)
    assert labels() == []
