"""Long windows read summaries of closed slots (django_tasks.stats.slots): the same figures as
the runs give, stored once a slot has closed and all its runs have finished, kept past the
purge, and never for a slot with a run still waiting or one a held transaction may add to."""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta

import pytest
from django.db import connection
from django.db.models import Sum
from django.utils import timezone

from django_tasks.api import queries
from django_tasks.horizon import Holder
from django_tasks.ids import uuid7_floor
from django_tasks.models import SlotStats, TaskRun
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


def exact_p50(task_key: str, since: datetime) -> float:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM finished - "
            "started)) FROM django_tasks_taskrun WHERE id >= %s AND task_key = %s",
            [uuid7_floor(since), task_key],
        )
        return float(cursor.fetchone()[0])


def by_key(window: timedelta) -> dict[str, dict]:
    return {task["key"]: task for task in queries.task_stats(window)}


def test_a_long_window_gives_the_figures_of_its_runs(model_run):
    now = timezone.now()
    durations = [0.002 * 1.3**i for i in range(40)]
    for i, seconds in enumerate(durations):
        clone(model_run, now - timedelta(hours=2 + i % 7, minutes=i), "COMPLETED", seconds)
    for hours in (3, 30):  # the second one is outside a 24-hour window
        clone(model_run, now - timedelta(hours=hours), "FAILED", 0.5)
    clone(model_run, now - timedelta(minutes=1), "SCHEDULED", None)  # the open slot: read live
    stats = by_key(DAY)[model_run.task_key]
    assert (stats["runs"], stats["completed"], stats["failed"]) == (42, 40, 1)
    exact = exact_p50(model_run.task_key, now - DAY)
    assert abs(stats["p50_seconds"] - exact) / exact < 0.045
    assert queries.state_counts(DAY) == {"COMPLETED": 40, "FAILED": 1, "SCHEDULED": 1}
    # Every closed slot of the window is stored: those with runs by task and state, the others
    # as one empty row; none for the open slots.
    stored = SlotStats.objects.filter(slot__gte=now - DAY)
    assert stored.filter(task_key=model_run.task_key).aggregate(n=Sum("runs"))["n"] == 41
    assert stored.filter(task_key="").count() > 30
    assert not stored.filter(slot__gte=slot_start(now - slots.GRACE)).exists()


def test_a_stored_slot_is_read_from_its_summary_and_outlives_the_purge(model_run):
    now = timezone.now()
    for i in range(5):
        clone(model_run, now - timedelta(hours=5), "COMPLETED", 0.1 * (i + 1))
    assert by_key(DAY)[model_run.task_key]["runs"] == 5
    TaskRun.objects.update(created=now - timedelta(days=2), finished=now - timedelta(days=2))
    assert purge(timedelta(days=1)) == 5
    assert not TaskRun.objects.exists()
    stats = by_key(DAY)[model_run.task_key]
    assert (stats["runs"], stats["completed"]) == (5, 5)  # from the summary
    assert queries.state_counts(timedelta(hours=1)) == {}  # a live window: the runs are gone


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
    assert not SlotStats.objects.filter(slot=slot_start(moment)).exists()
    TaskRun.objects.filter(id=run_id).update(
        state_type="COMPLETED", started=moment, finished=moment + timedelta(seconds=2)
    )
    assert queries.state_counts(DAY) == {"COMPLETED": 2}
    stored = SlotStats.objects.get(slot=slot_start(moment))
    assert (stored.state_type, stored.runs) == ("COMPLETED", 2)


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
    chart, by_state, tasks = queries.window_stats(DAY, 48)
    assert sum(done for _, done, _ in chart) == 4
    assert sum(failed for _, _, failed in chart) == 1
    column = next(s for s in chart if s[1])
    assert column[0] == slot_start(now - timedelta(hours=3)).timestamp()
    assert (chart, by_state) == (queries.throughput(DAY, 48), queries.state_counts(DAY))
    assert tasks == queries.task_stats(DAY)
    page = admin_client.get("/tasks/dashboard/?window=24h").content.decode()
    assert "4</span> completed" in page
    week = queries.window_stats(timedelta(days=7), 56)[0]
    assert sum(done for _, done, _ in week) == 4  # 3-hour columns from 30-minute summaries


def test_a_week_costs_a_bounded_number_of_queries(model_run, django_assert_max_num_queries):
    clone(model_run, timezone.now() - timedelta(days=3), "COMPLETED", 1.0)
    queries.task_stats(timedelta(days=7))  # summarises the week's closed slots
    explode.delay("x")
    with django_assert_max_num_queries(4):  # the holder, the summaries, the open slots' runs
        stats = by_key(timedelta(days=7))
    assert stats[model_run.task_key]["completed"] == 1
    assert stats[explode.key]["runs"] == 1


def test_percentiles_from_a_histogram():
    durations = slots.Counter({0: 1, 80: 8, 160: 1})
    assert slots.percentile(slots.Counter(), 0.5) is None
    assert slots.percentile(durations, 0.0) == slots.bucket_seconds(0)
    assert slots.percentile(durations, 0.5) == slots.bucket_seconds(80)
    assert slots.percentile(durations, 1.0) == slots.bucket_seconds(160)
    assert slots.bucket_seconds(80) == pytest.approx(1e-4 * 2 ** (80.5 / 8))
