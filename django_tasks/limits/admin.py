"""Limits in the admin: add, change and remove them, with the runs holding and awaiting a slot."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.contrib import admin

from ..admin_filters import SafeChangeList
from .listing import holding, waiting
from .models import Limit

__all__ = ["LimitAdmin"]

if TYPE_CHECKING:
    _LimitAdminBase = admin.ModelAdmin[Limit]
else:
    _LimitAdminBase = admin.ModelAdmin


@admin.register(Limit)
class LimitAdmin(SafeChangeList, _LimitAdminBase):
    list_display = ["name", "scope", "concurrency", "rate", "holding", "waiting"]
    list_filter = ["scope"]
    search_fields = ["name"]
    fields = ["scope", "name", "concurrency", "rate"]

    @admin.display(description="Holding a slot")
    def holding(self, obj: Limit) -> int:
        return holding(obj)

    @admin.display(description="Waiting")
    def waiting(self, obj: Limit) -> int:
        return waiting(obj)
