"""Prometheus metrics from the tables: staff or a token, the text format, the figures."""

from __future__ import annotations

import pytest
from django.test import override_settings
from prometheus_client.parser import text_string_to_metric_families

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
