"""The claim query: SKIP LOCKED with real concurrent connections, order, queues, due time."""

import json
import threading
from datetime import timedelta

import pytest
from django.utils import timezone

from django_tasks import sql
from django_tasks.models import TaskRun
from django_tasks.topic import open_worker_connection
from tests.conftest import drain
from tests.taskapp.tasks import add, noop, on_other_queue

NOTHING_DONE = {"done": "[]"}  # no deferred completions to write with the claim


def claim(conn, limit=10, queue="default", worker="w"):
    params = {"queue": queue, "limit": limit, "worker": worker, "late_after": 5.0, **NOTHING_DONE}
    rows = conn.execute(sql.CLAIM, params).fetchall()
    return [row[1] for row in rows if row[0] == "claimed"]


@pytest.mark.django_db(transaction=True)
def test_two_open_claim_transactions_get_disjoint_runs():
    ids = {add.delay(i, i).id for i in range(10)}
    first, second = open_worker_connection(), open_worker_connection()
    try:
        with first.transaction(), second.transaction():
            mine = claim(first, 6, worker="first")  # locks held until the block ends
            theirs = claim(second, 6, worker="second")  # must skip, not wait
        assert len(mine) == 6
        assert len(theirs) == 4
        assert set(mine).isdisjoint(theirs)
        assert set(mine) | set(theirs) == ids
    finally:
        first.close()
        second.close()
    workers = dict(TaskRun.objects.values_list("id", "worker"))
    assert {workers[i] for i in mine} == {"first"}
    assert {workers[i] for i in theirs} == {"second"}
    assert TaskRun.objects.filter(state_type="PENDING").count() == 10


@pytest.mark.django_db(transaction=True)
def test_racing_claimers_never_share_a_run():
    total = 400
    from django_tasks.topic import enqueue

    for i in range(total):
        enqueue(add, (i, 0), {}, queue="default", priority=0, scheduled_time=None)
    claimed: dict[str, list[object]] = {"a": [], "b": [], "c": []}

    def drain(name):
        conn = open_worker_connection()
        try:
            while batch := claim(conn, 3, worker=name):
                claimed[name].extend(batch)
        finally:
            conn.close()

    threads = [threading.Thread(target=drain, args=(n,)) for n in claimed]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [i for batch in claimed.values() for i in batch]
    assert len(every) == total == len(set(every))
    assert sum(1 for batch in claimed.values() if batch) >= 2  # they really raced
    pending_history = TaskRun.objects.filter(states__type="PENDING").count()
    assert pending_history == total  # exactly one PENDING state per run


@pytest.mark.django_db(transaction=True)
def test_claim_respects_due_time_priority_and_queue():
    later = add.apply_async((1, 1), scheduled_time=timezone.now() + timedelta(minutes=5))
    low = add.apply_async((1, 2), priority=-5)
    high = add.apply_async((1, 3), priority=50)
    normal = add.delay(1, 4)
    other = on_other_queue.delay()
    conn = open_worker_connection()
    try:
        assert claim(conn) == [high.id, normal.id, low.id]  # higher priority first
        assert claim(conn) == []  # the future run is not due, the other queue not asked for
        assert claim(conn, queue="other") == [other.id]
        TaskRun.objects.filter(pk=later.id).update(scheduled_time=timezone.now())
        assert claim(conn) == [later.id]
    finally:
        conn.close()


@pytest.mark.django_db(transaction=True)
def test_claim_uses_the_partial_index():
    # A table with history and a backlog, analysed, as in production.
    futures = add.delay_many([(i, i) for i in range(3000)])
    TaskRun.objects.filter(pk__in=[f.id for f in futures[:2000]]).update(
        state_type="COMPLETED", state_name="Completed"
    )
    conn = open_worker_connection()
    try:
        conn.execute("ANALYZE django_tasks_taskrun")
        plan = "\n".join(
            row[0]
            for row in conn.execute(
                "EXPLAIN " + sql.CLAIM,
                {"queue": "default", "limit": 10, "worker": "w", "late_after": 5.0, **NOTHING_DONE},
            )
        )
    finally:
        conn.close()
    ready_scan = plan.split("CTE ready")[1].split("CTE claimed")[0]
    assert "Index Scan using django_tasks_ready_idx" in ready_scan, plan
    assert "Sort" not in ready_scan, plan  # read in index order, stops after LIMIT rows


VARIANTS = [
    {"limits": limits, "tasks": tasks, "rates": rates, "floored": floored, "flushes": flushes}
    for limits in (False, True)
    for tasks in sql.CLAIM_TASKS
    for rates in (False, True)
    for floored in (False, True)
    for flushes in (False, True)
]


@pytest.mark.django_db(transaction=True)
def test_every_claim_statement_claims_the_ready_run_and_only_a_flushing_one_writes():
    """Each of the 48 statements a worker may send claims the same run; the ones without the
    flush (an idle worker's: nothing deferred to write) need no ``done`` and leave a deferred
    completion alone, the others write it."""
    conn = open_worker_connection()
    try:
        for variant in VARIANTS:
            held, ready = add.delay(0, 0), add.delay(1, 1)  # committed (Django's connection)
            with conn.transaction(force_rollback=True):
                conn.execute(
                    "UPDATE django_tasks_taskrun SET state_type = 'PENDING', worker = 'w'"
                    " WHERE id = %s",
                    [held.id],
                )
                done = [
                    {
                        "id": str(held.id),
                        "started": 1.0,
                        "finished": 2.0,
                        "type": "COMPLETED",
                        "name": "Completed",
                        "message": "",
                        "result": None,
                        "preview": None,
                        "traceback": "",
                    }
                ]
                params = {
                    "queue": "default",
                    "limit": 5,
                    "worker": "w",
                    "late_after": 5.0,
                    "task_keys": [add.key] if variant["tasks"] == "only" else ["other.key"],
                    "slot_queues": [],
                    "slot_tags": [],
                    "floor_priority": 0,
                    "floor_time": timezone.now() - timedelta(days=1),
                }
                if variant["flushes"]:
                    params["done"] = json.dumps(done)
                rows = conn.execute(sql.claim(**variant), params).fetchall()
                assert [(r[0], r[1]) for r in rows if r[0] == "claimed"] == [
                    ("claimed", ready.id)
                ], variant
                flushed = [r[1] for r in rows if r[0] == "flushed"]
                state = conn.execute(
                    "SELECT state_type FROM django_tasks_taskrun WHERE id = %s", [held.id]
                ).fetchone()
                assert state is not None
                if variant["flushes"]:
                    assert (flushed, state[0]) == ([held.id], "COMPLETED"), variant
                else:
                    assert (flushed, state[0]) == ([], "PENDING"), variant
            TaskRun.objects.filter(pk__in=[held.id, ready.id]).update(state_type="COMPLETED")
    finally:
        conn.close()


@pytest.mark.django_db(transaction=True)
def test_a_worker_sends_the_flush_only_with_completions_to_write(monkeypatch):
    """The slot's first claim has nothing deferred (no flush); the short run's completion is
    written by the next claim (with the flush), and the last claim has nothing left."""
    seen: list[tuple[str, bool]] = []
    real = sql.claim

    def spying(**kwargs):
        seen.append((kwargs["tasks"], kwargs["flushes"]))
        return real(**kwargs)

    monkeypatch.setattr(sql, "claim", spying)
    run = noop.delay()
    drain()
    slot = [flushes for tasks, flushes in seen if tasks != "only"]  # the async lane's: never
    assert slot == [False, True, False]
    assert {flushes for tasks, flushes in seen if tasks == "only"} <= {False}
    assert TaskRun.objects.get(pk=run.id).state_type == "COMPLETED"
    assert list(
        TaskRun.objects.get(pk=run.id).states.order_by("timestamp").values_list("type", flat=True)
    ) == ["SCHEDULED", "PENDING", "RUNNING", "COMPLETED"]
