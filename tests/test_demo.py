"""The demo site: the form enqueues inside the view, the run list refreshes."""

import pytest
from django.urls import reverse

from django_tasks.models import TaskRun
from django_tasks.worker import Worker

pytestmark = pytest.mark.django_db(transaction=True)


def test_form_enqueues_runs_and_list_shows_them(client, settings):
    response = client.post(reverse("index"), {"job": "resize", "email": "", "count": 2})
    assert response.status_code == 302
    assert TaskRun.objects.filter(task_name="resize_image", state_type="SCHEDULED").count() == 2
    client.post(reverse("index"), {"job": "bad", "email": "", "count": 1})
    client.post(reverse("index"), {"job": "report", "email": "a@example.com", "count": 1})
    fragment = client.get(reverse("recent-runs")).content.decode()
    assert fragment.count("Scheduled") == 4
    page = client.get(reverse("index")).content.decode()
    assert "Enqueue" in page
    assert "resize_image" in page


@pytest.mark.slow
def test_demo_tasks_run(client):
    client.post(reverse("index"), {"job": "bad", "email": "", "count": 1})
    Worker(burst=True, handle_signals=False).run()
    run = TaskRun.objects.get()
    assert run.state_type == "FAILED"
    assert "scale must be in (0, 1]" in run.state_message


def test_empty_list(client):
    assert "No runs yet" in client.get(reverse("recent-runs")).content.decode()
