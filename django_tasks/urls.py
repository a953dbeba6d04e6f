"""``path("tasks/", include("django_tasks.urls"))``: the dashboard and Prometheus metrics."""

from __future__ import annotations

from django.urls import path

from .dashboard import dashboard
from .metrics import metrics_view

app_name = "django_tasks"

urlpatterns = [
    path("dashboard/", dashboard, name="dashboard"),
    path("metrics/", metrics_view, name="metrics"),
]
