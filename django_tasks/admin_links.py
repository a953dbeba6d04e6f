"""Links from one admin page to another object's change page (runs, schedules)."""

from __future__ import annotations

from django.urls import reverse
from django.utils.html import format_html

__all__ = ["change_link"]


def change_link(model: str, pk: object, text: object) -> str:
    """A link to ``pk``'s change page in the admin of ``model`` (``"taskrun"``, ``"schedule"``),
    showing ``text``; ``-`` when there is no object to link to."""
    if pk is None:
        return "-"
    url = reverse(f"admin:django_tasks_{model}_change", args=[pk])
    return format_html('<a href="{}">{}</a>', url, text)
