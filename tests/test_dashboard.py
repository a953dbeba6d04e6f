"""The dashboard: staff only, linked from the admin, charts drawn as SVG on the server."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from django_tasks.models import TaskRun
from django_tasks.pages.links import task_url
from django_tasks.worker import Worker
from tests.taskapp.tasks import add, explode, slow_echo

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/tasks/dashboard/"


def test_staff_only(client):
    response = client.get(URL)
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]
    User.objects.create_user("plain", password="pw")
    client.login(username="plain", password="pw")
    assert client.get(URL).status_code == 302


def test_shows_charts_queues_and_tasks(admin_client):
    for i in range(3):
        add.delay(i, i)
    explode.delay("dashboard")
    slow_echo.delay("s", 0.05)
    Worker(burst=True, handle_signals=False).run()
    add.apply_async((9, 9), queue="later")
    page = admin_client.get(URL).content.decode()
    assert page.count('<svg class="djt-chart"') == 3
    throughput = page[page.index('id="throughput"') : page.index('id="scatter"')]
    assert re.search(r'<span class="djt-figure"[^>]*>4</span> completed', throughput)
    assert re.search(r'<span class="djt-figure"[^>]*>1</span> failed', throughput)
    assert re.search(r"\d\d:\d\d: [1-4] completed</title>", throughput)  # their slot(s)
    states = page[page.index('id="states"') : page.index('id="queues"')]
    assert ">COMPLETED<" in states
    assert ">SCHEDULED<" in states
    queues = page[page.index('id="queues"') : page.index('id="workers"')]
    assert "<td>later</td><td>1</td>" in queues
    assert "No live worker." in page  # the burst worker stopped
    failing = page[page.index('id="failing"') :]
    assert f'<a href="{task_url("explode")}">explode</a>' in failing
    assert "failed runs</a>)</td><td>1</td><td>100 %" in failing
    # Runs over time: a dot per started run (the one waiting in "later" has not started).
    scatter = page[page.index('id="scatter"') : page.index('id="states"')]
    dots = re.findall(r'<circle [^>]*data-state="(\w+)"', scatter)
    assert sorted(dots) == ["COMPLETED"] * 4 + ["FAILED"]
    for run in TaskRun.objects.filter(started__isnull=False):
        assert reverse("admin:django_tasks_taskrun_change", args=[run.id]) in scatter
    assert "slow_echo" in page[page.index('id="slowest"') : page.index('id="failing"')]
    assert '<meta http-equiv="refresh" content="10">' in page


def test_linked_from_the_admin_and_windows(admin_client):
    changelist = admin_client.get(reverse("admin:django_tasks_taskrun_changelist"))
    assert f'href="{URL}"' in changelist.content.decode()
    for window in ("24h", "7d", "nonsense"):
        assert admin_client.get(URL + "?window=" + window).status_code == 200
