"""The artifact table (see :mod:`django_tasks.artifacts`)."""

from __future__ import annotations

from django.db import models

from ..ids import uuid7
from ..json_input import BoundedJSONDecoder

__all__ = ["Artifact"]


class Artifact(models.Model):
    """One version of an artifact: what a run attached. A keyed artifact's latest version is
    its newest row with that key; a keyed artifact outlives its run's purge (its run becomes
    empty), an unkeyed one goes with its run."""

    class Type(models.TextChoices):
        MARKDOWN = "markdown", "Markdown"
        TABLE = "table", "Table"
        LINK = "link", "Link"

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    key = models.CharField(
        max_length=255, blank=True, help_text="Lowercase letters, digits and dashes."
    )
    type = models.CharField(max_length=16, choices=Type.choices)
    #: markdown: the text; table: {"columns": [...], "rows": [[...], ...]};
    #: link: {"url", "text"}.
    data = models.JSONField(decoder=BoundedJSONDecoder)
    description = models.TextField(blank=True)
    run = models.ForeignKey(
        "django_tasks.TaskRun",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="artifacts",
        db_constraint=False,  # the retention purge deletes runs in SQL (see sql.PURGE)
    )
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created"]
        indexes = [
            models.Index(fields=["key", "-created"], name="django_tasks_artifact_key_idx"),
            models.Index(fields=["run"], name="django_tasks_artifact_run_idx"),
        ]

    def __str__(self) -> str:
        return self.key or f"{self.type} {self.id}"
