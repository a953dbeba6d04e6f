"""The run list never counts every run its filters match (django_tasks.admin_paging)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from django_tasks.admin_paging import COUNT_CAP, CappedPaginator
from django_tasks.models import TaskRun
from tests.taskapp.tasks import add

pytestmark = pytest.mark.django_db

URL = reverse("admin:django_tasks_taskrun_changelist")


def test_the_count_stops_past_the_cap_and_the_list_says_more_match(admin_client, monkeypatch):
    from django.contrib import admin

    monkeypatch.setattr(CappedPaginator, "cap", 5)
    monkeypatch.setattr(admin.site._registry[TaskRun], "list_per_page", 2)
    for i in range(12):
        add.delay(i, i)
    with CaptureQueriesContext(connection) as captured:
        page = admin_client.get(URL).content.decode()
    counts = [q["sql"] for q in captured.captured_queries if "COUNT(" in q["sql"].upper()]
    assert counts, "the list counts what it shows"
    assert all("LIMIT 6" in sql for sql in counts), counts  # never the whole table ...
    assert not any("ORDER BY" in sql for sql in counts), counts  # ... nor sorted first
    assert 'id="count-capped"' in page
    assert "Counted up to 5 runs: more match." in page
    assert '?p=3"' in page  # pages for the 5 runs counted, 2 a page ...
    assert '?p=4"' not in page  # ... and no more
    assert page.count('name="_selected_action"') == 2


def test_under_the_cap_the_count_is_exact_and_nothing_is_said(admin_client):
    for i in range(3):
        add.delay(i, i)
    page = admin_client.get(URL, {"task_name__exact": add.name}).content.decode()
    assert 'id="count-capped"' not in page
    assert "3 task runs" in page
    paginator = CappedPaginator(TaskRun.objects.order_by("-id"), 50)
    assert (paginator.count, paginator.capped, paginator.num_pages) == (3, False, 1)
    assert COUNT_CAP == 10_000
