"""``path("tasks/", include("django_tasks.urls"))``: the dashboard (staff only)."""

from __future__ import annotations

from django.urls import path

from .dashboard import dashboard

app_name = "django_tasks"

urlpatterns = [path("dashboard/", dashboard, name="dashboard")]
