"""State colours and badges: one definition for the admin, the dashboard and the pages."""

from __future__ import annotations

import uuid

from django.utils.html import format_html
from django.utils.safestring import SafeString

from ..states import FINAL_TYPES, StateType

__all__ = ["STATE_COLOURS", "final_type", "short_run_id", "state_badge", "state_colour"]

#: Dark enough for white text, light enough to tell apart on the admin's dark theme.
STATE_COLOURS: dict[str, str] = {
    StateType.SCHEDULED: "#6b7280",
    StateType.PENDING: "#a16207",
    StateType.RUNNING: "#1d4ed8",
    StateType.COMPLETED: "#15803d",
    StateType.FAILED: "#b91c1c",
    StateType.CRASHED: "#9d174d",
    StateType.CANCELLING: "#7c3aed",
    StateType.CANCELLED: "#4b5563",
}
_UNKNOWN = "#6b7280"


_FINAL = frozenset(state.value for state in FINAL_TYPES)


def final_type(state_type: str) -> bool:
    """Whether a row's state type is final; any other text (a row written by a newer version,
    or by hand) is not - a page must not fail on one odd row of a pipeline."""
    return state_type in _FINAL


def state_colour(state_type: str) -> str:
    """The colour of a state type (grey for anything else: a row is data, not a promise)."""
    return STATE_COLOURS.get(state_type, _UNKNOWN)


def state_badge(state_type: str, state_name: str) -> SafeString:
    return format_html(
        '<span class="djt-state" data-state="{}" style="background:{};color:#fff;'
        'padding:1px 7px;border-radius:9px;white-space:nowrap">{}</span>',
        state_type,
        state_colour(state_type),
        state_name,
    )


def short_run_id(run_id: uuid.UUID) -> str:
    """The last block of the UUID, to tell runs apart on a page (search takes the whole id).

    Not the first: run ids are time-ordered (version 7), so their first block is the same
    for every run created in the same minute; the last block is random."""
    return str(run_id).rsplit("-", 1)[-1]
