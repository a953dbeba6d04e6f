"""Schedules in the admin, the API, the CLI and the dashboard: Django's model permissions,
clear form errors instead of bad rows, no 500 for odd ids."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connection
from django.test import Client

from django_tasks.models import Schedule

from .conftest import client_with

pytestmark = pytest.mark.django_db(transaction=True)

ADMIN = "/admin/django_tasks/schedule/"
API = "/tasks/api/schedules/"


def superuser() -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    return client


def form(**changes: object) -> dict[str, object]:
    data: dict[str, object] = {
        "name": "nightly",
        "task_name": "record",
        "cron": "0 3 * * *",
        "interval_seconds": "",
        "timezone": "Europe/Paris",
        "args": '["nightly"]',
        "kwargs": "{}",
        "queue": "",
        "missed": "once",
        "enabled": "on",
    }
    data.update(changes)
    return data


def test_the_admin_adds_a_schedule_with_its_next_tick():
    response = superuser().post(f"{ADMIN}add/", form())
    assert response.status_code == 302, response.content.decode()[:2000]
    schedule = Schedule.objects.get(name="nightly")
    assert schedule.source == "admin"
    assert schedule.next_tick is not None
    assert schedule.description == "cron '0 3 * * *' (Europe/Paris)"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"task_name": "nope"}, "No task is called"),
        ({"args": "[1, 2, 3]"}, "Wrong arguments"),
        ({"args": '{"label": 1}'}, "A JSON list"),
        ({"kwargs": "[]"}, "A JSON object"),
        ({"args": '["a\\u0000b"]'}, "NUL"),
        ({"cron": "0 25 * * *"}, "Bad cron expression"),
        ({"timezone": "Mars/Olympus"}, "Unknown time zone"),
        ({"cron": "", "interval_seconds": ""}, "not both"),
        ({"interval_seconds": "60"}, "not both"),
        ({"cron": "", "interval_seconds": "0.5"}, "at least one second"),
        ({"cron": "", "interval_seconds": "nan"}, ""),
        ({"cron": "", "interval_seconds": "1e308"}, "at most ten years"),
        ({"queue": "no spaces"}, "queue"),
        # Arguments no run could carry: refused when saved, not at every tick.
        ({"args": "[NaN]"}, "NaN is not JSON"),
        ({"args": "[-Infinity]"}, "-Infinity is not JSON"),
        ({"args": "[1e999]"}, "inf is not a JSON number"),
        ({"args": '["\\ud800"]'}, "lone surrogate"),
        ({"kwargs": '{"\\ud800": 1}'}, "lone surrogate"),
        ({"kwargs": '{"label": "a\\u0000b"}'}, "NUL character"),
        ({"args": "[" * 100_000}, "Nested more than 100 levels deep"),
        ({"args": "[" * 101 + "]" * 101}, "Nested more than 100 levels deep"),
        ({"args": "[" + "9" * 5000 + "]"}, "Exceeds the limit (4300 digits)"),
        ({"args": '["' + "x" * 1_100_000 + '"]'}, "over the limit of 1048576 bytes"),
        # Names whose zone depends on the host, or that are no IANA name.
        ({"timezone": "localtime"}, "Unknown time zone"),
        ({"timezone": "posixrules"}, "Unknown time zone"),
        ({"timezone": "Factory"}, "Unknown time zone"),
        ({"timezone": "/etc/localtime"}, "Unknown time zone"),
        ({"timezone": "../zoneinfo/UTC"}, "Unknown time zone"),
        ({"timezone": "posix/Europe/Paris"}, "Unknown time zone"),
        ({"timezone": "right/UTC"}, "Unknown time zone"),
        ({"timezone": "europe/paris"}, "Unknown time zone"),
        ({"cron": "", "interval_seconds": "60", "timezone": "localtime"}, "Unknown time zone"),
    ],
)
def test_the_admin_form_refuses_what_a_worker_could_not_run(changes, message):
    response = superuser().post(f"{ADMIN}add/", form(**changes))
    assert response.status_code == 200  # the form again, with the error
    assert message in response.content.decode()
    assert not Schedule.objects.exists()


def test_arguments_nested_a_hundred_levels_are_still_arguments():
    nested = '[{"a": ' * 49 + '["x"]' + "}]" * 49  # 99 levels, in the args list: 100
    response = superuser().post(f"{ADMIN}add/", form(args=f"[{nested}]"))
    assert response.status_code == 302, response.content.decode()[:3000]
    assert Schedule.objects.get(name="nightly").args[0][0]["a"][0]["a"][0]["a"]


def test_a_row_with_both_a_cron_and_an_interval_is_refused_on_enable_and_shown_as_invalid():
    """Written in SQL or by older code: the list and the API say it is invalid, enabling it
    says why (it stays off), disabling it works, and its form asks for one or the other."""
    schedule = Schedule.objects.create(name="both", task_name="record", interval_seconds=60)
    Schedule.objects.filter(pk=schedule.pk).update(cron="* * * * *", enabled=False, next_tick=None)
    client = superuser()
    page = client.get(ADMIN).content.decode()
    assert "invalid: A schedule has a cron expression or an interval in seconds" in page
    response = client.post(
        ADMIN, {"action": "enable_selected", "_selected_action": [schedule.pk]}, follow=True
    )
    said = "Schedule &#x27;both&#x27; not enabled: A schedule has a cron expression or an"
    assert said in response.content.decode()
    schedule.refresh_from_db()
    assert (schedule.enabled, schedule.next_tick) == (False, None)
    response = client.post(
        f"{ADMIN}{schedule.pk}/change/", form(name="both", interval_seconds="60")
    )
    assert response.status_code == 200
    assert "one, not both" in response.content.decode()
    listed = client_with("view_schedule").get(API).json()
    assert listed[0]["when"].startswith("invalid: ")


def test_a_declared_row_with_a_bad_stored_timing_cannot_be_enabled_in_the_admin():
    schedule = declared()
    Schedule.objects.filter(pk=schedule.pk).update(timezone="localtime", enabled=False)
    response = superuser().post(
        f"{ADMIN}{schedule.pk}/change/", {"missed": "once", "enabled": "on"}
    )
    assert response.status_code == 200
    assert "Unknown time zone" in response.content.decode()
    assert not Schedule.objects.get(pk=schedule.pk).enabled


@pytest.mark.parametrize("interval", ["NaN", "Infinity", "-Infinity"])
def test_a_float_json_cannot_say_is_shown_as_null_by_the_api(interval):
    schedule = Schedule.objects.create(name="odd", task_name="record", interval_seconds=60)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE django_tasks_schedule SET interval_seconds = %s::float8 WHERE id = %s",
            [interval, schedule.pk],
        )
    client = client_with("view_schedule", "view_taskrun")
    listed = client.get(API).json()
    assert (listed[0]["interval_seconds"], listed[0]["when"][:8]) == (None, "invalid:")
    assert client.get(f"{API}{schedule.pk}/").json()["interval_seconds"] is None
    assert superuser().get(ADMIN).status_code == 200
    assert client.get("/tasks/dashboard/").status_code == 200


def declared() -> Schedule:
    return Schedule.objects.create(
        name="new_year", task_name="new_year", cron="0 0 1 1 *", args=["x"], source="code"
    )


def test_declared_schedules_can_be_disabled_but_not_edited_or_deleted():
    schedule = declared()
    client = superuser()
    page = client.get(f"{ADMIN}{schedule.pk}/change/").content.decode()
    assert 'name="cron"' not in page  # read-only
    response = client.post(
        f"{ADMIN}{schedule.pk}/change/", {"missed": "once", "enabled": "", "cron": "* * * * *"}
    )
    assert response.status_code == 302
    schedule.refresh_from_db()
    assert (schedule.enabled, schedule.cron, schedule.next_tick) == (False, "0 0 1 1 *", None)
    assert client.get(f"{ADMIN}{schedule.pk}/delete/").status_code == 403
    client.post(
        ADMIN, {"action": "enable_selected", "_selected_action": [schedule.pk]}, follow=True
    )
    schedule.refresh_from_db()
    assert schedule.enabled
    assert schedule.next_tick is not None


def test_admin_pages_follow_model_permissions():
    schedule = declared()
    assert client_with().get(ADMIN).status_code == 403  # staff alone is not enough
    viewer = client_with("view_schedule")
    assert viewer.get(ADMIN).status_code == 200
    assert viewer.get(f"{ADMIN}{schedule.pk}/change/").status_code == 200
    assert viewer.post(f"{ADMIN}{schedule.pk}/change/", {"enabled": ""}).status_code == 403
    assert viewer.get(f"{ADMIN}add/").status_code == 403


def test_the_api_lists_schedules_for_those_who_may_see_them():
    schedule = declared()
    assert client_with("view_taskrun").get(API).status_code == 403
    client = client_with("view_schedule")
    listed = client.get(API).json()
    assert [s["name"] for s in listed] == ["new_year"]
    assert listed[0]["when"] == "cron '0 0 1 1 *' (UTC)"
    assert listed[0]["next_tick"] is not None
    assert client.get(f"{API}{schedule.pk}/").json()["task_name"] == "new_year"
    for odd in ["abc", "99999999999999999999999", "1%00", "-1", "0"]:
        assert client.get(f"{API}{odd}/").status_code == 404


def test_the_cli_lists_schedules():
    declared()
    out = StringIO()
    call_command("taskruns", "schedules", stdout=out)
    text = out.getvalue()
    assert "new_year" in text
    assert "cron '0 0 1 1 *' (UTC)" in text
    out = StringIO()
    call_command("taskruns", "schedules", "--json", stdout=out)
    rows = json.loads(out.getvalue())
    assert rows[0]["name"] == "new_year"
    assert rows[0]["next_tick"].startswith("20")


def test_the_dashboard_shows_schedules_to_those_who_may_see_them():
    declared()
    runs_only = client_with("view_taskrun").get("/tasks/dashboard/").content.decode()
    assert 'id="schedules"' not in runs_only
    both = client_with("view_taskrun", "view_schedule").get("/tasks/dashboard/").content.decode()
    assert 'id="schedules"' in both
    assert "new_year" in both
