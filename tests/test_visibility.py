"""A forgotten ``--queues`` does not fail silently: the worker says which queues it serves,
and the dashboard, the API and ``taskruns`` flag queues with ready runs that no live worker
serves. The demo says which database it uses; ``embeddedpg stop`` says what it found."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from django_tasks.models import Worker
from tests.taskapp.tasks import add

from .conftest import wait_until, worker_log

pytestmark = pytest.mark.django_db(transaction=True)


def _worker(name: str, queues: list[str], *, heartbeat_age: float = 0.0) -> Worker:
    now = timezone.now()
    return Worker.objects.create(
        name=name,
        host="h",
        pid=1,
        queues=queues,
        concurrency=1,
        started=now,
        last_heartbeat=now - timedelta(seconds=heartbeat_age),
    )


@pytest.fixture
def forgotten_queue():
    """Ready runs on 'default' and 'forgotten'; live workers serve 'default' only (a dead
    one served 'forgotten', and does not count)."""
    add.delay(1, 1)
    add.apply_async(args=(2, 2), queue="forgotten")
    add.apply_async(args=(3, 3), queue="forgotten")
    _worker("alive", ["default", "emails"])
    _worker("silent", ["forgotten"], heartbeat_age=3600)


def test_the_api_flags_a_queue_no_live_worker_serves(forgotten_queue, admin_client):
    stats = admin_client.get("/tasks/api/stats/?window=1h").json()
    queues = {q["queue"]: q for q in stats["queues"]}
    assert queues["default"]["workers"] == 1
    assert queues["default"]["unserved"] is False
    assert queues["forgotten"]["ready"] == 2
    assert queues["forgotten"]["workers"] == 0
    assert queues["forgotten"]["unserved"] is True
    assert stats["live_workers"] == 1


def test_the_dashboard_flags_it(forgotten_queue, admin_client):
    page = admin_client.get("/tasks/dashboard/").content.decode()
    row = page[page.index("<td>forgotten</td>") :].split("</tr>")[0]
    assert "none serves this queue" in row
    default_row = page[page.index("<td>default</td>") :].split("</tr>")[0]
    assert "none serves this queue" not in default_row


def test_taskruns_lists_queues_and_warns(forgotten_queue):
    out, err = io.StringIO(), io.StringIO()
    call_command("taskruns", "queues", stdout=out, stderr=err)
    assert "forgotten" in out.getvalue()
    assert "queue 'forgotten' has 2 ready run(s) and no live worker serves it" in err.getvalue()
    assert "'default'" not in err.getvalue()
    out, err = io.StringIO(), io.StringIO()
    call_command("taskruns", "ls", stdout=out, stderr=err)
    assert "queue 'forgotten'" in err.getvalue()
    out = io.StringIO()
    call_command("taskruns", "queues", "--json", stdout=out)
    rows = {row["queue"]: row for row in json.loads(out.getvalue())}
    assert rows["forgotten"]["unserved"] is True
    assert rows["default"]["unserved"] is False


def test_no_warning_when_every_queue_is_served():
    add.delay(1, 1)
    _worker("alive", ["default"])
    err = io.StringIO()
    call_command("taskruns", "queues", stdout=io.StringIO(), stderr=err)
    assert err.getvalue() == ""


@pytest.mark.slow
def test_the_worker_says_which_queues_it_serves_at_start(start_worker):
    worker = start_worker("--queues", "emails,default", "--concurrency", "1")
    wait_until(lambda: "on queues" in worker_log(worker), timeout=60)
    assert "starting 1 workers on queues emails, default (in this order)" in worker_log(worker)


def test_embeddedpg_stop_says_when_nothing_was_running(monkeypatch, tmp_path):
    from demo_project import database
    from demo_project.demo.management.commands import embeddedpg

    monkeypatch.setattr(database, "EMBEDDED_DATA_DIR", tmp_path)
    monkeypatch.setattr(embeddedpg, "EMBEDDED_DATA_DIR", tmp_path)
    out = io.StringIO()
    call_command("embeddedpg", "stop", stdout=out)
    assert out.getvalue().strip() == (
        f"No embedded PostgreSQL server was running (data directory {tmp_path})."
    )


def test_the_demo_says_which_database_it_uses(monkeypatch):
    from demo_project import database

    monkeypatch.setenv("DATABASE_URL", "postgres://u@db.example:5432/shop")
    assert database.describe_database() == "Database: shop on db.example (DATABASE_URL)."
    monkeypatch.delenv("DATABASE_URL")
    monkeypatch.setattr(database, "embedded_status", "already running: reused")
    text = database.describe_database()
    assert "embedded PostgreSQL (already running: reused)" in text
    assert str(database.EMBEDDED_DATA_DIR) in text
    assert "embeddedpg stop" in text
