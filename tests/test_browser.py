"""The admin and the dashboard in a real browser: headless Chromium driven by Playwright.

Chromium comes from the system (Debian's ``chromium`` package; ``.ci/run`` installs it), not
from Playwright's own download. Without it the test is skipped on a developer's machine and
fails under CI, so CI can never pass without having run it.

Screenshots go to ``test-artifacts/browser/django-<version>/``; with
``DJANGO_TASKS_DOCS_SCREENSHOTS=1`` they are also written to ``docs/images/``, where the README
and docs/observability.md show them.
Every page opened here must log no console error and raise no script error.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import django
import pytest

from django_tasks.models import TaskRun
from django_tasks.worker import Worker
from tests.taskapp.tasks import add, attach_artifacts, explode, narrated, slow_echo, total

ROOT = Path(__file__).resolve().parent.parent
# One folder per Django version: CI runs the suite on two, the second must not overwrite.
ARTIFACTS = ROOT / "test-artifacts" / "browser" / f"django-{django.get_version()}"
DOCS_IMAGES = ROOT / "docs" / "images"

pytestmark = pytest.mark.django_db(transaction=True)


def _chromium() -> str:
    """The system Chromium, or skip (fail under CI: the browser test must run there)."""
    found = os.environ.get("DJANGO_TASKS_CHROMIUM") or shutil.which("chromium")
    missing = []
    if not found:
        missing.append("chromium (Debian: apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("playwright (pip install -e '.[dev]')")
    if missing:
        reason = "the browser test needs " + " and ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(reason + "; .ci/run installs them")
        pytest.skip(reason)
    assert found is not None
    return found


@contextlib.contextmanager
def browser_page(color_scheme: Literal["light", "dark"] = "light") -> Iterator[Any]:
    """A page of headless Chromium at 1280x800. Playwright's synchronous API runs an event
    loop in this thread, where Django refuses database queries: the test queries before and
    after. Console errors and uncaught script errors fail the test."""
    executable = _chromium()
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 800}, color_scheme=color_scheme)
        page.set_default_timeout(15_000)
        page.on(
            "console", lambda m: errors.append(_console_error(m)) if m.type == "error" else None
        )
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            yield page
        finally:
            browser.close()
    errors = [e for e in errors if "/favicon.ico" not in e]  # the admin has no icon
    assert errors == [], errors


def _console_error(message: Any) -> str:
    return f"{message.text} ({message.location.get('url', '')})"


def _log_in(page: Any, url: str, next_path: str) -> None:
    page.goto(f"{url}/admin/login/?next={quote(next_path)}")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "browser-pw")
    page.click("input[type=submit]")
    page.wait_for_url(f"{url}{next_path}")


def _screenshot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)
    if os.environ.get("DJANGO_TASKS_DOCS_SCREENSHOTS") == "1":
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ARTIFACTS / name, DOCS_IMAGES / name)


@pytest.fixture
def finished_runs(django_user_model: Any) -> TaskRun:
    """Some history for the pages to show: completed runs, slower ones, and failures."""
    django_user_model.objects.create_superuser("admin", "admin@example.com", "browser-pw")
    add.delay_many([(i, i) for i in range(12)])
    for i in range(3):
        slow_echo.delay(i, 0.05 * (i + 1))
    explode.delay("the browser sees this")
    add.apply_async((1, 1), queue="later", countdown=3600)  # still waiting
    Worker(burst=True, handle_signals=False).run()
    return TaskRun.objects.get(task_name="explode")


def test_admin_find_failed_run_retry_it_and_see_the_dashboard(
    live_server: Any, finished_runs: TaskRun
) -> None:
    failed = finished_runs
    with browser_page() as page:
        new_id = _find_failed_run_retry_it_and_open_the_dashboard(page, live_server.url, failed)
    retried = TaskRun.objects.get(pk=new_id)
    assert retried.retry_of_id == failed.id
    assert retried.state_type == "SCHEDULED"
    assert retried.parameters_preview == failed.parameters_preview


def _find_failed_run_retry_it_and_open_the_dashboard(page: Any, url: str, failed: TaskRun) -> str:
    runs_url = f"{url}/admin/django_tasks/taskrun/"

    # Log in to the admin; the run list opens.
    page.goto(f"{url}/admin/login/?next=/admin/django_tasks/taskrun/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "browser-pw")
    page.click("input[type=submit]")
    page.wait_for_url(runs_url)
    assert page.locator("#result_list tbody tr").count() == 17
    # Runs over time, fetched once the list has loaded: a dot per started run (16 of 17).
    page.wait_for_selector("#djt-list-scatter circle")
    assert page.locator("#djt-list-scatter circle").count() == 16
    assert page.locator('#djt-list-scatter circle[data-state="FAILED"]').count() == 1
    _screenshot(page, "admin-run-list.png")

    # Find the failed run with the state filter.
    page.locator("#changelist-filter a", has_text=re.compile(r"^\s*Failed\s*$")).first.click()
    page.wait_for_url(re.compile(r"state_type__exact=FAILED"))
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 1
    assert "explode" in rows.first.inner_text()

    # Open it: the error and the frame that raised it above the fold, then the timeline.
    rows.first.get_by_role("link", name=str(failed.id).rsplit("-", 1)[-1]).click()
    page.wait_for_url(re.compile(str(failed.id)))
    error = page.locator("#djt-error")
    assert error.locator(".djt-error-message").inner_text() == "RuntimeError: the browser sees this"
    assert "raised in explode at" in error.inner_text()
    box = error.bounding_box()
    assert box is not None
    assert box["y"] + box["height"] <= 800, box  # visible without scrolling at 1280x800
    timeline = page.locator("#djt-timeline .djt-timeline").inner_text()
    positions = [timeline.find(state) for state in ("Scheduled", "Pending", "Running", "Failed")]
    assert -1 not in positions, timeline
    assert positions == sorted(positions), timeline
    _screenshot(page, "admin-run-page.png")

    # Retry: a new run with the same parameters, linked to the old one, opens.
    page.get_by_role("button", name="Retry").click()
    page.wait_for_selector(".messagelist .success")
    message = page.locator(".messagelist .success").inner_text()
    new_id = re.search(r"Retried as run ([0-9a-f-]{36})", message)
    assert new_id is not None, message
    assert new_id.group(1) in page.url
    assert "Scheduled" in page.locator("#djt-header .djt-state").inner_text()
    link = page.locator("#djt-retry-of")  # back to the failed run
    assert str(failed.id) in (link.get_attribute("href") or "")
    # The graph draws the retry: the failed run (red) and this one (grey), linked.
    nodes = page.locator("svg.djt-graph a.djt-node")
    assert nodes.count() == 2
    assert page.locator(f'svg.djt-graph [data-run="{failed.id}"] rect').get_attribute("fill") == (
        "#b91c1c"
    )

    # The new run is on the list.
    page.goto(runs_url)
    assert page.locator("#result_list tbody tr").count() == 18
    assert new_id.group(1).rsplit("-", 1)[-1] in page.locator("#result_list").inner_text()

    # The dashboard, from the run list's link: its charts are drawn.
    page.get_by_role("link", name="Dashboard").click()
    page.wait_for_url(re.compile(r"/tasks/dashboard/"))
    charts = page.locator("svg.djt-chart")
    assert charts.count() >= 2
    assert page.locator("svg.djt-chart rect").count() >= 4  # bars of runs and of states
    box = charts.first.bounding_box()
    assert box is not None
    assert box["width"] > 200  # laid out and visible
    assert box["height"] > 50
    assert "explode" in page.locator("body").inner_text()  # among the most failing tasks
    _screenshot(page, "dashboard.png")
    return new_id.group(1)


def test_a_hostile_artifact_runs_nothing_in_the_admin_or_the_dashboard(
    live_server: Any, django_user_model: Any
) -> None:
    """A run's markdown with <script>, raw HTML with handlers and a javascript: link: in a
    real browser, no dialog opens, no script or image element comes from it, and its links go
    to http(s) only (tests/test_artifacts.py checks the HTML; this, what a browser does)."""
    django_user_model.objects.create_superuser("admin", "admin@example.com", "browser-pw")
    future = attach_artifacts.delay("browser")
    Worker(burst=True, handle_signals=False).run()
    assert TaskRun.objects.get(pk=future.id).state_type == "COMPLETED"
    with browser_page() as page:
        dialogs: list[str] = []

        def on_dialog(dialog: Any) -> None:
            dialogs.append(dialog.message)
            dialog.dismiss()

        page.on("dialog", on_dialog)
        page.goto(f"{live_server.url}/admin/login/?next=/admin/django_tasks/taskrun/{future.id}/")
        page.fill("#id_username", "admin")
        page.fill("#id_password", "browser-pw")
        page.click("input[type=submit]")
        page.wait_for_selector(".djt-artifact h1")
        shown = _artifact_elements(page)
        _screenshot(page, "admin-run-artifacts.png")
        page.goto(f"{live_server.url}/tasks/dashboard/")
        page.wait_for_selector("#artifacts .djt-artifact h1")
        on_dashboard = _artifact_elements(page)
        page.wait_for_timeout(300)  # an onerror handler would have fired by now
    assert dialogs == []
    for elements in (shown, on_dashboard):
        assert elements["scripts"] == 0
        assert elements["images"] == 0
        assert elements["handlers"] == 0
        assert "<script>alert('script')</script>" in elements["text"]  # shown, as text
        assert all(href.startswith("https://") for href in elements["hrefs"]), elements["hrefs"]
        assert "https://example.com/" in elements["hrefs"]


def _artifact_elements(page: Any) -> dict[str, Any]:
    """What the browser built inside the artifacts' containers."""
    result: dict[str, Any] = page.evaluate(
        """() => {
            const boxes = [...document.querySelectorAll('.djt-artifact')];
            const all = boxes.flatMap(b => [...b.querySelectorAll('*')]);
            return {
                scripts: all.filter(e => e.tagName === 'SCRIPT').length,
                images: all.filter(e => e.tagName === 'IMG').length,
                handlers: all.filter(e => [...e.attributes].some(a => a.name.startsWith('on')))
                    .length,
                hrefs: all.filter(e => e.hasAttribute('href')).map(e => e.getAttribute('href')),
                text: boxes.map(b => b.innerText).join('\\n'),
            };
        }"""
    )
    return result


def _luminance(css_colour: str) -> float:
    """0 (black) to 1 (white), from a computed ``rgb(...)``."""
    red, green, blue = (int(v) for v in re.findall(r"\d+", css_colour)[:3])
    return (0.2126 * red + 0.7152 * green + 0.0722 * blue) / 255


@pytest.fixture
def pipeline(django_user_model: Any) -> dict[str, Any]:
    """A known pipeline: a -> b -> d, c (fails) -> d (wait_for: d fails without running),
    a -> e (on a queue no worker serves: it waits)."""
    django_user_model.objects.create_superuser("admin", "admin@example.com", "browser-pw")
    a = add.delay(1, 2)
    b = add.delay(a, 10)  # type: ignore[arg-type]  # a future: an upstream run
    c = explode.delay("graph")
    d = total.apply_async(([b, 1],), wait_for=[c])
    e = add.apply_async((5, 5), queue="later", wait_for=[a])
    Worker(burst=True, handle_signals=False).run()
    futures: list[Any] = [a, b, c, d, e]
    runs = {name: TaskRun.objects.get(pk=f.id) for name, f in zip("abcde", futures, strict=True)}
    assert [runs[n].state_type for n in "abcde"] == [
        "COMPLETED", "COMPLETED", "FAILED", "FAILED", "SCHEDULED"
    ]  # fmt: skip
    return runs


def test_the_run_graph_draws_a_known_pipeline_left_to_right_in_state_colours(
    live_server: Any, pipeline: dict[str, Any]
) -> None:
    d = pipeline["d"]
    colours = {"a": "#15803d", "b": "#15803d", "c": "#b91c1c", "d": "#b91c1c", "e": "#6b7280"}
    with browser_page() as page:
        _log_in(page, live_server.url, f"/admin/django_tasks/taskrun/{d.id}/change/")
        graph = page.locator("svg.djt-graph")
        assert graph.locator(".djt-node").count() == 5
        assert graph.locator("path.djt-edge").count() == 4
        assert graph.locator('path.djt-edge[data-kind="wait_for"]').count() == 2  # c->d, a->e
        boxes = {}
        for name, run in pipeline.items():
            node = graph.locator(f'[data-run="{run.id}"]')
            assert node.locator("rect").get_attribute("fill") == colours[name], name
            assert node.get_attribute("href") == f"/admin/django_tasks/taskrun/{run.id}/change/"
            boxes[name] = node.locator("rect").bounding_box()
        # Left to right: every edge points right.
        assert boxes["a"]["x"] < boxes["b"]["x"] < boxes["d"]["x"]
        assert boxes["c"]["x"] < boxes["d"]["x"]
        assert boxes["a"]["x"] < boxes["e"]["x"]
        assert "current" in (
            graph.locator(f'[data-run="{d.id}"] rect').get_attribute("class") or ""
        )
        _screenshot(page, "run-graph.png")

        # Keyboard: Tab reaches the graph's nodes; Enter opens the focused run's page.
        for _ in range(200):
            page.keyboard.press("Tab")
            focused = page.evaluate(
                "() => document.activeElement && document.activeElement.getAttribute('data-run')"
            )
            if focused:
                break
        assert focused in {str(run.id) for run in pipeline.values()}
        page.keyboard.press("Enter")
        page.wait_for_url(re.compile(f"/taskrun/{focused}/change/"))
        page.wait_for_selector("#djt-header h1")


def test_a_pipeline_of_500_runs_is_drawn_in_under_a_second(
    live_server: Any, django_user_model: Any
) -> None:
    """Twenty layers of 25 runs, each waiting for two runs of the layer before (not run)."""
    django_user_model.objects.create_superuser("admin", "admin@example.com", "browser-pw")
    previous = [add.delay(0, i) for i in range(25)]
    for _ in range(19):
        previous = [
            add.apply_async((1, i), wait_for=[previous[i], previous[(i + 7) % 25]])
            for i in range(25)
        ]
    last = previous[0]
    with browser_page() as page:
        _log_in(page, live_server.url, f"/admin/django_tasks/taskrun/{last.id}/change/")
        page.reload()  # timed: the page with its graph, logged in
        loaded = page.evaluate(
            """() => { const n = performance.getEntriesByType("navigation")[0];
                       return n.loadEventEnd - n.startTime; }"""
        )
        nodes = page.locator("svg.djt-graph .djt-node").count()
    assert nodes == 500
    assert loaded < 1000, f"the page with a 500-run graph took {loaded:.0f} ms"


def test_a_running_runs_page_follows_its_progress_and_logs_without_reloading(
    live_server: Any, django_user_model: Any
) -> None:
    django_user_model.objects.create_superuser("admin", "admin@example.com", "browser-pw")
    run = narrated.delay(6, 0.5)
    worker = Worker(burst=True, handle_signals=False)
    thread = threading.Thread(target=worker.run)
    with browser_page() as page:
        _log_in(page, live_server.url, f"/admin/django_tasks/taskrun/{run.id}/change/")
        assert page.locator("#djt-header .djt-state").get_attribute("data-state") == "SCHEDULED"
        page.evaluate(
            """() => { window.djtSamePage = true; window.djtArrivals = [];
                new MutationObserver(() => {
                    for (const row of document.querySelectorAll("#djt-logs tr")) {
                        if (!row.dataset.seen) { row.dataset.seen = "1";
                            window.djtArrivals.push([row.innerText, Date.now()]); }
                    }
                }).observe(document.getElementById("djt-logs"), {childList: true}); }"""
        )
        thread.start()
        page.wait_for_selector('#djt-header .djt-state[data-state="RUNNING"]')
        page.wait_for_function(
            "() => (document.querySelector('#djt-progress progress') || {}).value >= 2"
        )
        _screenshot(page, "run-page-running.png")
        page.wait_for_selector('#djt-header .djt-state[data-state="COMPLETED"]', timeout=20_000)
        page.wait_for_selector('[data-final="true"]')
        page.wait_for_function("() => window.djtArrivals.length >= 6")
        arrivals = page.evaluate("() => window.djtArrivals")
        same_page = page.evaluate("() => window.djtSamePage === true")
        progress = page.locator("#djt-progress").inner_text()
    thread.join(timeout=30)
    assert same_page  # updated in place: a reload would have dropped the marker
    assert "6 / 6" in progress
    lags = []
    for text, arrived in arrivals:
        logged = re.search(r"finished step (\d) of 6 at ([\d.]+)", text)
        assert logged is not None, text
        lags.append(arrived - float(logged.group(2)) * 1000)
    assert [re.findall(r"step (\d)", t)[0] for t, _ in arrivals] == list("123456")
    assert max(lags) < 2000, lags


def test_dark_mode_run_page_and_task_page(live_server: Any, finished_runs: TaskRun) -> None:
    failed = finished_runs
    with browser_page(color_scheme="dark") as page:
        _log_in(page, live_server.url, f"/admin/django_tasks/taskrun/{failed.id}/change/")
        body = page.evaluate("() => getComputedStyle(document.body).backgroundColor")
        fact = page.evaluate(
            "() => getComputedStyle(document.querySelector('.djt-facts dd')).color"
        )
        error = page.evaluate(
            "() => getComputedStyle(document.querySelector('.djt-error-message')).color"
        )
        assert _luminance(body) < 0.25, body
        assert _luminance(fact) > 0.6, fact
        assert _luminance(error) > 0.6, error
        _screenshot(page, "run-page-dark.png")
        page.locator("#djt-header a", has_text="explode").click()
        page.wait_for_url(re.compile(r"/taskrun/task/\?name=explode"))
        assert page.locator("#djt-runs-over-time svg rect[data-state]").count() >= 1
        assert "RuntimeError" in page.locator("#djt-exceptions").inner_text()
        _screenshot(page, "task-page-dark.png")


def test_the_task_page_charts_a_task_and_links_its_latest_failure(
    live_server: Any, finished_runs: TaskRun
) -> None:
    with browser_page() as page:
        _log_in(page, live_server.url, "/admin/django_tasks/taskrun/task/?name=slow_echo")
        bars = page.locator("#djt-runs-over-time svg rect[data-state='COMPLETED']")
        assert bars.count() >= 1
        assert page.locator("#djt-durations svg polyline").count() == 3  # p50, p95, p99
        figures = page.locator("#djt-task-figures").inner_text()
        assert "3" in figures
        _screenshot(page, "task-page.png")
        page.goto(f"{live_server.url}/admin/django_tasks/taskrun/task/?name=explode")
        page.locator("#djt-exceptions a", has_text="latest run").click()
        page.wait_for_url(re.compile(str(finished_runs.id)))
