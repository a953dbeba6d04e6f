"""The latest version of each artifact key, rendered (the dashboard)."""

from __future__ import annotations

from typing import Any

from .models import Artifact
from .render import render_artifact

__all__ = ["latest_artifacts"]


def latest_artifacts(limit: int = 10) -> list[dict[str, Any]]:
    """Newest keys first: key, type, run, created and the sanitized HTML."""
    newest = Artifact.objects.exclude(key="").order_by("key", "-created").distinct("key")
    rows = Artifact.objects.filter(id__in=newest.values("id")).order_by("-created")[:limit]
    return [
        {
            "id": a.id,
            "key": a.key,
            "type": a.type,
            "run_id": a.run_id,
            "created": a.created,
            "html": render_artifact(a.type, a.data),
        }
        for a in rows
    ]
