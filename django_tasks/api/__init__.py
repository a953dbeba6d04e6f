"""The REST API: runs, their states, logs and dependencies, tasks, workers and statistics.

Include it with ``path("tasks/api/", include("django_tasks.api.urls"))``; it needs
``"rest_framework"`` in ``INSTALLED_APPS``. Staff only unless ``DJANGO_TASKS["API_PERMISSION
_CLASSES"]`` says otherwise. Payload columns are never read: previews only.
"""
