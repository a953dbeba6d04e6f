"""The run page, its live JSON, the run graph and the task page (django_tasks/pages/):
what they show, what they refuse, hostile content rendered inert, bounded queries."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from django_tasks.artifacts.models import Artifact
from django_tasks.models import TaskRun, TaskRunDependency, TaskRunLog, TaskRunState
from django_tasks.pages.graph import Edge, Node, RunGraph, layers, run_graph
from django_tasks.pages.links import task_url
from django_tasks.pages.run_page import error_summary
from django_tasks.worker import Worker
from tests.taskapp.tasks import add, explode, total

pytestmark = pytest.mark.django_db(transaction=True)

HOSTILE = "<script>alert('x')</script>\"'><img src=x onerror=alert(1)>"


def _page(run_id: uuid.UUID) -> str:
    return reverse("admin:django_tasks_taskrun_change", args=[run_id])


def _live(run_id: uuid.UUID) -> str:
    return reverse("admin:django_tasks_taskrun_live", args=[run_id])


def _task(name: str, window: str | None = None) -> str:
    return task_url(name) + (f"&window={window}" if window else "")


def _user(*codenames: str) -> Client:
    user = User.objects.create_user("someone", password="pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    client = Client()
    client.force_login(user)
    return client


# --- the error summary -------------------------------------------------------------------


TRACEBACK = """Traceback (most recent call last):
  File "/app/jobs.py", line 10, in outer
    inner()
  File "/app/jobs.py", line 20, in inner
    raise KeyError("a")
KeyError: 'a'

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "/app/jobs.py", line 30, in handler
    return parse(payload)
           ^^^^^^^^^^^^^^
  File "/app/parse.py", line 7, in parse
    raise ValueError("bad payload:\\nline two")
ValueError: bad payload:
line two
"""


def test_the_error_is_the_last_exception_and_its_innermost_frame() -> None:
    summary = error_summary(TRACEBACK)
    assert summary is not None
    assert summary.message == "ValueError: bad payload:\nline two"
    assert (summary.file, summary.line, summary.function) == ("/app/parse.py", "7", "parse")
    assert summary.code == 'raise ValueError("bad payload:\\nline two")'


def test_an_error_without_a_traceback_is_the_state_message() -> None:
    assert error_summary("", "Crashed: the worker died") is not None
    assert error_summary("", "Crashed: the worker died").message == "Crashed: the worker died"  # type: ignore[union-attr]
    assert error_summary("", "") is None
    odd = error_summary('  File "x", line 1, in f\n    ^^^^\n', "TimedOut")
    assert odd is not None
    assert odd.message == "TimedOut"  # carets and no message line: the state's message


# --- the graph -----------------------------------------------------------------------------


def _graph(edges: list[tuple[int, int]], size: int) -> tuple[RunGraph, list[uuid.UUID]]:
    ids = [uuid.UUID(int=i + 1) for i in range(size)]
    nodes = [Node(i, f"n{n}", "t", "COMPLETED", "Completed") for n, i in enumerate(ids)]
    return RunGraph(nodes, [Edge(ids[a], ids[b], "data") for a, b in edges]), ids


def test_layers_put_every_edge_left_to_right() -> None:
    graph, ids = _graph([(0, 1), (0, 2), (1, 3), (2, 3), (4, 3)], 5)
    place = layers(graph)
    for edge in graph.edges:
        assert place[edge.upstream][0] < place[edge.downstream][0]
    assert place[ids[4]][0] == place[ids[3]][0] - 1  # a late source sits next to its run
    assert len(set(place.values())) == 5  # no two boxes on one spot


def test_a_cycle_in_bad_data_is_laid_out_not_looped() -> None:
    graph, ids = _graph([(0, 1), (1, 2), (2, 0), (2, 3)], 4)
    place = layers(graph)
    assert set(place) == set(ids)
    assert len(set(place.values())) == 4


def test_the_graph_follows_dependencies_and_retries_in_both_directions() -> None:
    a = add.delay(1, 2)
    b = add.delay(a, 1)  # type: ignore[arg-type]  # a future: an upstream run
    c = total.apply_async(([b],), wait_for=[a])
    unrelated = add.delay(7, 7)
    Worker(burst=True, handle_signals=False).run()
    retry = TaskRun.objects.get(pk=b.id)
    retry.pk = uuid.uuid4()
    retry.retry_of_id = b.id
    retry.save()
    for start in (a.id, c.id, retry.pk):
        graph = run_graph(start)
        assert {n.id for n in graph.nodes} == {a.id, b.id, c.id, retry.pk}
        assert unrelated.id not in {n.id for n in graph.nodes}
    kinds = sorted(e.kind for e in run_graph(a.id).edges)
    assert kinds == ["data", "data", "retry", "wait_for"]
    capped = run_graph(a.id, cap=2)
    assert capped.capped
    assert len(capped.nodes) == 2


def test_an_edge_to_a_run_not_recorded_is_drawn_as_such(admin_client: Client) -> None:
    run = add.delay(1, 1)
    ghost = uuid.uuid4()
    TaskRunDependency.objects.create(downstream_id=run.id, upstream_id=ghost)
    page = admin_client.get(_page(run.id)).content.decode()
    assert f'class="djt-node djt-unrecorded" data-run="{ghost}"' in page
    assert _page(ghost) not in page  # no link to a page that does not exist


# --- permissions ---------------------------------------------------------------------------


def test_without_view_taskrun_nothing_of_a_run_is_shown() -> None:
    run = explode.delay(HOSTILE)
    Worker(burst=True, handle_signals=False).run()
    client = _user("view_artifact", "view_schedule")
    for url in (_page(run.id), _live(run.id), _task("explode"), _task("nonexistent")):
        response = client.get(url)
        assert response.status_code == 403, url
        assert b"alert" not in response.content


def test_a_viewer_without_view_artifact_sees_the_run_not_its_artifacts() -> None:
    run = add.delay(1, 2)
    Artifact.objects.create(key="secret-report", type="markdown", data="# secret", run_id=run.id,
                            created=timezone.now())  # fmt: skip
    viewer = _user("view_taskrun")
    page = viewer.get(_page(run.id)).content.decode()
    assert "secret" not in page
    assert 'id="djt-artifacts"' not in page
    task_page = viewer.get(_task("add")).content.decode()
    assert 'id="djt-schedules"' not in task_page  # no view_schedule: no schedules
    both = _user_named("other", "view_taskrun", "view_artifact")
    assert "<h1>secret</h1>" in both.get(_page(run.id)).content.decode()


def _user_named(name: str, *codenames: str) -> Client:
    user = User.objects.create_user(name, password="pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    client = Client()
    client.force_login(user)
    return client


def test_the_run_page_only_reads() -> None:
    run = add.delay(1, 2)
    client = _user_named("op", "view_taskrun", "retry_taskrun", "cancel_taskrun")
    assert client.post(_page(run.id), {"queue": "x"}).status_code == 405
    assert TaskRun.objects.get(pk=run.id).queue == "default"


# --- hostile content -----------------------------------------------------------------------


@pytest.fixture
def hostile_run() -> TaskRun:
    """A run whose every text is an attack: name, task name, tags, messages, logs, links."""
    now = timezone.now()
    run = TaskRun.objects.create(
        task_key="k" * 64, task_name=HOSTILE, name=HOSTILE, queue=HOSTILE[:100], tags=[HOSTILE],
        state_type="FAILED", state_name=HOSTILE[:32], state_message=HOSTILE,
        scheduled_time=now, created=now, updated=now - timedelta(seconds=10), started=now,
        finished=now, parameters=b"", parameters_preview={"x": HOSTILE},
        traceback=f'Traceback (most recent call last):\n  File "{HOSTILE}", line 1, in {HOSTILE}\n'
                  f"    {HOSTILE}\nRuntimeError: {HOSTILE}\n",
        progress={"done": 1, "total": 2, "message": HOSTILE}, worker=HOSTILE, unique_key=HOSTILE,
    )  # fmt: skip
    TaskRunState.objects.create(run=run, type="FAILED", name="Failed", message=HOSTILE,
                                timestamp=now, worker=HOSTILE)  # fmt: skip
    TaskRunLog.objects.create(run=run, timestamp=now, level=40, logger=HOSTILE, message=HOSTILE)
    Artifact.objects.create(key="link", type="link", data="javascript:alert(1)", run_id=run.id,
                            description=HOSTILE, created=now)  # fmt: skip
    return run


def _inert(text: str) -> None:
    assert "<script>alert" not in text
    assert "<img src=x" not in text
    assert 'href="javascript:' not in text


def test_hostile_texts_are_inert_on_every_page(admin_client: Client, hostile_run: TaskRun) -> None:
    page = admin_client.get(_page(hostile_run.id))
    assert page.status_code == 200
    text = page.content.decode()
    _inert(text)
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text
    live = admin_client.get(_live(hostile_run.id))
    assert live.status_code == 200
    data = live.json()
    for fragment in (data["header"], data["timeline"], data["progress"]):
        _inert(fragment)
    assert data["logs"][0]["message"] == HOSTILE  # data: the script sets it as text
    task_page = admin_client.get(_task(HOSTILE))
    assert task_page.status_code == 200
    _inert(task_page.content.decode())
    dashboard = admin_client.get("/tasks/dashboard/?window=24h")
    _inert(dashboard.content.decode())


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"logs_after": "\x00"}, 400),
        ({"logs_after": "-1"}, 400),
        ({"logs_after": "1e9"}, 400),
        ({"logs_after": "9" * 40}, 400),
        ({"logs_after": "٣"}, 400),  # a digit, but not an ASCII one
        ({"logs_after": str(2**63 - 1)}, 200),
        ({"graph": "\x00"}, 200),
        ({"graph": "g" * 65}, 400),
        ({"logs_after": "", "graph": ""}, 200),
    ],
)
def test_odd_live_parameters_get_a_clear_answer(
    admin_client: Client, params: dict[str, str], status: int
) -> None:
    run = add.delay(1, 2)
    response = admin_client.get(_live(run.id), params)
    assert response.status_code == status
    if status == 400:
        assert "detail" in response.json()


@pytest.mark.parametrize(
    "name", ["\x00", "a\x00b", "x" * 300, "no.such.task", "%00", "../../admin", "", "a\nb"]
)
def test_odd_task_names_never_answer_500(admin_client: Client, name: str) -> None:
    response = admin_client.get(_task(name, "%00"))
    assert response.status_code == (404 if not name or "\x00" in name or len(name) > 255 else 200)


def test_a_task_name_with_a_newline_or_dots_links_to_its_own_page(admin_client: Client) -> None:
    """A path segment cannot carry such names (no URL matched a newline: a 500 on the run
    page; browsers fold "..") - the name goes in the query string."""
    for name in ("report\nweekly", "../../../x", "a//b"):
        run = add.delay(1, 1)
        TaskRun.objects.filter(pk=run.id).update(task_name=name)
        page = admin_client.get(_page(run.id))
        assert page.status_code == 200
        link = re.search(r'<dt>Task</dt><dd><a href="([^"]+)"', page.content.decode())
        assert link is not None
        target = admin_client.get(link.group(1).replace("&amp;", "&"))
        assert target.status_code == 200
        assert target.context["task_name"] == name


@pytest.mark.parametrize("run_id", ["\x00", "not-a-uuid", "1" * 200, str(uuid.UUID(int=0))])
def test_odd_run_ids_go_back_to_the_list(admin_client: Client, run_id: str) -> None:
    response = admin_client.get(f"/admin/django_tasks/taskrun/{run_id}/change/")
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:django_tasks_taskrun_changelist")
    assert admin_client.get(f"/admin/django_tasks/taskrun/{uuid.uuid4()}/live/").status_code == 404


# --- the live view ---------------------------------------------------------------------------


def test_the_live_view_sends_new_log_lines_and_the_graph_only_when_it_changed(
    admin_client: Client,
) -> None:
    upstream = add.delay(1, 2)
    run = add.delay(upstream, 3)  # type: ignore[arg-type]
    now = timezone.now()
    first = TaskRunLog.objects.create(
        run_id=run.id, timestamp=now, level=20, logger="l", message="one"
    )
    data = admin_client.get(_live(run.id)).json()
    assert [line["message"] for line in data["logs"]] == ["one"]
    assert data["final"] is False
    assert "graph_svg" in data  # the page had no graph key: the whole graph
    key = data["graph_key"]
    assert data["nodes"][str(upstream.id)][0] == "SCHEDULED"
    TaskRunLog.objects.create(run_id=run.id, timestamp=now, level=20, logger="l", message="two")
    again = admin_client.get(_live(run.id), {"logs_after": first.id, "graph": key}).json()
    assert [line["message"] for line in again["logs"]] == ["two"]
    assert "graph_svg" not in again  # same runs: only their states
    add.apply_async((9, 9), wait_for=[run])  # a new downstream run: the graph changed
    changed = admin_client.get(_live(run.id), {"logs_after": first.id, "graph": key}).json()
    assert changed["graph_key"] != key
    assert changed["graph_svg"].count('class="djt-node"') == 3


def test_a_final_run_is_settled_only_after_its_last_writes(admin_client: Client) -> None:
    run = add.delay(1, 2)
    Worker(burst=True, handle_signals=False).run()
    assert admin_client.get(_live(run.id)).json()["final"] is False  # written just now
    TaskRun.objects.filter(pk=run.id).update(updated=timezone.now() - timedelta(seconds=5))
    assert admin_client.get(_live(run.id)).json()["final"] is True
    page = admin_client.get(_page(run.id)).content.decode()
    assert 'data-final="true"' in page


# --- bounded queries ---------------------------------------------------------------------------


def _pipeline(width: int, depth: int) -> uuid.UUID:
    previous = [add.delay(0, i) for i in range(width)]
    for _ in range(depth - 1):
        previous = [add.apply_async((1, i), wait_for=[previous[i]]) for i in range(width)]
    return previous[0].id


@pytest.mark.parametrize(("width", "depth"), [(1, 2), (10, 20)])
def test_the_run_page_and_its_live_view_take_the_same_queries_whatever_the_graph(
    admin_client: Client, django_assert_max_num_queries: Any, width: int, depth: int
) -> None:
    run_id = _pipeline(width, depth)
    TaskRunLog.objects.bulk_create(
        TaskRunLog(run_id=run_id, timestamp=timezone.now(), level=20, logger="l", message=f"m{i}")
        for i in range(500)
    )
    with django_assert_max_num_queries(14):
        assert admin_client.get(_page(run_id)).status_code == 200
    with django_assert_max_num_queries(10):
        assert admin_client.get(_live(run_id)).status_code == 200


@pytest.mark.parametrize("window", ["1h", "24h", "7d"])
def test_the_task_page_takes_a_bounded_number_of_queries(
    admin_client: Client, django_assert_max_num_queries: Any, window: str
) -> None:
    add.delay_many([(i, i) for i in range(30)])
    explode.delay("x")
    Worker(burst=True, handle_signals=False).run()
    admin_client.get(_task("add", window))  # summarises the closed slots once
    with django_assert_max_num_queries(16):
        page = admin_client.get(_task("explode", window))
    text = page.content.decode()
    assert "RuntimeError" in text
    figures = text[text.index('id="djt-task-figures"') :]
    assert re.search(r"<dt>Runs</dt><dd>1</dd>", figures)
    assert re.search(r"<dt>Failure rate</dt><dd>100 %</dd>", figures)


def test_the_task_page_counts_what_the_statements_over_every_run_count(
    admin_client: Client,
) -> None:
    add.delay_many([(i, i) for i in range(12)])
    explode.delay("one")
    explode.delay("two")
    Worker(burst=True, handle_signals=False).run()
    for window in ("1h", "24h", "7d"):
        text = admin_client.get(_task("add", window)).content.decode()
        assert "<dt>Runs</dt><dd>12</dd>" in text, window
        chart = text[text.index('id="djt-runs-over-time"') : text.index('id="djt-durations"')]
        counted = sum(int(n) for n in re.findall(r": (\d+) completed</title>", chart))
        assert counted == 12, window
        failing = admin_client.get(_task("explode", window)).content.decode()
        latest = TaskRun.objects.filter(task_name="explode").order_by("-id").first()
        assert latest is not None
        exceptions = failing[failing.index('id="djt-exceptions"') :]
        assert "RuntimeError</td><td>2</td>" in exceptions
        assert _page(latest.id) in exceptions


# --- the run list's runs over time -------------------------------------------------------------

SCATTER = "/admin/django_tasks/taskrun/over-time/"


def test_the_run_lists_dots_follow_its_filters_and_search(admin_client: Client) -> None:
    add.delay_many([(i, i) for i in range(4)])
    explode.delay("dots")
    add.apply_async((1, 1), queue="later")  # never started: no dot
    Worker(burst=True, handle_signals=False).run()
    page = admin_client.get(reverse("admin:django_tasks_taskrun_changelist")).content.decode()
    assert f'data-src="{SCATTER}?"' in page  # the list asks for its dots once loaded
    every = admin_client.get(SCATTER).content.decode()
    assert sorted(re.findall(r'data-state="(\w+)"', every)) == ["COMPLETED"] * 4 + ["FAILED"]
    failed = admin_client.get(SCATTER, {"state_type__exact": "FAILED"}).content.decode()
    assert re.findall(r'data-state="(\w+)"', failed) == ["FAILED"]
    searched = admin_client.get(SCATTER, {"q": "explode"}).content.decode()
    assert re.findall(r'data-state="(\w+)"', searched) == ["FAILED"]
    old = admin_client.get(SCATTER, {"created": "1h"}).content.decode()
    assert len(re.findall(r"<circle ", old)) == 5
    TaskRun.objects.update(started=None)
    assert "No run started in this window." in admin_client.get(SCATTER).content.decode()


@pytest.mark.parametrize(
    "params", [{"q": "\x00"}, {"queue__exact": "a\x00"}, {"created__year": "-1"}, {"nope": "1"}]
)
def test_odd_filters_of_the_dots_are_a_400_not_a_500(
    admin_client: Client, params: dict[str, str]
) -> None:
    add.delay(1, 1)
    assert admin_client.get(SCATTER, params).status_code == 400


def test_the_dots_need_view_taskrun() -> None:
    add.delay(1, 1)
    assert _user("view_artifact").get(SCATTER).status_code == 403
    assert Client().get(SCATTER).status_code == 302  # to the login page


def test_a_filter_too_slow_to_draw_says_so(admin_client: Client, monkeypatch: Any) -> None:
    from django_tasks.pages import charts

    monkeypatch.setattr(charts, "SCATTER_TIMEOUT_MS", 1)
    # Enough runs for the query to pass 1 ms whatever its plan (2,000 took 0.4 ms by a
    # sequential scan once the table had statistics).
    add.delay_many([(i, i) for i in range(20_000)])
    TaskRun.objects.update(started=timezone.now())
    text = admin_client.get(SCATTER, {"queue__exact": "nowhere"}).content.decode()
    assert 'id="djt-scatter-slow"' in text
    assert admin_client.get(SCATTER).status_code == 200  # the connection is fine after it


def test_breadcrumbs_are_drawn_as_the_running_django_draws_them(admin_client: Client) -> None:
    """Django 6 styles only ``<ol class="breadcrumbs">``; Django 5.2 only the ``div``."""
    import django

    run = add.delay(1, 2)
    wanted = '<ol class="breadcrumbs">' if django.VERSION >= (6, 0) else '<div class="breadcrumbs">'
    for url in (_page(run.id), _task("add"), "/tasks/dashboard/"):
        text = admin_client.get(url).content.decode()
        crumbs = text[text.rindex("<", 0, text.index('class="breadcrumbs"')) :]
        assert crumbs.startswith(wanted), url
        assert ">Task runs</a>" in crumbs[:600], url


GROUP = """  + Exception Group Traceback (most recent call last):
  |   File "/app/main.py", line 5, in main
  |     async with asyncio.TaskGroup() as group:
  | ExceptionGroup: unhandled errors in a TaskGroup (1 sub-exception)
  +-+---------------- 1 ----------------
    | Traceback (most recent call last):
    |   File "/app/fetch.py", line 9, in fetch
    |     raise ValueError("boom")
    | ValueError: boom
    +------------------------------------
"""

RECURSION = """Traceback (most recent call last):
  File "/app/r.py", line 2, in f
    return f()
           ^^^
  [Previous line repeated 996 more times]
RecursionError: maximum recursion depth exceeded
"""

SYNTAX = """Traceback (most recent call last):
  File "<frozen importlib._bootstrap>", line 1204, in _gcd_import
  File "/app/broken.py", line 3
    x = (
        ^
SyntaxError: '(' was never closed
"""


@pytest.mark.parametrize(
    ("traceback", "message", "where"),
    [
        (GROUP, "ValueError: boom", ("/app/fetch.py", "9", "fetch")),
        (RECURSION, "RecursionError: maximum recursion depth exceeded", ("/app/r.py", "2", "f")),
        (SYNTAX, "SyntaxError: '(' was never closed", ("/app/broken.py", "3", "")),
    ],
)
def test_groups_recursion_and_syntax_errors(
    traceback: str, message: str, where: tuple[str, str, str]
) -> None:
    summary = error_summary(traceback)
    assert summary is not None
    assert summary.message == message
    assert (summary.file, summary.line, summary.function) == where


# --- found by a review -------------------------------------------------------------------------


def test_a_huge_logs_after_is_a_400(admin_client: Client) -> None:
    run = add.delay(1, 2)
    assert admin_client.get(_live(run.id), {"logs_after": "9" * 5000}).status_code == 400


def test_an_odd_state_in_a_graph_run_does_not_break_the_pipelines_pages(
    admin_client: Client,
) -> None:
    upstream = add.delay(1, 2)
    run = add.delay(upstream, 3)  # type: ignore[arg-type]
    TaskRun.objects.filter(pk=upstream.id).update(state_type="PAUSED", state_name="Paused")
    assert admin_client.get(_page(run.id)).status_code == 200
    assert admin_client.get(_page(upstream.id)).status_code == 200
    data = admin_client.get(_live(run.id)).json()
    assert data["nodes"][str(upstream.id)] == ["PAUSED", "#6b7280"]
    assert data["final"] is False


def test_a_batch_of_log_lines_is_never_the_last(admin_client: Client) -> None:
    """More new lines than one answer takes: not final, and the script asks again at once."""
    run = add.delay(1, 2)
    Worker(burst=True, handle_signals=False).run()
    TaskRun.objects.filter(pk=run.id).update(updated=timezone.now() - timedelta(seconds=9))
    TaskRunLog.objects.bulk_create(
        TaskRunLog(run_id=run.id, timestamp=timezone.now(), level=20, logger="l", message=f"{i}")
        for i in range(450)
    )
    first = admin_client.get(_live(run.id)).json()
    assert (len(first["logs"]), first["more_logs"], first["final"]) == (200, True, False)
    after = first["logs"][-1]["id"]
    last = admin_client.get(_live(run.id), {"logs_after": after}).json()
    last = admin_client.get(_live(run.id), {"logs_after": last["logs"][-1]["id"]}).json()
    assert (len(last["logs"]), last["more_logs"], last["final"]) == (50, False, True)


def test_a_run_retried_past_the_states_shown_shows_its_current_state(
    admin_client: Client,
) -> None:
    run = add.delay(1, 2)
    now = timezone.now()
    TaskRunState.objects.bulk_create(
        TaskRunState(run_id=run.id, type="RUNNING" if i % 2 else "SCHEDULED",
                     name="Running" if i % 2 else "AwaitingRetry",
                     timestamp=now + timedelta(seconds=i))
        for i in range(1, 300)
    )  # fmt: skip
    TaskRunState.objects.create(
        run_id=run.id, type="FAILED", name="Failed", timestamp=now + timedelta(seconds=400)
    )
    text = admin_client.get(_page(run.id)).content.decode()
    timeline = text[text.index('id="djt-timeline-section"') : text.index('id="djt-graph-section"')]
    assert "(the last 200 of 301 state changes)" in timeline
    items = re.findall(r'<li data-state="(\w+)">', timeline)
    assert len(items) == 200
    assert items[-1] == "FAILED"
    assert "301 state changes" in text


def test_limits_on_the_task_page_need_view_limit() -> None:
    from django_tasks.limits.models import Limit

    Limit.objects.create(scope="queue", name="default", concurrency=0)
    viewer = _user("view_taskrun")
    assert 'id="djt-limits"' not in viewer.get(_task("add")).content.decode()
    both = _user_named("limits", "view_taskrun", "view_limit")
    text = both.get(_task("add")).content.decode()
    limits = text[text.index('id="djt-limits"') :]
    assert "<td>0</td>" in limits  # a concurrency of 0 is not "no limit"


@pytest.mark.parametrize("language", ["de", "en"])
def test_numbers_the_script_and_the_css_read_are_never_localised(
    admin_client: Client, settings: Any, language: str
) -> None:
    settings.USE_THOUSAND_SEPARATOR = True
    settings.LANGUAGE_CODE = language
    run = add.delay(1, 2)
    Worker(burst=True, handle_signals=False).run()
    TaskRunLog.objects.create(run_id=run.id, timestamp=timezone.now(), level=20, logger="l",
                              message="x", id=1_234_567)  # fmt: skip
    text = admin_client.get(_page(run.id), HTTP_ACCEPT_LANGUAGE=language).content.decode()
    assert 'data-logs-after="1234567"' in text
    widths = re.findall(r'class="djt-segment[^"]*" style="width:([^;]+);', text)
    assert widths
    assert all(re.fullmatch(r"\d+\.\d\d%", w) for w in widths), widths


# --- found by a second review ---------------------------------------------------------------


def test_a_time_budget_never_loosens_a_stricter_timeout() -> None:
    from django.db import connection

    from django_tasks.pages.budget import time_budget

    with connection.cursor() as cursor:
        cursor.execute("SET statement_timeout = '50ms'")
        try:
            with time_budget(100):
                cursor.execute("SELECT current_setting('statement_timeout')")
                assert cursor.fetchone()[0] == "50ms"
            with time_budget(20):
                cursor.execute("SELECT current_setting('statement_timeout')")
                assert cursor.fetchone()[0] == "20ms"
            cursor.execute("SELECT current_setting('statement_timeout')")
            assert cursor.fetchone()[0] == "50ms"  # given back
        finally:
            cursor.execute("RESET statement_timeout")


def test_a_task_name_too_slow_to_look_up_says_so(admin_client: Client, monkeypatch: Any) -> None:
    from django_tasks.pages import task_page

    monkeypatch.setattr(task_page, "KEYS_TIMEOUT_MS", 10)
    monkeypatch.setattr(task_page, "_KEYS_OF_RUNS", "SELECT pg_sleep(0.2)::text")
    text = admin_client.get(_task("renamed.long.ago")).content.decode()
    assert 'id="djt-keys-unknown"' in text
    assert admin_client.get(_task("add")).status_code == 200  # registered: no lookup


def test_the_dots_window_is_the_one_the_created_filter_reads(
    admin_client: Client, monkeypatch: Any
) -> None:
    from django_tasks.ids import uuid7_floor

    run = add.delay(1, 1)
    old = timezone.now() - timedelta(days=3)
    TaskRun.objects.filter(pk=run.id).update(
        id=uuid.UUID(int=uuid7_floor(old).int | 1), started=old, finished=old
    )
    for created, drawn in (("", 0), ("30d", 0), ("7d", 1), ("1h", 0)):
        text = admin_client.get(SCATTER, {"created": created}).content.decode()
        assert len(re.findall(r"<circle ", text)) == drawn, created


def test_the_graph_key_changes_when_a_runs_row_is_written() -> None:
    graph, ids = _graph([(0, 1)], 2)
    written = RunGraph(list(graph.nodes), list(graph.edges))
    graph.nodes[1] = Node(ids[1], "", "(not recorded)", "", "not recorded", recorded=False)
    assert graph.key != written.key


def test_a_message_with_a_table_keeps_its_lines() -> None:
    traceback = (
        "Traceback (most recent call last):\n"
        '  File "/app/t.py", line 3, in check\n'
        "    assert got == wanted\n"
        "AssertionError: tables differ\n"
        "| a | b |\n"
        "+---+---+\n"
    )
    summary = error_summary(traceback)
    assert summary is not None
    assert summary.message == "AssertionError: tables differ\n| a | b |\n+---+---+"
