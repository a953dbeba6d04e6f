# mypy: disable-error-code="call-arg,union-attr,operator"
"""Unique runs: one live run per key, race-free across connections, inside the caller's
transaction; the key is free once the run is final (or after unique_for)."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from django.db import IntegrityError, close_old_connections, connection, transaction

from django_tasks import task
from django_tasks.ids import uuid7
from django_tasks.models import TaskRun
from django_tasks.testing import captured_runs
from tests.taskapp.tasks import add, noop, record, send_invoice, unique_by_arguments

from .conftest import drain

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_second_enqueue_of_a_live_key_returns_the_first_run():
    with captured_runs() as captured:
        first = record.delay("a", unique_key="invoice-42")
        second = record.delay("b", unique_key="invoice-42")
    assert second.id == first.id
    assert TaskRun.objects.count() == 1
    assert captured.ids == [first.id]  # run_enqueued: only for the run that was written
    assert TaskRun.objects.get().unique_key == "invoice-42"
    # The partial unique index refuses a second live run with the key, whoever writes it.
    run = TaskRun.objects.get()
    copy = {f.attname: getattr(run, f.attname) for f in TaskRun._meta.concrete_fields}
    with pytest.raises(IntegrityError), transaction.atomic():
        TaskRun.objects.create(**{**copy, "id": uuid7()})


def test_the_key_is_free_again_once_the_run_is_final():
    first = record.delay("a", unique_key="k")
    drain()
    assert first.result(timeout=5) == 1 or first.state.is_completed()
    again = record.delay("b", unique_key="k")
    assert again.id != first.id
    assert TaskRun.objects.filter(unique_key="k").count() == 2


def test_a_cancelled_run_frees_its_key():
    first = noop.delay(unique_key="k")
    first.cancel()
    assert noop.delay(unique_key="k").id != first.id


def test_twenty_concurrent_enqueues_of_one_key_make_one_run():
    barrier = threading.Barrier(20)
    ids: list[Any] = []
    errors: list[BaseException] = []

    def enqueue() -> None:
        try:
            barrier.wait()
            with transaction.atomic():  # each thread: its own connection and transaction
                ids.append(add.delay(1, 2, unique_key="one-of-twenty").id)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            close_old_connections()
            connection.close()

    threads = [threading.Thread(target=enqueue) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(ids) == 20
    assert len(set(ids)) == 1
    assert TaskRun.objects.filter(unique_key="one-of-twenty").count() == 1
    drain()
    assert TaskRun.objects.get(unique_key="one-of-twenty").state_name == "Completed"
    assert add.delay(1, 2, unique_key="one-of-twenty").id not in ids  # free again


def test_an_enqueue_waits_for_the_transaction_that_holds_the_key():
    """Inside the caller's transaction: a second enqueuer waits until the first commits (then
    gets its run) or rolls back (then makes its own)."""
    for outcome in ("commit", "rollback"):
        TaskRun.objects.all().delete()
        holding = threading.Event()
        release = threading.Event()
        first_id: list[Any] = []

        def first(
            outcome: str = outcome,
            first_id: list[Any] = first_id,
            holding: threading.Event = holding,
            release: threading.Event = release,
        ) -> None:
            try:
                with transaction.atomic():
                    first_id.append(noop.delay(unique_key="held").id)
                    holding.set()
                    release.wait(10)
                    if outcome == "rollback":
                        transaction.set_rollback(True)
            finally:
                connection.close()

        thread = threading.Thread(target=first)
        thread.start()
        assert holding.wait(10)
        result: list[Any] = []

        def second_enqueue(result: list[Any] = result) -> None:
            result.append(noop.delay(unique_key="held").id)
            connection.close()

        second = threading.Thread(target=second_enqueue)
        second.start()
        time.sleep(0.3)
        assert result == []  # waiting on the first transaction
        release.set()
        thread.join()
        second.join(10)
        if outcome == "commit":
            assert result == first_id
        else:
            assert result != first_id
        assert TaskRun.objects.filter(unique_key="held").count() == 1


def test_unique_true_keys_on_the_task_and_its_arguments():
    one = unique_by_arguments.delay(1)
    assert unique_by_arguments.delay(1).id == one.id
    assert unique_by_arguments.delay(n=1).id == one.id  # same arguments, however passed
    assert unique_by_arguments.delay(2).id != one.id
    key = TaskRun.objects.get(pk=one.id).unique_key
    assert key.startswith("unique_by_arguments:")
    assert unique_by_arguments.delay(1, unique_key="explicit").id != one.id  # given key wins


def test_a_callable_makes_the_key_and_unique_for_keeps_it_after_the_run():
    first = send_invoice.delay(7)
    assert send_invoice.delay(7, copy=1).id == first.id
    assert TaskRun.objects.get(pk=first.id).unique_key == "invoice-7"
    drain()
    assert first.result(timeout=5) == 7
    assert send_invoice.delay(7).id == first.id  # finished less than unique_for (30 s) ago
    # As if 31 s had passed since it finished:
    run = TaskRun.objects.get(pk=first.id)
    TaskRun.objects.filter(pk=first.id).update(finished=run.finished - timedelta(seconds=31))
    assert send_invoice.delay(7).id != first.id


def test_rolled_back_enqueue_leaves_no_run_and_no_key():
    with transaction.atomic():
        noop.delay(unique_key="gone")
        transaction.set_rollback(True)
    assert not TaskRun.objects.exists()
    assert noop.delay(unique_key="gone").state.is_scheduled()


@pytest.mark.parametrize(
    ("key", "error", "message"),
    [
        ("", ValueError, "1 to 255"),
        ("x" * 256, ValueError, "1 to 255"),
        ("a\x00b", ValueError, "NUL"),
        ("\ud800", ValueError, "surrogates"),
        (42, TypeError, "must be a str"),
    ],
)
def test_bad_keys_are_refused_at_the_call_and_write_nothing(key, error, message):
    with pytest.raises(error, match=message):
        noop.delay(unique_key=key)
    assert not TaskRun.objects.exists()


def test_what_unique_runs_do_not_take():
    with pytest.raises(TypeError, match="is unique"):
        unique_by_arguments.delay_many([(1,), (2,)])
    upstream = noop.delay()
    with pytest.raises(ValueError, match="no unique key"):
        noop.apply_async(wait_for=[upstream], unique_key="k")
    assert TaskRun.objects.count() == 1


def test_unique_options_are_checked_at_decoration():
    def fn(n: int) -> None: ...

    def takes_key(unique_key: str) -> None: ...

    with pytest.raises(TypeError, match="unique must be"):
        task(unique="yes")(fn)  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="unique_for needs"):
        task(unique_for=10)(fn)
    for bad in (-1, float("nan"), 1e12):
        with pytest.raises(ValueError, match="unique_for must be"):
            task(unique=True, unique_for=bad)(fn)
    with pytest.raises(ValueError, match="'unique_key'"):
        task(takes_key)
