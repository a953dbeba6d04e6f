"""Red team: artifact rows whose data was written by SQL (or by older code), against every
page that renders artifacts: render_artifact() promises "whatever the row holds"."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client

from django_tasks.models import Artifact
from tests.taskapp.tasks import add

pytestmark = pytest.mark.django_db(transaction=True)

DEFECT = pytest.mark.xfail(strict=True, reason="red team: render_table() on a non-list: a 500")
DATA = [
    pytest.param(
        "table", '{"columns": 5, "rows": [[1]]}', id="table-columns-a-number", marks=DEFECT
    ),
    pytest.param("table", '{"columns": ["a"], "rows": 5}', id="table-rows-a-number", marks=DEFECT),
    pytest.param("table", '{"columns": ["a"], "rows": "abc"}', id="table-rows-a-string"),
    pytest.param("link", '{"url": ["https://x"], "text": "t"}', id="link-url-a-list"),
    pytest.param("markdown", "12", id="markdown-a-number"),
]


@pytest.mark.parametrize(("kind", "data"), DATA)
def test_no_artifact_row_makes_a_page_fail(kind, data):
    run = add.delay(1, 2)
    artifact = Artifact.objects.create(key="k", type=kind, data={}, run_id=run.id)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE django_tasks_artifact SET data = %s::jsonb", [data])
    browser = Client(raise_request_exception=False)
    browser.force_login(User.objects.create_superuser("root", "r@example.com", "pw"))
    pages = {
        "admin list": browser.get("/admin/django_tasks/artifact/").status_code,
        "admin page": browser.get(
            f"/admin/django_tasks/artifact/{artifact.pk}/change/"
        ).status_code,
        "run page": browser.get(f"/admin/django_tasks/taskrun/{run.id}/change/").status_code,
        "api list": browser.get("/tasks/api/artifacts/").status_code,
        "api detail": browser.get(f"/tasks/api/artifacts/{artifact.pk}/").status_code,
        "dashboard": browser.get("/tasks/dashboard/").status_code,
    }
    print(kind, data, pages)
    assert all(status < 500 for status in pages.values()), pages
