"""The demo site: the form enqueues inside the view, the run list refreshes."""

import pytest
from django.test import TestCase
from django.urls import reverse

from django_tasks import flush
from django_tasks.models import TaskRun
from django_tasks.testing import captured_runs, run_ready
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
    # How a project tests its own views: capture what the view enqueued, then run it here
    # (django_tasks.testing; see docs/quickstart.md "Testing").
    with captured_runs() as runs:
        client.post(reverse("index"), {"job": "bad", "email": "", "count": 1})
        client.post(reverse("index"), {"job": "report", "email": "a@example.com", "count": 1})
    assert runs.task_names == ["resize_image", "send_report"]
    assert run_ready() == 2
    bad, report = (TaskRun.objects.get(pk=run.id) for run in runs)
    assert bad.state_type == "FAILED"
    assert "scale must be in (0, 1]" in bad.state_message
    assert runs[1].result(timeout=0)["to"] == "a@example.com"
    assert report.state_type == "COMPLETED"


class DemoViewTestCase(TestCase):
    """The same with Django's TestCase: the view's runs are run inside the test's
    transaction and roll back with it."""

    def test_the_form_enqueues_a_resize_that_runs(self):
        with captured_runs() as runs:
            response = self.client.post(
                reverse("index"), {"job": "resize", "email": "", "count": 1}
            )
        assert response.status_code == 302
        assert runs.task_names == ["resize_image"]
        assert run_ready() == 1
        assert runs[0].result(timeout=0) == {"width": 160, "height": 120}


def test_empty_list(client):
    assert "No runs yet" in client.get(reverse("recent-runs")).content.decode()


@pytest.mark.slow
def test_gallery_pipeline_fans_out_and_gathers_with_visible_dependencies(client):
    client.post(reverse("index"), {"job": "pipeline", "email": "", "count": 1})
    Worker(burst=True, handle_signals=False).run()
    flush()
    gallery = TaskRun.objects.get(task_name="build_gallery")
    assert (gallery.name, gallery.state_type) == ("gallery-6", "COMPLETED")
    assert gallery.result_preview == {"images": 6, "bytes": 6 * 2048 + 15}
    thumbnails = TaskRun.objects.filter(task_name="make_thumbnail", origin="submit")
    assert thumbnails.count() == 6
    sheet = TaskRun.objects.get(task_name="contact_sheet")
    upstreams = set(sheet.upstream_edges.values_list("upstream_id", flat=True))
    assert upstreams == set(thumbnails.values_list("id", flat=True))
    assert list(gallery.logs.values_list("message", flat=True)) == [
        "submitted 6 thumbnails",
        f"contact sheet of {6 * 2048 + 15} bytes",
    ]
    fragment = client.get(reverse("recent-runs")).content.decode()
    assert "6 upstream runs" in fragment
    assert "Submitted (.submit/.map)" in fragment


def test_recent_runs_are_listed_newest_first(client):
    from tests.taskapp.tasks import add

    ids = [str(add.delay(i, i).id) for i in range(25)]
    fragment = client.get(reverse("recent-runs")).content.decode()
    listed = sorted((fragment.index(i), i) for i in ids if i in fragment)
    assert [run_id for _, run_id in listed] == ids[::-1][:20]  # the 20 newest, newest first
