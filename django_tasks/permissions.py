"""Who may see and act on task runs: Django's model permissions, as the admin applies them.

=========================================================  ================================
What                                                       Needs (staff status, and...)
=========================================================  ================================
read runs, states, logs, dependencies, tasks, workers,     ``django_tasks.view_taskrun``
stats, the schema, the dashboard, the metrics
retry a run (API, admin button, admin bulk action)         ``django_tasks.retry_taskrun``
cancel a run (API, admin button, admin bulk action)        ``django_tasks.cancel_taskrun``
=========================================================  ================================

Staff status is the floor, as for the admin: a user who is not active staff may do nothing
here, whatever permissions they hold. Superusers hold every permission. Previews can hold
secrets passed as task arguments, so reading needs the view permission like the admin's run
list does. ``METRICS_TOKEN`` lets a scraper read the metrics without a user.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CANCEL", "RETRY", "VIEW", "VIEW_ARTIFACT", "VIEW_LIMIT", "VIEW_SCHEDULE", "may"]

VIEW = "django_tasks.view_taskrun"
RETRY = "django_tasks.retry_taskrun"
CANCEL = "django_tasks.cancel_taskrun"
VIEW_SCHEDULE = "django_tasks.view_schedule"
VIEW_ARTIFACT = "django_tasks.view_artifact"
VIEW_LIMIT = "django_tasks.view_limit"


def may(user: Any, permission: str) -> bool:
    """Whether ``user`` (a request's, maybe anonymous) may do what ``permission`` allows."""
    return bool(
        user is not None
        and getattr(user, "is_active", False)
        and getattr(user, "is_staff", False)
        and user.has_perm(permission)
    )
