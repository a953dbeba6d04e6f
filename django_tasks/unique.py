"""Unique runs: at most one live run per key.

A key comes from ``.delay(..., unique_key="invoice-42")`` (or ``apply_async(unique_key=...)``)
or from the task's ``unique`` option: ``True`` keys the run on the task and its arguments, a
callable makes the key from the arguments. The database keeps it: a partial unique index over
runs that are not final, and in ``django_tasks_enqueue()`` an advisory lock per key that makes
enqueues of one key take turns (migration 0015). A second enqueue of a key that a live run
holds gets that run's future, writes nothing and raises nothing; ``unique_for`` keeps the key
taken for that long after the run ended.

Keys given or made by a callable are global (two tasks that pass the same key share it: name
what the key guards, ``"invoice-42"``); ``unique=True`` keys start with the task's name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from .cache_policies import inputs_digest
from .storable import shown, storable_text

if TYPE_CHECKING:
    from .tasks import Task

__all__ = ["UniqueOption", "check_unique_options", "run_unique_key"]

#: ``unique=True`` or ``unique=lambda parameters: "key"``.
UniqueOption = bool | Callable[[Mapping[str, Any]], str]

MAX_KEY_LENGTH = 255


def check_unique_options(unique: object, unique_for: object) -> float | None:
    """Check the options at decoration; returns ``unique_for`` in seconds."""
    if not isinstance(unique, bool) and not callable(unique):
        raise TypeError(f"unique must be True, False or a callable, got {shown(unique)}.")
    if unique_for is None:
        return None
    if not unique:
        raise ValueError("unique_for needs unique=True (or a callable, or unique_key= per run).")
    if isinstance(unique_for, timedelta):
        seconds = unique_for.total_seconds()
    elif isinstance(unique_for, int | float) and not isinstance(unique_for, bool):
        seconds = float(unique_for)
    else:
        raise TypeError(f"unique_for must be a timedelta or seconds, got {shown(unique_for)}.")
    if not 0 <= seconds <= 10 * 365 * 86400:  # also refuses NaN
        raise ValueError(f"unique_for must be between 0 and ten years, got {shown(unique_for)}.")
    return seconds


def check_key(key: object) -> str:
    """A key as the database stores it, or a clear error at the call."""
    if not isinstance(key, str):
        raise TypeError(f"unique_key must be a str, got {shown(key)}.")
    if not key or len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"unique_key must be 1 to {MAX_KEY_LENGTH} characters, got {shown(key)}.")
    if storable_text(key) != key:
        raise ValueError(f"unique_key must not hold NUL or lone surrogates, got {shown(key)}.")
    return key


def run_unique_key(
    task: Task[Any, Any], parameters: Mapping[str, Any], given: str | None
) -> str | None:
    """The key of a new run of ``task``: ``given``, else the task's ``unique`` option."""
    if given is not None:
        return check_key(given)
    unique = task.options.unique
    if unique is False:
        return None
    if unique is True:
        return f"{task.name[:150]}:{inputs_digest(parameters)}"
    return check_key(unique(parameters))
