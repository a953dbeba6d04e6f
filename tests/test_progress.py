"""set_progress(): validated at the call, throttled, shown while the run is RUNNING in the API,
the admin, the dashboard and the CLI, and kept when the run ends (real PostgreSQL, a real
worker subprocess)."""

from __future__ import annotations

import json
import math
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from django.test import Client

from django_tasks import Progress, set_progress, task
from django_tasks.context import MissingContextError
from django_tasks.models import TaskRun
from django_tasks.progress import INTERVAL, ProgressWriter, progress_html
from django_tasks.recorder import flush
from tests.taskapp.tasks import chatty_progress, with_progress

from .conftest import drain, wait_for_live_workers, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def viewer() -> Client:
    user = User.objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename="view_taskrun"))
    client = Client()
    client.force_login(user)
    return client


@task
def checks_its_input(done: Any, total: Any = None, message: Any = "") -> str:
    try:
        set_progress(done, total, message)
    except (TypeError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return "kept"


@pytest.mark.parametrize(
    ("done", "total", "message", "error"),
    [
        (math.nan, None, "", "ValueError"),
        (math.inf, 10, "", "ValueError"),
        (1, math.inf, "", "ValueError"),
        (-1, None, "", "ValueError"),
        (1, 0, "", "ValueError"),
        (True, None, "", "TypeError"),
        ("3", None, "", "TypeError"),
        (1, None, b"bytes", "TypeError"),
        (10**400, None, "", "ValueError"),
    ],
)
def test_bad_values_are_refused_at_the_call_and_nothing_is_kept(done, total, message, error):
    assert checks_its_input(done, total, message).startswith(error)
    flush()
    assert TaskRun.objects.get(task_name="checks_its_input").progress is None


def test_outside_a_run_set_progress_says_so():
    with pytest.raises(MissingContextError):
        set_progress(1, 2)


def test_an_inline_run_keeps_its_last_value_and_a_nul_in_the_message_is_escaped():
    assert with_progress(3, 0, message="a\x00b") == 3
    flush()
    run = TaskRun.objects.get(task_name="with_progress")
    assert run.progress == {"done": 3, "total": 3, "message": "a\\x00b 3"}


def test_a_submitted_run_gives_its_progress_to_its_future():
    future = with_progress.submit(4, 0.01)
    assert future.result(timeout=30) == 4
    assert future.progress == Progress(4, 4, "step 4")
    flush()
    assert TaskRun.objects.get(pk=future.id).progress == {
        "done": 4,
        "total": 4,
        "message": "step 4",
    }


def test_writes_are_throttled_and_the_last_value_is_written():
    writes: list[int] = []
    original = ProgressWriter._write

    def counting(self: ProgressWriter, due: Any) -> None:
        writes.append(len(due))
        original(self, due)

    ProgressWriter._write = counting  # type: ignore[method-assign]
    try:
        future = chatty_progress.delay(10_000)
        drain()
    finally:
        ProgressWriter._write = original  # type: ignore[method-assign]
    assert future.result(timeout=5) == 10_000
    # 10,001 calls; the thread wrote at most a few times (one per INTERVAL), the run's end once.
    assert len(writes) <= 3, writes
    assert future.progress == Progress(10_000, 10_000, "done")


def test_progress_shows_while_the_run_is_running_and_stays_after(start_worker):
    start_worker()
    wait_for_live_workers(1)
    future = with_progress.delay(12, 0.25, message="<script>alert(1)</script>")
    client = viewer()
    url = f"/tasks/api/runs/{future.id}/"

    def partial() -> Any:
        body = client.get(url).json()
        progress = body["progress"]
        running = body["state_type"] == "RUNNING"
        return running and progress and 0 < progress["done"] < 12 and body

    body = wait_until(partial, 30)
    assert body["progress"]["total"] == 12
    page = client.get(f"/admin/django_tasks/taskrun/{future.id}/change/").content.decode()
    assert '<progress value="' in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # the task's text, escaped
    assert "<script>alert(1)" not in page
    listing = client.get("/admin/django_tasks/taskrun/").content.decode()
    assert 'max="12"' in listing
    User.objects.filter(username="viewer").update(is_superuser=True)
    dashboard = client.get("/tasks/dashboard/").content.decode()
    assert "Running now" in dashboard
    assert 'max="12"' in dashboard
    out = StringIO()
    call_command("taskruns", "logs", str(future.id), "--follow", stdout=out)
    assert "progress 12/12 (100 %)" in out.getvalue()
    assert future.result(timeout=30) == 12
    assert client.get(url).json()["progress"] == {
        "done": 12,
        "total": 12,
        "message": "<script>alert(1)</script> 12",
    }
    assert future.progress == Progress(12, 12, "<script>alert(1)</script> 12")


def test_progress_html_copes_with_any_stored_value():
    assert progress_html(None) == "-"
    assert progress_html({"done": "x"}) == "-"  # a value it cannot be: nothing shown
    assert progress_html({"done": 5, "total": None, "message": "<b>"}) == (
        '<span class="djt-progress">5 &lt;b&gt;</span>'
    )
    assert Progress(5, 10).percent == 50
    assert Progress(15, 10).fraction == 1.0
    assert json.dumps(Progress(1, 2, "x").as_json()) == '{"done": 1, "total": 2, "message": "x"}'
    assert INTERVAL <= 0.5  # "a few writes a second"
