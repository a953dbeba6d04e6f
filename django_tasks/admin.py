"""Read-only admin for task runs: list, filters, search, and a run page with its history.

The admin shows JSON previews and tracebacks only; payload columns are never read, so nothing
is unpickled on the web side. Runs are history: they cannot be added, changed or deleted here.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import URLPattern, path
from django.utils.dateformat import format as date_format
from django.utils.timezone import localtime

from .actions import RunNotFound, cancel_run, retry_run
from .admin_filters import (
    CreatedFilter,
    QueueFilter,
    SafeChangeList,
    TagFilter,
    TaskFilter,
    WorkerFilter,
)
from .admin_paging import CappedPaginator
from .artifacts.admin import ArtifactAdmin
from .limits.admin import LimitAdmin
from .models import TaskRun
from .pages import views as pages
from .pages.badges import short_run_id, state_badge
from .permissions import CANCEL, RETRY, VIEW, may
from .progress import progress_html
from .schedules.admin import ScheduleAdmin

__all__ = ["ArtifactAdmin", "LimitAdmin", "ScheduleAdmin", "TaskRunAdmin"]

# The admin classes are generic only for the type checker (django-stubs); at run time they are not.
if TYPE_CHECKING:
    _RunAdminBase = admin.ModelAdmin[TaskRun]
else:
    _RunAdminBase = admin.ModelAdmin


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
        "created_at",
        "started_at",
        "finished_at",
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
    actions = ["retry_selected", "cancel_selected"]

    @admin.display(description="Progress")
    def progress_display(self, obj: TaskRun) -> str:
        """``set_progress()`` of the run's code: a bar while it runs, the last value after."""
        return progress_html(obj.progress)

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
            path("<uuid:run_id>/live/", view(self.live_view), name="django_tasks_taskrun_live"),
            path("over-time/", view(self.scatter_view), name="django_tasks_taskrun_scatter"),
            # The name in the query string: a path segment cannot carry every name (a newline,
            # "..", "//" - browsers and proxies rewrite those).
            path("task/", view(self.task_view), name="django_tasks_taskrun_task"),
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

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        """The run page (:mod:`.pages.run_page`), in place of Django's change form."""
        return pages.run_page(self, request, object_id)

    def live_view(self, request: HttpRequest, run_id: uuid.UUID) -> HttpResponse:
        """The run page's live refresh (JSON)."""
        return pages.run_live(self, request, run_id)

    def task_view(self, request: HttpRequest) -> HttpResponse:
        """A task's page (``?name=``): its runs over time, durations, failures, queue,
        schedules, limits."""
        return pages.task_page(self, request, request.GET.get("name", ""))

    def _check_button_request(self, request: HttpRequest, allowed: bool) -> None:
        if request.method != "POST":
            raise PermissionDenied("Retry and cancel take a POST (the run page's buttons).")
        if not allowed:
            raise PermissionDenied

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

    # Times to the second (Django's default format stops at the minute: runs look alike).
    @admin.display(description="created", ordering="id")
    def created_at(self, obj: TaskRun) -> str:
        return _seconds(obj.created)

    @admin.display(description="started", ordering="started")
    def started_at(self, obj: TaskRun) -> str:
        return _seconds(obj.started)

    @admin.display(description="finished", ordering="finished")
    def finished_at(self, obj: TaskRun) -> str:
        return _seconds(obj.finished)

    def scatter_view(self, request: HttpRequest) -> HttpResponse:
        """The run list's runs over time, asked for by the list page once it has loaded (its
        own request: finding the dots of a filter that matches few runs must not slow the
        list down)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        return pages.list_scatter(self, request)

    @admin.display(description="duration")
    def duration_display(self, obj: TaskRun) -> str:
        seconds = obj.duration
        return "—" if seconds is None else f"{seconds:.3f} s"


def _seconds(moment: datetime | None) -> str:
    return "—" if moment is None else date_format(localtime(moment), "Y-m-d H:i:s")
