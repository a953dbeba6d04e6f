"""Artifacts in the admin: their own list (the latest versions of a key first) and an inline on
each run's page, shown rendered through :mod:`.render` and only to whoever may view artifacts
(Django's ``view_artifact``). Artifacts are what runs wrote: nobody adds or edits them here;
whoever has ``delete_artifact`` may delete them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.safestring import SafeString

from ..admin_filters import SafeChangeList
from ..admin_inlines import first_rows
from ..admin_links import change_link
from .models import Artifact
from .render import render_artifact

__all__ = ["ARTIFACTS_SHOWN", "ArtifactAdmin", "ArtifactInline"]

if TYPE_CHECKING:
    from ..models import TaskRun

    _ArtifactAdminBase = admin.ModelAdmin[Artifact]
    _ArtifactInlineBase = admin.StackedInline[Artifact, TaskRun]
else:
    _ArtifactAdminBase = admin.ModelAdmin
    _ArtifactInlineBase = admin.StackedInline


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


#: Artifacts the run page shows: the newest (the page says how many there are).
ARTIFACTS_SHOWN = 10


class ArtifactInline(_NotWritten, _ArtifactInlineBase):
    model = Artifact
    formset = first_rows(ARTIFACTS_SHOWN)
    extra = 0
    fields = ["key", "type", "description", "created", "content"]
    readonly_fields = ["key", "type", "description", "created", "content"]
    can_delete = False

    @admin.display(description="Content")
    def content(self, obj: Artifact) -> SafeString:
        return content(obj)
