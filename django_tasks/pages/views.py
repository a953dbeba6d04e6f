"""The admin views of the pages: the run page, its live JSON and the task page.

They are :class:`~django_tasks.admin.TaskRunAdmin`'s (its URLs, the admin's login and
``view_taskrun``, as the change form was); the admin class only hands the request over.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.contrib import messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db import DataError
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from ..admin_filters import CreatedFilter, filtered_runs, holds_nul
from ..ids import uuid7_floor
from ..storable import shown
from .badges import final_type, short_run_id
from .charts import runs_scatter, scatter_runs
from .crumbs import breadcrumbs
from .links import task_url
from .run_page import live_fragments, run_page_context
from .task_page import task_page_context

if TYPE_CHECKING:
    from ..admin import TaskRunAdmin

__all__ = ["list_scatter", "run_live", "run_page", "task_page"]

#: The run list's dots look back this far unless its "created" filter says otherwise.
LIST_SCATTER_WINDOW = timedelta(hours=24)

_BIGINT = 2**63 - 1


def _allowed(model_admin: TaskRunAdmin, request: HttpRequest) -> None:
    if not model_admin.has_view_permission(request):
        raise PermissionDenied


def _page_context(
    model_admin: TaskRunAdmin, request: HttpRequest, title: str, *links: tuple[str, str]
) -> dict[str, Any]:
    opts = model_admin.opts
    crumbs = breadcrumbs(
        (reverse("admin:index"), "Home"),
        (reverse("admin:app_list", args=[opts.app_label]), str(opts.app_config.verbose_name)),
        (reverse("admin:django_tasks_taskrun_changelist"), "Task runs"),
        *links,
        current=title,
    )
    return {
        **model_admin.admin_site.each_context(request),
        "opts": opts,
        "title": title,
        "crumbs": crumbs,
    }


def _task_link(task_name: str) -> tuple[str, str]:
    return task_url(task_name), task_name


def run_page(model_admin: TaskRunAdmin, request: HttpRequest, object_id: str) -> HttpResponse:
    """One run, built for reading it (:mod:`.run_page`); runs are never changed here."""
    _allowed(model_admin, request)
    if request.method not in ("GET", "HEAD"):
        return HttpResponseNotAllowed(["GET", "HEAD"])
    run = model_admin.get_object(request, unquote(object_id))
    if run is None:  # not a run id, or no such run: as the admin answers
        messages.warning(request, f"No task run has the id {shown(object_id)}.")
        return redirect("admin:django_tasks_taskrun_changelist")
    final = final_type(run.state_type)
    context = {
        **_page_context(
            model_admin, request, f"Run {short_run_id(run.id)}", _task_link(run.task_name)
        ),
        "short_id": short_run_id(run.id),
        "can_retry": run.origin == "delay" and final and model_admin.has_retry_permission(request),
        "can_cancel": not final and model_admin.has_cancel_permission(request),
        **run_page_context(request, run),
    }
    return TemplateResponse(request, "django_tasks/pages/run_page.html", context)


def _bad(message: str) -> JsonResponse:
    return JsonResponse({"detail": message}, status=400)


def run_live(model_admin: TaskRunAdmin, request: HttpRequest, run_id: uuid.UUID) -> HttpResponse:
    """What changed on a run's page: fragments, new log lines, the graph's states."""
    _allowed(model_admin, request)
    raw = request.GET.get("logs_after", "0") or "0"
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19 or int(raw) > _BIGINT:
        return _bad("logs_after must be a log line id: a whole number from 0.")
    graph_key = request.GET.get("graph", "")
    if len(graph_key) > 64:
        return _bad("graph must be the key the last answer gave.")
    run = model_admin.get_queryset(request).filter(pk=run_id).first()
    if run is None:
        return JsonResponse({"detail": "No such run."}, status=404)
    response = JsonResponse(live_fragments(run, int(raw), graph_key))
    response["Cache-Control"] = "no-store"
    return response


def task_page(model_admin: TaskRunAdmin, request: HttpRequest, task_name: str) -> HttpResponse:
    """One task: its runs over time, durations, failures, queue, schedules and limits."""
    _allowed(model_admin, request)
    if not task_name or "\x00" in task_name or len(task_name) > 255:  # no run has such a name
        raise Http404("No task has this name.")
    context = {
        **_page_context(model_admin, request, task_name),
        **task_page_context(request, task_name),
    }
    return TemplateResponse(request, "django_tasks/pages/task_page.html", context)


def list_scatter(model_admin: TaskRunAdmin, request: HttpRequest) -> HttpResponse:
    """Runs over time for the run list (an HTML fragment): the newest runs its filters and
    search match, within its "created" filter's window (the last 24 hours without one)."""
    if holds_nul(request.GET):
        return HttpResponse(status=400)
    try:
        runs = filtered_runs(model_admin, request)
    except IncorrectLookupParameters:
        return HttpResponse(status=400)
    now = timezone.now()
    if CreatedFilter.span(request.GET.get("created", "")) is None:  # as the filter reads it
        runs = runs.filter(pk__gte=uuid7_floor(now - LIST_SCATTER_WINDOW))
    try:
        rows = scatter_runs(runs)
    except (DataError, ValueError, TypeError, OverflowError):  # a lookup the SQL refuses
        return HttpResponse(status=400)
    response = HttpResponse(runs_scatter(rows, now))
    response["Cache-Control"] = "no-store"
    return response
