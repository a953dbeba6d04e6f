"""``path("tasks/api/", include("django_tasks.api.urls"))``."""

from __future__ import annotations

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView
from rest_framework.routers import SimpleRouter

from .views import RunViewSet, StatsView, TaskListView, WorkerViewSet, _Secured

app_name = "django_tasks_api"

router = SimpleRouter()  # no API root view: it would bring DRF's own schema class
router.register("runs", RunViewSet, basename="run")
router.register("workers", WorkerViewSet, basename="worker")


class SchemaView(_Secured, SpectacularAPIView):
    """The OpenAPI 3 schema (``?format=json`` or YAML), staff only like the API. It covers the
    project's URLs, so paths carry the prefix this API is included under."""

    # Not in the schema itself. ``schema = None`` leaves it out before any schema class is
    # asked, so this works whatever the project's DEFAULT_SCHEMA_CLASS (with DRF's own,
    # ``extend_schema(exclude=True)`` failed on this very view).
    schema = None


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
