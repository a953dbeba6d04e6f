"""The read-only admin: list, filters, search, run page; payloads are never unpickled."""

import re
import uuid
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from django_tasks import flush, serializers
from django_tasks.models import Artifact, TaskRun, TaskRunLog
from django_tasks.worker import Worker
from tests.taskapp.tasks import add, chatty, explode

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def runs(monkeypatch):
    ok = add.delay(1, 2)
    bad = explode.delay("admin sees this")
    waiting = add.apply_async((5, 5), queue="other")
    Worker(burst=True, handle_signals=False).run()

    def refuse(*args, **kwargs):
        raise AssertionError("the admin must never unpickle a payload")

    monkeypatch.setattr(serializers, "loads", refuse)
    monkeypatch.setattr("django_tasks.futures.loads", refuse)
    return ok, bad, waiting


def test_list_filters_and_search(admin_client, runs):
    ok, bad, waiting = runs
    url = reverse("admin:django_tasks_taskrun_changelist")
    page = admin_client.get(url).content.decode()
    for future in runs:
        assert str(future.id) in page  # in the link to the run page
        assert f">{str(future.id).rsplit('-', 1)[-1]}</a>" in page  # the short id shown
    shown = re.findall(r'/change/">([0-9a-f]{12})</a>', page)
    assert len(shown) == 3
    assert len(set(shown)) == 3  # runs made in the same millisecond still look different
    assert "Completed" in page
    assert "Failed" in page
    assert "Scheduled" in page
    failed_only = admin_client.get(url, {"state_type__exact": "FAILED"}).content.decode()
    assert str(bad.id) in failed_only
    assert str(ok.id) not in failed_only
    by_queue = admin_client.get(url, {"queue__exact": "other"}).content.decode()
    assert str(waiting.id) in by_queue
    assert str(ok.id) not in by_queue
    by_id = admin_client.get(url, {"q": str(ok.id)}).content.decode()
    assert str(ok.id) in by_id
    assert str(bad.id) not in by_id
    by_name = admin_client.get(url, {"q": "explode"}).content.decode()
    assert str(bad.id) in by_name
    assert str(ok.id) not in by_name


def test_run_page_shows_history_previews_and_traceback(admin_client, runs):
    ok, bad, _ = runs
    page = admin_client.get(reverse("admin:django_tasks_taskrun_change", args=[bad.id]))
    text = page.content.decode()
    assert page.status_code == 200
    # The error first: above the timeline, with the frame that raised it.
    error = text[text.index('id="djt-error"') : text.index('id="djt-timeline-section"')]
    assert '<pre class="djt-error-message">RuntimeError: admin sees this</pre>' in error
    assert "raised in <code>explode</code> at" in error
    assert "tests/taskapp/tasks.py:" in error
    assert text.index('id="djt-error"') < text.index('id="djt-parameters"')
    timeline = text[text.index('id="djt-timeline"') : text.index('id="djt-parameters"')]
    assert len(re.findall(r"<time>[\d-]+ \d{2}:\d{2}:\d{2}\.\d{3}</time>", timeline)) == 4
    positions = [
        timeline.index(f">{name}</span>") for name in ["Scheduled", "Pending", "Running", "Failed"]
    ]
    assert positions == sorted(positions)
    assert "Traceback (most recent call last)" in text
    assert "&quot;message&quot;: &quot;admin sees this&quot;" in text
    assert 'id="djt-result"' not in text  # a failed run has no result section
    assert 'id="djt-graph-section" hidden' in text  # nor a graph: no dependency, no retry
    ok_page = admin_client.get(reverse("admin:django_tasks_taskrun_change", args=[ok.id]))
    ok_text = ok_page.content.decode()
    assert (
        '<section class="djt-section" id="djt-result"><h2>Result</h2><pre class="djt-json">3</pre>'
        in ok_text
    )
    assert 'id="djt-error"' not in ok_text


def test_runs_cannot_be_added_changed_or_deleted(admin_client, runs):
    ok = runs[0]
    assert admin_client.get(reverse("admin:django_tasks_taskrun_add")).status_code == 403
    change = reverse("admin:django_tasks_taskrun_change", args=[ok.id])
    admin_client.post(change, {"queue": "hacked"})
    assert TaskRun.objects.get(pk=ok.id).queue == "default"
    delete = reverse("admin:django_tasks_taskrun_delete", args=[ok.id])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    assert TaskRun.objects.filter(pk=ok.id).exists()


def test_admin_requires_staff(client, runs):
    url = reverse("admin:django_tasks_taskrun_changelist")
    assert client.get(url).status_code == 302


def test_run_page_shows_logs_and_dependencies(admin_client):
    upstream = add.submit(1, 2)
    downstream = chatty.submit(upstream)
    downstream.result(timeout=5)
    flush()
    page = admin_client.get(
        reverse("admin:django_tasks_taskrun_change", args=[downstream.id])
    ).content.decode()
    assert "hello 3" in page  # its log line
    assert "WARNING" in page
    upstream_url = reverse("admin:django_tasks_taskrun_change", args=[upstream.id])
    graph = page[page.index('<svg class="djt-graph"') :]
    assert (
        f'<a href="{upstream_url}" class="djt-node" data-run="{upstream.id}" '
        'data-state="COMPLETED">' in graph
    )
    up_page = admin_client.get(upstream_url).content.decode()
    assert reverse("admin:django_tasks_taskrun_change", args=[downstream.id]) in up_page


def test_admin_actions_retry_and_cancel(admin_client):
    failed = explode.delay("retry me")
    Worker(burst=True, handle_signals=False).run()
    waiting = add.delay(1, 1)
    url = reverse("admin:django_tasks_taskrun_changelist")
    response = admin_client.post(
        url, {"action": "retry_selected", "_selected_action": [str(failed.id)]}, follow=True
    )
    assert "Retried 1 run(s)." in response.content.decode()
    retry = TaskRun.objects.get(retry_of_id=failed.id)
    assert (retry.state_type, retry.task_name, retry.parameters_preview) == (
        "SCHEDULED",
        "explode",
        {"message": "retry me"},
    )
    assert retry.states.get().message == f"Retry of run {failed.id}."
    response = admin_client.post(
        url, {"action": "retry_selected", "_selected_action": [str(waiting.id)]}, follow=True
    )
    assert "only a finished run can be retried" in response.content.decode()
    response = admin_client.post(
        url,
        {"action": "cancel_selected", "_selected_action": [str(waiting.id), str(failed.id)]},
        follow=True,
    )
    page = response.content.decode()
    assert "Cancelled 1 run(s)." in page
    assert "1 run(s) had already finished." in page
    assert TaskRun.objects.get(pk=waiting.id).state_type == "CANCELLED"
    Worker(burst=True, handle_signals=False).run()
    assert TaskRun.objects.get(pk=retry.id).state_message == "RuntimeError: retry me"
    detail = admin_client.get(
        reverse("admin:django_tasks_taskrun_change", args=[failed.id])
    ).content.decode()
    assert reverse("admin:django_tasks_taskrun_change", args=[retry.id]) in detail


def test_cheap_filters_by_task_tag_worker_and_time(admin_client, runs):
    ok, bad, waiting = runs
    url = reverse("admin:django_tasks_taskrun_changelist")

    def shown(params: dict[str, str]) -> set[str]:
        page = admin_client.get(url, params).content.decode()
        return {str(f.id) for f in runs if str(f.id) in page}

    assert shown({"task_name__exact": "explode"}) == {str(bad.id)}
    assert shown({"tag": "errors"}) == {str(bad.id)}
    worker = TaskRun.objects.get(pk=ok.id).worker
    assert shown({"worker__exact": worker}) == {str(ok.id), str(bad.id)}
    assert shown({"created": "1h"}) == {str(f.id) for f in runs}
    TaskRun.objects.filter(pk=waiting.id).update(id="01890000-0000-7000-8000-000000000000")
    assert shown({"created": "24h"}) == {str(ok.id), str(bad.id)}  # the moved one is old
    page = admin_client.get(url).content.decode()
    assert ">errors</a>" in page  # the tag filter's choices come from the registered tasks


def test_list_page_queries_do_not_grow_with_the_page(admin_client, django_assert_max_num_queries):
    add.delay_many([(i, i) for i in range(5)])
    url = reverse("admin:django_tasks_taskrun_changelist")
    with django_assert_max_num_queries(20) as few:
        admin_client.get(url)
    add.delay_many([(i, i) for i in range(100)])
    with django_assert_max_num_queries(len(few.captured_queries)):
        page = admin_client.get(url).content.decode()
    assert page.count('class="action-select"') == 50


def test_run_page_retry_button_makes_a_new_run_and_opens_it(admin_client, runs):
    bad = runs[1]
    page = admin_client.get(reverse("admin:django_tasks_taskrun_change", args=[bad.id]))
    retry_url = reverse("admin:django_tasks_taskrun_retry", args=[bad.id])
    assert f'action="{retry_url}"' in page.content.decode()
    assert "djt-cancel" not in page.content.decode()  # a finished run cannot be cancelled
    assert admin_client.get(retry_url).status_code == 403  # a button posts; a link must not act
    response = admin_client.post(retry_url, follow=True)
    new = TaskRun.objects.get(retry_of_id=bad.id)
    assert new.state_type == "SCHEDULED"
    assert response.redirect_chain[-1][0] == reverse(
        "admin:django_tasks_taskrun_change", args=[new.id]
    )
    assert f"Retried as run {new.id}." in response.content.decode()


def test_run_page_cancel_button_cancels_a_waiting_run(admin_client, runs):
    waiting = runs[2]
    page = admin_client.get(reverse("admin:django_tasks_taskrun_change", args=[waiting.id]))
    cancel_url = reverse("admin:django_tasks_taskrun_cancel", args=[waiting.id])
    assert f'action="{cancel_url}"' in page.content.decode()
    assert "djt-retry" not in page.content.decode()  # not finished: nothing to retry yet
    response = admin_client.post(cancel_url, follow=True)
    assert TaskRun.objects.get(pk=waiting.id).state_type == "CANCELLED"
    assert "The run is Cancelled." in response.content.decode()
    again = admin_client.post(cancel_url, follow=True)
    assert "The run had already finished." in again.content.decode()


def test_run_page_buttons_refuse_an_inline_run_with_the_reason(admin_client):
    add(2, 3)
    flush()
    inline = TaskRun.objects.get(origin="call")
    page = admin_client.get(reverse("admin:django_tasks_taskrun_change", args=[inline.id]))
    assert "djt-retry" not in page.content.decode()
    response = admin_client.post(
        reverse("admin:django_tasks_taskrun_retry", args=[inline.id]), follow=True
    )
    assert "only background runs keep their parameters" in response.content.decode()
    assert not TaskRun.objects.filter(retry_of_id=inline.id).exists()


def test_run_page_buttons_are_for_staff_only(client, django_user_model, runs):
    bad = runs[1]
    user = django_user_model.objects.create_user("someone", password="pw")
    client.force_login(user)
    url = reverse("admin:django_tasks_taskrun_retry", args=[bad.id])
    response = client.post(url)
    assert response.status_code == 302
    assert "/login/" in response["Location"]
    assert not TaskRun.objects.filter(retry_of_id=bad.id).exists()


@pytest.mark.parametrize(
    "param",
    [
        "task_name__exact",
        "queue__exact",
        "worker__exact",
        "state_type__exact",
        "origin__exact",
        "origin",
        "q",
    ],
)
def test_a_nul_in_a_list_filter_is_a_bad_filter_not_a_500(admin_client, param):
    url = reverse("admin:django_tasks_taskrun_changelist")
    response = admin_client.get(url, {param: "a\x00b"})
    assert response.status_code == 302
    assert response["Location"] == f"{url}?e=1"
    assert admin_client.get(response["Location"]).status_code == 200


ADMIN_PARAMS = [
    "task_name__exact",
    "queue__exact",
    "worker__exact",
    "state_type__exact",
    "origin__exact",
    "tags",
    "created",
    "q",
    "o",
    "p",
]


@settings(
    max_examples=80,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(param=st.sampled_from(ADMIN_PARAMS), value=st.text())
def test_no_list_filter_value_makes_a_500(admin_client, param, value):
    """Any text - NUL characters, surrogates, huge numbers - in any filter, search, ordering
    or page parameter: the list or Django's bad-filter redirect, never an error."""
    url = reverse("admin:django_tasks_taskrun_changelist")
    response = admin_client.get(url, {param: value})
    assert response.status_code in (200, 302), (param, value)


def test_change_links_lead_to_the_admin_page_and_escape_their_text():
    from django_tasks.admin_links import change_link

    assert change_link("taskrun", None, "anything") == "-"
    run_id = uuid.uuid4()
    link = change_link("taskrun", run_id, "<b>run</b>")
    assert link == (
        f'<a href="/admin/django_tasks/taskrun/{run_id}/change/">&lt;b&gt;run&lt;/b&gt;</a>'
    )
    assert change_link("schedule", 7, 7) == '<a href="/admin/django_tasks/schedule/7/change/">7</a>'


def test_the_run_page_of_a_run_that_logged_in_a_loop_shows_its_last_rows_and_says_so(
    admin_client, django_assert_max_num_queries
):
    """A task that logs a line or attaches an artifact per item: 5,000 log lines and 300
    artifacts. The page renders the last 200 lines (where a running run's new lines appear)
    and the newest 10 artifacts, in a bounded number of queries, and says how many there are."""
    run = add.delay(1, 2)
    now = timezone.now()
    TaskRunLog.objects.bulk_create(
        TaskRunLog(run_id=run.id, timestamp=now + timedelta(microseconds=i), level=20,
                   logger="loop", message=f"item-{i}-done")
        for i in range(5000)
    )  # fmt: skip
    Artifact.objects.bulk_create(
        Artifact(key=f"item-{i}", type="markdown", data=f"# item {i}", run_id=run.id,
                 created=now + timedelta(seconds=i))
        for i in range(300)
    )  # fmt: skip
    with django_assert_max_num_queries(15):
        page = admin_client.get(reverse("admin:django_tasks_taskrun_change", args=[run.id]))
    text = page.content.decode()
    assert "item-4999-done" in text
    assert "item-4800-done" in text
    assert "item-4799-done" not in text
    assert len(set(re.findall(r"item-(\d+)-done", text))) == 200
    assert (
        'data-logs-after="' + str(TaskRunLog.objects.filter(run_id=run.id).latest("id").id) in text
    )
    assert "<h1>item 299</h1>" in text  # the newest artifact
    assert "<h1>item 290</h1>" in text
    assert "<h1>item 289</h1>" not in text
    assert "(the last 200 of 5000; all of them: <code>manage.py taskruns logs" in text
    assert "(the newest 10 of 300)" in text
    assert "1 state changes, 5000 log lines, 300 artifacts" in text
    assert len(page.content) < 300_000
