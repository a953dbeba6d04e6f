"""Settling a dead worker process's runs from its journal, and recording outcomes the
database refuses - in this process, against real PostgreSQL, statement by statement."""

from __future__ import annotations

import json
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from django_tasks import sql
from django_tasks.models import TaskRun, TaskRunState
from django_tasks.states import StateName, StateType
from django_tasks.worker import Worker
from django_tasks.worker.connection import QueueConnection
from django_tasks.worker.deferred import DeferredOutcomes
from django_tasks.worker.journal import ProcessJournal
from django_tasks.worker.outcomes import ClaimedRun, Deferred, Outcome, finish_run
from django_tasks.worker.salvage import how_it_died, salvage
from tests.taskapp.poison import exit_process_retried
from tests.taskapp.tasks import add, always_fails, async_record

pytestmark = pytest.mark.django_db(transaction=True)

DEAD = "host:999999"


@pytest.fixture
def db():
    conn = QueueConnection("default", lambda: False)
    yield conn
    conn.close()


def claim_all(db: QueueConnection, worker: str = DEAD) -> list[ClaimedRun]:
    params = {"queue": "default", "limit": 100, "worker": worker, "late_after": 5.0}
    rows = db.execute(sql.CLAIM, {**params, "done": "[]"}, give_up_on_stop=False)
    return [
        ClaimedRun(id=row[1], task_key=row[2], task_name=row[3], parameters=b"", attempts=row[6])
        for row in rows
        if row[0] == "claimed"
    ]


def done(run: ClaimedRun, value: int) -> Deferred:
    now = timezone.now()
    outcome = Outcome(StateType.COMPLETED, StateName.COMPLETED, "", None, value, "")
    return Deferred(run, now - timedelta(milliseconds=5), now, outcome)


def names(run_id: uuid.UUID) -> list[str]:
    return list(TaskRunState.objects.filter(run_id=run_id).values_list("name", flat=True))


def test_a_dead_childs_journal_is_settled_run_by_run(db):
    """Two runs finished (journaled), one executing when the process died, two not started."""
    futures = [add.delay(i, i) for i in range(5)]
    runs = claim_all(db)
    assert [r.attempts for r in runs] == [1] * 5  # counted at the claim
    journal = ProcessJournal.private()
    for run, value in zip(runs[:2], (0, 2), strict=True):
        assert journal.add(done(run, value).entry())
    journal.begin(runs[2].id, "add", time.time())

    settled = salvage(db, journal, worker=DEAD, rescuer="me", exitcode=-11)

    assert (settled.written, settled.crashed, settled.retried) == (2, 1, 0)
    rows = {r.id: r for r in TaskRun.objects.all()}
    assert [rows[f.id].state_type for f in futures] == [
        "COMPLETED",
        "COMPLETED",
        "CRASHED",
        "SCHEDULED",
        "SCHEDULED",
    ]
    assert [rows[f.id].result_preview for f in futures[:2]] == [0, 2]
    crashed = rows[futures[2].id]
    assert crashed.state_message == (
        f"Task 'add' took down its worker process {DEAD} (killed by signal SIGSEGV) "
        f"while running this run."
    )
    assert (crashed.attempts, crashed.crashes) == (1, 1)
    assert names(futures[2].id) == ["Scheduled", "Pending", "Running", "Crashed"]
    for future in futures[3:]:  # never started: back in the topic, the attempt given back
        row = rows[future.id]
        assert (row.attempts, row.crashes, row.worker) == (0, 0, "")
        assert row.state_message == f"Handed back: worker process {DEAD} died before starting it."


def test_a_run_killed_by_its_supervisor_is_not_blamed(db):
    future = always_fails.delay("x")  # retries=1
    (run,) = claim_all(db)
    journal = ProcessJournal.private()
    journal.begin(run.id, run.task_name, time.time())
    settled = salvage(
        db, journal, worker=DEAD, rescuer="me", exitcode=-9, killed_because="the shutdown timeout"
    )
    assert settled.retried == 1
    row = TaskRun.objects.get(pk=future.id)
    assert (row.state_type, row.state_name, row.crashes) == ("SCHEDULED", "AwaitingRetry", 0)
    crashed = TaskRunState.objects.get(run_id=future.id, type="CRASHED")
    assert crashed.message == (
        f"Worker process {DEAD} was killed by its supervisor (the shutdown timeout) while "
        f"running this run."
    )


def start(db: QueueConnection, run: ClaimedRun) -> None:
    """RUNNING, as an async lane writes it for its batch."""
    params = {"id": run.id, "worker": DEAD, "started": None}
    assert db.execute(sql.START, params, give_up_on_stop=False)


def settled_rows(futures: list[Any]) -> list[tuple[str, int, str]]:
    rows = [TaskRun.objects.get(pk=f.id) for f in futures]
    return [(row.state_type, row.crashes, row.state_message) for row in rows]


def sync_and_async_in_flight(db: QueueConnection) -> tuple[Any, list[Any], Any, ProcessJournal]:
    """A process's state when it dies with async runs in flight: a sync run in hand (its
    journal begun), two async runs RUNNING - the first taking a step on the loop - and a run
    claimed but not started. Returns their futures and the journal."""
    sync_run = add.delay(1, 1)
    in_flight = [async_record.delay("first"), async_record.delay("second")]
    not_started = add.delay(2, 2)
    runs = claim_all(db)
    start(db, runs[1])
    start(db, runs[2])
    journal = ProcessJournal.private()
    journal.begin(runs[0].id, "add", time.time())
    journal.step(runs[1].id, "async_record")
    return sync_run, in_flight, not_started, journal


def test_the_async_run_in_a_step_is_blamed_and_the_runs_beside_it_are_not(db):
    """The child died while an async run's coroutine took a step on the loop (its code alone
    runs there): that run took it down. The sync run in hand and the other async runs in
    flight are lost with the process, charged nothing; a run not started goes back."""
    sync_run, (culprit, beside), not_started, journal = sync_and_async_in_flight(db)

    settled = salvage(db, journal, worker=DEAD, rescuer="me", exitcode=1)

    assert (settled.crashed, settled.retried) == (3, 0)
    lost = (
        f"Worker process {DEAD} died (exit code 1) while running this run: run {culprit.id} "
        f"of task 'async_record' took it down."
    )
    assert settled_rows([culprit, sync_run, beside]) == [
        (
            "CRASHED",
            1,
            f"Task 'async_record' took down its worker process {DEAD} (exit code 1) while "
            f"running this run.",
        ),
        ("CRASHED", 0, lost),
        ("CRASHED", 0, lost),
    ]
    assert names(sync_run.id) == ["Scheduled", "Pending", "Running", "Crashed"]
    row = TaskRun.objects.get(pk=not_started.id)
    assert (row.state_type, row.crashes) == ("SCHEDULED", 0)


def test_with_async_runs_in_flight_and_none_in_a_step_no_run_is_named(db):
    """The child died while its async runs awaited: the sync run in hand may have done it,
    or a thread of any async run - none is named, and each is charged the crash. A run not
    started goes back, charged nothing: the culprit is among the runs that were running."""
    sync_run, in_flight, not_started, journal = sync_and_async_in_flight(db)
    journal.stepped()  # its step is over: it awaits

    settled = salvage(db, journal, worker=DEAD, rescuer="me", exitcode=-9)

    assert settled.crashed == 3
    unknown = (
        f"Worker process {DEAD} died (killed by signal SIGKILL) while running this run and "
        f"other runs (async runs in flight): which one took it down is not known."
    )
    assert settled_rows([sync_run, *in_flight]) == [("CRASHED", 1, unknown)] * 3
    row = TaskRun.objects.get(pk=not_started.id)
    assert (row.state_type, row.crashes) == ("SCHEDULED", 0)


def test_a_running_sync_run_alone_in_hand_is_named(db):
    """No async run in flight: the sync run in hand, RUNNING (a long run), took it down."""
    future = add.delay(1, 1)
    (run,) = claim_all(db)
    start(db, run)
    journal = ProcessJournal.private()
    journal.begin(run.id, "add", time.time())
    settled = salvage(db, journal, worker=DEAD, rescuer="me", exitcode=-9)
    assert settled.crashed == 1
    assert settled_rows([future]) == [
        (
            "CRASHED",
            1,
            f"Task 'add' took down its worker process {DEAD} (killed by signal SIGKILL) while "
            f"running this run.",
        )
    ]


def test_async_runs_in_flight_with_no_sync_run_in_hand_are_each_charged(db):
    future = async_record.delay("alone")
    (run,) = claim_all(db)
    start(db, run)
    salvage(db, ProcessJournal.private(), worker=DEAD, rescuer="me", exitcode=1)
    unknown = (
        f"Worker process {DEAD} died (exit code 1) while running this run and other runs "
        f"(async runs in flight): which one took it down is not known."
    )
    assert settled_rows([future]) == [("CRASHED", 1, unknown)]


def test_runs_in_flight_in_a_process_its_supervisor_killed_are_not_blamed(db):
    """Killed by its supervisor (the shutdown timeout, a run that overran): no run took the
    process down, in a step or not; each run it was running is lost with it, charged
    nothing (the async runs were charged, rescued as runs of a lost worker)."""
    sync_run, in_flight = add.delay(1, 1), async_record.delay("a")
    runs = claim_all(db)
    start(db, runs[1])
    journal = ProcessJournal.private()
    journal.begin(runs[0].id, "add", time.time())
    journal.step(runs[1].id, "async_record")
    salvage(db, journal, worker=DEAD, rescuer="me", exitcode=-9, killed_because="a test")
    killed = f"Worker process {DEAD} was killed by its supervisor (a test) while running this run."
    assert settled_rows([sync_run, in_flight]) == [("CRASHED", 0, killed)] * 2


def test_a_run_that_keeps_crashing_is_discarded_before_its_retries_end(db, settings):
    settings.DJANGO_TASKS = {"MAX_CRASHES": 2}
    future = exit_process_retried.delay()  # retries=10, but it only ever crashes
    for expected in ("SCHEDULED", "CRASHED"):
        (run,) = claim_all(db)
        journal = ProcessJournal.private()
        journal.begin(run.id, run.task_name, time.time())
        salvage(db, journal, worker=DEAD, rescuer="me", exitcode=1)
        TaskRun.objects.filter(pk=future.id).update(scheduled_time=timezone.now())
        assert TaskRun.objects.get(pk=future.id).state_type == expected
    row = TaskRun.objects.get(pk=future.id)
    assert row.state_message.endswith(
        "Its worker died while running it 2 times in a row (MAX_CRASHES): it is not claimed again."
    )
    assert claim_all(db) == []


def test_an_unreadable_journal_sends_the_runs_back(db, caplog):
    future = add.delay(1, 1)
    claim_all(db)
    journal = ProcessJournal.private()
    journal.add(b'{"id": "torn')
    assert salvage(db, journal, worker=DEAD, rescuer="me", exitcode=1).written == 0
    assert "unreadable journal" in caplog.text
    assert TaskRun.objects.get(pk=future.id).state_type == "SCHEDULED"


def test_one_refused_outcome_in_a_journal_does_not_cost_the_others(db):
    futures = [add.delay(i, i) for i in range(2)]
    good, bad = claim_all(db)
    journal = ProcessJournal.private()
    journal.add(done(good, 7).entry())
    broken: dict[str, Any] = json.loads(done(bad, 8).entry())
    broken["started"] = "not a time"
    journal.add(json.dumps(broken).encode())
    assert salvage(db, journal, worker=DEAD, rescuer="me", exitcode=1).written == 1
    states = [TaskRun.objects.get(pk=f.id).state_type for f in futures]
    assert states == ["COMPLETED", "SCHEDULED"]  # the unwritable one runs again


def test_a_refused_final_state_ends_the_run_failed_with_the_reason(db):
    future = add.delay(1, 2)
    (run,) = claim_all(db)
    db.execute(sql.START, {"id": run.id, "worker": DEAD, "started": None}, give_up_on_stop=False)
    # A preview built elsewhere than preview(): NaN, which jsonb refuses.
    outcome = Outcome(StateType.COMPLETED, StateName.COMPLETED, "", b"x", float("nan"), "")
    assert finish_run(db, run.id, DEAD, outcome)
    row = TaskRun.objects.get(pk=future.id)
    assert row.state_type == "FAILED"
    assert row.state_message.startswith("Could not record the run's result: ")


def test_deferred_outcomes_the_database_refuses_are_written_one_by_one(db, monkeypatch):
    futures = [add.delay(i, i) for i in range(3)]
    deferred = DeferredOutcomes(ProcessJournal.private(), DEAD)
    runs = claim_all(db)
    real_entry = Deferred.entry

    def entry(self: Deferred) -> bytes:
        data = json.loads(real_entry(self))
        if self.run.id == runs[1].id and not data["message"]:
            data["finished"] = "not a time"  # refused as it is
        return json.dumps(data).encode()

    monkeypatch.setattr(Deferred, "entry", entry)
    items = [done(run, i) for i, run in enumerate(runs)]
    for item in items:
        deferred.add(db, item)
    assert deferred.journal.size > 0
    deferred.flush(db)
    assert deferred.journal.size == 0
    rows = [TaskRun.objects.get(pk=f.id) for f in futures]
    assert [r.state_type for r in rows] == ["COMPLETED", "FAILED", "COMPLETED"]
    assert rows[1].state_message.startswith("Could not record the run's result: ")


def test_how_a_process_died():
    assert how_it_died(1) == "exit code 1"
    assert how_it_died(-9) == "killed by signal SIGKILL"
    assert how_it_died(-200) == "killed by signal 200"
    assert how_it_died(None) == "exit code unknown"


def test_an_outcome_larger_than_the_journal_is_written_at_once(db):
    future = add.delay(1, 1)
    deferred = DeferredOutcomes(ProcessJournal.private(capacity=64), DEAD)
    (run,) = claim_all(db)
    deferred.add(db, done(run, 2))  # over 64 bytes: no room, whatever is flushed
    assert not deferred
    assert deferred.journal.size == 0
    row = TaskRun.objects.get(pk=future.id)
    assert (row.state_type, row.result_preview) == ("COMPLETED", 2)


def test_a_preview_built_elsewhere_is_escaped_in_the_journal():
    run = ClaimedRun(id=uuid.uuid4(), task_key="k", task_name="t", parameters=b"")
    outcome = Outcome(StateType.COMPLETED, StateName.COMPLETED, "", None, [float("nan")], "")
    now = timezone.now()
    assert json.loads(Deferred(run, now, now, outcome).entry())["preview"] == ["NaN"]


def test_a_run_lost_with_its_worker_too_often_is_not_claimed_again(db):
    """No supervisor to say which run was executing (the whole host died): each loss of a
    claimed run counts, and at MAX_CRASHES the run is discarded instead of looping."""
    from django_tasks.worker.maintenance import rescue

    future = add.delay(1, 1)
    assert len(claim_all(db, worker="gone:1")) == 1  # no such worker row: lost at once
    TaskRun.objects.filter(pk=future.id).update(crashes=2)
    rescued = rescue(db, rescuer="me", heartbeat_timeout=30)
    assert (rescued.handed_back, rescued.crashed) == (0, 1)
    row = TaskRun.objects.get(pk=future.id)
    assert (row.state_type, row.crashes, row.attempts) == ("CRASHED", 3, 1)
    assert row.state_message == (
        "Rescued: claimed by worker gone:1, which was lost. Its worker was lost while holding "
        "it 3 times in a row (MAX_CRASHES): it is not claimed again."
    )


def test_a_claim_whose_completions_are_refused_writes_them_one_by_one(db, monkeypatch):
    """The deferred outcomes travel with the next claim; if the database refuses the
    statement because of one of them, they are written one by one and the claim goes on."""
    futures = [add.delay(i, i) for i in range(3)]
    worker = Worker(handle_signals=False, batch_size=2)
    first = worker.claimer().claim(db)
    real_entry = Deferred.entry

    def entry(self: Deferred) -> bytes:
        data = json.loads(real_entry(self))
        if self.run.id == first[0].id and not data["message"]:
            data["started"] = "not a time"
        return json.dumps(data).encode()

    monkeypatch.setattr(Deferred, "entry", entry)
    for i, run in enumerate(first):
        worker.deferred.add(db, done(run, i))
    second = worker.claimer().claim(db)
    assert [r.id for r in second] == [futures[2].id]
    rows = [TaskRun.objects.get(pk=f.id) for f in futures[:2]]
    assert [r.state_type for r in rows] == ["FAILED", "COMPLETED"]
    assert rows[0].state_message.startswith("Could not record the run's result: ")
    assert not worker.deferred


def test_a_crashed_runs_history_stays_in_order_whatever_the_workers_clock_said(db):
    future = add.delay(1, 1)
    (run,) = claim_all(db)
    journal = ProcessJournal.private()
    journal.begin(run.id, "add", time.time() - 3600)  # a worker whose clock estimate was off
    salvage(db, journal, worker=DEAD, rescuer="me", exitcode=-9)
    states = list(TaskRunState.objects.filter(run_id=future.id).values_list("name", "timestamp"))
    assert [name for name, _ in states] == ["Scheduled", "Pending", "Running", "Crashed"]
    stamps = [stamp for _, stamp in states]
    assert stamps == sorted(stamps)
    assert len(set(stamps)) == 4
