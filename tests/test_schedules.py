# mypy: disable-error-code="operator,union-attr,type-var"
"""Periodic tasks: timing (cron in a time zone, DST, intervals), declared schedules, due ticks
enqueued once per tick by any number of workers, missed-tick policies, two real pools."""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.db import IntegrityError, connection, transaction
from django.test import override_settings
from django.utils import timezone

from django_tasks import cron, every
from django_tasks.ids import uuid7
from django_tasks.models import Schedule, TaskRun
from django_tasks.schedules.declared import declared_schedules, from_settings, sync_schedules
from django_tasks.schedules.ticker import enqueue_due_ticks
from django_tasks.schedules.timing import Cron, Every
from django_tasks.tasks import task
from django_tasks.worker.connection import QueueConnection

from .conftest import drain, wait_for_live_workers, wait_until, worker_processes

PARIS = ZoneInfo("Europe/Paris")


def ticks_between(timing: Cron | Every, start: datetime, end: datetime) -> list[datetime]:
    out, moment = [], start
    while (moment := timing.next_after(moment)) <= end:
        out.append(moment)
    return out


# -- timing -----------------------------------------------------------------------------------


def test_cron_ticks_in_its_time_zone():
    nightly = Cron("0 3 * * *", "Europe/Paris")
    winter = nightly.next_after(datetime(2026, 12, 1, 12, tzinfo=UTC))
    summer = nightly.next_after(datetime(2026, 7, 1, 12, tzinfo=UTC))
    assert winter == datetime(2026, 12, 2, 2, tzinfo=UTC)  # 03:00 CET = 02:00 UTC
    assert summer == datetime(2026, 7, 2, 1, tzinfo=UTC)  # 03:00 CEST = 01:00 UTC


def test_dst_spring_forward_neither_skips_nor_doubles():
    """02:30 does not exist in Paris on 2026-03-29: that day's tick is at 03:00 local time."""
    ticks = ticks_between(
        Cron("30 2 * * *", "Europe/Paris"),
        datetime(2026, 3, 27, 12, tzinfo=PARIS),
        datetime(2026, 3, 31, 12, tzinfo=PARIS),
    )
    local = [t.astimezone(PARIS).strftime("%m-%d %H:%M") for t in ticks]
    assert local == ["03-28 02:30", "03-29 03:00", "03-30 02:30", "03-31 02:30"]


def test_dst_fall_back_ticks_once_in_the_repeated_hour():
    """02:30 happens twice in Paris on 2026-10-25: one tick, at the first 02:30 (CEST)."""
    timing = Cron("30 2 * * *", "Europe/Paris")
    ticks = ticks_between(
        timing, datetime(2026, 10, 23, 12, tzinfo=PARIS), datetime(2026, 10, 27, 12, tzinfo=PARIS)
    )
    assert [t.astimezone(PARIS).strftime("%m-%d %H:%M %Z") for t in ticks] == [
        "10-24 02:30 CEST",
        "10-25 02:30 CEST",
        "10-26 02:30 CET",
        "10-27 02:30 CET",
    ]
    # The latest tick seen from inside the repeated hour is that same one (no second run).
    second_0245 = datetime(2026, 10, 25, 1, 45, tzinfo=UTC)  # 02:45 CET, the second pass
    assert timing.latest_at_or_before(second_0245) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)


def test_every_half_hour_ticks_in_real_time_across_fall_back():
    """An expression that names every half hour ticks every half hour of real time: the
    repeated hour's two 02:00 and two 02:30 are distinct instants, 30 minutes apart."""
    ticks = ticks_between(
        Cron("*/30 * * * *", "Europe/Paris"),
        datetime(2026, 10, 25, 0, 0, tzinfo=UTC),
        datetime(2026, 10, 25, 3, 0, tzinfo=UTC),
    )
    gaps = {b - a for a, b in itertools.pairwise(ticks)}
    assert gaps == {timedelta(minutes=30)}
    assert len(ticks) == 6


def test_interval_ticks_are_aligned_to_the_epoch():
    five = Every(300)
    moment = datetime(2026, 11, 30, 12, 3, 7, tzinfo=UTC)
    assert five.next_after(moment) == datetime(2026, 11, 30, 12, 5, tzinfo=UTC)
    assert five.latest_at_or_before(moment) == datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    assert five.next_after(datetime(2026, 11, 30, 12, 5, tzinfo=UTC)) == datetime(
        2026, 11, 30, 12, 10, tzinfo=UTC
    )


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: cron("61 * * * *"), ValueError),
        (lambda: cron("* * * *"), ValueError),
        (lambda: cron("0 3 * * *", tz="Mars/Olympus"), ValueError),
        (lambda: cron("0 3 * * *", tz="Europe/Paris\x00"), ValueError),
        (lambda: every(seconds=0.5), ValueError),
        (lambda: every(seconds=float("nan")), ValueError),
        (lambda: every(seconds=1e308), ValueError),
        (lambda: every(days=1e10), ValueError),
        (lambda: every(minutes=1, args=[object()]), ValueError),
        (lambda: every(minutes=1, missed="burst"), ValueError),
        # Zones whose meaning depends on the host, and names that are no IANA name.
        (lambda: cron("0 3 * * *", tz="localtime"), ValueError),
        (lambda: cron("0 3 * * *", tz="posixrules"), ValueError),
        (lambda: cron("0 3 * * *", tz="Factory"), ValueError),
        (lambda: cron("0 3 * * *", tz="right/UTC"), ValueError),
        (lambda: cron("0 3 * * *", tz="posix/Europe/Paris"), ValueError),
        (lambda: cron("0 3 * * *", tz="/usr/share/zoneinfo/UTC"), ValueError),
        (lambda: cron("0 3 * * *", tz="europe/paris"), ValueError),
        # Arguments PostgreSQL would not store as given.
        (lambda: every(minutes=1, args=["a\x00b"]), ValueError),
        (lambda: every(minutes=1, args=["\ud800"]), ValueError),
        (lambda: every(minutes=1, kwargs={"\ud800": 1}), ValueError),
        (lambda: every(minutes=1, kwargs={"x": float("nan")}), ValueError),
        (lambda: every(minutes=1, args=[nested(101)]), ValueError),
        (lambda: every(minutes=1, args=[nested(5000)]), ValueError),
    ],
)
def test_bad_timing_is_refused_at_the_call(make, error):
    with pytest.raises(error):
        make()


def nested(depth: int) -> list[Any]:
    """A list nested ``depth`` levels deep (built without recursion)."""
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_real_zone_names_and_arguments_nested_a_hundred_levels_are_taken():
    for name in ("UTC", "Europe/Paris", "America/Argentina/Salta", "Etc/GMT+5", "EST5EDT"):
        assert cron("0 3 * * *", tz=name).timing.tz == name
    assert every(minutes=1, args=[nested(99)]).args[0] == nested(99)


def test_fixed_arguments_over_the_payload_limit_are_refused_at_decoration():
    def one(label: str) -> None: ...

    with pytest.raises(ValueError, match="over the limit of 1048576 bytes"):
        task(schedule=every(minutes=1, args=["x" * 2_000_000]))(one)


def test_wrong_fixed_arguments_are_refused_at_decoration():
    def two(a: int, b: int) -> None: ...

    with pytest.raises(TypeError, match="Wrong arguments"):
        task(schedule=every(minutes=1, args=[1]))(two)
    with pytest.raises(TypeError, match="schedule must be"):
        task(schedule="*/5 * * * *")(two)  # type: ignore[call-overload]


# -- due ticks, in this process, with real connections ----------------------------------------


@pytest.fixture
def queue_db(transactional_db: Any):
    conn = QueueConnection("default", lambda: False)
    yield conn
    conn.close()


def db_now() -> datetime:
    with connection.cursor() as cursor:
        cursor.execute("SELECT clock_timestamp()")
        now: datetime = cursor.fetchone()[0]
        return now


def make_schedule(name: str, **fields: Any) -> Schedule:
    fields.setdefault("task_name", "record")
    fields.setdefault("args", [name])
    if "cron" not in fields:
        fields.setdefault("interval_seconds", 60)
    return Schedule.objects.create(name=name, **fields)


def backdate(schedule: Schedule, by: timedelta) -> datetime:
    """As if no worker had run for ``by``: the schedule's next tick is that far behind."""
    due = schedule.timing().latest_at_or_before(db_now() - by)
    assert due is not None
    Schedule.objects.filter(pk=schedule.pk).update(next_tick=due)
    return due


def test_a_new_schedule_ticks_next_after_now(queue_db):
    schedule = make_schedule("fresh")
    assert schedule.next_tick > timezone.now()
    assert enqueue_due_ticks(queue_db).enqueued == 0
    assert not TaskRun.objects.filter(schedule=schedule).exists()


def test_missed_once_runs_one_run_for_all_missed_ticks(queue_db):
    schedule = make_schedule("once", interval_seconds=60)
    backdate(schedule, timedelta(hours=3))  # 180 missed ticks
    before = db_now()
    ticks = enqueue_due_ticks(queue_db)
    assert ticks.enqueued == 1
    run = TaskRun.objects.get(schedule=schedule)
    latest = Every(60).latest_at_or_before(before)
    assert latest is not None
    assert latest <= run.tick <= db_now()
    assert run.tick.second == 0  # a real tick of the interval
    assert run.scheduled_time == run.tick
    schedule.refresh_from_db()
    assert schedule.next_tick == run.tick + timedelta(minutes=1)
    assert schedule.last_tick == run.tick
    assert schedule.last_run_id == run.id
    assert enqueue_due_ticks(queue_db).enqueued == 0  # nothing more is due


def hourly_at_half_past_now() -> str:
    """A cron expression whose latest tick is about half an hour ago, whenever the test runs."""
    return f"{(db_now().minute + 30) % 60} * * * *"


def test_missed_skip_runs_nothing_for_missed_ticks(queue_db):
    schedule = make_schedule("skip", cron=hourly_at_half_past_now(), missed="skip")
    backdate(schedule, timedelta(hours=5))
    ticks = enqueue_due_ticks(queue_db)
    assert (ticks.enqueued, ticks.skipped) == (0, 1)
    assert not TaskRun.objects.filter(schedule=schedule).exists()
    schedule.refresh_from_db()
    assert timezone.now() < schedule.next_tick <= timezone.now() + timedelta(hours=1)


def test_missed_skip_still_runs_a_tick_that_is_on_time(queue_db):
    schedule = make_schedule("skip-on-time", interval_seconds=1, missed="skip")
    wait_until(lambda: enqueue_due_ticks(queue_db).enqueued, timeout=5)
    assert TaskRun.objects.filter(schedule=schedule).count() == 1


def test_one_run_per_tick_with_eight_enqueuers_at_once(queue_db):
    schedules = [make_schedule(f"race-{i}") for i in range(50)]
    for schedule in schedules:
        backdate(schedule, timedelta(minutes=1))
    barrier = threading.Barrier(8)
    results: list[Any] = []

    def enqueuer() -> None:
        conn = QueueConnection("default", lambda: False)
        try:
            barrier.wait()
            results.append(enqueue_due_ticks(conn))
        finally:
            conn.close()

    threads = [threading.Thread(target=enqueuer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(r.enqueued for r in results) == 50
    per_schedule = Counter(TaskRun.objects.values_list("schedule_id", flat=True))
    assert per_schedule == Counter({s.pk: 1 for s in schedules})


def test_the_database_refuses_a_second_run_for_a_tick(queue_db):
    schedule = make_schedule("again")
    tick = backdate(schedule, timedelta(minutes=1))
    assert enqueue_due_ticks(queue_db).enqueued == 1
    # Someone puts next_tick back on a tick that has its run: the unique key holds.
    Schedule.objects.filter(pk=schedule.pk).update(next_tick=tick)
    enqueue_due_ticks(queue_db)
    assert TaskRun.objects.filter(schedule=schedule).count() == 1
    schedule.refresh_from_db()
    assert schedule.next_tick > tick
    # And the constraint itself refuses a second run for the tick, whoever writes it.
    run = TaskRun.objects.get(schedule=schedule)
    copy = {f.attname: getattr(run, f.attname) for f in TaskRun._meta.concrete_fields}
    with pytest.raises(IntegrityError), transaction.atomic():
        TaskRun.objects.create(**{**copy, "id": uuid7()})


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"task_name": "no_such_task"}, "No task is called 'no_such_task'"),
        ({"args": [1, 2, 3]}, "Wrong arguments for task 'record'"),
        ({"args": {"label": "x"}}, "args must be a JSON list"),
        ({"queue": "bad queue!"}, "queue"),
    ],
)
def test_a_schedule_whose_run_cannot_be_made_says_why_and_moves_on(queue_db, fields, error):
    schedule = make_schedule("broken", **fields)
    tick = backdate(schedule, timedelta(minutes=1))
    ticks = enqueue_due_ticks(queue_db)
    assert (ticks.enqueued, ticks.failed) == (0, 1)
    schedule.refresh_from_db()
    assert error in schedule.last_error
    assert schedule.next_tick > tick  # no loop on a bad schedule
    assert not TaskRun.objects.exists()


def test_a_row_with_both_a_cron_and_an_interval_never_ticks(queue_db, caplog):
    """Written in SQL or by older code (the model, its form and the API refuse it): the
    ticker stops ticking it, says why on the row and in the log, and ticks the others."""
    caplog.set_level("WARNING", logger="django_tasks.schedules")
    both = make_schedule("both")
    tick = backdate(both, timedelta(minutes=1))
    Schedule.objects.filter(pk=both.pk).update(cron="* * * * *")
    other = make_schedule("other")
    backdate(other, timedelta(minutes=1))
    ticks = enqueue_due_ticks(queue_db)
    assert (ticks.enqueued, ticks.failed) == (1, 1)
    assert not TaskRun.objects.filter(schedule=both).exists()
    both.refresh_from_db()
    assert both.next_tick is None  # not due again: it never ticks
    assert both.last_error.startswith("Bad schedule, not ticking: A schedule has a cron")
    assert "Schedule both: bad definition, not ticking it" in caplog.text
    assert tick < db_now()


@pytest.mark.parametrize(
    ("column", "value", "error"),
    [
        ("timezone", "'localtime'", "Unknown time zone 'localtime'"),
        ("interval_seconds", "'NaN'::float8", "An interval must be at least one second"),
        ("cron", "'* * * * * *'", "five fields"),
    ],
)
def test_a_row_with_a_bad_definition_written_in_sql_stops_ticking(queue_db, column, value, error):
    fields: dict[str, Any] = {"cron": "* * * * *"} if column != "interval_seconds" else {}
    bad = make_schedule("bad", **fields)
    backdate(bad, timedelta(minutes=1))
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE django_tasks_schedule SET {column} = {value} WHERE id = %s", [bad.pk]
        )
    assert enqueue_due_ticks(queue_db).failed == 1
    bad.refresh_from_db()
    assert bad.next_tick is None
    assert error in bad.last_error
    assert not TaskRun.objects.exists()


def test_arguments_python_cannot_read_fail_their_own_tick_only(queue_db):
    """jsonb nested 2,000 levels deep (PostgreSQL stores it; Python's json recurses past its
    limit): that schedule's tick fails with the reason, the other due schedules tick."""
    deep = make_schedule("deep")
    tick = backdate(deep, timedelta(minutes=1))
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE django_tasks_schedule"
            " SET args = (repeat('[', 2000) || repeat(']', 2000))::jsonb WHERE id = %s",
            [deep.pk],
        )
    fine = make_schedule("fine")
    backdate(fine, timedelta(minutes=1))
    ticks = enqueue_due_ticks(queue_db)
    assert (ticks.enqueued, ticks.failed) == (1, 1)
    assert TaskRun.objects.get().schedule_id == fine.pk
    # (read without its args: Django's JSONField would recurse into them too)
    error, next_tick = Schedule.objects.values_list("last_error", "next_tick").get(pk=deep.pk)
    assert "Nested more than 100 levels deep" in error
    assert next_tick > tick  # its next tick, as for any run that cannot be made


def test_a_periodic_run_is_a_normal_run(queue_db):
    schedule = make_schedule("normal", args=["periodic"])
    backdate(schedule, timedelta(minutes=1))
    assert enqueue_due_ticks(queue_db).enqueued == 1
    # The drain's worker enqueues due ticks too: were the next minute to begin before it
    # starts, it would add that tick's run. Only the run of the tick above is under test.
    Schedule.objects.filter(pk=schedule.pk).update(enabled=False)
    drain()
    run = TaskRun.objects.get(schedule=schedule)
    assert run.state_name == "Completed"
    names = list(run.states.values_list("name", flat=True))
    # Late too when its tick (the latest minute boundary) was more than LATE_AFTER ago.
    assert [n for n in names if n != "Late"] == ["Scheduled", "Pending", "Running", "Completed"]
    assert schedule.runs.get() == run


def test_disabling_stops_ticks_and_enabling_does_not_catch_up(queue_db):
    schedule = make_schedule("toggle")
    schedule.enabled = False
    schedule.save()
    assert schedule.next_tick is None
    Schedule.objects.filter(pk=schedule.pk).update(next_tick=db_now() - timedelta(days=30))
    assert enqueue_due_ticks(queue_db).enqueued == 0  # disabled: not due
    schedule.refresh_from_db()
    schedule.enabled = True
    schedule.save()
    assert schedule.next_tick > timezone.now()
    assert enqueue_due_ticks(queue_db).enqueued == 0


# -- declared schedules -----------------------------------------------------------------------

SETTINGS_SCHEDULES = {
    "tidy": {"task": "record", "every": 3600, "args": ["tidy"], "missed": "skip"},
    "report": {"task": "record", "cron": "0 6 * * 1", "tz": "Europe/Paris", "args": ["report"]},
}


def test_declared_schedules_are_synced_into_the_table(queue_db):
    with override_settings(DJANGO_TASKS={"SCHEDULES": SETTINGS_SCHEDULES}):
        assert sync_schedules(queue_db) == 3
        rows = {s.name: s for s in Schedule.objects.all()}
        assert set(rows) == {"new_year", "tidy", "report"}
        assert rows["new_year"].source == "code"
        assert rows["new_year"].cron == "0 0 1 1 *"
        assert rows["new_year"].timezone == "Europe/Paris"
        assert rows["new_year"].args == ["new year"]
        assert rows["tidy"].interval_seconds == 3600
        assert rows["tidy"].missed == "skip"
        assert rows["report"].next_tick.astimezone(PARIS).hour == 6
        # The admin disables one; a later sync keeps that, and keeps next ticks unchanged.
        Schedule.objects.filter(name="tidy").update(enabled=False, next_tick=None)
        before = Schedule.objects.get(name="report").next_tick
        sync_schedules(queue_db)
        assert not Schedule.objects.get(name="tidy").enabled
        assert Schedule.objects.get(name="report").next_tick == before
    # A declaration removed from the settings is removed from the table; admin rows stay.
    make_schedule("mine")
    sync_schedules(queue_db)
    assert set(Schedule.objects.values_list("name", flat=True)) == {"new_year", "mine"}


def test_a_changed_timing_moves_the_next_tick(queue_db):
    first = {"tidy": {"task": "record", "every": 3600, "args": ["tidy"]}}
    with override_settings(DJANGO_TASKS={"SCHEDULES": first}):
        sync_schedules(queue_db)
    hourly = Schedule.objects.get(name="tidy").next_tick
    with override_settings(DJANGO_TASKS={"SCHEDULES": {"tidy": {**first["tidy"], "every": 60}}}):
        sync_schedules(queue_db)
    minutely = Schedule.objects.get(name="tidy").next_tick
    # The next tick of the new timing (a minute boundary within a minute), not the old one's
    # (the two are equal only in the last minute of an hour).
    assert minutely <= hourly
    assert (minutely.second, minutely.microsecond) == (0, 0)
    assert minutely - timezone.now() <= timedelta(minutes=1)
    assert Schedule.objects.get(name="tidy").interval_seconds == 60


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("every day", "must be a dict"),
        ({"every": 60}, "'task'"),
        ({"task": "record"}, "'cron' or 'every'"),
        ({"task": "record", "every": 60, "cron": "* * * * *"}, "'cron' or 'every'"),
        ({"task": "record", "cron": "0 3 * *"}, "five fields"),
        ({"task": "record", "every": 60, "tz2": "x"}, "unknown keys"),
        ({"task": "record", "every": 60, "missed": "all"}, "missed"),
        ({"task": "record", "every": 60, "enabled": "yes"}, "enabled"),
        ({"task": "record", "every": 60, "queue": 5}, "queue"),
    ],
)
def test_bad_settings_entries_are_named(entry, message):
    with pytest.raises(ValueError, match=message) as info:
        from_settings("nightly", entry)
    assert "SCHEDULES']['nightly']" in str(info.value)


def test_declared_schedules_refuse_a_name_declared_twice():
    twice = {"new_year": {"task": "record", "every": 60}}
    with (
        override_settings(DJANGO_TASKS={"SCHEDULES": twice}),
        pytest.raises(ValueError, match="declared twice"),
    ):
        declared_schedules()


# -- two real pools -----------------------------------------------------------------------------


def kill_pool(proc: Any) -> None:
    """kill -9 the supervisor and every worker process of a pool, at once."""
    pids = [proc.pid, *worker_processes(proc.pid)]
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    proc.wait(10)


@pytest.mark.django_db(transaction=True)
def test_two_pools_enqueue_one_run_per_tick_even_when_one_is_killed(start_worker):
    """20 schedules ticking every second, two pools of two processes each looking for due
    ticks; one pool is killed -9 while they tick. Every tick has at most one run, and the
    surviving pool goes on ticking."""
    schedules = [
        make_schedule(f"pool-{i}", task_name="noop", args=[], interval_seconds=1) for i in range(20)
    ]
    first = start_worker("--concurrency", "2")
    second = start_worker("--concurrency", "2")
    wait_for_live_workers(4)
    time.sleep(4)
    kill_pool(first)
    killed_at = db_now()
    time.sleep(4)
    second.send_signal(signal.SIGTERM)
    assert second.wait(30) == 0
    runs = list(TaskRun.objects.filter(schedule__in=schedules).values_list("schedule_id", "tick"))
    per_tick = Counter(runs)
    assert max(per_tick.values()) == 1, "a tick got two runs"
    for schedule in schedules:
        ticks = sorted(tick for schedule_id, tick in runs if schedule_id == schedule.pk)
        span = int((ticks[-1] - ticks[0]).total_seconds()) + 1
        assert len(ticks) >= 0.8 * span, f"{schedule.name}: {len(ticks)} runs in {span} s"
        assert ticks[-1] > killed_at + timedelta(seconds=2), "ticking stopped with the kill"
    print(f"{len(runs)} runs for {len(per_tick)} ticks of 20 schedules")


@pytest.mark.parametrize(
    ("schedules", "message"),
    [
        ({"x": {"task": "record", "every": 0.1}}, "at least one second"),
        ({"x": {"task": "no_such_task", "every": 60}}, "Schedule 'x': No task is called"),
        ({"x": {"task": "record", "every": 60, "args": [1, 2]}}, "Schedule 'x': Wrong arguments"),
        (
            {"x": {"task": "record", "every": 60, "args": ["x" * 2_000_000]}},
            "Schedule 'x': The task's parameters pickle to",
        ),
        ({"x": {"task": "record", "cron": "0 3 * * *", "tz": "localtime"}}, "Unknown time zone"),
    ],
)
def test_the_system_check_names_bad_declared_schedules(schedules, message):
    from django_tasks.checks import check_schedules

    with override_settings(DJANGO_TASKS={"SCHEDULES": schedules}):
        errors = check_schedules()
    assert [e.id for e in errors] == ["django_tasks.E011"]
    assert message in errors[0].msg
    assert check_schedules() == []  # the tests' own declared schedule is fine
