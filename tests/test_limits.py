"""Concurrency limits (tags, queues) and rate limits (tasks, tags): kept by the database across
real worker pools, slots freed by the rescue after kill -9, nothing dropped; managed from the
CLI, the API and the admin with Django's model permissions."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from django.utils import timezone

from django_tasks.limits.gate import ADMIT_ALL, LimitGate
from django_tasks.limits.rates import START_TOLERANCE, parse_rate
from django_tasks.models import Limit, RateState, TaskRun, TaskRunState
from django_tasks.tasks import task
from django_tasks.worker.connection import QueueConnection
from tests.taskapp.tasks import add, limited_sleep, rate_limited, record

from .conftest import (
    client_with,
    count,
    drain,
    wait_for_live_workers,
    wait_until,
    worker_log,
    worker_processes,
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize(
    ("rate", "seconds"), [("100/m", 0.6), ("5/s", 0.2), ("1/h", 3600), ("2 / day", 43200)]
)
def test_rates_parse(rate, seconds):
    assert parse_rate(rate) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "rate", ["", "0/s", "-1/s", "1/y", "1e9/s", "abc", "1/s\x00", "9" * 12 + "/s"]
)
def test_bad_rates_are_refused_at_decoration(rate):
    def fn() -> None: ...

    with pytest.raises(ValueError, match="A rate is"):
        task(rate_limit=rate)(fn)


def overlap(run_ids: list[Any]) -> int:
    """The most runs RUNNING at once, from their histories (RUNNING row to final row)."""
    events = []
    for run_id in run_ids:
        rows = list(TaskRunState.objects.filter(run_id=run_id).values_list("type", "timestamp"))
        starts = [t for kind, t in rows if kind == "RUNNING"]
        ends = [t for kind, t in rows if kind in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")]
        ends += [t for kind, t in rows if kind == "SCHEDULED" and starts and t > starts[0]]
        for start in starts:
            end = min((t for t in ends if t > start), default=None)
            events += [(start, 1), (end, -1)] if end else [(start, 1)]
    running = peak = 0
    for _, step in sorted(events, key=lambda e: (e[0], e[1])):
        running += step
        peak = max(peak, running)
    return peak


class Sampler(threading.Thread):
    """Counts RUNNING runs of a tag every 20 ms on a connection of its own."""

    def __init__(self, tag: str) -> None:
        super().__init__(daemon=True)
        self.tag, self.peak, self.samples = tag, 0, 0
        self.done = threading.Event()

    def run(self) -> None:
        from django.db import connection

        try:
            while not self.done.is_set():
                running = TaskRun.objects.filter(tags__contains=[self.tag], state_type="RUNNING")
                self.peak = max(self.peak, running.count())
                self.samples += 1
                time.sleep(0.02)
        finally:
            connection.close()


def test_a_tag_limit_holds_across_two_pools(start_worker):
    Limit.objects.create(scope="tag", name="limited", concurrency=2)
    start_worker("--concurrency", "2")
    start_worker("--concurrency", "2")
    wait_for_live_workers(4)
    sampler = Sampler("limited")
    sampler.start()
    futures = [limited_sleep.delay(1.0, f"r{i}") for i in range(10)]
    try:
        for future in futures:
            assert future.result(timeout=60).startswith("r")
    finally:
        sampler.done.set()
        sampler.join()
    assert sampler.peak == 2, sampler.peak  # never more; and the limit was used
    assert overlap([f.id for f in futures]) <= 2
    waited = TaskRunState.objects.filter(name="AwaitingConcurrencySlot").count()
    assert waited >= 1  # runs did wait, visibly
    print(f"{sampler.samples} samples, at most {sampler.peak} RUNNING; {waited} waits")


def test_slots_of_a_killed_pool_are_freed_by_the_rescue(start_worker):
    Limit.objects.create(scope="tag", name="limited", concurrency=2)
    first = start_worker("--concurrency", "2")
    wait_for_live_workers(2)
    futures = [limited_sleep.delay(3.0, f"k{i}") for i in range(6)]
    wait_until(lambda: TaskRun.objects.filter(state_type="RUNNING").count() == 2, timeout=30)
    held = set(TaskRun.objects.filter(state_type="RUNNING").values_list("id", flat=True))
    for pid in [first.pid, *worker_processes(first.pid)]:
        os.kill(pid, signal.SIGKILL)
    first.wait(10)
    start_worker("--concurrency", "2")
    sampler = Sampler("limited")
    sampler.start()
    try:
        for future in futures:
            if future.id not in held:
                assert future.result(timeout=90).startswith("k")
    finally:
        sampler.done.set()
        sampler.join()
    for run_id in held:  # no retries: the killed runs ended CRASHED, their slots free again
        assert TaskRun.objects.get(pk=run_id).state_type == "CRASHED"
    assert sampler.peak <= 2
    assert not TaskRun.objects.filter(holds_slot=True, state_type__in=["PENDING", "RUNNING"])


def test_a_run_waits_visibly_until_the_limit_allows_it():
    limit = Limit.objects.create(scope="queue", name="default", concurrency=0)
    future = add.delay(2, 3)
    drain()
    run = TaskRun.objects.get(pk=future.id)
    assert (run.state_type, run.state_name) == ("SCHEDULED", "AwaitingConcurrencySlot")
    assert run.attempts == 0  # the attempt was given back
    assert "queue default (0 at once)" in run.state_message
    drain()  # a worker's heartbeat finds no free slot: it stays
    assert TaskRun.objects.get(pk=future.id).state_name == "AwaitingConcurrencySlot"
    limit.concurrency = 1
    limit.save()
    drain()  # the worker's start releases the waiting run (the slot is free), then runs it
    assert future.result(timeout=10) == 5
    names = list(run.states.values_list("name", flat=True))
    assert names[:3] == ["Scheduled", "Pending", "AwaitingConcurrencySlot"]
    assert names[-1] == "Completed"


def test_removing_a_limit_releases_its_waiting_runs():
    Limit.objects.create(scope="tag", name="limited", concurrency=0)
    future = limited_sleep.delay(0, "freed")
    drain()
    assert TaskRun.objects.get(pk=future.id).state_name == "AwaitingConcurrencySlot"
    Limit.objects.all().delete()
    drain()
    assert future.result(timeout=10) == "freed"


def test_a_rate_limit_holds_across_worker_processes(start_worker):
    """rate_limited allows 10 runs a second; 40 runs on two pools of two processes."""
    start_worker("--concurrency", "2")
    start_worker("--concurrency", "2")
    wait_for_live_workers(4)
    futures = rate_limited.delay_many([(f"r{i}",) for i in range(40)])
    for future in futures:
        future.result(timeout=60)
    started = sorted(
        t
        for t in TaskRun.objects.filter(task_name="rate_limited").values_list("started", flat=True)
        if t is not None
    )
    assert len(started) == 40
    span = (started[-1] - started[0]).total_seconds()
    rate = (len(started) - 1) / span
    assert 9.0 <= rate <= 11.0, rate  # 10/s within 10 %
    # No two seconds hold more than the rate allows, within 10 % (runs start on their reserved
    # times or a little later, when a worker wakes: starts may bunch within a second).
    busiest = max(
        len([t for t in started if start <= t < start + timedelta(seconds=2)]) for start in started
    )
    assert busiest <= 22, busiest
    waited = TaskRunState.objects.filter(name="AwaitingRateLimit").count()
    assert waited >= 30
    print(f"{len(started)} starts in {span:.2f} s: {rate:.2f}/s, at most {busiest} in 2 s")


# -- managing limits ----------------------------------------------------------------------------


def test_the_cli_sets_lists_and_removes_limits():
    out = StringIO()
    call_command("taskruns", "limits", "set", "email", "5", "--rate", "100/m", stdout=out)
    call_command("taskruns", "limits", "set", "imports", "2", "--queue", stdout=out)
    limit = Limit.objects.get(name="email")
    assert (limit.scope, limit.concurrency, limit.rate, limit.rate_interval) == (
        "tag",
        5,
        "100/m",
        0.6,
    )
    out = StringIO()
    call_command("taskruns", "limits", "--json", stdout=out)
    rows = json.loads(out.getvalue())
    assert {(r["scope"], r["name"]) for r in rows} == {("tag", "email"), ("queue", "imports")}
    call_command("taskruns", "limits", "rm", "email", stdout=StringIO())
    assert not Limit.objects.filter(name="email").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["set", "email", "-1"], "greater than or equal to 0"),
        (["set", "email", "2", "--rate", "lots"], "A rate is"),
        (["set", "email"], "Give a concurrency, a rate or both"),
        (["set", "e\x00mail", "2"], "Null characters"),
        (["set", "x" * 101, "2"], "at most 100 characters"),
        (["set"], "needs a NAME"),
        (["rm", "nothing"], "No limit"),
    ],
)
def test_the_cli_refuses_bad_limits_and_writes_nothing(args, message):
    with pytest.raises(CommandError, match=message):
        call_command("taskruns", "limits", *args, stdout=StringIO())
    assert not Limit.objects.exists()


API = "/tasks/api/limits/"


def test_the_api_manages_limits_with_model_permissions():
    viewer = client_with("view_limit")
    editor = client_with("view_limit", "add_limit", "change_limit", "delete_limit")
    body = {"scope": "tag", "name": "email", "concurrency": 5, "rate": "100/m"}
    assert client_with().get(API).status_code == 403  # staff alone
    assert viewer.post(API, body, content_type="application/json").status_code == 403
    created = editor.post(API, body, content_type="application/json")
    assert created.status_code == 201, created.content
    limit_id = created.json()["id"]
    assert viewer.get(API).json()[0]["name"] == "email"
    assert (
        viewer.patch(f"{API}{limit_id}/", {"concurrency": 1}, "application/json").status_code == 403
    )
    assert (
        editor.patch(f"{API}{limit_id}/", {"concurrency": 1}, "application/json").status_code == 200
    )
    assert Limit.objects.get().concurrency == 1
    for bad in (
        {"rate": "fast"},
        {"concurrency": -1},
        {"concurrency": 2**40},
        {"name": "a\x00b"},
        {"scope": "planet"},
    ):
        answer = editor.patch(f"{API}{limit_id}/", bad, content_type="application/json")
        assert answer.status_code == 400, (bad, answer.status_code)
    for odd in ("abc", "99999999999999999999999", "0"):
        assert editor.get(f"{API}{odd}/").status_code == 404
    assert viewer.delete(f"{API}{limit_id}/").status_code == 403
    assert editor.delete(f"{API}{limit_id}/").status_code == 204
    assert not Limit.objects.exists()


def test_the_admin_lists_limits_with_what_they_hold():
    Limit.objects.create(scope="tag", name="limited", concurrency=0)
    limited_sleep.delay(0, "x")
    drain()
    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    page = client.get("/admin/django_tasks/limit/").content.decode()
    assert "limited" in page
    assert client_with().get("/admin/django_tasks/limit/").status_code == 403
    response = client.post(
        "/admin/django_tasks/limit/add/",
        {"scope": "queue", "name": "emails", "concurrency": "", "rate": "nope"},
    )
    assert "A rate is" in response.content.decode()


def test_a_tag_rate_spaces_the_starts_of_its_runs():
    Limit.objects.create(scope="tag", name="limited", rate="2/s")
    futures = [limited_sleep.delay(0, f"t{i}") for i in range(3)]
    drain()  # the first starts; the others wait for their reserved starts, and the worker with them
    assert [f.result(timeout=5) for f in futures] == ["t0", "t1", "t2"]
    starts, reserved = [], []
    for future in futures:
        rows = list(TaskRunState.objects.filter(run_id=future.id).values_list("name", "timestamp"))
        starts.append(next(t for name, t in rows if name == "Running"))
        run = TaskRun.objects.get(pk=future.id)
        assert (run.attempts, run.rate_slot) == (1, None)  # the wait cost no attempt
        if any(name == "AwaitingRateLimit" for name, _ in rows):
            reserved.append(run.scheduled_time)  # the start its turn of the rate reserved
    assert len(reserved) == 2
    # 2/s: the turns are half a second apart, the first a turn after the first run's admission
    # (at or before its start); no run starts before its turn, and the worker wakes for them.
    assert (reserved[1] - reserved[0]).total_seconds() == pytest.approx(0.5, abs=0.001)
    assert 0 < (reserved[0] - starts[0]).total_seconds() <= 0.5
    lateness = [(s - turn).total_seconds() for s, turn in zip(starts[1:], reserved, strict=True)]
    assert all(0 <= late <= 0.25 for late in lateness), lateness


def test_a_queue_limit_admits_what_is_free_of_a_batch_and_the_rest_waits():
    Limit.objects.create(scope="queue", name="default", concurrency=2)
    futures = [add.delay(i, 1) for i in range(5)]
    drain(batch_size=5)  # one claim of five: two start, three wait for a slot, then start
    assert [f.result(timeout=10) for f in futures] == [1, 2, 3, 4, 5]
    waited = TaskRunState.objects.filter(
        run_id__in=[f.id for f in futures], name="AwaitingConcurrencySlot"
    )
    # Of the batch, the two first started at once; the three others waited (a run released
    # when a slot looked free may wait again: never more than two at once).
    assert set(waited.values_list("run_id", flat=True)) == {f.id for f in futures[2:]}
    assert not TaskRun.objects.filter(holds_slot=True, state_type__in=["PENDING", "RUNNING"])


def _admit(ids: list[Any], counts: dict[str, int], rates: dict[str, float]) -> list[Any]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT * FROM django_tasks_admit(%s::uuid[], %s::jsonb, %s::jsonb, true, false, "
            "'nobody', %s)",
            [ids, json.dumps(counts), json.dumps(rates), START_TOLERANCE],
        )
        return list(cursor.fetchall())


def test_a_batch_no_limit_binds_is_admitted_whole_and_moves_each_rate_clock_by_its_runs():
    """The one-step admission (migration 0021): the clock moves by the batch's runs whatever
    the rows say; run by run, a run that is not this worker's would not move it."""
    Limit.objects.create(scope="tag", name="limited", concurrency=10)
    now = timezone.now()
    RateState.objects.create(key="task:x", tat=now - timedelta(hours=1))
    run = add.delay(1, 1)  # SCHEDULED: the run-by-run rules would skip it
    assert _admit([run.id], {"task:x": 1, "tag:limited": 1}, {"task:x": 3600.0}) == []
    tat = RateState.objects.get(key="task:x").tat
    assert now + timedelta(seconds=3590) < tat < timezone.now() + timedelta(seconds=3600)

    # The clock is ahead now: the same batch goes run by run (and this run is skipped).
    assert _admit([run.id], {"task:x": 1, "tag:limited": 1}, {"task:x": 3600.0}) == []
    assert RateState.objects.get(key="task:x").tat == tat
    # A concurrency limit without a slot for the batch (its run claimed, marked as holding a
    # slot): run by run too - the run is sent to wait, and the clock does not move for it.
    Limit.objects.filter(name="limited").update(concurrency=0)
    RateState.objects.filter(key="task:x").update(tat=now - timedelta(hours=1))
    TaskRun.objects.filter(pk=run.id).update(
        state_type="PENDING", worker="nobody", holds_slot=True, tags=["limited"], attempts=1
    )
    assert _admit([run.id], {"task:x": 1, "tag:limited": 1}, {"task:x": 3600.0}) == [(run.id, None)]
    assert TaskRun.objects.get(pk=run.id).state_name == "AwaitingConcurrencySlot"
    assert RateState.objects.get(key="task:x").tat < timezone.now()


def _admit_all(counts: dict[str, int], rates: dict[str, float], **flags: bool) -> bool:
    params: dict[str, Any] = {"counts": json.dumps(counts), "rates": json.dumps(rates)}
    params.update({"marked": True, "reserved": False, **flags})
    with connection.cursor() as cursor:
        cursor.execute(ADMIT_ALL, params)
        return bool(cursor.fetchone()[0])


def test_the_one_statement_admission_admits_a_batch_no_limit_binds_and_writes_nothing_else():
    """limits.gate.ADMIT_ALL, the worker's first try: true only when the whole batch may start
    (every rate clock moved by its runs), false - nothing written - when a limit may bind."""
    Limit.objects.create(scope="tag", name="limited", concurrency=2)
    Limit.objects.create(scope="queue", name="emails", rate="1/h")
    hour_ago = timezone.now() - timedelta(hours=1)
    RateState.objects.create(key="task:x", tat=hour_ago)
    RateState.objects.create(key="queue:emails", tat=hour_ago)
    counts = {"task:x": 1, "tag:limited": 1, "queue:emails": 1}
    assert _admit_all(counts, {"task:x": 60.0})
    clocks = dict(RateState.objects.values_list("key", "tat"))
    now = timezone.now()
    assert now < clocks["task:x"] <= now + timedelta(seconds=60)
    assert now + timedelta(seconds=3590) < clocks["queue:emails"] <= now + timedelta(hours=1)

    # Each refusal writes nothing: a clock ahead (of the task, or of the queue's limit) ...
    assert not _admit_all(counts, {"task:x": 60.0})
    RateState.objects.filter(key="task:x").update(tat=hour_ago)
    assert not _admit_all(counts, {"task:x": 60.0})
    assert RateState.objects.get(key="task:x").tat == hour_ago
    # ... two runs of one task due one second apart, in a batch: the second is not due yet ...
    assert not _admit_all({"task:x": 2}, {"task:x": 1.0})
    # ... a run starting on a reserved rate slot, or claimed before its worker knew of a limit.
    assert not _admit_all({"task:x": 1}, {"task:x": 1.0}, reserved=True)
    assert not _admit_all({"tag:limited": 1}, {}, marked=False)
    assert RateState.objects.get(key="task:x").tat == hour_ago
    # A concurrency limit counts the slots held (the batch's own, marked by its claim): at the
    # limit the batch starts, one more and it goes run by run.
    held = [_held_run(label, tags=["limited"]) for label in ("a", "b")]
    assert _admit_all({"tag:limited": 2}, {})
    _held_run("c", tags=["limited"])
    assert not _admit_all({"tag:limited": 2}, {})
    TaskRun.objects.filter(pk=held[0].id).update(state_type="COMPLETED")
    assert _admit_all({"tag:limited": 2}, {})
    assert _admit_all({"tag:other": 5}, {})  # no limit of its own: nothing to check
    Limit.objects.filter(name="limited").update(concurrency=2**31 - 1)  # the largest allowed
    assert _admit_all({"tag:limited": 2}, {})


def test_a_batch_that_waited_for_another_admission_is_not_early_against_its_clock(
    second_connection: Any,
):
    """The time is read once the rate clocks are locked: a batch that waited for another
    worker's admission - which moved the clock to its own end - still starts under a rate far
    above what runs. (Read before the lock, the clock looked ahead and the batch was sent back
    to wait: 100 runs at a time in the limits benchmark.)"""
    RateState.objects.create(key="task:x", tat=timezone.now() - timedelta(hours=1))
    result: list[bool] = []

    def admit() -> None:  # on its own Django connection, as another worker
        try:
            result.append(_admit_all({"task:x": 50}, {"task:x": 1e-9}))
        finally:
            connection.close()

    with second_connection.transaction():
        second_connection.execute("SELECT 1 FROM django_tasks_ratestate FOR UPDATE")
        waiting = threading.Thread(target=admit)
        waiting.start()
        wait_until(lambda: _lock_waiters() == 1)
        time.sleep(0.05)  # the waiting statement's own start is well behind the clock now
        second_connection.execute("UPDATE django_tasks_ratestate SET tat = clock_timestamp()")
    waiting.join(10)
    assert result == [True]


def _lock_waiters() -> int:
    return count(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        "AND datname = current_database()"
    )


def _held_run(label: str, *, tags: list[str], waiting: bool = False) -> Any:
    future = limited_sleep.delay(0, label)
    TaskRun.objects.filter(pk=future.id).update(
        state_type="SCHEDULED" if waiting else "RUNNING",
        state_name="AwaitingConcurrencySlot" if waiting else "Running",
        blocked=1 if waiting else 0,
        holds_slot=not waiting,
        worker="" if waiting else "someone",
        attempts=0 if waiting else 1,
        tags=tags,
    )
    return future


@pytest.mark.django_db(transaction=False)
def test_the_slot_freed_trigger_probes_once_per_statement_and_never_across_statements():
    """Migration 0022: a statement that ends slot holders while no run waits probes once; the
    next statement that ends one while a run waits releases it."""
    Limit.objects.create(scope="tag", name="limited", concurrency=1)
    first, second = (_held_run(label, tags=["limited"]) for label in ("a", "b"))
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE django_tasks_taskrun SET state_type = 'COMPLETED' WHERE id = ANY(%s) "
            "RETURNING statement_timestamp()::text",
            [[first.id, second.id]],
        )
        (started,) = cursor.fetchone()
        cursor.execute("SELECT current_setting('django_tasks.none_waiting', true)")
        assert cursor.fetchone() == (started,)  # said once, for the rest of that statement

        holder = _held_run("c", tags=["limited"])
        waiting = _held_run("d", tags=["limited"], waiting=True)
        cursor.execute(
            "UPDATE django_tasks_taskrun SET state_type = 'COMPLETED' WHERE id = %s",
            [holder.id],
        )
    run = TaskRun.objects.get(pk=waiting.id)
    assert (run.blocked, run.state_name) == (0, "Scheduled")  # its slot was given to it


# -- limit rows SQL wrote ----------------------------------------------------------------------

#: Rows the model forbids, as an UPDATE of the row of ``Limit(tag, "limited", rate="1/s")``
#: would write them (red team of issue 24: NaN made every admission of its runs fail).
FORBIDDEN = {
    "a NaN interval": "rate_interval = 'NaN'",
    "an infinite interval": "rate_interval = 'Infinity'",
    "a negative interval": "rate_interval = -1",
    "a zero interval": "rate_interval = 0",
    "a huge interval": "rate_interval = 1e300",
    "an interval without its rate": "rate = ''",
    "a rate without its interval": "rate_interval = NULL",
    "an unknown scope": "scope = 'task'",
    "no name": "name = ''",
}


@pytest.mark.parametrize("change", FORBIDDEN.values(), ids=FORBIDDEN.keys())
def test_sql_cannot_write_a_limit_row_the_model_forbids(change):
    from django.db import IntegrityError

    Limit.objects.create(scope="tag", name="limited", rate="1/s")
    with pytest.raises(IntegrityError, match="django_tasks_limit_"), connection.cursor() as cursor:
        cursor.execute(f"UPDATE django_tasks_limit SET {change}")
    row = Limit.objects.values_list("scope", "name", "rate", "rate_interval").get()
    assert row == ("tag", "limited", "1/s", 1.0)


@pytest.fixture
def unchecked_limits(transactional_db: Any) -> Iterator[None]:
    """``django_tasks_limit`` without its CHECK constraints for the test (dropped by hand, or
    a database restored from before migration 0024); they are put back, rows deleted first."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = 'django_tasks_limit'::regclass AND contype = 'c'"
        )
        checks = cursor.fetchall()
        for name, _ in checks:
            cursor.execute(f"ALTER TABLE django_tasks_limit DROP CONSTRAINT {name}")
    yield
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM django_tasks_limit")
        for name, definition in checks:
            cursor.execute(f"ALTER TABLE django_tasks_limit ADD CONSTRAINT {name} {definition}")


def test_a_limit_row_past_the_constraints_is_ignored_and_costs_no_run(
    unchecked_limits, start_worker
):
    """A NaN rate_interval used to make each admission of a batch holding a run under the
    limit fail: the worker handed back the whole batch, each run charged a crash, and runs no
    limit concerns ended CRASHED after three claims. The worker ignores the row, saying why."""
    Limit.objects.create(scope="tag", name="limited", rate="1/s")
    with connection.cursor() as cursor:
        cursor.execute("UPDATE django_tasks_limit SET rate_interval = 'NaN'")
    under = limited_sleep.delay(0.0, "under the bad limit")
    innocent = [record.delay(f"innocent-{i}") for i in range(3)]
    worker = start_worker("--batch-size", "4")
    runs: list[Any] = [under, *innocent]
    wait_until(lambda: all(f.state.is_final() for f in runs), timeout=60)
    assert all(f.state.is_completed() for f in innocent), innocent[0].state.message
    assert under.state.is_completed(), under.state.message
    log = worker_log(worker)
    assert log.count("The limit on 'tag' 'limited' is ignored: its rate_interval nan") == 1, log


def test_the_gate_ignores_each_kind_of_row_the_model_forbids_and_says_so_once(
    unchecked_limits, caplog
):
    rows = [
        ("tag", "usable", 2, 0.5),
        ("tag", "nan", None, float("nan")),
        ("tag", "infinite", None, float("inf")),
        ("queue", "negative", -1, None),
        ("queue", "huge", None, 1e300),
        ("task", "unknown scope", 1, None),
        ("tag", "", 1, None),
    ]
    with connection.cursor() as cursor:
        for scope, name, concurrency, every in rows:
            cursor.execute(
                "INSERT INTO django_tasks_limit (scope, name, concurrency, rate, rate_interval,"
                " updated) VALUES (%s, %s, %s, 'x', %s, now())",
                [scope, name, concurrency, every],
            )
    gate, db = LimitGate(), QueueConnection("default", lambda: False)
    try:
        with caplog.at_level("ERROR", logger="django_tasks.limits"):
            gate.reload(db)
            gate.reload(db)  # the same rows: nothing more said
    finally:
        db.close()
    usable = frozenset({"usable"})
    assert (gate.tags, gate.queues, gate.rate_tags) == (usable, frozenset(), usable)
    assert (gate.slot_tags, gate.slot_queues) == (["usable"], [])
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == len(rows) - 1, errors
    for phrase in ("nan", "inf", "concurrency -1 is negative", "1e+300", "scope 'task'", "name"):
        assert any(phrase in error for error in errors), (phrase, errors)


@pytest.fixture
def refused_admissions(transactional_db: Any) -> Iterator[None]:
    """Every admission that reads or starts a rate's clocks fails (a trigger raises): an
    admission the database refuses, whatever the reason."""
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION test_refuse_admission() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'admission refused by the test'; END $$; "
            "CREATE TRIGGER test_refuse_admission BEFORE INSERT OR UPDATE "
            "ON django_tasks_ratestate FOR EACH ROW EXECUTE FUNCTION test_refuse_admission()"
        )
    yield
    with connection.cursor() as cursor:
        cursor.execute(
            "DROP TRIGGER test_refuse_admission ON django_tasks_ratestate; "
            "DROP FUNCTION test_refuse_admission()"
        )


def test_an_admission_the_database_refuses_costs_only_the_runs_under_a_limit(
    refused_admissions, start_worker
):
    """The runs of the batch no limit concerns start; the run under the rate is handed back,
    each time counted as a crash, and ends CRASHED after MAX_CRASHES (3) claims."""
    Limit.objects.create(scope="tag", name="limited", rate="1/s")
    under = limited_sleep.delay(0.0, "under the rate")
    innocent = [record.delay(f"innocent-{i}") for i in range(3)]
    start_worker("--batch-size", "4")
    runs: list[Any] = [under, *innocent]
    wait_until(lambda: all(f.state.is_final() for f in runs), timeout=60)
    assert all(f.state.is_completed() for f in innocent), innocent[0].state.message
    run = TaskRun.objects.get(pk=under.id)
    assert (run.state_type, run.crashes) == ("CRASHED", 3)
    assert "could not admit it" in run.state_message
    assert "admission refused by the test" in run.state_message
    assert not TaskRun.objects.filter(pk__in=[f.id for f in innocent], crashes__gt=0).exists()


def test_migration_0024_mends_the_rows_its_constraints_would_refuse():
    """Rows a database holds from before 0024 never make it fail: each is mended the way the
    model would have written it, or deleted when no run can be under it."""
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    leaves = executor.loader.graph.leaf_nodes()
    executor.migrate([("django_tasks", "0023_rate_start_clock")])
    try:
        rows = {
            ("tag", "nan"): ("1/s", float("nan")),  # a rate that parses: its interval again
            ("tag", "infinite"): ("2/s", float("inf")),
            ("tag", "inserted by SQL"): ("5/s", None),
            ("tag", "unreadable"): ("fast", float("nan")),  # neither: the rate goes
            ("tag", "unreadable but usable"): ("fast", 2.0),  # kept: the worker can apply it
            ("tag", "interval alone"): ("", 3.0),
            ("queue", "good"): ("100/m", 0.6),
            ("task", "unknown scope"): ("1/s", 1.0),
            ("tag", ""): ("1/s", 1.0),
        }
        with connection.cursor() as cursor:
            for (scope, name), (rate, every) in rows.items():
                cursor.execute(
                    "INSERT INTO django_tasks_limit (scope, name, concurrency, rate,"
                    " rate_interval, updated) VALUES (%s, %s, 1, %s, %s, now())",
                    [scope, name, rate, every],
                )
    finally:
        MigrationExecutor(connection).migrate(leaves)
    mended = {
        (scope, name): (concurrency, rate, every)
        for scope, name, concurrency, rate, every in Limit.objects.values_list(
            "scope", "name", "concurrency", "rate", "rate_interval"
        )
    }
    assert mended == {
        ("tag", "nan"): (1, "1/s", 1.0),
        ("tag", "infinite"): (1, "2/s", 0.5),
        ("tag", "inserted by SQL"): (1, "5/s", 0.2),
        ("tag", "unreadable"): (1, "", None),
        ("tag", "unreadable but usable"): (1, "fast", 2.0),
        ("tag", "interval alone"): (1, "", None),
        ("queue", "good"): (1, "100/m", 0.6),
    }
