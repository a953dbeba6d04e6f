"""API views: read-only runs (with cancel and retry), tasks, workers and statistics."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from django.apps import apps
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.module_loading import import_string
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, NotFound, ValidationError
from rest_framework.pagination import Cursor, CursorPagination
from rest_framework.parsers import BaseParser
from rest_framework.permissions import BasePermission
from rest_framework.renderers import BaseRenderer, BrowsableAPIRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.mediatypes import media_type_matches
from rest_framework.views import APIView

from ..actions import RunNotFound, cancel_run, retry_run
from ..conf import task_settings
from ..models import Limit, Schedule, TaskRun, TaskRunDependency, Worker
from ..permissions import VIEW_SCHEDULE
from ..retention import AgeOutOfRange, parse_age
from ..states import StateType
from . import queries
from .parsers import BODY_PARSERS, StorableJSONParser
from .serializers import (
    CancelSerializer,
    DependenciesSerializer,
    LimitSerializer,
    LogSerializer,
    RetrySerializer,
    RunDetailSerializer,
    RunSerializer,
    ScheduleSerializer,
    StateSerializer,
    StatsSerializer,
    TaskSerializer,
    WorkerSerializer,
)

__all__ = [
    "LimitViewSet",
    "RunViewSet",
    "ScheduleViewSet",
    "StatsView",
    "TaskListView",
    "WorkerViewSet",
]


def _permissions() -> list[BasePermission]:
    return [import_string(path)() for path in task_settings().API_PERMISSION_CLASSES]


class _Secured:
    """Permission classes from ``DJANGO_TASKS["API_PERMISSION_CLASSES"]`` (Django's model
    permissions, as the admin applies them, by default: :mod:`django_tasks.permissions`).

    ``queryset`` names the model for permission classes that need one (DRF's
    ``DjangoModelPermissions``), also on the views that list no model of their own.
    ``schema = None`` keeps the views out of the project's schema generator; the API's own
    (:mod:`.schema`) reads ``schema_overrides``: per action, what the schema cannot see."""

    schema: Any = None
    schema_overrides: dict[str, dict[str, Any]] = {}
    queryset: Any = TaskRun.objects.none()
    # Ours, not the project's REST_FRAMEWORK defaults: lists are ours to page and filter, and
    # DRF's browsable pages need its templates (system check django_tasks.W002).
    pagination_class: Any = None
    filter_backends: Sequence[Any] = ()
    renderer_classes: Sequence[type[BaseRenderer]] = [
        JSONRenderer,
        *([BrowsableAPIRenderer] if apps.is_installed("rest_framework") else []),
    ]
    parser_classes: Sequence[type[BaseParser]] = BODY_PARSERS

    def get_permissions(self) -> list[BasePermission]:
        return _permissions()

    def perform_authentication(self, request: Request) -> None:
        """A JSON body is read first, whoever sends it: one the API cannot read (over 64 KiB,
        nested too deep, NaN) is a 400 before anything else, for a signed-in user or not (the
        session's CSRF check, part of the authentication, reads a signed-in user's body before
        any permission is checked anyway). Form and multipart bodies (uploads) are left to the
        view or the CSRF check: an anonymous upload is refused unread."""
        if media_type_matches(StorableJSONParser.media_type, request.content_type):
            request.data  # noqa: B018 - parsed now (at most 64 KiB), and kept for the view
        super().perform_authentication(request)  # type: ignore[misc]


class NewestFirst(CursorPagination):
    ordering = "-id"  # ids are time-ordered (UUIDv7): newest first, stable under inserts
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500

    def get_page_size(self, request: Request) -> int:
        """A ``page_size`` that is not a number from 1 to 500 is an error, not ignored."""
        raw = request.query_params.get("page_size")
        if raw is None:
            return self.page_size
        # isdecimal() alone accepts other scripts' digits (and isdigit() "²"), int() not all.
        if not (raw.isascii() and raw.isdecimal()) or not 1 <= int(raw) <= self.max_page_size:
            raise ValidationError({"page_size": f"A number from 1 to {self.max_page_size}."})
        return int(raw)

    def decode_cursor(self, request: Request) -> Cursor | None:
        """A cursor whose position is not a run id is an invalid cursor (404), like any
        other cursor DRF cannot read."""
        cursor = super().decode_cursor(request)
        if cursor is not None and cursor.position is not None:
            try:
                uuid.UUID(str(cursor.position))
            except (TypeError, ValueError, AttributeError):
                raise NotFound(self.invalid_cursor_message) from None
        return cursor

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"].update(minimum=1, maximum=self.max_page_size)
        return parameters


_WINDOW = OpenApiParameter(
    "window",
    {"type": "string", "pattern": r"^\d+(\.\d+)?[smhdw]$"},
    description="Age such as 24h, 7d (default 24h; longer than 3650d counts as 3650d).",
    required=False,
)
_RUN_FILTERS = [
    OpenApiParameter("state", str, enum=list(StateType.values), description="State type."),
    OpenApiParameter("state_name", str, description="State name, e.g. Cached, TimedOut."),
    OpenApiParameter("task", str, description="Task name."),
    OpenApiParameter("queue", str),
    OpenApiParameter("tag", str),
    OpenApiParameter("origin", str, enum=["call", "submit", "delay"]),
    OpenApiParameter("created_after", OpenApiTypes.DATETIME),
    OpenApiParameter("created_before", OpenApiTypes.DATETIME),
    OpenApiParameter("search", str, description="A run id, or part of a task or run name."),
]


def _moment(param: str, text: str) -> datetime:
    """An ISO 8601 date and time, in UTC (naive means UTC); anything else is a 400."""
    try:
        moment = parse_datetime(text)
        if moment is not None:
            if timezone.is_naive(moment):
                moment = timezone.make_aware(moment, UTC)
            return moment.astimezone(UTC)
    except (ValueError, OverflowError):
        pass
    raise ValidationError({param: "Not a date and time (ISO 8601) in range."})


def _window(request: Request) -> timedelta:
    """The statistics window; a longer one than ``MAX_WINDOW`` counts as ``MAX_WINDOW``."""
    try:
        return min(parse_age(request.query_params.get("window", "24h")), MAX_WINDOW)
    except AgeOutOfRange:
        return MAX_WINDOW
    except ValueError as exc:
        raise ValidationError({"window": str(exc)}) from None


MAX_WINDOW = timedelta(days=3650)
_ERROR = OpenApiTypes.OBJECT  # {"detail": "..."} or {"field": ["..."]}


class RunViewSet(_Secured, viewsets.ReadOnlyModelViewSet[TaskRun]):
    """Task runs, newest first. Filters combine; ``search`` takes a run id or a name part."""

    pagination_class = NewestFirst
    schema_overrides = {
        "list": {
            "parameters": _RUN_FILTERS,
            # 404: a cursor that points at no run
            "responses": {200: RunSerializer(many=True), 400: _ERROR, 404: _ERROR},
        },
        "retrieve": {"responses": {200: RunDetailSerializer, 404: _ERROR}},
        # The history and the log lines of one run come whole, as plain lists.
        "states": {"responses": {200: StateSerializer(many=True), 404: _ERROR}},
        "logs": {"responses": {200: LogSerializer(many=True), 404: _ERROR}},
        "dependencies": {"responses": {200: DependenciesSerializer, 404: _ERROR}},
        "cancel": {"request": None, "responses": {200: CancelSerializer, 404: _ERROR}},
        "retry": {
            "request": None,
            "responses": {201: RetrySerializer, 404: _ERROR, 409: _ERROR},
        },
    }
    lookup_value_regex = "[^/]+"  # a malformed id gets this API's JSON 404, not a page

    def get_object(self) -> TaskRun:
        try:
            uuid.UUID(str(self.kwargs["pk"]))
        except ValueError:
            raise NotFound("Not a run id.") from None
        return super().get_object()

    def get_serializer_class(self) -> Any:
        return RunDetailSerializer if self.action == "retrieve" else RunSerializer

    def get_queryset(self) -> QuerySet[TaskRun]:
        runs = TaskRun.objects.defer("parameters", "result")
        if self.action != "list":
            return runs
        params = self.request.query_params
        if any("\x00" in value for value in params.values()):
            raise ValidationError({"detail": "Parameters cannot contain NUL characters."})
        for param, allowed in [("state", StateType.values), ("origin", TaskRun.Origin.values)]:
            if param in params and params[param] not in allowed:
                raise ValidationError({param: f"One of {', '.join(allowed)}."})
        for param, field in [
            ("state", "state_type"),
            ("state_name", "state_name"),
            ("task", "task_name"),
            ("queue", "queue"),
            ("origin", "origin"),
        ]:
            if params.get(param):
                runs = runs.filter(**{field: params[param]})
        if params.get("tag"):
            runs = runs.filter(tags__contains=[params["tag"]])
        for param, lookup in [("created_after", "created__gte"), ("created_before", "created__lt")]:
            if param in params:
                runs = runs.filter(**{lookup: _moment(param, params[param])})
        term = params.get("search", "").strip()
        if term:
            try:
                runs = runs.filter(pk=uuid.UUID(term))
            except ValueError:
                runs = runs.filter(task_name__icontains=term) | runs.filter(name__icontains=term)
        return runs

    @action(detail=True, methods=["get"], pagination_class=None)
    def states(self, request: Request, pk: str | None = None) -> Response:
        run = self.get_object()
        return Response(StateSerializer(run.states.all(), many=True).data)

    @action(detail=True, methods=["get"], pagination_class=None)
    def logs(self, request: Request, pk: str | None = None) -> Response:
        run = self.get_object()
        return Response(LogSerializer(run.logs.all(), many=True).data)

    @action(detail=True, methods=["get"])
    def dependencies(self, request: Request, pk: str | None = None) -> Response:
        run = self.get_object()
        edges = TaskRunDependency.objects
        data = {
            "upstream": list(
                edges.filter(downstream_id=run.pk).values_list("upstream_id", flat=True)
            ),
            "downstream": list(
                edges.filter(upstream_id=run.pk).values_list("downstream_id", flat=True)
            ),
            "retried_by": list(run.retried_by.values_list("id", flat=True)),
        }
        return Response(DependenciesSerializer(data).data)

    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        run = self.get_object()
        state = cancel_run(run.pk)
        data = {"id": run.pk, "state_type": state.value if state else None}
        return Response(CancelSerializer(data).data)

    @action(detail=True, methods=["post"])
    def retry(self, request: Request, pk: str | None = None) -> Response:
        run = self.get_object()
        try:
            new_id = retry_run(run.pk)
        except RunNotFound as exc:
            raise NotFound(str(exc)) from None
        except ValueError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        data = RetrySerializer({"id": new_id, "retry_of": run.pk}).data
        return Response(data, status=status.HTTP_201_CREATED)


class WorkerViewSet(_Secured, mixins.ListModelMixin, viewsets.GenericViewSet[Worker]):
    """Worker processes, live and stopped, newest first."""

    serializer_class = WorkerSerializer
    queryset = Worker.objects.order_by("-started")


class ScheduleViewSet(_Secured, viewsets.ReadOnlyModelViewSet[Schedule]):
    """Periodic schedules by name, with their next tick and last run (``view_schedule``)."""

    serializer_class = ScheduleSerializer
    queryset = Schedule.objects.order_by("name")
    permission_required = VIEW_SCHEDULE
    lookup_value_regex = "[^/]+"  # a malformed id gets this API's JSON 404, not a page
    schema_overrides = {
        "list": {"responses": {200: ScheduleSerializer(many=True)}},
        "retrieve": {"responses": {200: ScheduleSerializer, 404: _ERROR}},
    }

    def get_object(self) -> Schedule:
        pk = self.kwargs.get("pk", "")
        if not pk.isdigit() or len(pk) > 18:  # not an id: 404, never a database error
            raise NotFound("No such schedule.")
        return super().get_object()


class LimitViewSet(_Secured, viewsets.ModelViewSet[Limit]):
    """Concurrency and rate limits of tags and queues: read with ``view_limit``; add, change
    and remove with ``add_limit``, ``change_limit``, ``delete_limit`` (as in the admin)."""

    serializer_class = LimitSerializer
    queryset = Limit.objects.order_by("scope", "name")
    parser_classes = [StorableJSONParser]  # JSON bodies: a form cannot say null
    lookup_value_regex = "[^/]+"
    http_method_names = ["get", "post", "put", "patch", "delete", "head", "options"]
    schema_overrides = {
        "list": {"responses": {200: LimitSerializer(many=True)}},
        "retrieve": {"responses": {200: LimitSerializer, 404: _ERROR}},
        "create": {"responses": {201: LimitSerializer, 400: _ERROR, 409: _ERROR}},
        "update": {"responses": {200: LimitSerializer, 400: _ERROR, 404: _ERROR, 409: _ERROR}},
        "partial_update": {
            "responses": {200: LimitSerializer, 400: _ERROR, 404: _ERROR, 409: _ERROR}
        },
        "destroy": {"responses": {204: None, 404: _ERROR}},
    }

    @property
    def permission_required(self) -> str:
        verb = {"create": "add", "update": "change", "partial_update": "change"}.get(
            self.action or "", "delete" if self.action == "destroy" else "view"
        )
        return f"django_tasks.{verb}_limit"

    def get_object(self) -> Limit:
        pk = self.kwargs.get("pk", "")
        if not pk.isdigit() or len(pk) > 18:  # not an id: 404, never a database error
            raise NotFound("No such limit.")
        return super().get_object()

    def perform_create(self, serializer: Any) -> None:
        self._saved(serializer)

    def perform_update(self, serializer: Any) -> None:
        self._saved(serializer)

    def _saved(self, serializer: Any) -> None:
        """A second limit on the same tag or queue is a conflict (409), whoever wins a race."""
        try:
            with transaction.atomic():
                serializer.save()
        except IntegrityError:
            raise Conflict() from None


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "There is a limit on this tag or queue already: change that one."


class TaskListView(_Secured, APIView):
    """Registered tasks with their options, run counts, failure rate and p50/p95 duration."""

    schema_overrides = {
        "get": {"parameters": [_WINDOW], "responses": {200: TaskSerializer(many=True), 400: _ERROR}}
    }

    def get(self, request: Request) -> Response:
        return Response(TaskSerializer(queries.task_stats(_window(request)), many=True).data)


class StatsView(_Secured, APIView):
    """Runs by state over a window, ready runs and the oldest per queue, live workers."""

    schema_overrides = {
        "get": {"parameters": [_WINDOW], "responses": {200: StatsSerializer, 400: _ERROR}}
    }

    def get(self, request: Request) -> Response:
        window = _window(request)
        live = WorkerSerializer(Worker.objects.filter(stopped__isnull=True), many=True).data
        data = {
            "window_seconds": window.total_seconds(),
            "by_state": queries.state_counts(window),
            "queues": queries.queue_depths(),
            "live_workers": sum(1 for worker in live if worker["alive"]),
        }
        return Response(StatsSerializer(data).data)
