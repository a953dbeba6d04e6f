"""Long windows read summaries of closed slots (django_tasks.stats.slots): the same figures as
the runs give, stored once a slot has closed and all its runs have finished, kept past the
purge, and never for a slot with a run still waiting or one a held transaction may add to."""

from __future__ import annotations

import math
import random
import re
import statistics
import threading
import uuid
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.db.models import Sum
from django.utils import timezone

from django_tasks.api import queries
from django_tasks.horizon import Holder
from django_tasks.ids import uuid7_floor
from django_tasks.models import SlotStats, TaskRun
from django_tasks.pages.task_page import WINDOWS, task_series
from django_tasks.retention import purge
from django_tasks.stats import slots
from django_tasks.worker import Worker
from tests.taskapp.tasks import add, explode

pytestmark = pytest.mark.django_db(transaction=True)

DAY = timedelta(days=1)


@pytest.fixture
def model_run() -> TaskRun:
    """A complete finished run to copy rows from."""
    add.delay(1, 1)
    Worker(burst=True, handle_signals=False).run()
    run = TaskRun.objects.get()
    TaskRun.objects.all().delete()
    return run


def clone(model: TaskRun, moment: datetime, state: str, seconds: float | None, **extra):
    """A run created at ``moment`` (its id says so) in ``state``, that ran ``seconds``."""
    run_id = uuid.UUID(int=uuid7_floor(moment).int | random.getrandbits(60))
    model.pk, model.id, model.created, model.state_type = run_id, run_id, moment, state
    model.started = moment if seconds is not None else None
    model.finished = moment + timedelta(seconds=seconds) if seconds is not None else None
    for name, value in extra.items():
        setattr(model, name, value)
    model.save(force_insert=True)
    return run_id


def slot_start(moment: datetime) -> datetime:
    start = int(moment.timestamp()) // slots.SLOT_SECONDS * slots.SLOT_SECONDS
    return datetime.fromtimestamp(start, tz=moment.tzinfo)


def live(statement: str, window: timedelta, **params: float) -> list[tuple[Any, ...]]:
    """What one of the statements over every run of a window gives (the 1-hour path)."""
    since = uuid7_floor(timezone.now() - window)
    return sorted(queries.sql_rows(statement, {"since": since, **params}))


def stored_slots() -> set[datetime]:
    return set(SlotStats.objects.values_list("slot", flat=True))


def by_key(window: timedelta) -> dict[str, dict[str, Any]]:
    return {task["key"]: task for task in queries.task_stats(window)}


def test_a_long_window_gives_the_figures_of_its_runs(model_run):
    now = timezone.now()
    for i in range(40):
        clone(model_run, now - timedelta(hours=2 + i % 7, minutes=i), "COMPLETED", 0.002 * 1.3**i)
    for hours in (3, 30):  # the second one is outside a 24-hour window
        clone(model_run, now - timedelta(hours=hours), "FAILED", 0.5)
    clone(model_run, now - timedelta(minutes=1), "SCHEDULED", None)  # the open slot: read live
    stats = by_key(DAY)[model_run.task_key]
    ((_, runs, completed, failed, p50, p95),) = live(queries._TASK_STATS, DAY)
    assert (stats["runs"], stats["completed"], stats["failed"]) == (runs, completed, failed)
    assert (runs, completed, failed) == (42, 40, 1)
    assert stats["p50_seconds"] == pytest.approx(p50, rel=0.045)  # an even count: interpolated
    assert stats["p95_seconds"] == pytest.approx(p95, rel=0.045)
    assert queries.state_counts(DAY) == dict(live(queries._STATE_COUNTS, DAY))
    # Every closed slot of the window is stored: those with runs by task and state, the others
    # as one empty row; none of the slots not closed.
    stored = SlotStats.objects.filter(slot__gte=now - DAY)
    assert stored.filter(task_key=model_run.task_key).aggregate(n=Sum("runs"))["n"] == 41
    assert stored.filter(task_key="").count() > 30
    assert not stored.filter(slot__gte=slot_start(timezone.now() - slots.GRACE)).exists()


def test_the_edges_of_a_window(model_run):
    """The window's first slot is partial: read from the runs, by id, to the millisecond."""
    since = timezone.now() - DAY
    # Inside the window's first, partial slot whatever the time of day (3 minutes in was the
    # next, whole slot when the test ran in the last 3 minutes of a half hour).
    first_edge = slot_start(since) + timedelta(seconds=slots.SLOT_SECONDS)
    inside = since + (first_edge - since) / 2
    clone(model_run, inside, "COMPLETED", 1.0)
    clone(model_run, since - timedelta(minutes=3), "COMPLETED", 1.0)
    assert by_key(DAY)[model_run.task_key]["runs"] == 1
    assert slot_start(inside) not in stored_slots()


def test_a_stored_slot_is_read_from_its_summary_and_outlives_the_purge(model_run):
    now = timezone.now()
    for i in range(5):
        clone(model_run, now - timedelta(hours=5), "COMPLETED", 0.1 * (i + 1))
    assert by_key(DAY)[model_run.task_key]["runs"] == 5
    TaskRun.objects.update(created=now - timedelta(days=2), finished=now - timedelta(days=2))
    assert purge(timedelta(days=1)) == 5
    assert live(queries._STATE_COUNTS, DAY) == []  # the runs are gone...
    stats = by_key(DAY)[model_run.task_key]
    assert (stats["runs"], stats["completed"]) == (5, 5)  # ... their summary is not


def test_purge_summarises_the_slots_it_deletes_from_first(model_run):
    now = timezone.now()
    for _ in range(3):
        clone(model_run, now - timedelta(hours=6), "COMPLETED", 1.0)
    TaskRun.objects.update(created=now - timedelta(days=2), finished=now - timedelta(days=2))
    assert not SlotStats.objects.exists()  # nobody read a window yet
    assert purge(timedelta(days=1)) == 3
    assert by_key(DAY)[model_run.task_key]["completed"] == 3


def test_a_slot_with_a_run_still_waiting_is_read_again_until_it_finishes(model_run):
    moment = timezone.now() - timedelta(hours=4)
    run_id = clone(model_run, moment, "SCHEDULED", None)
    clone(model_run, moment, "COMPLETED", 1.0)
    assert queries.state_counts(DAY) == {"SCHEDULED": 1, "COMPLETED": 1}
    assert slot_start(moment) not in stored_slots()
    TaskRun.objects.filter(id=run_id).update(
        state_type="COMPLETED", started=moment, finished=moment + timedelta(seconds=2)
    )
    assert queries.state_counts(DAY) == {"COMPLETED": 2}
    stored = SlotStats.objects.get(slot=slot_start(moment))
    assert (stored.state_type, stored.runs) == ("COMPLETED", 2)


def test_a_row_arriving_late_deletes_the_summary_of_its_slot(model_run):
    """An inline run is written when it ends, its id made when it began: the trigger of
    migration 0027 deletes the stale summary of its slot, the next window reads it again."""
    # The middle of a slot: the late run, a second later, is in the same slot.
    moment = slot_start(timezone.now() - timedelta(hours=3)) + timedelta(minutes=15)
    clone(model_run, moment, "COMPLETED", 1.0)
    assert by_key(DAY)[model_run.task_key]["runs"] == 1
    assert slot_start(moment) in stored_slots()
    clone(model_run, moment + timedelta(seconds=1), "FAILED", 2400.0)  # a 40-minute inline run
    assert slot_start(moment) not in stored_slots()
    stats = by_key(DAY)[model_run.task_key]
    assert (stats["runs"], stats["failed"]) == (2, 1)
    assert SlotStats.objects.filter(slot=slot_start(moment)).aggregate(n=Sum("runs"))["n"] == 2
    fresh = clone(model_run, timezone.now(), "COMPLETED", 1.0)  # on time: no trigger
    assert TaskRun.objects.filter(id=fresh).exists()
    assert slot_start(moment) in stored_slots()


def test_the_trigger_and_the_summaries_share_their_lock_and_slot(model_run):
    """The migration's SQL spells the lock, the slot length and the grace as numbers."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT prosrc FROM pg_proc WHERE proname = 'django_tasks_slotstats_late_run'"
        )
        (source,) = cursor.fetchone()
        cursor.execute(
            "SELECT pg_get_triggerdef(oid) FROM pg_trigger "
            "WHERE tgname = 'django_tasks_slotstats_late_run'"
        )
        (definition,) = cursor.fetchone()
    assert f"pg_advisory_xact_lock({slots.LATE_RUN_LOCK})" in source
    assert f"/ 1000 / {slots.SLOT_SECONDS} * {slots.SLOT_SECONDS}" in source
    assert "(clock_timestamp() - '00:05:00'::interval)" in definition
    assert timedelta(minutes=5) == slots.GRACE


def test_nothing_is_stored_while_a_late_row_holds_the_lock(model_run):
    """A transaction that inserted a late row holds the lock until it ends: the windows read
    the runs meanwhile, and neither wait for it nor store what it may make stale."""
    moment = timezone.now() - timedelta(hours=3)
    clone(model_run, moment, "COMPLETED", 1.0)
    holder = connections_second()
    with holder.cursor() as cursor:
        cursor.execute("BEGIN")
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [slots.LATE_RUN_LOCK])
        done = threading.Event()
        result: dict[str, int] = {}

        def read() -> None:
            result["runs"] = by_key(DAY)[model_run.task_key]["runs"]
            done.set()

        thread = threading.Thread(target=read)
        thread.start()
        assert done.wait(10), "the window waited for the lock"
        thread.join()
        assert result["runs"] == 1
        assert slot_start(moment) not in stored_slots()
        cursor.execute("COMMIT")
    holder.close()
    assert by_key(DAY)[model_run.task_key]["runs"] == 1
    assert slot_start(moment) in stored_slots()


def connections_second():
    """A second, real connection to the test database."""
    import psycopg

    settings = connection.settings_dict
    return psycopg.connect(
        dbname=settings["NAME"],
        user=settings["USER"],
        password=settings["PASSWORD"] or None,
        host=settings["HOST"] or None,
        port=settings["PORT"] or None,
        autocommit=True,
    )


def test_no_slot_is_stored_that_an_open_transaction_may_still_add_to(model_run, monkeypatch):
    """A run enqueued in a transaction still open is invisible, and its id is older than its
    commit: the slots after the oldest open transaction began stay unstored."""
    moment = timezone.now() - timedelta(hours=2)
    clone(model_run, moment, "COMPLETED", 1.0)
    holder = Holder(pid=1, seconds=3 * 3600, state="idle in transaction", application_name="")
    monkeypatch.setattr(slots, "oldest_snapshot", lambda: holder)
    assert by_key(DAY)[model_run.task_key]["runs"] == 1
    assert not SlotStats.objects.filter(slot__gte=timezone.now() - timedelta(hours=3)).exists()
    assert SlotStats.objects.filter(slot__lt=timezone.now() - timedelta(hours=3)).exists()


def test_the_dashboard_chart_and_the_metrics_of_long_windows(admin_client, model_run):
    now = timezone.now()
    for i in range(4):
        clone(model_run, now - timedelta(hours=3), "COMPLETED", 0.01 * (i + 1))
    clone(model_run, now - timedelta(hours=3), "CRASHED", 0.02)
    for window, columns in ((DAY, 48), (timedelta(days=7), 56)):
        chart, by_state, tasks = queries.window_stats(window, columns)
        size = window.total_seconds() / columns
        by_slot = live(queries._THROUGHPUT, window, bucket=size)
        assert [(slot * size, done, failed) for slot, done, failed in by_slot] == [
            column for column in chart if column[1] or column[2]
        ]
        assert (
            by_state == dict(live(queries._STATE_COUNTS, window)) == {"COMPLETED": 4, "CRASHED": 1}
        )
        assert {t["key"]: t["runs"] for t in tasks if t["runs"]} == {model_run.task_key: 5}
    page = admin_client.get("/tasks/dashboard/?window=24h").content.decode()
    assert re.search(r'<span class="djt-figure"[^>]*>4</span> completed', page)
    metrics = admin_client.get("/tasks/metrics/").content.decode()
    assert f'django_tasks_runs{{state="COMPLETED",task="{model_run.task_name}"}} 4.0' in metrics


def test_windows_longer_than_the_summaries_are_kept(model_run, admin_client):
    clone(model_run, timezone.now() - timedelta(days=20), "COMPLETED", 1.0)
    clone(model_run, timezone.now() - timedelta(days=2), "COMPLETED", 1.0)
    assert by_key(timedelta(days=30))[model_run.task_key]["runs"] == 2
    assert min(stored_slots()) >= timezone.now() - slots.KEEP  # nothing stored beyond
    response = admin_client.get("/tasks/api/stats/", {"window": "3650d"})
    assert response.status_code == 200
    assert response.json()["by_state"] == {"COMPLETED": 2}


def test_a_week_costs_a_bounded_number_of_queries(model_run, django_assert_max_num_queries):
    clone(model_run, timezone.now() - timedelta(days=3), "COMPLETED", 1.0)
    queries.task_stats(timedelta(days=7))  # summarises the week's closed slots
    explode.delay("x")
    # The holder, the summaries (runs, durations), the window's first partial slot and the
    # last two (the one closing, the open one): not a statement per slot of the week.
    with django_assert_max_num_queries(6):
        stats = by_key(timedelta(days=7))
    assert stats[model_run.task_key]["completed"] == 1
    assert stats[explode.key]["runs"] == 1


def test_percentiles_from_a_histogram():
    durations = Counter({0: 1, 80: 8, 160: 1})
    assert slots.percentile(Counter(), 0.5) is None
    assert slots.percentile(durations, 0.0) == slots.bucket_seconds(0)
    assert slots.percentile(durations, 0.5) == slots.bucket_seconds(80)
    assert slots.percentile(durations, 1.0) == slots.bucket_seconds(160)
    assert slots.bucket_seconds(80) == pytest.approx(1e-4 * 2 ** (80.5 / 8))
    # Nine runs of 1 s and one of 60 s: p95 lies between the last two, as percentile_cont's.
    one, sixty = (math.floor(8 * math.log2(seconds / 1e-4)) for seconds in (1, 60))
    few = Counter({one: 9, sixty: 1})
    assert slots.percentile(few, 0.95) == pytest.approx(1 + 59 * 0.55, rel=0.045)
    two = Counter({one: 1, sixty: 1})  # an even count: the middle of the two
    expected = (slots.bucket_seconds(one) + slots.bucket_seconds(sixty)) / 2
    assert slots.percentile(two, 0.5) == pytest.approx(expected)


def test_odd_windows_and_a_staff_user_without_permissions(client, admin_client, model_run):
    clone(model_run, timezone.now() - timedelta(hours=3), "COMPLETED", 1.0)
    for window in ("\x00", "-5h", "1e9d", "99999999999999999999d", "nan", "2h\x00"):
        status = admin_client.get("/tasks/api/stats/", {"window": window}).status_code
        assert status in (200, 400), (window, status)
    from django.contrib.auth.models import User

    User.objects.create_user("staff", password="pw", is_staff=True)
    client.login(username="staff", password="pw")
    SlotStats.objects.all().delete()  # the admin's windows above stored some
    assert client.get("/tasks/api/stats/", {"window": "7d"}).status_code == 403
    assert client.get("/tasks/dashboard/", {"window": "7d"}).status_code == 403
    assert not SlotStats.objects.exists()  # nothing read, nothing stored


def test_the_task_page_series_from_summaries_match_the_runs(model_run):
    """The task page's 24-hour and 7-day series (slot summaries, per point) against the runs
    themselves: counts by state per point, and percentiles within a bucket's 4.5%."""
    now = timezone.now()
    rng = random.Random(7)
    made = []
    for i in range(120):
        moment = now - timedelta(hours=rng.uniform(0.1, 70))
        state = "FAILED" if i % 10 == 0 else "COMPLETED"
        seconds = rng.uniform(0.01, 5)
        clone(model_run, moment, state, seconds)
        made.append((moment, state, seconds))
    for window in ("24h", "7d"):
        series = task_series([model_run.task_key], window, now)
        length, step = WINDOWS[window]
        first = int((now - length).timestamp()) // step
        expected: dict[int, Counter[str]] = {}
        durations: dict[int, list[float]] = {}
        for moment, state, seconds in made:
            if moment >= now - length:
                index = int(moment.timestamp()) // step - first
                expected.setdefault(index, Counter())[state] += 1
                durations.setdefault(index, []).append(seconds)
        got = {i: p.states for i, p in enumerate(series.points) if p.states}
        assert got == expected, window
        for index, values in durations.items():
            exact = statistics.median(values)
            assert series.points[index].p50 == pytest.approx(exact, rel=0.1), (window, index)
    assert stored_slots()  # the closed slots were summarised on the way
