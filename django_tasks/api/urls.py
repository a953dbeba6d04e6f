"""``path("tasks/api/", include("django_tasks.api.urls"))``."""

from __future__ import annotations

from typing import Any

from django.urls import include, path, reverse
from drf_spectacular.views import SpectacularAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter

from ..artifacts.api import ArtifactViewSet
from .schema import generate_schema
from .views import (
    LimitViewSet,
    RunViewSet,
    ScheduleViewSet,
    StatsView,
    TaskListView,
    WorkerViewSet,
    _Secured,
)

app_name = "django_tasks_api"

router = SimpleRouter()  # no API root view: it would bring DRF's own schema class
router.register("runs", RunViewSet, basename="run")
router.register("workers", WorkerViewSet, basename="worker")
router.register("schedules", ScheduleViewSet, basename="schedule")
router.register("limits", LimitViewSet, basename="limit")
router.register("artifacts", ArtifactViewSet, basename="artifact")


class SchemaView(_Secured, SpectacularAPIView):
    """The OpenAPI 3 schema of this API (``?format=json`` or YAML), for whoever may read it,
    with its paths under the prefix the API is included at - drawn by :mod:`.schema`, the
    same whatever the project's REST_FRAMEWORK and SPECTACULAR_SETTINGS say."""

    renderer_classes = SpectacularAPIView.renderer_classes  # not the API's JSON/browsable
    draws_the_schema = True  # left out of the schema it draws (.schema._Endpoints)

    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        match = request.resolver_match
        route = match.route if match is not None else reverse("django_tasks_api:schema")[1:]
        prefix = route[: -len("schema/")] if route.endswith("schema/") else route
        schema = generate_schema(prefix, request)
        return Response(schema, headers={"Content-Disposition": 'inline; filename="schema"'})


urlpatterns = [
    path("tasks/", TaskListView.as_view(), name="tasks"),
    path("stats/", StatsView.as_view(), name="stats"),
    path(
        "schema/",
        SchemaView.as_view(api_version="1"),
        name="schema",
    ),
    path("", include(router.urls)),
]
