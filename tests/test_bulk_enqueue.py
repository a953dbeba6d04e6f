"""delay_many() of more runs than one statement takes: chunks pipelined in one transaction."""

import json
import threading
import uuid
from typing import Any

import psycopg
import pytest
from django.db import IntegrityError, transaction
from django.db.transaction import TransactionManagementError

from django_tasks import topic
from django_tasks.models import TaskRun, TaskRunState
from django_tasks.signals import run_enqueued
from django_tasks.sql import LISTEN
from tests.taskapp.tasks import add

from .conftest import drain

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(topic, "BULK_CHUNK", 3)


@pytest.fixture
def sent_chunks(monkeypatch) -> list[int]:
    """The number of runs in each chunk sent through the pipeline."""
    sizes: list[int] = []
    real = topic._send_pipelined

    def counting(alias, params, chunks):
        def counted():
            for items in chunks:
                sizes.append(len(json.loads(items)))
                yield items

        return real(alias, params, counted())

    monkeypatch.setattr(topic, "_send_pipelined", counting)
    return sizes


def _count(conn) -> int:
    row = conn.execute("SELECT count(*) FROM django_tasks_taskrun").fetchone()
    return int(row[0])


def test_a_batch_of_several_chunks_is_one_transaction_and_one_notify(
    small_chunks, sent_chunks, second_connection
):
    second_connection.execute(LISTEN)
    with transaction.atomic():
        futures = add.delay_many([(i, 1) for i in range(10)])
        assert sent_chunks == [3, 3, 3, 1]
        assert TaskRun.objects.count() == 10
        assert _count(second_connection) == 0  # nothing is visible before the commit
    assert _count(second_connection) == 10
    notes = list(second_connection.notifies(timeout=1, stop_after=2))
    assert [n.payload for n in notes] == ["default"]  # the chunks' NOTIFYs are merged
    runs = list(TaskRun.objects.order_by("created"))
    assert [run.id for run in runs] == [future.id for future in futures]  # first in, first out
    assert [run.parameters_preview["a"] for run in runs] == list(range(10))
    assert TaskRunState.objects.filter(type="SCHEDULED", name="Scheduled").count() == 10
    drain()
    assert [future.result(timeout=1) for future in futures] == [i + 1 for i in range(10)]


def test_the_default_chunk_size_with_a_partial_last_chunk():
    futures = add.delay_many([(i, i) for i in range(topic.BULK_CHUNK * 2 + 7)])
    assert TaskRun.objects.count() == len(futures) == topic.BULK_CHUNK * 2 + 7
    assert TaskRunState.objects.count() == len(futures)
    assert len({future.id for future in futures}) == len(futures)


def test_a_bad_item_in_a_later_chunk_writes_nothing(small_chunks):
    items = [(i, 1) for i in range(7)] + [(threading.Lock(), 1)] + [(1, 1)]
    with pytest.raises(TypeError, match="parameters cannot be pickled"):
        add.delay_many(items)
    assert not TaskRun.objects.exists()
    assert not TaskRunState.objects.exists()


def test_a_bad_item_leaves_the_callers_transaction_usable(small_chunks):
    items = [(i, 1) for i in range(7)] + [(threading.Lock(), 1)]
    with transaction.atomic():
        before = add.delay(1, 1)
        with pytest.raises(TypeError):
            add.delay_many(items)
        after = add.delay(2, 2)  # the chunks sent were rolled back to a savepoint
    assert set(TaskRun.objects.values_list("id", flat=True)) == {before.id, after.id}


def test_a_database_error_in_a_later_chunk_writes_nothing(small_chunks, monkeypatch):
    ids = iter([uuid.UUID(int=n) for n in (1, 2, 3, 4, 5, 4, 7)])  # the 6th repeats the 4th
    monkeypatch.setattr(topic, "uuid7", lambda: next(ids))
    with pytest.raises(IntegrityError, match="duplicate key"):
        add.delay_many([(i, 1) for i in range(7)])
    assert not TaskRun.objects.exists()
    monkeypatch.undo()
    assert len(add.delay_many([(1, 1)] * 5)) == 5  # the connection goes on
    assert TaskRun.objects.count() == 5


def test_a_database_error_in_a_later_chunk_inside_the_callers_transaction(
    small_chunks, monkeypatch
):
    with transaction.atomic():
        before = add.delay(1, 1)
        ids = iter([uuid.UUID(int=n) for n in (1, 2, 3, 4, 5, 4, 7)])
        monkeypatch.setattr(topic, "uuid7", lambda: next(ids))
        with pytest.raises(IntegrityError):
            add.delay_many([(i, 1) for i in range(7)])
        monkeypatch.undo()
        after = add.delay(2, 2)  # rolled back to the savepoint: the transaction goes on
    assert set(TaskRun.objects.values_list("id", flat=True)) == {before.id, after.id}
    assert TaskRunState.objects.count() == 2


def test_chunks_are_cut_by_bytes_too(monkeypatch, sent_chunks):
    """A chunk is one jsonb value (256 MB at most): runs with large arguments are sent in
    smaller chunks - here every run is a chunk of its own, fewer runs than BULK_CHUNK."""
    monkeypatch.setattr(topic, "BULK_CHUNK_BYTES", 10)
    futures = add.delay_many([("x" * 100, "y")] * 5)
    assert sent_chunks == [1, 1, 1, 1, 1]
    assert TaskRun.objects.count() == TaskRunState.objects.count() == 5
    drain()
    result: object = futures[4].result(timeout=1)
    assert result == "x" * 100 + "y"


def test_without_pipeline_mode_the_chunks_go_one_by_one(small_chunks, monkeypatch):
    monkeypatch.setattr(psycopg.Pipeline, "is_supported", classmethod(lambda cls: False))
    monkeypatch.setattr(psycopg.Connection, "pipeline", None)  # would raise if called
    futures = add.delay_many([(i, 1) for i in range(10)])
    assert TaskRun.objects.count() == 10
    assert [run.id for run in TaskRun.objects.order_by("created")] == [f.id for f in futures]


@pytest.mark.parametrize("runs", [2, 10])
def test_a_transaction_marked_for_rollback_is_refused(small_chunks, runs):
    received: list[Any] = []
    run_enqueued.connect(received.append, weak=False, dispatch_uid="test_bulk")
    try:
        with transaction.atomic():
            transaction.set_rollback(True)
            with pytest.raises(TransactionManagementError):
                add.delay_many([(i, 1) for i in range(runs)])
            with pytest.raises(TransactionManagementError):
                add.delay(1, 1)
    finally:
        run_enqueued.disconnect(dispatch_uid="test_bulk")
    assert received == []  # no future, no signal for runs that would vanish
    assert not TaskRun.objects.exists()
