"""The run page's inlines stay small whatever the run wrote.

A task that logs in a loop or attaches an artifact per item leaves a run with 100,000 log
lines or artifacts, and a Django inline renders a form for every row: the run page took
seconds and megabytes. Each inline of the run page shows its first rows, in its model's order
(:func:`first_rows`), and the page says how many there are (``TaskRunAdmin.records_display``);
the CLI and the API list them all.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.forms.models import BaseInlineFormSet

__all__ = ["first_rows"]


class _FirstRows(BaseInlineFormSet):  # type: ignore[type-arg]
    max_shown = 100
    _shown: QuerySet[Any] | None = None

    def get_queryset(self) -> QuerySet[Any]:
        # One query, kept: the formset asks len() and then each row by index.
        if self._shown is None:
            self._shown = super().get_queryset()[: self.max_shown]
        return self._shown


def first_rows(limit: int) -> type[BaseInlineFormSet]:  # type: ignore[type-arg]
    """An inline's ``formset``: the first ``limit`` rows of the object's."""
    return type(f"FirstRows{limit}", (_FirstRows,), {"max_shown": limit})
