"""Prometheus metrics from the tables: staff or a token, the text format, the figures."""

from __future__ import annotations

import os
import signal
import socket
import time
import urllib.request

import pytest
from django.test import override_settings
from prometheus_client.parser import text_string_to_metric_families

from django_tasks.models import Worker as WorkerRow
from django_tasks.worker import Worker
from tests.taskapp.tasks import add, explode

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/tasks/metrics/"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_staff_or_token_only(client, admin_client):
    assert client.get(URL).status_code == 403
    with override_settings(DJANGO_TASKS={"METRICS_TOKEN": "s3cret"}):
        assert client.get(URL, HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
        assert client.get(URL, HTTP_AUTHORIZATION="Bearer s3cret").status_code == 200
    assert admin_client.get(URL).status_code == 200


def test_figures(admin_client):
    add.delay(1, 2)
    add.delay(2, 3)
    explode.delay("metrics")
    Worker(burst=True, handle_signals=False).run()
    add.apply_async((1, 1), queue="later")
    response = admin_client.get(URL)
    assert response["Content-Type"].startswith("text/plain")
    values = samples(response.content.decode())
    assert values[("django_tasks_runs", (("state", "COMPLETED"), ("task", "add")))] == 2
    assert values[("django_tasks_runs", (("state", "OTHER"), ("task", "add")))] == 1
    assert values[("django_tasks_runs", (("state", "FAILED"), ("task", "explode")))] == 1
    assert values[("django_tasks_queue_ready", (("queue", "later"),))] == 1
    assert values[("django_tasks_queue_oldest_ready_seconds", (("queue", "later"),))] >= 0
    assert ("django_tasks_run_duration_seconds", (("quantile", "0.95"), ("task", "add"))) in values
    assert values[("django_tasks_workers", ())] == 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return samples(response.read().decode())


def _until(check, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
            if value:
                return value
        except OSError:  # the server is not listening yet
            pass
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.1)


def test_worker_serves_pool_and_table_metrics(start_worker):
    port = _free_port()
    worker = start_worker("--concurrency", "2", "--metrics-port", str(port))
    futures = [add.delay(i, 1) for i in range(5)]
    assert [f.result(timeout=30) for f in futures] == [1, 2, 3, 4, 5]
    got = _until(lambda: (s := _scrape(port))[("django_tasks_worker_processes", ())] == 2 and s)
    assert got[("django_tasks_worker_runs_processed_total", ())] == 5
    assert got[("django_tasks_worker_processes_replaced_total", ())] == 0
    assert got[("django_tasks_runs", (("state", "COMPLETED"), ("task", "add")))] == 5
    child = WorkerRow.objects.filter(stopped__isnull=True).exclude(pid=worker.pid).first()
    assert child is not None
    os.kill(child.pid, signal.SIGKILL)  # the supervisor replaces it; its count is kept
    got = _until(
        lambda: (
            (s := _scrape(port))[("django_tasks_worker_processes_replaced_total", ())] == 1
            and s[("django_tasks_worker_processes", ())] == 2
            and s
        )
    )
    assert got[("django_tasks_worker_runs_processed_total", ())] == 5
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(15) == 0


def test_metrics_port_is_checked(capsys):
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="between 1 and 65535"):
        call_command("runtaskworker", "--metrics-port", "70000")
