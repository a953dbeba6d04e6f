"""A worker names the queues with ready runs that no live worker serves."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from django_tasks.models import Worker
from django_tasks.worker import idle_queues
from django_tasks.worker.connection import QueueConnection
from django_tasks.worker.idle_queues import IdleQueueWarning, describe, unserved_queues
from tests.taskapp.tasks import add

from .conftest import wait_until, worker_log

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def db_conn() -> Iterator[QueueConnection]:
    conn = QueueConnection("default", lambda: False)
    yield conn
    conn.close()


def live_worker(name: str, queues: list[str], heartbeat_age: float = 0.0) -> None:
    beat = timezone.now() - timedelta(seconds=heartbeat_age)
    Worker.objects.create(
        name=name, host="h", pid=1, queues=queues, started=beat, last_heartbeat=beat
    )


def test_only_ready_runs_that_no_live_worker_serves_are_named(db_conn: QueueConnection) -> None:
    for _ in range(3):
        add.apply_async(args=(1, 2), queue="emails")
    add.apply_async(args=(1, 2), queue="default")  # served by this worker
    add.apply_async(args=(1, 2), queue="elsewhere")  # served by another live worker
    add.apply_async(args=(1, 2), queue="stale")  # its worker stopped beating: unserved
    add.apply_async(args=(1, 2), queue="later", countdown=3600)  # not ready yet
    live_worker("other:1", ["elsewhere"])
    live_worker("gone:2", ["stale"], heartbeat_age=60)

    rows = unserved_queues(db_conn, ["default"], heartbeat_timeout=10)

    assert [(queue, n) for queue, n, _ in rows] == [("emails", 3), ("stale", 1)]
    message = describe(rows, ["default"], db_conn.db_epoch())
    assert "emails (3 ready, the oldest for 0 s)" in message
    assert "stale (1 ready" in message
    assert "This worker serves default: start it with --queues default,emails,stale" in message


def test_counts_are_capped(db_conn: QueueConnection, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(idle_queues, "COUNT_CAP", 3)
    for i in range(5):
        add.apply_async(args=(i, i), queue="emails")
    rows = unserved_queues(db_conn, ["default"], heartbeat_timeout=10)
    assert [(queue, n) for queue, n, _ in rows] == [("emails", 3)]
    assert "emails (3+ ready" in describe(rows, ["default"], db_conn.db_epoch())


def test_the_same_warning_is_not_repeated_until_the_queues_change(
    db_conn: QueueConnection,
) -> None:
    warning = IdleQueueWarning(["default"], heartbeat_timeout=10)
    warning.next_check = 0
    assert warning.check(db_conn) is None  # nothing waits
    add.apply_async(args=(1, 2), queue="emails")
    warning.next_check = 0
    assert "emails (1 ready" in (warning.check(db_conn) or "")
    warning.next_check = 0
    assert warning.check(db_conn) is None  # the same queues, said a moment ago
    add.apply_async(args=(1, 2), queue="reports")
    warning.next_check = 0
    assert "reports (1 ready" in (warning.check(db_conn) or "")
    assert warning.next_check > 0  # the next look waits CHECK_EVERY


def test_a_worker_on_the_default_queue_names_the_queue_its_runs_wait_in(
    start_worker: Callable[..., Any],
) -> None:
    waiting = add.apply_async(args=(1, 2), queue="emails")
    worker = start_worker()  # serves DEFAULT_QUEUE only
    wait_until(lambda: "no live worker serves" in worker_log(worker), timeout=60)
    log = worker_log(worker)
    assert "emails (1 ready" in log
    assert "start it with --queues default,emails" in log
    assert waiting.state.name == "Scheduled"
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0


def test_a_null_among_a_workers_queues_hides_nothing(db_conn: QueueConnection) -> None:
    add.apply_async(args=(1, 2), queue="emails")
    live_worker("odd:1", [None, "elsewhere"])  # type: ignore[list-item]
    rows = unserved_queues(db_conn, ["default"], heartbeat_timeout=10)
    assert [queue for queue, _, _ in rows] == ["emails"]


def test_an_odd_queue_name_written_by_hand_is_quoted_in_the_message(
    db_conn: QueueConnection,
) -> None:
    from django_tasks.models import TaskRun

    run = add.apply_async(args=(1, 2), queue="emails")
    TaskRun.objects.filter(pk=run.id).update(queue="em ails'; rm -rf ~")
    rows = unserved_queues(db_conn, ["default"], heartbeat_timeout=10)
    message = describe(rows, ["default"], db_conn.db_epoch())
    assert '"em ails\'; rm -rf ~" (1 ready' in message
    assert "--queues 'default,em ails'\"'\"'; rm -rf ~'" in message  # one shell word


def test_a_queue_whose_first_entries_are_all_due_later_is_not_named(
    db_conn: QueueConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(idle_queues, "COUNT_CAP", 2)
    for _ in range(2):
        add.apply_async(args=(1, 2), queue="emails", priority=5, countdown=3600)
    add.apply_async(args=(1, 2), queue="emails")  # ready, behind two entries due later
    assert unserved_queues(db_conn, ["default"], heartbeat_timeout=10) == []
    monkeypatch.setattr(idle_queues, "COUNT_CAP", 3)
    assert [n for _, n, _ in unserved_queues(db_conn, ["default"], heartbeat_timeout=10)] == [1]
