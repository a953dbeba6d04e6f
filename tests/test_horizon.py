"""A transaction that holds its snapshot for long (VACUUM waits for it, the queue slows down)
is seen: by horizon.oldest_snapshot(), in the metrics, and as a warning on the dashboard."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.test import override_settings

from django_tasks.horizon import dead_rows, oldest_snapshot, snapshot_warning
from tests.taskapp.tasks import add

from .test_metrics import URL, samples

pytestmark = pytest.mark.django_db(transaction=True)

NAME = "nightly report <script>alert(1)</script>"


@pytest.fixture
def report(second_connection: Any) -> Any:
    """A real second session that opens a REPEATABLE READ transaction, reads the run table
    and stays idle in it, as a report query or a pg_dump does."""
    second_connection.execute("SELECT set_config('application_name', %s, false)", [NAME])
    second_connection.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    second_connection.execute("SELECT count(*) FROM django_tasks_taskrun").fetchone()
    time.sleep(1.2)
    return second_connection


def test_the_oldest_open_transaction_is_found_with_its_age_and_session(report):
    holder = oldest_snapshot()
    assert holder is not None
    assert holder.pid == report.info.backend_pid
    assert holder.seconds >= 1.0
    assert holder.state == "idle in transaction"
    assert holder.application_name == NAME
    report.execute("ROLLBACK")
    after = oldest_snapshot()
    assert after is None or after.pid != report.info.backend_pid


def test_the_warning_of_a_prepared_transaction_says_how_to_end_it(admin_client, monkeypatch):
    """Prepared transactions (two-phase commit) hold the horizon too; the servers of the tests
    allow none (max_prepared_transactions = 0), so the holder is given here."""
    from django_tasks import dashboard
    from django_tasks.horizon import Holder

    holder = Holder(pid=None, seconds=900.4, state="prepared transaction", application_name="tx-7")
    monkeypatch.setattr(dashboard, "snapshot_warning", lambda: holder)
    page = admin_client.get("/tasks/dashboard/").content.decode()
    assert "open for 900 s (prepared transaction “tx-7”)" in page
    assert "<code>ROLLBACK PREPARED</code>" in page


def test_the_metrics_give_the_age_and_the_dead_rows(report, admin_client):
    add.delay(1, 2)
    values = samples(admin_client.get(URL).content.decode())
    assert values[("django_tasks_oldest_snapshot_seconds", ())] >= 1.0
    tables = {labels[0][1] for name, labels in values if name == "django_tasks_dead_rows"}
    assert tables == {"django_tasks_taskrun", "django_tasks_taskrunstate"}
    assert {row.table for row in dead_rows()} == tables


def test_the_dashboard_warns_past_snapshot_warning_only(report, admin_client):
    page = admin_client.get("/tasks/dashboard/").content.decode()
    assert 'id="snapshot-warning"' not in page  # 1 s is under the default 300 s
    with override_settings(DJANGO_TASKS={"SNAPSHOT_WARNING": 1.0}):
        assert snapshot_warning() is not None
        page = admin_client.get("/tasks/dashboard/").content.decode()
        assert 'id="snapshot-warning"' in page
        assert f"session {report.info.backend_pid}, idle in transaction" in page
        assert "nightly report &lt;script&gt;alert(1)&lt;/script&gt;" in page  # inert
        assert "<script>alert" not in page
        report.execute("ROLLBACK")
        page = admin_client.get("/tasks/dashboard/").content.decode()
        assert f"session {report.info.backend_pid}," not in page
