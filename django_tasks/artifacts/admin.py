"""Artifacts in the admin: their own list (the latest versions of a key first), shown rendered
through :mod:`.render` and only to whoever may view artifacts (Django's ``view_artifact``; the
run page shows a run's newest, see :mod:`django_tasks.pages.run_page`). Artifacts are what
runs wrote: nobody adds or edits them here; whoever has ``delete_artifact`` may delete them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.safestring import SafeString

from ..admin_filters import SafeChangeList
from ..admin_links import change_link
from .models import Artifact
from .render import render_artifact

__all__ = ["ArtifactAdmin"]

if TYPE_CHECKING:
    _ArtifactAdminBase = admin.ModelAdmin[Artifact]
else:
    _ArtifactAdminBase = admin.ModelAdmin


@admin.display(description="Content")
def content(obj: Artifact) -> SafeString:
    return format_html('<div class="djt-artifact">{}</div>', render_artifact(obj.type, obj.data))


class _NotWritten:
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Artifact)
class ArtifactAdmin(SafeChangeList, _NotWritten, _ArtifactAdminBase):
    list_display = ["__str__", "type", "run_link", "created"]
    list_filter = ["type"]
    search_fields = ["key"]
    fields = ["id", "key", "type", "description", "run_link", "created", "content"]
    readonly_fields = ["id", "key", "type", "description", "run_link", "created", "content"]

    @admin.display(description="Run")
    def run_link(self, obj: Artifact) -> str:
        return change_link("taskrun", obj.run_id, obj.run_id)

    @admin.display(description="Content")
    def content(self, obj: Artifact) -> SafeString:
        return content(obj)
