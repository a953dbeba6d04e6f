"""SVG charts of the task page, the dashboard and the run list, drawn on the server.

- :func:`runs_chart`: runs per point of time, stacked by state;
- :func:`duration_chart`: p50, p95 and p99 of the durations per point (log scale);
- :func:`runs_scatter`: "runs over time" - a dot per run at its start time and duration,
  coloured by state and linked to its page (the newest ``SCATTER_RUNS`` runs).

Numbers are formatted here; every text (a run's name) goes through ``format_html``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.db import OperationalError
from django.db.models import QuerySet
from django.utils.html import escape, format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from ..conf import task_settings
from ..models import TaskRun
from .badges import STATE_COLOURS, state_colour
from .budget import time_budget
from .links import run_url_template

__all__ = [
    "SCATTER_RUNS",
    "Point",
    "duration_chart",
    "runs_chart",
    "runs_scatter",
    "scatter_runs",
]

#: The most runs one "runs over time" chart draws (the newest of what it is given).
SCATTER_RUNS = 500

_W, _H, _LEFT, _BOTTOM, _TOP = 720, 180, 46, 18, 8


@dataclass
class Point:
    """One point of time of a series: runs by state and duration percentiles."""

    start: int  # Unix time
    states: Counter[str] = field(default_factory=Counter)
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None


def _n(value: float) -> str:
    return f"{value:.1f}"


def _when(moment: float, step: int) -> str:
    fmt = "%H:%M" if step < 3600 else "%m-%d %H:%M"
    return datetime.fromtimestamp(moment, tz=UTC).strftime(fmt)


def _frame(label: str, body: SafeString, x_labels: SafeString, y_labels: SafeString) -> SafeString:
    return format_html(
        '<svg class="djt-chart" role="img" aria-label="{}" viewBox="0 0 {} {}" width="100%">'
        '<line x1="{}" y1="{}" x2="{}" y2="{}" class="djt-grid-line"/>{}{}{}</svg>',
        label,
        _W,
        _H,
        _LEFT,
        _H - _BOTTOM,
        _W,
        _H - _BOTTOM,
        y_labels,
        x_labels,
        body,
    )


def _x_labels(points: list[Point], step: int, x_of: Callable[[int], float]) -> SafeString:
    every = max(len(points) // 6, 1)
    return format_html_join(
        "",
        '<text x="{}" y="{}" class="djt-axis">{}</text>',
        (
            (_n(x_of(i)), _H - 4, _when(p.start, step))
            for i, p in enumerate(points)
            if i % every == 0
        ),
    )


def runs_chart(points: list[Point], step: int) -> SafeString:
    """Runs per point, a column each, stacked by state (the states' colours)."""
    top = max([sum(p.states.values()) for p in points] + [1])
    plot_h = _H - _BOTTOM - _TOP
    column = (_W - _LEFT) / max(len(points), 1)
    bars = []
    for index, point in enumerate(points):
        base = 0
        for state in STATE_COLOURS:
            count = point.states.get(state, 0)
            if not count:
                continue
            h = count / top * plot_h
            y = _H - _BOTTOM - (base / top * plot_h) - h
            title = f"{_when(point.start, step)}: {count} {state.lower()}"
            bars.append((_n(_LEFT + index * column + 1), _n(y), _n(max(column - 2, 1)), _n(h),
                         state_colour(state), state, title))  # fmt: skip
            base += count
    body = format_html_join(
        "",
        '<rect x="{}" y="{}" width="{}" height="{}" fill="{}" data-state="{}"><title>{}</title>'
        "</rect>",
        bars,
    )
    y_labels = format_html(
        '<text x="0" y="{}" class="djt-axis">{}</text><text x="0" y="{}" class="djt-axis">0</text>',
        _TOP + 10,
        top,
        _H - _BOTTOM,
    )

    def x_of(index: int) -> float:
        return _LEFT + index * column

    return _frame("Runs over time by state", body, _x_labels(points, step, x_of), y_labels)


def _log_axis(values: list[float]) -> tuple[float, float]:
    low = min(values, default=0.001)
    high = max(values, default=1.0)
    low_exp = math.floor(math.log10(max(low, 1e-4)))
    high_exp = math.ceil(math.log10(max(high, 1e-4)))
    return low_exp, max(high_exp, low_exp + 1)


def _seconds(value: float) -> str:
    if value >= 1:
        return f"{value:g} s"
    return f"{value * 1000:g} ms"


def _seconds_text(value: float) -> str:
    return f"{value:.3f} s" if value >= 0.001 else f"{value * 1000:.3f} ms"


def _y_log(value: float, low: float, high: float) -> float:
    plot_h = _H - _BOTTOM - _TOP
    position = (math.log10(max(value, 10**low)) - low) / (high - low)
    return _H - _BOTTOM - position * plot_h


def _log_labels(low: float, high: float) -> SafeString:
    return format_html_join(
        "",
        '<line x1="{}" y1="{}" x2="{}" y2="{}" class="djt-grid-line"/>'
        '<text x="0" y="{}" class="djt-axis">{}</text>',
        (
            (_LEFT, _n(_y_log(10.0**e, low, high)), _W, _n(_y_log(10.0**e, low, high)),
             _n(_y_log(10.0**e, low, high) + 4), _seconds(10.0**e))
            for e in range(int(low), int(high) + 1)
        ),
    )  # fmt: skip


_LINES = (("p50", "#15803d"), ("p95", "#a16207"), ("p99", "#b91c1c"))


def duration_chart(points: list[Point], step: int) -> SafeString:
    """p50, p95 and p99 of each point's durations, a line each, on a log scale."""
    values = [v for p in points for v in (p.p50, p.p95, p.p99) if v is not None and v > 0]
    low, high = _log_axis(values)
    column = (_W - _LEFT) / max(len(points), 1)

    def x_of(index: int) -> float:
        return _LEFT + (index + 0.5) * column

    lines, marks = [], []
    for name, colour in _LINES:
        coords = [
            (x_of(i), _y_log(getattr(p, name), low, high), _seconds_text(getattr(p, name)))
            for i, p in enumerate(points)
            if getattr(p, name) is not None
        ]
        if coords:
            lines.append((" ".join(f"{x:.1f},{y:.1f}" for x, y, _ in coords), colour, name))
            marks += [(_n(x), _n(y), colour, f"{name}: {text}") for x, y, text in coords]
    body = format_html_join(
        "",
        '<polyline points="{}" fill="none" stroke="{}" stroke-width="2" data-line="{}"/>',
        lines,
    ) + format_html_join(
        "", '<circle cx="{}" cy="{}" r="2.5" fill="{}"><title>{}</title></circle>', marks
    )
    legend = format_html_join(
        "",
        '<text x="{}" y="{}" fill="{}" font-size="11">{}</text>',
        ((_W - 150 + i * 48, _TOP + 10, colour, name) for i, (name, colour) in enumerate(_LINES)),
    )
    return _frame(
        "Durations over time: p50, p95, p99",
        format_html("{}{}", body, legend),
        _x_labels(points, step, x_of),
        _log_labels(low, high),
    )


#: The longest the dots' query may take (a filter that matches few runs of millions reads
#: through the primary key until it has found enough): past it the chart says so.
SCATTER_TIMEOUT_MS = 100


def scatter_runs(
    runs: QuerySet[TaskRun], limit: int = SCATTER_RUNS
) -> list[tuple[Any, ...]] | None:
    """The newest ``limit`` started runs of ``runs`` (through the primary key, newest first);
    None when finding them took longer than ``SCATTER_TIMEOUT_MS``."""
    fields = ["id", "name", "task_name", "state_type", "state_name", "started", "finished"]
    started = runs.filter(started__isnull=False).order_by("-id").values_list(*fields)[:limit]
    try:
        with time_budget(SCATTER_TIMEOUT_MS):
            return list(started.using(task_settings().DATABASE_ALIAS))
    except OperationalError:  # QueryCanceled: too slow to draw
        return None


def runs_scatter(rows: list[tuple[Any, ...]] | None, now: datetime) -> SafeString:
    """A dot per run: x its start, y its duration (so far, while it runs), its colour its
    state; each dot links to the run's page."""
    if rows is None:
        return format_html(
            '<p class="djt-quiet" id="djt-scatter-slow">{}</p>',
            "Too many runs to look through quickly: narrow the filters (created, task) to "
            "draw them.",
        )
    if not rows:
        return format_html('<p class="djt-quiet">{}</p>', "No run started in this window.")
    durations = [((finished or now) - started).total_seconds() for *_, started, finished in rows]
    low, high = _log_axis([d for d in durations if d > 0])
    first = min(r[5] for r in rows).timestamp()
    last = max(now.timestamp(), first + 1)
    span = last - first
    # Hundreds of dots: plain string building (format_html and reverse() per dot took 40 ms
    # for 500); every text is escaped, ids and numbers are made here.
    page = run_url_template()
    dots = []
    for (run_id, name, task_name, state, state_name, started, _), seconds in zip(
        rows, durations, strict=True
    ):
        x = _LEFT + 4 + (started.timestamp() - first) / span * (_W - _LEFT - 8)
        label = escape(f"{name or task_name} · {state_name} · {seconds:.3f} s · {started:%H:%M:%S}")
        dots.append(
            f'<a href="{page.format(run_id)}"><circle cx="{x:.1f}" '
            f'cy="{_y_log(seconds, low, high):.1f}" r="4" fill="{state_colour(state)}" '
            f'class="djt-dot" data-state="{escape(state)}"><title>{label}</title></circle></a>'
        )
    body = mark_safe("".join(dots))  # built above from escaped parts
    ticks = [first + span * i / 5 for i in range(6)]
    x_labels = format_html_join(
        "",
        '<text x="{}" y="{}" class="djt-axis">{}</text>',
        (
            (_n(min(_LEFT + (t - first) / span * (_W - _LEFT), _W - 60)), _H - 4,
             datetime.fromtimestamp(t, tz=UTC).strftime("%H:%M:%S"))
            for t in ticks
        ),
    )  # fmt: skip
    return format_html(
        '<div class="djt-scatter">{}</div>',
        _frame(
            f"Runs over time: {len(rows)} runs by start time and duration",
            body,
            x_labels,
            _log_labels(low, high),
        ),
    )
