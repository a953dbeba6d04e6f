"""Read-only admin for task runs: list, filters, search, and a run page with its history.

The admin shows JSON previews and tracebacks only; payload columns are never read, so nothing
is unpickled on the web side. Runs are history: they cannot be added, changed or deleted here.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join

from .actions import RunNotFound, cancel_run, retry_run
from .admin_filters import (
    CreatedFilter,
    QueueFilter,
    SafeChangeList,
    TagFilter,
    TaskFilter,
    WorkerFilter,
)
from .admin_inlines import first_rows
from .admin_links import change_link
from .admin_paging import CappedPaginator
from .artifacts.admin import ARTIFACTS_SHOWN, ArtifactAdmin, ArtifactInline
from .limits.admin import LimitAdmin
from .models import TaskRun, TaskRunDependency, TaskRunLog, TaskRunState
from .permissions import CANCEL, RETRY, VIEW, may
from .progress import progress_html
from .schedules.admin import ScheduleAdmin
from .states import StateType, is_final

__all__ = ["ArtifactAdmin", "LimitAdmin", "ScheduleAdmin", "TaskRunAdmin"]

# The admin classes are generic only for the type checker (django-stubs); at run time they are not.
if TYPE_CHECKING:
    _RunAdminBase = admin.ModelAdmin[TaskRun]
    _StateInlineBase = admin.TabularInline[TaskRunState, TaskRun]
    _LogInlineBase = admin.TabularInline[TaskRunLog, TaskRun]
else:
    _RunAdminBase = admin.ModelAdmin
    _StateInlineBase = admin.TabularInline
    _LogInlineBase = admin.TabularInline

_BADGE_COLOURS = {
    StateType.SCHEDULED: "#6b7280",
    StateType.PENDING: "#a16207",
    StateType.RUNNING: "#1d4ed8",
    StateType.COMPLETED: "#15803d",
    StateType.FAILED: "#b91c1c",
    StateType.CRASHED: "#9d174d",
    StateType.CANCELLING: "#7c3aed",
    StateType.CANCELLED: "#4b5563",
}


def state_badge(state_type: str, state_name: str) -> str:
    colour = _BADGE_COLOURS.get(StateType(state_type), "#6b7280")
    return format_html(
        '<span class="djt-state" style="background:{};color:#fff;padding:1px 7px;'
        'border-radius:9px;white-space:nowrap">{}</span>',
        colour,
        state_name,
    )


def short_run_id(run_id: uuid.UUID) -> str:
    """The last block of the UUID, to tell runs apart on a page (search takes the whole id).

    Not the first: run ids are time-ordered (version 7), so their first block is the same
    for every run created in the same minute; the last block is random."""
    return str(run_id).rsplit("-", 1)[-1]


def _pretty_json(value: Any) -> str:
    return format_html(
        '<pre style="margin:0;white-space:pre-wrap">{}</pre>',
        json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True),
    )


class ReadOnlyMixin:
    """Runs are history: nothing is added, changed or deleted here. Whoever may view runs
    sees their history and logs with them (one permission, ``view_taskrun``)."""

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return may(request.user, VIEW)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


#: Rows each inline of the run page shows (the first ones; the page says how many there are).
STATES_SHOWN = LOG_LINES_SHOWN = 100


class TaskRunStateInline(ReadOnlyMixin, _StateInlineBase):
    model = TaskRunState
    formset = first_rows(STATES_SHOWN)
    fields = ["at", "badge", "message", "worker"]
    readonly_fields = ["at", "badge", "message", "worker"]
    extra = 0
    can_delete = False
    verbose_name = "state change"
    verbose_name_plural = "State history"

    @admin.display(description="state")
    def badge(self, obj: TaskRunState) -> str:
        return state_badge(obj.type, obj.name)

    @admin.display(description="time (UTC)")
    def at(self, obj: TaskRunState) -> str:
        # Transitions are milliseconds apart: the default date format would show them all equal.
        return _millis(obj.timestamp)


def _millis(timestamp: Any) -> str:
    return str(timestamp.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3])


class TaskRunLogInline(ReadOnlyMixin, _LogInlineBase):
    """The run's log lines (``get_run_logger()``, ``log_prints``)."""

    model = TaskRunLog
    formset = first_rows(LOG_LINES_SHOWN)
    fields = ["at", "level_name", "logger", "message"]
    readonly_fields = ["at", "level_name", "logger", "message"]
    extra = 0
    can_delete = False
    verbose_name = "log line"
    verbose_name_plural = "Logs"

    @admin.display(description="time (UTC)")
    def at(self, obj: TaskRunLog) -> str:
        return _millis(obj.timestamp)


def _run_links(ids: list[uuid.UUID]) -> str:
    if not ids:
        return "—"
    names = dict(TaskRun.objects.filter(pk__in=ids).values_list("id", "name"))
    return format_html_join(
        ", ",
        '<a href="{}">{} {}</a>',
        (
            (
                reverse("admin:django_tasks_taskrun_change", args=[run_id]),
                names.get(run_id, "(not recorded)"),
                short_run_id(run_id),
            )
            for run_id in ids
        ),
    )


@admin.register(TaskRun)
class TaskRunAdmin(SafeChangeList, ReadOnlyMixin, _RunAdminBase):
    list_display = [
        "short_id",
        "name",
        "badge",
        "progress_display",
        "queue",
        "attempts",
        "worker",
        "created",
        "started",
        "finished",
        "duration_display",
    ]
    list_display_links = ["short_id", "name"]
    list_filter = [
        "state_type",
        TaskFilter,
        QueueFilter,
        TagFilter,
        "origin",
        WorkerFilter,
        CreatedFilter,
    ]
    search_fields = ["task_name"]
    list_per_page = 50
    show_full_result_count = False  # no COUNT(*) of the whole table on every page ...
    paginator = CappedPaginator  # ... nor of what the filters match (admin_paging)
    inlines = [TaskRunStateInline, TaskRunLogInline, ArtifactInline]
    actions = ["retry_selected", "cancel_selected"]
    fieldsets = [
        (None, {"fields": ["id", "task_name", "name", "badge", "state_message", "origin"]}),
        ("Queue", {"fields": ["queue", "priority", "tags", "scheduled_time", "worker"]}),
        ("Unique and periodic", {"fields": ["unique_key", "schedule_link", "tick"]}),
        (
            "Timing",
            {
                "fields": [
                    "created",
                    "started",
                    "finished",
                    "duration_display",
                    "attempts",
                    "progress_display",
                ]
            },
        ),
        ("Parameters and result", {"fields": ["parameters_display", "result_display"]}),
        (
            "Dependencies",
            {"fields": ["upstream_display", "downstream_display", "retry_of_display"]},
        ),
        ("Traceback", {"fields": ["traceback_display"]}),
        ("Recorded", {"fields": ["records_display"]}),
        ("Task", {"fields": ["task_key"], "classes": ["collapse"]}),
    ]
    readonly_fields = [
        "id",
        "task_name",
        "name",
        "badge",
        "state_message",
        "origin",
        "queue",
        "priority",
        "tags",
        "scheduled_time",
        "worker",
        "unique_key",
        "schedule_link",
        "tick",
        "created",
        "started",
        "finished",
        "duration_display",
        "attempts",
        "progress_display",
        "parameters_display",
        "result_display",
        "traceback_display",
        "upstream_display",
        "downstream_display",
        "retry_of_display",
        "records_display",
        "task_key",
    ]

    @admin.display(description="Progress")
    def progress_display(self, obj: TaskRun) -> str:
        """``set_progress()`` of the run's code: a bar while it runs, the last value after."""
        return progress_html(obj.progress)

    @admin.display(description="Schedule")
    def schedule_link(self, obj: TaskRun) -> str:
        return change_link("schedule", obj.schedule_id, obj.schedule_id)

    # Runs are read-only, but cancelling or retrying one writes new history, never edits it.
    # Each needs its own permission (permissions.py), for the bulk actions and the buttons.
    def has_retry_permission(self, request: HttpRequest) -> bool:
        return may(request.user, RETRY)

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return may(request.user, CANCEL)

    @admin.action(
        description="Retry the selected runs (new runs, same parameters)", permissions=["retry"]
    )
    def retry_selected(self, request: HttpRequest, queryset: QuerySet[TaskRun]) -> None:
        made, refused = [], []
        for run_id in queryset.values_list("id", flat=True):
            try:
                made.append(retry_run(run_id))
            except (ValueError, RunNotFound) as exc:
                refused.append(str(exc))
        if made:
            self.message_user(request, f"Retried {len(made)} run(s).", messages.SUCCESS)
        for reason in refused:
            self.message_user(request, reason, messages.WARNING)

    @admin.action(description="Cancel the selected runs", permissions=["cancel"])
    def cancel_selected(self, request: HttpRequest, queryset: QuerySet[TaskRun]) -> None:
        done = 0
        for run_id in queryset.values_list("id", flat=True):
            if cancel_run(run_id) is not None:
                done += 1
        skipped = queryset.count() - done
        self.message_user(request, f"Cancelled {done} run(s).", messages.SUCCESS)
        if skipped:
            self.message_user(request, f"{skipped} run(s) had already finished.", messages.WARNING)

    # The run page's Retry and Cancel buttons: the same core functions, one run, POST only.
    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path("<uuid:run_id>/retry/", view(self.retry_view), name="django_tasks_taskrun_retry"),
            path(
                "<uuid:run_id>/cancel/", view(self.cancel_view), name="django_tasks_taskrun_cancel"
            ),
            *super().get_urls(),
        ]

    def retry_view(self, request: HttpRequest, run_id: uuid.UUID) -> HttpResponse:
        """Retry one run and go to the new run's page (or back, with the reason it can't)."""
        self._check_button_request(request, self.has_retry_permission(request))
        try:
            new_id = retry_run(run_id)
        except (ValueError, RunNotFound) as exc:
            self.message_user(request, str(exc), messages.WARNING)
            return redirect("admin:django_tasks_taskrun_change", run_id)
        self.message_user(request, f"Retried as run {new_id}.", messages.SUCCESS)
        return redirect("admin:django_tasks_taskrun_change", new_id)

    def cancel_view(self, request: HttpRequest, run_id: uuid.UUID) -> HttpResponse:
        """Cancel one run and show its page again (CANCELLED, or CANCELLING while it stops)."""
        self._check_button_request(request, self.has_cancel_permission(request))
        new_state = cancel_run(run_id)
        if new_state is None:
            self.message_user(request, "The run had already finished.", messages.WARNING)
        else:
            self.message_user(request, f"The run is {new_state.label}.", messages.SUCCESS)
        return redirect("admin:django_tasks_taskrun_change", run_id)

    def _check_button_request(self, request: HttpRequest, allowed: bool) -> None:
        if request.method != "POST":
            raise PermissionDenied("Retry and cancel take a POST (the run page's buttons).")
        if not allowed:
            raise PermissionDenied

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: TaskRun | None = None,
    ) -> HttpResponse:
        """The run page, with the buttons that apply to the run already loaded for it."""
        if obj is not None:
            context["can_retry"] = (
                obj.origin == "delay"
                and is_final(obj.state_type)
                and self.has_retry_permission(request)
            )
            context["can_cancel"] = not is_final(obj.state_type) and self.has_cancel_permission(
                request
            )
        return super().render_change_form(request, context, add, change, form_url, obj)

    def get_queryset(self, request: HttpRequest) -> QuerySet[TaskRun]:
        # Payload columns can be large and are never shown: do not even fetch them.
        return super().get_queryset(request).defer("parameters", "result")

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[TaskRun], search_term: str
    ) -> tuple[QuerySet[TaskRun], bool]:
        """Search by task name, or by run id when the term is a UUID."""
        term = search_term.strip()
        try:
            run_id = uuid.UUID(term)
        except ValueError:
            return super().get_search_results(request, queryset, search_term)
        return queryset.filter(pk=run_id), False

    @admin.display(description="run", ordering="id")
    def short_id(self, obj: TaskRun) -> str:
        return short_run_id(obj.id)

    @admin.display(description="state", ordering="state_type")
    def badge(self, obj: TaskRun) -> str:
        return state_badge(obj.state_type, obj.state_name)

    @admin.display(description="duration")
    def duration_display(self, obj: TaskRun) -> str:
        seconds = obj.duration
        return "—" if seconds is None else f"{seconds:.3f} s"

    @admin.display(description="parameters")
    def parameters_display(self, obj: TaskRun) -> str:
        return _pretty_json(obj.parameters_preview)

    @admin.display(description="result")
    def result_display(self, obj: TaskRun) -> str:
        if obj.state_type != StateType.COMPLETED:
            return "—"
        return _pretty_json(obj.result_preview)

    @admin.display(description="waited for")
    def upstream_display(self, obj: TaskRun) -> str:
        edges = TaskRunDependency.objects.filter(downstream_id=obj.pk)
        return _run_links(list(edges.values_list("upstream_id", flat=True)))

    @admin.display(description="runs waiting for it")
    def downstream_display(self, obj: TaskRun) -> str:
        edges = TaskRunDependency.objects.filter(upstream_id=obj.pk)
        return _run_links(list(edges.values_list("downstream_id", flat=True)))

    @admin.display(description="retry of")
    def retry_of_display(self, obj: TaskRun) -> str:
        retried = list(obj.retried_by.values_list("id", flat=True))
        original = _run_links([obj.retry_of_id]) if obj.retry_of_id else "—"
        if retried:
            return format_html("{} (retried as {})", original, _run_links(retried))
        return original

    @admin.display(description="states, log lines, artifacts")
    def records_display(self, obj: TaskRun) -> str:
        """How many rows each inline below has, and how many it shows (a run may log in a
        loop): all of them are in ``manage.py taskruns logs`` and the API."""
        counts = [
            (obj.states.count(), STATES_SHOWN, "state changes"),
            (obj.logs.count(), LOG_LINES_SHOWN, "log lines"),
            (obj.artifacts.count(), ARTIFACTS_SHOWN, "artifacts"),
        ]
        return ", ".join(
            f"{n:,} {what}" + (f" (the first {shown:,} shown below)" if n > shown else "")
            for n, shown, what in counts
        )

    @admin.display(description="traceback")
    def traceback_display(self, obj: TaskRun) -> str:
        if not obj.traceback:
            return "—"
        return format_html('<pre style="margin:0;white-space:pre-wrap">{}</pre>', obj.traceback)
