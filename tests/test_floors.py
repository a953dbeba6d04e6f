"""Claims that start from the last claimed position (django_tasks.worker.floors): under a held
snapshot a floored claim reads a few index entries where a plain one walks every entry left by
the runs claimed since; priority order holds and no run behind the floor is left behind."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from django.db import transaction
from django.utils import timezone

from django_tasks import sql
from django_tasks.models import TaskRun
from django_tasks.topic import open_worker_connection
from django_tasks.worker import floors as floors_module
from django_tasks.worker.async_lane import AsyncLane
from django_tasks.worker.connection import QueueConnection
from django_tasks.worker.floors import IN_FLIGHT_MARGIN, ClaimFloors, Floor
from django_tasks.worker.process import Worker
from tests.taskapp.tasks import add, noop, on_other_queue

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def claims(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each claim statement the worker runs starts from a floor, in order."""
    seen: list[bool] = []
    real = sql.claim

    def spying(**kwargs: Any) -> str:
        seen.append(kwargs.get("floored", False))
        return real(**kwargs)

    monkeypatch.setattr(sql, "claim", spying)
    return seen


@pytest.fixture
def rare_plain_claims(monkeypatch: pytest.MonkeyPatch) -> None:
    """A plain claim is next due a million times its own cost later: never, in a test."""
    monkeypatch.setattr(floors_module, "PLAIN_SHARE", 1e-6)


def worker_and_connection(**options: Any) -> tuple[Worker, QueueConnection]:
    worker = Worker(handle_signals=False, **options)
    return worker, QueueConnection(worker.alias, lambda: False)


def drain_claims(worker: Worker, db: QueueConnection) -> int:
    """Claim (without running) until nothing is ready; the number of runs claimed."""
    total = 0
    while batch := worker.claimer().claim(db):
        total += len(batch)
    return total


READ = "SELECT pg_stat_get_xact_tuples_returned('django_tasks_ready_idx'::regclass)"


def entries_read(conn: Any, statement: str, params: dict[str, Any]) -> tuple[int, list[Any]]:
    """Entries of the ready index a statement reads - each one a heap visit unless marked
    dead - as this session counts them (counts it has not reported yet: hence the difference,
    in one transaction), and the ids of the runs it claims. The statement is rolled back."""
    with conn.transaction(force_rollback=True):
        before = conn.execute(READ).fetchone()[0]
        rows = conn.execute(statement, params).fetchall()
        after = conn.execute(READ).fetchone()[0]
    return int(after - before), [row[1] for row in rows if row[0] == "claimed"]


def floored_params(floor: Floor, **extra: Any) -> dict[str, Any]:
    return {
        "queue": "default",
        "limit": 100,
        "worker": "probe",
        "late_after": 5.0,
        "done": "[]",
        "floor_priority": floor.priority,
        "floor_time": floor.scheduled_time,
        **extra,
    }


def test_under_a_held_snapshot_a_floored_claim_skips_what_earlier_claims_left(
    second_connection, claims, rare_plain_claims
):
    """Issue 25 (a short version of benchmarks/held_snapshot.py): while a REPEATABLE READ
    transaction holds its snapshot, 3,000 runs are claimed; to claim the next 100 runs, a plain
    claim then reads the 3,000 entries they left in the ready index (a heap visit each) before
    them, and the floored claim the worker makes about 100."""
    second_connection.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    second_connection.execute("SELECT count(*) FROM django_tasks_taskrun").fetchone()
    noop.delay_many([()] * 3_000)
    worker, db = worker_and_connection(batch_size=100)
    assert drain_claims(worker, db) == 3_000
    # The first claim is plain (no floor yet), the 30 after it start from their floor: the
    # last finds nothing and owes a plain claim, not due yet.
    assert claims == [False] + [True] * 30
    assert worker.claimer().floors.owed == {"default"}
    noop.delay_many([()] * 100)
    params = floored_params(worker.claimer().floors.floors["default"])
    probe = open_worker_connection()
    try:
        plain, _ = entries_read(probe, sql.CLAIM, params)
        floored, _ = entries_read(probe, sql.claim(floored=True), params)
    finally:
        probe.close()
        db.close()
    assert plain >= 3_100, plain  # the 3,000 claimed runs' entries, then the 100 it claims
    assert floored <= 110, floored
    second_connection.execute("ROLLBACK")


def test_floored_claims_keep_priority_order_and_find_runs_behind_the_floor(
    claims, rare_plain_claims
):
    first = [add.delay(i, 0).id for i in range(10)]
    worker, db = worker_and_connection(batch_size=5)
    floors = worker.claimer().floors
    try:
        assert [run.id for run in worker.claimer().claim(db)] == first[
            :5
        ]  # plain: the floor is run 5
        urgent = add.apply_async(args=(1, 1), priority=5).id  # ahead of the floor
        late = add.apply_async(  # behind the floor: an hour before its priority's runs
            args=(2, 2), scheduled_time=timezone.now() - timedelta(hours=1)
        ).id
        assert [run.id for run in worker.claimer().claim(db)] == [urgent, *first[5:9]]
        assert [run.id for run in worker.claimer().claim(db)] == [first[9]]
        # Nothing from the floor on: a plain claim is owed, and the thread would sleep only
        # until it is due.
        assert worker.claimer().claim(db) == []
        assert floors.owed == {"default"}
        owed_in = floors.owed_in()
        assert owed_in is not None
        assert owed_in > 0
        floors.next_plain = 0.0  # now due
        assert floors.owed_in() == 0.0
        assert [run.id for run in worker.claimer().claim(db)] == [late]
        assert floors.owed == set()
        assert floors.owed_in() is None
    finally:
        db.close()
    assert claims == [False, True, True, True, False]
    assert TaskRun.objects.filter(state_type="SCHEDULED").count() == 0


def test_a_due_plain_claim_is_made_on_every_queue_the_worker_asks(claims, rare_plain_claims):
    """A worker asks its queues in turn: when plain claims are due, each queue gets one -
    the first queue's plain claim does not make the second's floored again (its run behind
    the floor would wait for ever)."""
    runs = [on_other_queue.delay().id for _ in range(2)]
    worker, db = worker_and_connection(queues=["default", "other"], batch_size=1)
    floors = worker.claimer().floors
    try:
        assert [run.id for run in worker.claimer().claim(db)] == runs[:1]  # default: nothing, plain
        late = on_other_queue.apply_async(scheduled_time=timezone.now() - timedelta(hours=1)).id
        assert [run.id for run in worker.claimer().claim(db)] == runs[1:]
        assert worker.claimer().claim(db) == []
        assert floors.owed == {"default", "other"}
        floors.next_plain = 0.0
        assert [run.id for run in worker.claimer().claim(db)] == [late]
    finally:
        db.close()
    assert claims == [False, False, True, True, True, True, False, False]
    assert floors.owed == set()  # both paid


def test_an_owed_plain_claim_wakes_a_sleeping_thread_when_due(claims):
    worker, db = worker_and_connection(poll_interval=30.0)
    floors = worker.claimer().floors
    floors.owed.add("default")
    floors.next_plain = time.monotonic() + 0.2
    began = time.monotonic()
    worker.claimer().sleep(worker._generation)
    assert 0.15 <= time.monotonic() - began < 5.0  # not the 30 s poll interval
    floors.next_plain = 0.0
    began = time.monotonic()
    worker.claimer().sleep(worker._generation)
    assert time.monotonic() - began < 0.1  # due: no sleep at all
    db.close()


def test_after_a_claim_that_found_nothing_the_next_starts_at_its_time(
    second_connection, claims, rare_plain_claims
):
    """A thread that claims only some tasks - the async lane - finds nothing among thousands
    of other runs: its next claim starts where that one began, instead of walking them all
    again (and their dead entries, under a held snapshot)."""
    second_connection.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    second_connection.execute("SELECT count(*) FROM django_tasks_taskrun").fetchone()
    noop.delay_many([()] * 2_000)
    worker, db = worker_and_connection(batch_size=100)
    try:
        assert drain_claims(worker, db) == 2_000  # dead entries under the held snapshot
        noop.delay_many([()] * 1_000)  # live runs the "lane" will not take
        time.sleep(IN_FLIGHT_MARGIN.total_seconds())  # enqueued before the margin of its floor
        seen: dict[str, Any] = {}
        lane_thread = threading.Thread(target=lane_claims, args=(worker, seen))
        lane_thread.start()
        lane_thread.join(60)
        wanted = add.delay(1, 2).id
        params = floored_params(seen["floor"], task_keys=[add.key])
        probe = open_worker_connection()
        try:
            plain, _ = entries_read(probe, sql.claim(tasks="only"), params)
            floored, ids = entries_read(probe, sql.claim(tasks="only", floored=True), params)
        finally:
            probe.close()
    finally:
        db.close()
    assert seen["first"] == []
    floor = seen["floor"]
    assert floor.priority == 0
    assert seen["before"] - timedelta(seconds=1) < floor.scheduled_time <= seen["after"]
    assert floor.scheduled_time <= seen["after"] - IN_FLIGHT_MARGIN
    assert plain > 3_000, plain  # 2,000 dead entries and 1,000 runs of another task
    assert floored <= 5, floored
    assert ids == [wanted]
    second_connection.execute("ROLLBACK")


def lane_claims(worker: Worker, seen: dict[str, Any]) -> None:
    """A claim of add's runs only, as the async lane makes it, on a thread of its own."""
    lane_db = QueueConnection(worker.alias, lambda: False)
    try:
        seen["before"] = timezone.now()
        lane = AsyncLane(worker, [add.key], 10)
        seen["first"] = lane.claimer.claim_batch(lane_db, limit=10)
        seen["after"] = timezone.now()
        seen["floor"] = lane.claimer.floors.floors["default"]
    finally:
        lane_db.close()


def test_a_plain_claim_when_due_finds_the_run_behind_the_floor_before_later_runs(
    claims, rare_plain_claims
):
    """While floored claims keep finding runs, a run behind the floor waits for the next
    plain claim (due ``took / PLAIN_SHARE`` after the last one: see the test below); that claim
    takes it first, in index order."""
    runs = [add.delay(i, 0).id for i in range(6)]
    worker, db = worker_and_connection(batch_size=2)
    try:
        assert [run.id for run in worker.claimer().claim(db)] == runs[:2]
        late = add.apply_async(args=(2, 2), scheduled_time=timezone.now() - timedelta(hours=1)).id
        assert [run.id for run in worker.claimer().claim(db)] == runs[2:4]  # from the floor
        worker.claimer().floors.next_plain = 0.0  # the plain claim is due
        assert [run.id for run in worker.claimer().claim(db)] == [late, runs[4]]
        assert [run.id for run in worker.claimer().claim(db)] == [runs[5]]  # from the new floor
    finally:
        db.close()
    assert claims == [False, True, False, True]


def test_a_run_committed_just_after_an_empty_plain_claim_is_taken_by_the_floored_one(
    claims, rare_plain_claims
):
    """The run's INSERT (its scheduled time) comes before an empty plain claim starts, its
    commit after: the floor that claim leaves is IN_FLIGHT_MARGIN earlier than its start, so
    the claim its NOTIFY wakes - floored - takes the run instead of leaving it to the next
    plain claim (tens of milliseconds later: the p99 of an idle worker's latency)."""
    worker, db = worker_and_connection()
    try:
        with transaction.atomic():
            run = add.delay(1, 1).id
            time.sleep(0.01)  # the claim starts well after the run's scheduled time
            assert worker.claimer().claim(db) == []  # plain: the run is not committed yet
        assert [claimed.id for claimed in worker.claimer().claim(db)] == [run]
    finally:
        db.close()
    assert claims == [False, True]


def test_burst_workers_always_claim_plainly(claims):
    for i in range(6):
        add.delay(i, i)
    worker, db = worker_and_connection(burst=True, batch_size=2)
    try:
        assert drain_claims(worker, db) == 6
    finally:
        db.close()
    assert claims == [False] * 4


@pytest.mark.parametrize("limits", [False, True])
@pytest.mark.parametrize("tasks", sorted(sql.CLAIM_TASKS))
@pytest.mark.parametrize("rates", [False, True])
def test_every_floored_claim_statement_takes_the_runs_past_its_floor(limits, tasks, rates):
    runs = [add.delay(i, 0).id for i in range(4)]
    scheduled = dict(TaskRun.objects.values_list("id", "scheduled_time"))
    params = {
        "queue": "default",
        "limit": 10,
        "worker": "w",
        "late_after": 5.0,
        "done": "[]",
        "task_keys": [add.key] if tasks == "only" else ["other.key"],
        "slot_queues": [],
        "slot_tags": [],
        "floor_priority": 0,
        "floor_time": scheduled[runs[1]],
    }
    statement = sql.claim(limits=limits, tasks=tasks, rates=rates, floored=True)
    conn = open_worker_connection()
    try:
        rows = conn.execute(statement, params).fetchall()
    finally:
        conn.close()
    assert [row[1] for row in rows if row[0] == "claimed"] == runs[1:]


def test_the_floor_moves_to_the_last_run_placed_in_index_order():
    floors = ClaimFloors()
    now = timezone.now()
    assert floors.plain_due()
    assert floors.start("default", plain=False) is None  # no floor yet
    row = ["claimed", "id", *[None] * 9, 3, now, None, None, None, False]
    reserved = ["claimed", "id2", *[None] * 9, 9, now + timedelta(seconds=1), *[None] * 3, True]
    before = time.monotonic()
    flushed = ["flushed", "x", *[None] * 15]
    floors.claimed("default", [row, reserved, flushed], None, 0.002, now)
    assert floors.floors == {"default": Floor(3, now)}  # a reserved start is out of order
    assert before + 0.04 <= floors.next_plain <= time.monotonic() + 0.04
    assert not floors.plain_due()
    assert floors.start("default", plain=False) == Floor(3, now)
    assert floors.start("default", plain=True) is None
    assert floors.start("other", plain=False) is None
    due = floors.next_plain
    floors.claimed("default", [flushed], Floor(3, now), 5.0, now)  # a floored claim: ...
    assert floors.next_plain == due  # ... does not move the next plain claim
    assert floors.floors == {"default": Floor(3, now)}
    assert floors.owed == {"default"}  # it found nothing: a plain claim is owed
    later = now + timedelta(seconds=3)
    floors.claimed("other", [flushed], None, 0.001, later)  # a plain claim that found nothing
    assert floors.floors["other"] == Floor(0, later - IN_FLIGHT_MARGIN)
    floors.claimed("default", [], None, 0.001, later)
    assert floors.floors["default"] == Floor(3, later - IN_FLIGHT_MARGIN)  # its priority kept
    assert floors.owed == set()
