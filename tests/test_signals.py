"""Django signals of a run's life: enqueued, started, retried, finished, crashed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection

from django_tasks import flush
from django_tasks.signals import (
    run_crashed,
    run_enqueued,
    run_finished,
    run_retried,
    run_started,
)
from django_tasks.worker import Worker
from django_tasks.worker.connection import QueueConnection
from django_tasks.worker.maintenance import rescue
from tests.taskapp.tasks import add, fails_twice_listed

pytestmark = pytest.mark.django_db(transaction=True)

SIGNALS = {
    "enqueued": run_enqueued,
    "started": run_started,
    "retried": run_retried,
    "finished": run_finished,
    "crashed": run_crashed,
}


@pytest.fixture
def events() -> Iterator[list[tuple[str, Any, dict[str, Any]]]]:
    seen: list[tuple[str, Any, dict[str, Any]]] = []
    receivers = {}
    for name, signal in SIGNALS.items():

        def receiver(sender: Any, name: str = name, **kwargs: Any) -> None:
            kwargs.pop("signal", None)
            seen.append((name, sender, kwargs))

        receivers[name] = receiver
        signal.connect(receiver, weak=False)
    yield seen
    for name, signal in SIGNALS.items():
        signal.disconnect(receivers[name])


def test_inline_run_signals(events):
    assert fails_twice_listed("signals") == 3
    names = [name for name, _, _ in events]
    assert names == ["started", "retried", "started", "retried", "started", "finished"]
    assert all(sender is fails_twice_listed for _, sender, _ in events)
    retried = [kw for name, _, kw in events if name == "retried"]
    assert [(kw["attempt"], kw["delay"]) for kw in retried] == [(1, 0.2), (2, 0.4)]
    assert events[-1][2]["state"].name == "Completed"


def test_background_run_signals(events):
    future = add.delay(1, 2)
    Worker(burst=True, handle_signals=False).run()
    assert [(name, kw["run_id"]) for name, _, kw in events] == [
        ("enqueued", future.id),
        ("started", future.id),
        ("finished", future.id),
    ]
    assert events[-1][2]["state"].data == 3


def test_a_receiver_that_raises_does_not_stop_the_run(caplog):
    def broken(sender: Any, **kwargs: Any) -> None:
        raise RuntimeError("receiver broke")

    run_started.connect(broken, weak=False)
    try:
        assert add(2, 2) == 4
    finally:
        run_started.disconnect(broken)
    assert "receiver broke" in caplog.text


def test_crashed_runs_are_signalled(events):
    future = add.delay(1, 1)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE django_tasks_taskrun SET state_type = 'RUNNING', state_name = 'Running', "
            "worker = 'gone:1', attempts = 1 WHERE id = %s",
            [future.id],
        )
    db = QueueConnection("default", lambda: False)
    try:
        assert rescue(db, rescuer="me", heartbeat_timeout=1).crashed == 1
    finally:
        db.close()
    crashed = [kw for name, _, kw in events if name == "crashed"]
    assert crashed == [{"run_id": future.id, "retried": False}]
    flush()
