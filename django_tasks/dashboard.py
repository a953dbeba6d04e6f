"""The dashboard: throughput and failures, runs by state, queues, slow and failing tasks and
live workers on one staff-only page that refreshes itself.

Charts are SVG drawn here, on the server: nothing is loaded from the internet and the page
works without JavaScript. Every figure comes from one aggregate query (see
:mod:`django_tasks.api.queries`); windows are read through the primary key (time-ordered
ids), so the page costs the same with a million finished runs.
"""

from __future__ import annotations

from datetime import UTC, datetime

from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from .api import queries
from .artifacts.listing import latest_artifacts
from .horizon import snapshot_warning
from .models import TaskRun
from .pages.badges import STATE_COLOURS
from .pages.charts import runs_scatter, scatter_runs
from .pages.crumbs import breadcrumbs
from .pages.links import task_url
from .permissions import VIEW, VIEW_ARTIFACT, VIEW_SCHEDULE, may
from .progress import progress_html
from .retention import parse_age
from .schedules.listing import schedule_rows

__all__ = ["bar_chart", "dashboard", "throughput_chart"]

WINDOWS = {"1h": 60, "24h": 48, "7d": 56}


@staff_member_required
def dashboard(request: HttpRequest) -> HttpResponse:
    if not may(request.user, VIEW):  # staff, and allowed to see runs (as in the admin)
        raise PermissionDenied
    window_name = request.GET.get("window", "1h")
    if window_name not in WINDOWS:
        window_name = "1h"
    window = parse_age(window_name)
    slots, by_state, all_tasks = queries.window_stats(window, WINDOWS[window_name])
    # Each linked to its page, unless no task of this process has its key.
    tasks = [
        {**t, "url": task_url(t["name"]) if t["module"] else None} for t in all_tasks if t["runs"]
    ]
    now = datetime.now(tz=UTC)
    workers = queries.live_workers()  # read once: listed, and counted per queue
    context = {
        "window": window_name,
        "windows": list(WINDOWS),
        "throughput_svg": throughput_chart(slots),
        "completed": sum(s[1] for s in slots),
        "failed": sum(s[2] for s in slots),
        "states_svg": bar_chart(sorted(by_state.items()), STATE_COLOURS),
        "queues": queries.queue_depths(workers),
        "slowest": sorted(
            (t for t in tasks if t["p95_seconds"] is not None),
            key=lambda t: -t["p95_seconds"],
        )[:5],
        "failing": sorted(
            (t for t in tasks if t["failed"]), key=lambda t: -(t["failure_rate"] or 0)
        )[:5],
        "workers": workers,
        "running": [
            {**run, "progress_html": progress_html(run["progress"])}
            for run in queries.running_runs()
        ],
        # The latest version of each artifact key, to whoever may view artifacts.
        "artifacts": latest_artifacts() if may(request.user, VIEW_ARTIFACT) else None,
        # Shown to whoever may see schedules (view_schedule), as the admin would.
        "schedules": schedule_rows(limit=50) if may(request.user, VIEW_SCHEDULE) else None,
        # A transaction open for long holds VACUUM back: the queue slows down (horizon.py).
        "snapshot": snapshot_warning(),
        # Runs over time: a dot per run of the window (the newest SCATTER_RUNS).
        "scatter_svg": runs_scatter(
            scatter_runs(TaskRun.objects.filter(id__gte=queries.window_start(window))), now
        ),
        "now": now,
        "crumbs": breadcrumbs(
            (reverse("admin:index"), "Home"),
            (reverse("admin:django_tasks_taskrun_changelist"), "Task runs"),
            current="Dashboard",
        ),
    }
    return render(request, "django_tasks/dashboard.html", context)


def throughput_chart(slots: list[tuple[float, int, int]], width: int = 360) -> SafeString:
    """Stacked columns per time slot: completed (green) under failed (red)."""
    height, top = 160, max([done + failed for _, done, failed in slots] + [1])
    step = width / max(len(slots), 1)
    bars = []
    for index, (start, done, failed) in enumerate(slots):
        x = index * step
        when = datetime.fromtimestamp(start, tz=UTC).strftime("%H:%M")
        for value, base, colour, label in (
            (done, 0, "#15803d", "completed"),
            (failed, done, "#b91c1c", "failed"),
        ):
            if value:
                h = value / top * (height - 20)
                y = height - (base / top * (height - 20)) - h
                bars.append(
                    (
                        _n(x + 1),
                        _n(y),
                        _n(max(step - 2, 1)),
                        _n(h),
                        colour,
                        f"{when}: {value} {label}",
                    )
                )
    rects = format_html_join(
        "",
        '<rect x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{}</title></rect>',
        bars,
    )
    return format_html(
        '<svg class="djt-chart" role="img" aria-label="Runs per time slot" viewBox="0 0 {} {}" '
        'width="100%" height="{}"><line x1="0" y1="{}" x2="{}" y2="{}" stroke="#d1d5db"/>{}'
        '<text x="2" y="12" font-size="11" fill="#6b7280">max {} per slot</text></svg>',
        width,
        height,
        height,
        _n(height - 0.5),
        width,
        _n(height - 0.5),
        rects,
        top,
    )


def bar_chart(items: list[tuple[str, int]], colours: dict[str, str]) -> SafeString:
    """Horizontal bars, one per item, labelled with the count (drawn at a dashboard card's
    width, so that the labels keep their size)."""
    top = max([count for _, count in items] + [1])
    rows = []
    for index, (label, count) in enumerate(items):
        y, length = index * 26, count / top * 190
        rows.append(
            (
                y + 14,
                label,
                y + 2,
                length,
                colours.get(label, "#6b7280"),
                116 + length,
                y + 16,
                count,
            )
        )
    body = format_html_join(
        "",
        '<text x="0" y="{}" font-size="12">{}</text>'
        '<rect x="110" y="{}" width="{}" height="18" fill="{}"/>'
        '<text x="{}" y="{}" font-size="12">{}</text>',
        rows,
    )
    height = max(len(items) * 26, 26)
    return format_html(
        '<svg class="djt-chart" role="img" aria-label="Runs by state" viewBox="0 0 360 {}" '
        'width="100%" height="{}">{}</svg>',
        height,
        height,
        body,
    )


def _n(value: float) -> str:
    """A coordinate for SVG (format_html escapes its arguments, so numbers come as text)."""
    return f"{value:.1f}"
