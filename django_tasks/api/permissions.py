"""The API's default permission class: the permissions of :mod:`django_tasks.permissions`."""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from ..permissions import CANCEL, RETRY, VIEW, may

__all__ = ["TaskRunPermissions"]

#: Actions that change something, and the permission each needs; everything else reads.
_ACTIONS = {"retry": RETRY, "cancel": CANCEL}


class TaskRunPermissions(BasePermission):
    """Staff with ``view_taskrun`` read; ``retry_taskrun`` / ``cancel_taskrun`` act."""

    def has_permission(self, request: Request, view: Any) -> bool:
        permission = _ACTIONS.get(getattr(view, "action", None) or "", VIEW)
        return may(request.user, permission)
