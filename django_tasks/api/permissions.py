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
    """Staff with ``view_taskrun`` read; ``retry_taskrun`` / ``cancel_taskrun`` act; a view
    with ``permission_required`` needs that permission instead."""

    def has_permission(self, request: Request, view: Any) -> bool:
        # Views of other models name the permission they need (``view_schedule``...).
        permission = getattr(view, "permission_required", None) or _ACTIONS.get(
            getattr(view, "action", None) or "", VIEW
        )
        return may(request.user, permission)
