"""The change lists of the app's admins: what a query string may ask of them, and list
filters of the run admin that stay cheap with millions of runs.

:class:`SafeChangeList`, which every admin of the app uses, makes whatever a query string or
an action's selection holds that the list cannot apply - a NUL character, a year of -1, a bad
regular expression, an id that is not one - a bad filter (Django's "?e=1" page) or a message,
never a 500.

Django's default filters for a plain column (``AllValuesFieldListFilter``) list their choices
with ``SELECT DISTINCT`` over the whole table, and a date hierarchy does the same for dates:
seconds each with a million runs, on every page. These filters take their choices from what
the process knows instead (registered tasks, their queues and tags, worker rows), and the
time filter selects runs through the primary key (run ids are time-ordered).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ERROR_FLAG, ChangeList
from django.core.exceptions import ValidationError
from django.db import DataError, router, transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import redirect
from django.utils import timezone

from .conf import task_settings
from .ids import uuid7_floor
from .models import Worker
from .registry import registry

__all__ = [
    "CreatedFilter",
    "QueueFilter",
    "SafeChangeList",
    "TagFilter",
    "TaskFilter",
    "WorkerFilter",
    "filtered_runs",
    "holds_nul",
]


def holds_nul(params: QueryDict) -> bool:
    """Whether a query string holds a NUL character (in a name or a value): PostgreSQL
    cannot compare text with one, so no filter, search or id can use it."""
    return any("\x00" in key or "\x00" in value for key, value in params.items())


_FILTERS_ONLY = "_django_tasks_filters_only"


class SafeChangeList:
    """For every ``ModelAdmin`` of the app (first among its bases): the change list answers
    a query string it cannot apply as Django answers an unknown filter - a redirect to
    ``?e=1`` - and an action on ids that are not ids with a message.

    Django applies any lookup on a model's own fields that a query string names
    (``?created__year=``, ``?name__regex=``), and only finds out it cannot when the database
    (or the SQL compiler) refuses the value. The list is built in a savepoint, so that a
    refused value leaves a surrounding transaction (``ATOMIC_REQUESTS``) usable."""

    model: Any

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if holds_nul(request.GET):  # before any query: a filter that matches nothing
            return redirect(f"{request.path}?{ERROR_FLAG}=1")
        return super().changelist_view(request, extra_context)  # type: ignore[misc, no-any-return]

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> Any:
        changelist = super().get_changelist(request, **kwargs)  # type: ignore[misc]
        if getattr(request, _FILTERS_ONLY, False):  # filtered_runs(): the admin's own class
            return type("FiltersOnly", (changelist,), {"get_results": _no_results})
        return changelist

    def get_changelist_instance(self, request: HttpRequest) -> Any:
        try:
            with transaction.atomic(using=router.db_for_read(self.model)):
                return super().get_changelist_instance(request)  # type: ignore[misc]
        except (DataError, ValueError, TypeError, OverflowError) as exc:
            # Refused by PostgreSQL, by the SQL compiler or by the driver (text for bytea).
            raise IncorrectLookupParameters(exc) from exc

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        """A search term with a NUL character matches nothing (also in the admin's
        autocomplete view, which searches the admin of any model a foreign key points to)."""
        if "\x00" in search_term:
            return queryset.none(), False
        return super().get_search_results(request, queryset, search_term)  # type: ignore[misc, no-any-return]

    def response_action(
        self, request: HttpRequest, queryset: QuerySet[Any], *args: Any, **kwargs: Any
    ) -> HttpResponse | None:
        """An action on selected ids that are not ids of the model: a message, nothing done."""
        pk = self.model._meta.pk
        try:
            for value in request.POST.getlist(ACTION_CHECKBOX_NAME):
                if "\x00" in value:
                    raise ValidationError("NUL")
                pk.to_python(value)
        except ValidationError:
            self.message_user(  # type: ignore[attr-defined]
                request, "The selection holds ids that are not ids: nothing done.", messages.ERROR
            )
            return None
        return super().response_action(request, queryset, *args, **kwargs)  # type: ignore[misc, no-any-return]


class _ChoiceFilter(admin.SimpleListFilter):
    field = ""

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(**{self.field: value}) if value else queryset


class TaskFilter(_ChoiceFilter):
    title = "task"
    parameter_name = "task_name__exact"
    field = "task_name"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        names = sorted({task.name for task in registry.all()})
        return [(name, name) for name in names]


class QueueFilter(_ChoiceFilter):
    title = "queue"
    parameter_name = "queue__exact"
    field = "queue"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        queues = {task.queue for task in registry.all()} | {task_settings().DEFAULT_QUEUE}
        return [(queue, queue) for queue in sorted(queues)]


class TagFilter(admin.SimpleListFilter):
    title = "tag"
    parameter_name = "tag"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        tags = sorted({tag for task in registry.all() for tag in task.tags})
        return [(tag, tag) for tag in tags]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(tags__contains=[value]) if value else queryset


class WorkerFilter(_ChoiceFilter):
    title = "worker"
    parameter_name = "worker__exact"
    field = "worker"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        names = Worker.objects.order_by("-started").values_list("name", flat=True)[:30]
        return [(name, name) for name in names]


class CreatedFilter(admin.SimpleListFilter):
    title = "created"
    parameter_name = "created"
    _SPANS = {"1h": timedelta(hours=1), "24h": timedelta(days=1), "7d": timedelta(days=7)}

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("1h", "Last hour"), ("24h", "Last 24 hours"), ("7d", "Last 7 days")]

    @classmethod
    def span(cls, value: str) -> timedelta | None:
        """The window a value of the filter selects (None: it selects nothing)."""
        return cls._SPANS.get(value)

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        span = self.span(self.value() or "")
        if span is None:
            return queryset
        return queryset.filter(pk__gte=uuid7_floor(timezone.now() - span))


def _no_results(changelist: ChangeList, request: HttpRequest) -> None:
    """A change list's get_results that fetches and counts nothing (filtered_runs())."""
    changelist.result_list, changelist.result_count, changelist.full_result_count = [], 0, 0


def filtered_runs(model_admin: Any, request: HttpRequest) -> QuerySet[Any]:
    """The rows the admin's list shows for this request's query string - its filters and
    search - without counting or fetching them (the run list's runs over time)."""
    setattr(request, _FILTERS_ONLY, True)  # on the request: an admin serves every thread
    try:
        return model_admin.get_changelist_instance(request).queryset  # type: ignore[no-any-return]
    finally:
        delattr(request, _FILTERS_ONLY)
