"""Artifacts: checked at the call (nothing written on a mistake), attached to their run, kept by
key across runs, shown rendered and sanitized in the admin, the dashboard and the API to whoever
may view artifacts, and kept or removed with their run by the retention purge."""

from __future__ import annotations

import math
import time
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from django_tasks import (
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
    task,
)
from django_tasks.artifacts import render
from django_tasks.artifacts.render import render_link
from django_tasks.models import Artifact, TaskRun
from django_tasks.retention import purge
from tests.taskapp.tasks import attach_artifacts

from .conftest import client_with, drain

pytestmark = pytest.mark.django_db(transaction=True)

API = "/tasks/api/artifacts/"


@task
def attaches(kind: str, value: Any, key: Any = None) -> str:
    makers: dict[str, Any] = {
        "markdown": create_markdown_artifact,
        "table": create_table_artifact,
        "link": create_link_artifact,
    }
    try:
        makers[kind](value, key=key)
    except (TypeError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return "kept"


@pytest.mark.parametrize(
    ("kind", "value", "key", "error"),
    [
        ("markdown", b"bytes", None, "TypeError"),
        ("markdown", "x" * 1_000_001, None, "ValueError"),
        ("markdown", "ok", "Not A Key", "ValueError"),
        ("markdown", "ok", "a\x00b", "ValueError"),
        ("markdown", "ok", "k" * 256, "ValueError"),
        ("table", [{"n": math.nan}], None, "ValueError"),
        ("table", [{"n": math.inf}], None, "ValueError"),
        ("table", "not rows", None, "TypeError"),
        ("table", [1, 2], None, "TypeError"),
        ("table", ["ab"], None, "TypeError"),
        ("table", {"a": [1, 2], "b": [1]}, None, "ValueError"),
        ("link", "javascript:alert(1)", None, "ValueError"),
        ("link", "data:text/html,<script>", None, "ValueError"),
        ("link", "  JAVASCRIPT:alert(1)", None, "ValueError"),
    ],
)
def test_bad_input_is_refused_at_the_call_and_nothing_is_written(kind, value, key, error):
    assert attaches(kind, value, key).startswith(error)
    assert not Artifact.objects.exists()


def test_artifacts_attach_to_their_run_and_keys_keep_their_versions():
    first = attach_artifacts.delay("first")
    second = attach_artifacts.delay("second")
    drain()
    assert first.result(timeout=5) == "first"
    assert Artifact.objects.filter(run_id=first.id).count() == 3
    versions = Artifact.objects.filter(key="nightly-report").order_by("-created")
    assert [v.run_id for v in versions] == [second.id, first.id]
    assert versions[0].data.endswith("second")
    table = Artifact.objects.get(run_id=first.id, type="table")
    assert table.data == {"columns": ["name", "n"], "rows": [["<i>row</i>", 1], ["two", 2.5]]}
    # Outside a run: an artifact of its own; NUL in the text kept escaped; a dict of columns.
    standalone = create_table_artifact({"a": [1, 2], "b": ["x\x00", None]}, key="by-columns")
    row = Artifact.objects.get(pk=standalone)
    assert row.run_id is None
    assert row.data == {"columns": ["a", "b"], "rows": [[1, "x\\x00"], [2, None]]}
    listed = create_table_artifact([[1, "one"], [2, "two"]])
    assert Artifact.objects.get(pk=listed).data == {"columns": [], "rows": [[1, "one"], [2, "two"]]}
    assert create_markdown_artifact("plain", description="about it")


def test_the_admin_shows_artifacts_sanitized_to_whoever_may_view_them():
    future = attach_artifacts.delay("admin")
    drain()
    url = f"/admin/django_tasks/taskrun/{future.id}/change/"
    allowed = client_with("view_taskrun", "view_artifact").get(url).content.decode()
    assert "<h1>Nightly report</h1>" in allowed  # rendered
    # Raw HTML shown as text, never as tags; the javascript: link is no link.
    assert "&lt;script&gt;alert('script')&lt;/script&gt;" in allowed
    assert "&lt;img src=x onerror=alert('img')&gt;" in allowed
    for hostile in ("<script>alert", "<img", "<b onclick", 'href="javascript', "href='javascript"):
        assert hostile not in allowed, hostile
    assert 'href="https://example.com/" rel="noopener noreferrer nofollow"' in allowed
    assert "<th>name</th><th>n</th>" in allowed  # the columns in the task's order
    assert "<td>&lt;i&gt;row&lt;/i&gt;</td>" in allowed
    assert 'href="https://example.com/a?b=1&amp;c=2"' in allowed
    assert "&lt;b&gt;the link&lt;/b&gt;" in allowed
    # view_taskrun alone: the run, not its artifacts (Django's model permissions).
    runs_only = client_with("view_taskrun").get(url).content.decode()
    assert "Nightly report" not in runs_only
    artifact = Artifact.objects.get(run_id=future.id, type="markdown")
    own = client_with("view_artifact").get(f"/admin/django_tasks/artifact/{artifact.id}/change/")
    assert own.status_code == 200
    assert "<h1>Nightly report</h1>" in own.content.decode()
    assert client_with().get("/admin/django_tasks/artifact/").status_code == 403


def test_the_api_lists_and_filters_artifacts_and_refuses_odd_input():
    first = attach_artifacts.delay("one")
    second = attach_artifacts.delay("two")
    drain()
    viewer = client_with("view_artifact")
    assert client_with("view_taskrun").get(API).status_code == 403
    body = viewer.get(API).json()
    assert len(body["results"]) == 6
    latest = viewer.get(API, {"latest": "1"}).json()["results"]
    assert [(a["key"], a["run"]) for a in latest] == [("nightly-report", str(second.id))]
    assert "<script>" not in latest[0]["html"]
    assert "&lt;script&gt;" in latest[0]["html"]
    assert latest[0]["data"].endswith("two")  # the stored text, for API clients
    of_run = viewer.get(API, {"run": str(first.id)}).json()["results"]
    assert {a["type"] for a in of_run} == {"markdown", "table", "link"}
    keyed = viewer.get(API, {"key": "nightly-report"}).json()["results"]
    assert [a["run"] for a in keyed] == [str(second.id), str(first.id)]
    one = viewer.get(f"{API}{keyed[0]['id']}/").json()
    assert one["id"] == keyed[0]["id"]
    for params in (
        {"run": "nope"},
        {"run": "\x00"},
        {"key": "Bad Key"},
        {"key": "\x00"},
        {"latest": "yes"},
        {"page_size": "0"},
        {"page_size": "99999999999999999999"},
    ):
        assert viewer.get(API, params).status_code == 400, params
    assert viewer.get(API, {"cursor": "garbage\x00"}).status_code == 404
    for odd in ("nope", "%00", "1" * 200):
        assert viewer.get(f"{API}{odd}/").status_code == 404


def test_the_dashboard_shows_the_latest_artifacts_to_whoever_may_view_them():
    attach_artifacts.delay("dash")
    drain()
    viewer = client_with("view_taskrun", "view_artifact")
    page = viewer.get("/tasks/dashboard/").content.decode()
    assert "Latest artifacts" in page
    assert "<h1>Nightly report</h1>" in page
    assert "<script>alert" not in page
    runs_only = client_with("view_taskrun").get("/tasks/dashboard/").content.decode()
    assert "Latest artifacts" not in runs_only


def test_the_purge_removes_unkeyed_artifacts_with_their_run_and_keeps_keyed_ones():
    future = attach_artifacts.delay("old")
    drain()
    long_ago = timezone.now() - timedelta(days=60)
    TaskRun.objects.filter(pk=future.id).update(finished=long_ago, created=long_ago)
    purge(timedelta(days=30))
    assert not TaskRun.objects.filter(pk=future.id).exists()
    kept = Artifact.objects.get()
    assert (kept.key, kept.run_id) == ("nightly-report", None)


def test_a_stored_link_with_another_scheme_is_shown_as_text():
    shown = render_link({"url": "javascript:alert(1)", "text": "x"})
    assert "<a" not in shown
    assert "javascript:alert(1)" in shown  # inside <code>, escaped: text, not a link


def markdown_table(size: int) -> str:
    """A markdown table of about ``size`` characters (a report a task might attach)."""
    lines = ["| id | name | value | note |", "|---|---|---|---|"]
    total, row = 0, 0
    while total < size:
        lines.append(f"| {row} | name-{row} | {row * 3.14:.2f} | some *note* on {row} |")
        total += len(lines[-1]) + 1
        row += 1
    return "\n".join(lines)


def test_a_600_kb_markdown_table_is_rendered_in_part_and_once_on_every_page(monkeypatch):
    """Before: rendered whole on every view, seconds for each of the API, the admin and the
    dashboard. Now at most MAX_MARKDOWN_CHARS are rendered (with a note that says so), and
    the same text is rendered once. Each page is timed with a cold cache (printed)."""
    big = markdown_table(600_000)
    future = attaches.delay("markdown", big, "big-report")
    drain()
    assert future.result(timeout=1) == "kept"
    artifact = Artifact.objects.get(key="big-report")
    rendered: list[int] = []
    real = render._markdown.render

    def counted(text: str) -> str:
        rendered.append(len(text))
        return str(real(text))

    monkeypatch.setattr(render._markdown, "render", counted)
    client = client_with("view_taskrun", "view_artifact")
    pages = {
        "API detail": f"{API}{artifact.id}/",
        "API list": API,
        "admin artifact": f"/admin/django_tasks/artifact/{artifact.id}/change/",
        "admin run": f"/admin/django_tasks/taskrun/{future.id}/change/",
        "dashboard": "/tasks/dashboard/",
    }
    seconds = {}
    for name, url in pages.items():
        render._clean_html.cache_clear()  # as the first view in a new process
        started = time.perf_counter()
        response = client.get(url)
        seconds[name] = time.perf_counter() - started
        assert response.status_code == 200, name
        assert "Shown: the first 9,9" in response.content.decode(), name
        assert "of 600,0" in response.content.decode(), name
    print({name: f"{s * 1000:.0f} ms" for name, s in seconds.items()})
    assert rendered
    assert max(rendered) <= render.MAX_MARKDOWN_CHARS
    assert max(seconds.values()) < 1.5, seconds  # ~0.1 s each; several seconds before
    assert client.get(f"{API}{artifact.id}/").json()["data"] == big  # all of it, as data
    count = len(rendered)
    client.get(f"{API}{artifact.id}/")
    client.get("/tasks/dashboard/")
    assert len(rendered) == count  # rendered once, then kept


def test_a_huge_table_is_rendered_in_part_with_a_note():
    rows = [{"n": i, "text": "y" * 1000} for i in range(15_000)]
    html = render.render_table(
        {"columns": ["n", "text"], "rows": [[r["n"], r["text"]] for r in rows]}
    )
    assert html.count("<tr>") == render.MAX_ROWS + 1  # the header and 200 rows
    assert "Shown: the first 200 of 15,000 rows." in html
    assert f"<td>{'y' * render.MAX_CELL_CHARS}…</td>" in html
    wide = render.render_table({"columns": [], "rows": [list(range(120))]})
    assert wide.count("<td>") == render.MAX_COLUMNS
    assert "Shown: the first 50 of 120 columns." in wide
    assert "Shown" not in render.render_table({"columns": ["a"], "rows": [[1], [2]]})


#: Artifact data SQL (or older code) wrote, which the model never would: every page shows it.
ODD_DATA = {
    "table-columns-a-number": ("table", '{"columns": 5, "rows": [[1]]}'),
    "table-rows-a-number": ("table", '{"columns": ["a"], "rows": 5}'),
    "table-rows-a-string": ("table", '{"columns": ["a"], "rows": "abc"}'),
    "table-columns-an-object": ("table", '{"columns": {"a": 1}, "rows": [[1]]}'),
    "table-rows-nested-5000-deep": (
        "table",
        '{"rows": ' + "[" * 5000 + "]" * 5000 + "}",
    ),
    "table-a-5000-digit-cell": ("table", '{"rows": [[' + "9" * 5000 + "]]}"),
    "link-url-a-list": ("link", '{"url": ["https://x"], "text": "t"}'),
    "markdown-a-number": ("markdown", "12"),
}


@pytest.mark.parametrize(("kind", "data"), ODD_DATA.values(), ids=ODD_DATA.keys())
def test_no_artifact_row_makes_a_page_fail(kind, data):
    from django.db import connection

    from tests.taskapp.tasks import add

    run = add.delay(1, 2)
    artifact = Artifact.objects.create(key="k", type=kind, data={}, run_id=run.id)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE django_tasks_artifact SET data = %s::jsonb", [data])
    from django.contrib.auth.models import User
    from django.test import Client

    browser = Client(raise_request_exception=False)
    browser.force_login(User.objects.create_superuser("root", "r@example.com", "pw"))
    pages = {
        "admin list": "/admin/django_tasks/artifact/",
        "admin page": f"/admin/django_tasks/artifact/{artifact.pk}/change/",
        "run page": f"/admin/django_tasks/taskrun/{run.id}/change/",
        "api list": "/tasks/api/artifacts/",
        "api detail": f"/tasks/api/artifacts/{artifact.pk}/",
        "dashboard": "/tasks/dashboard/",
    }
    statuses = {name: browser.get(url).status_code for name, url in pages.items()}
    assert set(statuses.values()) == {200}, statuses


def test_a_table_of_lone_values_is_shown_as_one_cell_each():
    html = render.render_table({"columns": 5, "rows": "abc"})
    assert "<th>5</th>" in html
    assert "<td>abc</td>" in html
    html = render.render_table({"columns": None, "rows": [[1, 2]]})
    assert "<thead>" not in html
    assert "<td>1</td><td>2</td>" in html
