"""Rows edited by raw SQL (by an operator, a script, or older code) against the ticker, the
claim and the pages that list them: each such row costs at most its own run or tick, never the
others, never a page; and a time Python could not read is refused where it is written."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.test import Client

from django_tasks.models import Schedule, TaskRun
from django_tasks.schedules.ticker import enqueue_due_ticks
from django_tasks.times import EARLIEST, LATEST
from django_tasks.worker import Worker
from tests.taskapp.tasks import add

from .test_schedules import backdate, make_schedule, queue_db  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)


def sql(statement: str, *params: Any) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


def assert_pages_show(model: str, api: str, pk: object) -> None:
    """Every page that lists or shows the row answers 200 to a superuser: the admin's list
    and change page, the API's list and detail, the dashboard (a 500 is returned, not
    raised)."""
    browser = Client(raise_request_exception=False)
    browser.force_login(User.objects.create_superuser("root", "r@example.com", "pw"))
    urls = {
        "admin list": f"/admin/django_tasks/{model}/",
        "admin page": f"/admin/django_tasks/{model}/{pk}/change/",
        "api list": f"/tasks/api/{api}/",
        "api detail": f"/tasks/api/{api}/{pk}/",
        "dashboard": "/tasks/dashboard/",
    }
    pages = {name: browser.get(url).status_code for name, url in urls.items()}
    assert set(pages.values()) == {200}, pages


#: SET clauses a careless script or an operator applies to the schedule named "bad", and
#: whether it still ticks (an unknown ``missed`` is the default, "once").
SCHEDULE_EDITS = {
    "args nested 5000 deep": ("args = (repeat('[', 5000) || repeat(']', 5000))::jsonb", False),
    "args 5000-digit int": ("args = ('[' || repeat('9', 5000) || ']')::jsonb", False),
    "kwargs nested 5000 deep": ("kwargs = (repeat('[', 5000) || repeat(']', 5000))::jsonb", False),
    "interval NaN": ("interval_seconds = 'NaN'", False),
    "interval 1e300": ("interval_seconds = 1e300", False),
    "interval -5": ("interval_seconds = -5", False),
    "tz unknown": (
        "cron = '* * * * *', interval_seconds = NULL, timezone = 'Mars/Olympus'",
        False,
    ),
    "cron bogus": ("cron = '99 99 * * *', interval_seconds = NULL", False),
    "kwargs a list": ("kwargs = '[1]'", False),
    "missed bogus": ("missed = 'never'", True),
    "long names": ("name = repeat('x', 255), task_name = repeat('y', 255)", False),
}


@pytest.mark.parametrize(("clause", "ticks"), SCHEDULE_EDITS.values(), ids=SCHEDULE_EDITS.keys())
def test_one_bad_schedule_row_neither_stops_the_others_nor_breaks_a_page(
    queue_db,  # noqa: F811
    clause,
    ticks,
):
    bad = make_schedule("bad")
    backdate(bad, timedelta(minutes=1))
    good = make_schedule("good")
    backdate(good, timedelta(minutes=2))
    sql(f"UPDATE django_tasks_schedule SET {clause} WHERE id = %s", bad.pk)
    outcome = enqueue_due_ticks(queue_db)
    assert TaskRun.objects.filter(schedule__name="good").exists(), outcome
    assert TaskRun.objects.filter(schedule=bad).exists() is ticks
    assert (outcome.failed, bool(Schedule.objects.get(pk=bad.pk).last_error)) == (
        (0, False) if ticks else (1, True)  # an error is said on the row
    )
    assert_pages_show("schedule", "schedules", bad.pk)


@pytest.mark.parametrize("column", ["next_tick", "last_tick"])
@pytest.mark.parametrize("value", ["-infinity", "infinity", "0044-03-15 BC", "10000-01-01"])
def test_a_schedule_time_python_cannot_read_is_refused_where_it_is_written(column, value):
    """'-infinity' (tick now), 'infinity' (pause: that is what ``enabled`` is for) or a year
    BC stopped the ticker for every schedule and made their pages 500s; the row now refuses
    them, naming the constraint, and keeps what it held."""
    schedule = make_schedule("bad")
    refused = pytest.raises(IntegrityError, match=f"django_tasks_schedule_{column}")
    with refused, transaction.atomic():
        sql(f"UPDATE django_tasks_schedule SET {column} = %s", value)
    assert Schedule.objects.get(pk=schedule.pk).next_tick == schedule.next_tick


@pytest.mark.parametrize("value", ["-infinity", "infinity", "0044-03-15 BC", "10000-01-01"])
def test_a_scheduled_time_python_cannot_read_is_refused_where_it_is_written(value):
    """A run's ``scheduled_time`` set to '-infinity' (to put it first) made every claim of its
    queue fail; a year BC stranded it PENDING (the claim committed, the row could not be read);
    both made the run lists 500s. The row refuses them and keeps what it held; the queue runs."""
    run = add.delay(1, 2)
    before = TaskRun.objects.get(pk=run.id).scheduled_time
    with (
        pytest.raises(IntegrityError, match="django_tasks_scheduled_time"),
        transaction.atomic(),
    ):
        sql("UPDATE django_tasks_taskrun SET scheduled_time = %s WHERE id = %s", value, run.id)
    assert TaskRun.objects.get(pk=run.id).scheduled_time == before
    Worker(burst=True, handle_signals=False).run()
    assert TaskRun.objects.get(pk=run.id).state_type == "COMPLETED"


@pytest.mark.parametrize(
    "when",
    [
        datetime(1, 1, 1, tzinfo=UTC),
        EARLIEST - timedelta(microseconds=1),
        LATEST + timedelta(microseconds=1),
        datetime(9999, 12, 31, 23, 59, tzinfo=UTC),
    ],
)
def test_delay_refuses_a_scheduled_time_the_row_cannot_hold(when):
    with pytest.raises(
        ValueError, match="scheduled_time must lie between 0001-01-02 and 9999-12-30"
    ):
        add.apply_async((1, 2), scheduled_time=when)
    assert not TaskRun.objects.exists()


@pytest.mark.parametrize("when", [EARLIEST, LATEST])
def test_the_bounds_themselves_are_stored_and_read_back(when):
    run = add.apply_async((1, 2), scheduled_time=when)
    assert TaskRun.objects.get(pk=run.id).scheduled_time == when
    assert_pages_show("taskrun", "runs", run.id)


def test_the_migration_mends_the_times_it_finds_outside_and_then_checks_them():
    """On a database that already holds such rows (before 0025), the migration moves each time
    to the nearest bound - it never fails on them - and the constraints hold afterwards."""
    early, late = add.delay(1, 1), add.delay(2, 2)
    schedule = make_schedule("old")
    call_command("migrate", "django_tasks", "0024", verbosity=0)
    try:
        sql("UPDATE django_tasks_taskrun SET scheduled_time = '-infinity' WHERE id = %s", early.id)
        sql("UPDATE django_tasks_taskrun SET scheduled_time = 'infinity' WHERE id = %s", late.id)
        sql("UPDATE django_tasks_schedule SET next_tick = '0044-03-15 BC', last_tick = 'infinity'")
    finally:
        call_command("migrate", "django_tasks", verbosity=0)
    times = dict(TaskRun.objects.values_list("id", "scheduled_time"))
    assert times == {early.id: EARLIEST, late.id: LATEST}
    mended = Schedule.objects.get(pk=schedule.pk)
    assert (mended.next_tick, mended.last_tick) == (EARLIEST, LATEST)
    with pytest.raises(IntegrityError), transaction.atomic():
        sql("UPDATE django_tasks_taskrun SET scheduled_time = '-infinity'")


@pytest.mark.parametrize(
    ("clause", "said"),
    [
        ("tags = '5'", "tags (a JSON list of strings) holds 5"),
        ("tags = '\"urgent\"'", "tags (a JSON list of strings) holds 'urgent'"),
        ("tags = '[1, 2]'", "tags (a JSON list of strings) holds [1, 2]"),
        ("retry_delays = '7'", "retry_delays (a JSON list of numbers) holds 7"),
        ("retry_delays = '{\"a\": 1}'", "retry_delays (a JSON list of numbers) holds {'a': 1}"),
        (
            "tags = (repeat('[', 5000) || repeat(']', 5000))::jsonb",
            "tags (a JSON list of strings) holds '" + "[" * 200 + "'… (10,000 characters)",
        ),
        (
            "retry_delays = ('[' || repeat('9', 5000) || ']')::jsonb",
            "retry_delays (a JSON list of numbers) holds '[" + "9" * 199 + "'… (5,002 characters)",
        ),
    ],
)
def test_a_run_row_the_worker_cannot_read_fails_alone(clause, said):
    """A run whose tags or retry_delays SQL wrote as something else than a list (or nested too
    deep for Python's json, or holding an int too long for it): the claim
    committed, then the worker could not read the row and the whole batch stayed PENDING, held
    by a live worker, for ever. Now that run fails with a message that names the column, and
    the others of its batch complete."""
    odd = add.delay(0, 0)
    others = [add.delay(i, i) for i in range(3)]
    sql(f"UPDATE django_tasks_taskrun SET {clause} WHERE id = %s", odd.id)
    assert Worker(burst=True, handle_signals=False, batch_size=4).run() == 0
    failed = TaskRun.objects.get(pk=odd.id)
    assert failed.state_type == "FAILED"
    assert failed.state_message == f"The run's row could not be read: {said}."
    assert [TaskRun.objects.get(pk=f.id).state_type for f in others] == ["COMPLETED"] * 3


#: JSON columns of a run set by SQL to what the model never writes.
RUN_EDITS = {
    "tags a number": "tags = '5'",
    "parameters_preview nested 5000 deep": (
        "parameters_preview = (repeat('[', 5000) || repeat(']', 5000))::jsonb"
    ),
    "result_preview 5000-digit int": "result_preview = ('[' || repeat('9', 5000) || ']')::jsonb",
    "progress nested 5000 deep": "progress = (repeat('[', 5000) || repeat(']', 5000))::jsonb",
}


@pytest.mark.parametrize("clause", RUN_EDITS.values(), ids=RUN_EDITS.keys())
def test_no_run_row_makes_a_page_fail(clause):
    run = add.delay(1, 2)
    sql(f"UPDATE django_tasks_taskrun SET {clause} WHERE id = %s", run.id)
    assert_pages_show("taskrun", "runs", run.id)


FINAL = ("COMPLETED", "FAILED", "SCHEDULED")  # SCHEDULED: a retry waiting for its time

#: Numbers of a run set by SQL to what no call could give.
ODD_NUMBERS = [
    "timeout = 'NaN'",
    "timeout = 'Infinity'",
    "timeout = -1",
    "timeout = 1e300",
    "retry_jitter = 'NaN'",
    "retry_jitter = 1e300",
    "retries = 2147483647",
    "attempts = 2147483646",
    "retry_delays = '[1e300]'",
    "retry_delays = '[-5]'",
    "priority = 32767",
]


@pytest.mark.parametrize(
    ("clause", "fails"),
    [
        pytest.param(clause, fails, id=f"{clause}-{'fails and retries' if fails else 'succeeds'}")
        for clause in ODD_NUMBERS
        for fails in (False, True)
        if not (fails and clause.startswith("retries"))  # two billion retries: it asked for it
    ],
)
def test_a_run_with_odd_numbers_ends_and_its_batch_runs(clause, fails):
    """Whether its task succeeds or fails (and is retried: delays, jitter, attempts), a run
    whose numbers SQL set ends, and the runs claimed with it complete."""
    from tests.taskapp.tasks import explode

    odd = explode.delay("odd") if fails else add.delay(0, 0)
    if fails:
        sql("UPDATE django_tasks_taskrun SET retries = 2 WHERE id = %s", odd.id)
    others = [add.delay(i, i) for i in range(3)]
    sql(f"UPDATE django_tasks_taskrun SET {clause} WHERE id = %s", odd.id)
    assert Worker(burst=True, handle_signals=False, batch_size=4).run() == 0
    runs = TaskRun.objects.filter(Q(pk=odd.id) | Q(retry_of=odd.id))
    assert all(r.state_type in FINAL for r in runs), [(r.state_type, r.state_message) for r in runs]
    assert [TaskRun.objects.get(pk=f.id).state_type for f in others] == ["COMPLETED"] * 3
