"""The run page: what a person opening one run wants first, in a bounded number of queries.

The header (state, task, duration, attempt N of M, worker, queue, tags) and, for a run that
failed, the error and the frame that raised it come first; then the state timeline,
parameters, result, progress, the run graph, artifacts and logs - each section only when it
has something to show. :func:`live_fragments` gives the parts that change while a run is not
final, for ``live.js`` to swap in.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.safestring import SafeString

from ..artifacts.models import Artifact
from ..artifacts.render import render_artifact
from ..models import TaskRun, TaskRunLog, TaskRunState
from ..permissions import VIEW_ARTIFACT, may
from ..progress import progress_html
from ..states import StateType
from .badges import final_type, state_badge, state_colour
from .graph import RunGraph, graph_svg, run_graph
from .links import task_url

__all__ = [
    "ARTIFACTS_SHOWN",
    "LOG_LINES_SHOWN",
    "STATES_SHOWN",
    "ErrorSummary",
    "Segment",
    "error_summary",
    "live_fragments",
    "log_rows",
    "run_page_context",
    "timeline",
]

#: What the page shows of a run that wrote a lot (the CLI and the API list everything).
STATES_SHOWN = 200
LOG_LINES_SHOWN = 200  # the newest: where a running run's new lines appear
ARTIFACTS_SHOWN = 10  # the newest

#: How long a final run's page keeps asking: its last log lines are written in batches a
#: fraction of a second after its state (RECORD_FLUSH_INTERVAL).
SETTLE_SECONDS = 2.0

# A frame; a SyntaxError's names no function.
_FRAME = re.compile(r'^\s*File "(?P<file>.*)", line (?P<line>\d+)(?:, in (?P<function>.*))?$')
# An exception group's tracebacks are drawn inside "|" margins and "+---" rules.
_GROUP_MARGIN = re.compile(r"^\s*(?:[|+]\s?)+")
_GROUP_RULE = re.compile(r"^\s*\+[-+ \d]*$")
_ERROR_CHARS = 2000


@dataclass(frozen=True)
class ErrorSummary:
    """The exception of a failed run and where it was raised (the innermost frame)."""

    message: str
    file: str = ""
    line: str = ""
    function: str = ""
    code: str = ""


def error_summary(traceback: str, state_message: str = "") -> ErrorSummary | None:
    """The last exception of a traceback and its innermost frame; the state's message when
    there is no traceback (a crash, a timeout, a cancelled upstream)."""
    lines = traceback.rstrip().splitlines()
    if "Exception Group Traceback" in traceback:  # only there: a message may start with "|"
        lines = [_GROUP_MARGIN.sub("    ", s) for s in lines if not _GROUP_RULE.match(s)]
    lines = [s for s in lines if not s.strip().startswith("[Previous line repeated")]
    last_frame = max((i for i, text in enumerate(lines) if _FRAME.match(text)), default=None)
    if last_frame is None:
        message = traceback.strip() or state_message.strip()
        return ErrorSummary(message[-_ERROR_CHARS:]) if message else None
    match = _FRAME.match(lines[last_frame])
    assert match is not None
    rest = lines[last_frame + 1 :]
    code = ""
    if rest and rest[0].startswith("    ") and not _FRAME.match(rest[0]):
        code = rest.pop(0).strip()
    # Python 3.11+ marks the failing expression with a line of carets: not the message.
    while rest and set(rest[0].strip()) <= set("^~ "):
        rest.pop(0)
    message = "\n".join(rest).strip() or state_message.strip()
    return ErrorSummary(
        message=message[:_ERROR_CHARS],
        file=match["file"],
        line=match["line"],
        function=match["function"] or "",
        code=code,
    )


@dataclass(frozen=True)
class Segment:
    """The time a run spent in one state: up to the next state, or up to now."""

    type: str
    name: str
    start: datetime
    seconds: float | None  # None: a final state (it has no end)
    worker: str
    message: str
    current: bool

    @property
    def colour(self) -> str:
        return state_colour(self.type)

    @property
    def badge(self) -> SafeString:
        return state_badge(self.type, self.name)


def timeline(states: list[TaskRunState], now: datetime, final: bool) -> list[Segment]:
    """One segment per state change, in order; the last one runs to ``now`` unless final."""
    segments = []
    for index, state in enumerate(states):
        last = index == len(states) - 1
        end = now if last else states[index + 1].timestamp
        seconds = None if last and final else max((end - state.timestamp).total_seconds(), 0.0)
        segments.append(
            Segment(
                type=state.type,
                name=state.name,
                start=state.timestamp,
                seconds=seconds,
                worker=state.worker,
                message=state.message,
                current=last,
            )
        )
    return segments


def _bar_widths(segments: list[Segment]) -> list[str]:
    """Each segment's share of the bar in percent, by its time (at least 3%, to be seen), as
    CSS text: a template would write 66,43 in a locale with a decimal comma."""
    times = [s.seconds or 0.0 for s in segments]
    total = sum(times) or 1.0
    raw = [max(t / total * 100, 3.0) for t in times]
    scale = 100 / sum(raw) if raw else 1.0
    return [f"{width * scale:.2f}%" for width in raw]


def _run_duration(run: TaskRun, now: datetime) -> float | None:
    if run.started is None:
        return None
    return ((run.finished or now) - run.started).total_seconds()


def _tags(value: Any) -> list[str]:
    """A run's tags as text: a list of strings as written, anything else a row may hold (a
    number, an object: written by hand or by another version) as one item."""
    if isinstance(value, list):
        return [str(tag) for tag in value]
    return [] if value in (None, "") else [json.dumps(value, ensure_ascii=False)]


def _attempt(run: TaskRun) -> str:
    allowed = run.retries + 1
    if not run.attempts:
        return f"not started ({allowed} attempt{'s' if allowed != 1 else ''} allowed)"
    return f"{run.attempts} of {max(allowed, run.attempts)}"


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


def log_rows(logs: QuerySet[TaskRunLog] | list[TaskRunLog]) -> list[dict[str, Any]]:
    """Log lines as the page and ``live.js`` show them (plain data: the script sets text)."""
    return [
        {
            "id": line.id,
            "at": _millis(line.timestamp),
            "level": line.level_name,
            "logger": line.logger,
            "message": line.message,
        }
        for line in logs
    ]


def _millis(moment: datetime) -> str:
    return moment.astimezone(timezone.get_current_timezone()).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _fragments(run: TaskRun, states: list[TaskRunState], now: datetime) -> dict[str, Any]:
    """What changes while a run lives: the header, the timeline and the progress."""
    final = final_type(run.state_type)
    segments = timeline(states, now, final)
    context = {
        "run": run,
        "badge": state_badge(run.state_type, run.state_name),
        "task_url": task_url(run.task_name),
        "tags": _tags(run.tags),
        "duration": _run_duration(run, now),
        "attempt": _attempt(run),
        "segments": list(zip(segments, _bar_widths(segments), strict=True)),
        "final": final,
    }
    return {
        "header": render_to_string("django_tasks/pages/_run_header.html", context),
        "timeline": render_to_string("django_tasks/pages/_timeline.html", context),
        "progress": progress_html(run.progress) if run.progress is not None else "",
    }


def _settled(run: TaskRun, graph: RunGraph, now: datetime) -> bool:
    """Nothing more to show: the run and its graph are final, its last writes are in."""
    return final_type(run.state_type) and graph.all_final and _quiet(run, now)


def _quiet(run: TaskRun, now: datetime) -> bool:
    return (now - run.updated).total_seconds() > SETTLE_SECONDS


def _states(run: TaskRun) -> list[TaskRunState]:
    """The newest ``STATES_SHOWN`` state changes, oldest first (a run retried without end
    keeps adding them: its current state is the one to show)."""
    return list(run.states.order_by("-timestamp", "-id")[:STATES_SHOWN])[::-1]


def run_page_context(request: HttpRequest, run: TaskRun) -> dict[str, Any]:
    """Everything the run page shows, in a number of queries that does not grow with the run."""
    now = timezone.now()
    states = _states(run)
    states_total = run.states.count() if len(states) == STATES_SHOWN else len(states)
    logs_total = run.logs.count()
    logs = list(run.logs.order_by("-id")[:LOG_LINES_SHOWN])[::-1]
    graph = run_graph(run.id)
    may_see_artifacts = may(request.user, VIEW_ARTIFACT)
    artifacts: list[Artifact] = []
    artifacts_total = 0
    if may_see_artifacts:
        artifacts_total = run.artifacts.count()
        artifacts = list(run.artifacts.order_by("-created", "-id")[:ARTIFACTS_SHOWN])
    failed = run.state_type in (StateType.FAILED, StateType.CRASHED)
    return {
        "run": run,
        "final": final_type(run.state_type),
        "settled": _settled(run, graph, now),
        "fragments": _fragments(run, states, now),
        "error": error_summary(run.traceback, run.state_message) if failed else None,
        "states_total": states_total,
        "states_shown": STATES_SHOWN,
        "parameters": _pretty(run.parameters_preview) if run.parameters_preview else "",
        "result": (
            _pretty(run.result_preview)
            if run.state_type == StateType.COMPLETED and run.result_preview is not None
            else ""
        ),
        "logs": log_rows(logs),
        "logs_after": str(logs[-1].id if logs else 0),  # not localised: 1,234 is no id
        "logs_total": logs_total,
        "log_lines_shown": LOG_LINES_SHOWN,
        "graph": graph if len(graph.nodes) > 1 else None,
        "graph_svg": graph_svg(graph, run.id) if len(graph.nodes) > 1 else "",
        "artifacts": [(a, render_artifact(a.type, a.data)) for a in artifacts],
        "artifacts_total": artifacts_total,
        "artifacts_shown": ARTIFACTS_SHOWN,
    }


def live_fragments(run: TaskRun, logs_after: int, graph_key: str) -> dict[str, Any]:
    """The live view of a run: the changing fragments, log lines after ``logs_after`` (ids),
    and the graph's node states - its whole SVG when its set of runs changed."""
    now = timezone.now()
    states = _states(run)
    new_logs = list(run.logs.filter(id__gt=logs_after).order_by("id")[:LOG_LINES_SHOWN])
    graph = run_graph(run.id)
    data: dict[str, Any] = {
        # More lines than one answer takes: not settled, whatever the run's state.
        "final": _settled(run, graph, now) and len(new_logs) < LOG_LINES_SHOWN,
        # The run itself is done: only its graph may still change (asked less often).
        "run_settled": final_type(run.state_type) and _quiet(run, now),
        "more_logs": len(new_logs) == LOG_LINES_SHOWN,
        **_fragments(run, states, now),
        "logs": log_rows(new_logs),
        "graph_key": graph.key,
        "nodes": {str(n.id): [n.state_type, state_colour(n.state_type)] for n in graph.nodes},
    }
    if graph.key != graph_key and len(graph.nodes) > 1:
        data["graph_svg"] = graph_svg(graph, run.id)
    return data
