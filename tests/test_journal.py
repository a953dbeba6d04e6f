"""The journal a worker process shares with its supervisor (private memory here)."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
import uuid

from django.utils import timezone

from django_tasks.worker.journal import ProcessJournal


def test_outcomes_are_kept_in_order_until_written():
    journal = ProcessJournal.private(capacity=64)
    assert journal.entries() == "[]"
    assert journal.add(b'{"a":1}')
    assert journal.add(b'{"b":2}')
    taken = journal.size
    assert json.loads(journal.entries(taken)) == [{"a": 1}, {"b": 2}]
    assert journal.add(b'{"c":3}')  # arrives while the first two are being written
    journal.written(taken)
    assert json.loads(journal.entries()) == [{"c": 3}]
    journal.written(0)  # nothing written: nothing forgotten
    assert json.loads(journal.entries()) == [{"c": 3}]
    journal.written(journal.size)
    assert journal.entries() == "[]"


def test_an_outcome_that_does_not_fit_is_refused():
    journal = ProcessJournal.private(capacity=16)
    assert journal.add(b'{"x":"123456"}')
    assert not journal.add(b'{"y":1}')  # no room: the caller writes it at once
    assert json.loads(journal.entries()) == [{"x": "123456"}]


def test_the_run_being_executed_and_the_boot_state():
    journal = ProcessJournal.private()
    assert journal.executing is None
    run_id, since = uuid.uuid4(), timezone.now()
    journal.begin(run_id, "some_task", since.timestamp())
    executing = journal.executing
    assert executing is not None
    assert (executing.run_id, executing.task_name) == (run_id, "some_task")
    assert abs((executing.since - since).total_seconds()) < 1e-5
    journal.end()
    assert journal.executing is None
    assert not journal.ready
    journal.set_ready()
    assert journal.ready
    journal.set_error("ImportError: " + "x" * 10_000)
    assert journal.error.startswith("ImportError: x")
    assert len(journal.error) < 4096
    journal.count_processed()
    assert journal.processed == 1


def stepping_of(journal: ProcessJournal) -> tuple[uuid.UUID, str] | None:
    """The run and task name the journal says takes a step, or None."""
    stepping = journal.stepping
    return None if stepping is None else (stepping.run_id, stepping.task_name)


def test_the_async_run_taking_a_step():
    journal = ProcessJournal.private()
    assert stepping_of(journal) is None
    first, second = uuid.uuid4(), uuid.uuid4()
    journal.step(first, "fetch")
    assert stepping_of(journal) == (first, "fetch")
    journal.stepped()
    assert stepping_of(journal) is None
    journal.step(second, "notify")
    assert stepping_of(journal) == (second, "notify")
    journal.reset()
    assert stepping_of(journal) is None
    journal.step(first, "notify")  # the name is written again after a reset
    assert stepping_of(journal) == (first, "notify")


def _child_writes(journal: ProcessJournal, run_id: uuid.UUID) -> None:
    journal.set_ready()
    journal.add(b'{"written": "by the child"}')
    journal.begin(run_id, "poison", time.time())
    journal.step(run_id, "async_poison")
    os._exit(1)  # dies mid-run, as a poison run makes it


def test_what_a_child_writes_is_read_by_its_parent_after_it_died():
    context = multiprocessing.get_context("spawn")
    journal = ProcessJournal.shared(context, capacity=1024)
    assert journal.add(b"{}")
    run_id = uuid.uuid4()
    child = context.Process(target=_child_writes, args=(journal, run_id))
    child.start()
    child.join(30)
    assert child.exitcode == 1
    assert journal.ready
    assert json.loads(journal.entries()) == [{}, {"written": "by the child"}]
    executing = journal.executing
    assert executing is not None
    assert (executing.run_id, executing.task_name) == (run_id, "poison")
    stepping = journal.stepping
    assert stepping is not None
    assert (stepping.run_id, stepping.task_name) == (run_id, "async_poison")
