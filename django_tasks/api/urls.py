"""``path("tasks/api/", include("django_tasks.api.urls"))``."""

from __future__ import annotations

from django.urls import include, path
from drf_spectacular.utils import extend_schema
from drf_spectacular.views import SpectacularAPIView
from rest_framework.routers import SimpleRouter

from .views import RunViewSet, StatsView, TaskListView, WorkerViewSet, _permissions

app_name = "django_tasks_api"

router = SimpleRouter()  # no API root view: it would bring DRF's own schema class
router.register("runs", RunViewSet, basename="run")
router.register("workers", WorkerViewSet, basename="worker")


@extend_schema(exclude=True)
class SchemaView(SpectacularAPIView):
    """The OpenAPI 3 schema (``?format=json`` or YAML), staff only like the API. It covers the
    project's URLs, so paths carry the prefix this API is included under."""

    def get_permissions(self):  # type: ignore[no-untyped-def]
        return _permissions()


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
