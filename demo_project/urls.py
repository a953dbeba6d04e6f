from django.contrib import admin
from django.urls import include, path

from demo_project.demo import views

urlpatterns = [
    path("", views.index, name="index"),
    path("runs/", views.recent_runs, name="recent-runs"),
    path("admin/", admin.site.urls),
    path("tasks/api/", include("django_tasks.api.urls")),
    path("tasks/", include("django_tasks.urls")),
]
