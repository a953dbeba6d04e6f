"""A project URLconf without the django_tasks API (for the API schema check)."""

urlpatterns: list[object] = []
