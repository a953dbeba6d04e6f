"""Schedules declared in code (``@task(schedule=...)``) and in ``DJANGO_TASKS["SCHEDULES"]``,
and their copy in the Schedule table, which every worker refreshes when it starts.

The table is what workers tick from; the declarations are its source for the rows they own
(``source`` code or settings): their timing and arguments follow the code, while ``enabled``
is left as the admin set it. A declared schedule that was removed from the code is deleted at
the next worker start (during a rolling deploy, a worker still on the old code may put it back
until it restarts).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from psycopg.types.json import Json

from ..conf import task_settings
from ..registry import registry
from ..storable import shown
from .timing import MISSED_POLICIES, Cron, Every, Periodic, Timing

if TYPE_CHECKING:
    from ..worker.connection import QueueConnection

__all__ = ["Declared", "declared_schedules", "sync_schedules"]

_SETTINGS_KEYS = {"task", "cron", "tz", "every", "args", "kwargs", "queue", "missed", "enabled"}


@dataclass(frozen=True)
class Declared:
    name: str
    task_name: str
    timing: Timing
    args: list[Any]
    kwargs: dict[str, Any]
    queue: str
    missed: str
    enabled: bool
    source: str

    def row(self, now: datetime) -> dict[str, Any]:
        cron = self.timing if isinstance(self.timing, Cron) else None
        return {
            "name": self.name,
            "task_name": self.task_name,
            "cron": cron.expression if cron else "",
            "interval_seconds": self.timing.seconds if isinstance(self.timing, Every) else None,
            "timezone": cron.tz if cron else "UTC",
            "args": self.args,
            "kwargs": self.kwargs,
            "queue": self.queue,
            "missed": self.missed,
            "enabled": self.enabled,
            "source": self.source,
            "next_tick": self.timing.next_after(now).isoformat() if self.enabled else None,
        }


def declared_schedules() -> list[Declared]:
    """Every schedule the code and the settings declare (ValueError for a bad settings entry,
    naming it: the system check reports it before a worker starts)."""
    found = [
        _from_periodic(task.name, task.options.schedule)
        for task in registry.all()
        if task.options.schedule is not None
    ]
    names = {d.name for d in found}
    for name, entry in task_settings().SCHEDULES.items():
        declared = from_settings(name, entry)
        if declared.name in names:
            raise ValueError(
                f"Schedule {shown(name)} is declared twice (by a task and in settings)."
            )
        found.append(declared)
    return found


def _from_periodic(name: str, periodic: Periodic) -> Declared:
    return Declared(
        name=name,
        task_name=name,
        timing=periodic.timing,
        args=list(periodic.args),
        kwargs=dict(periodic.kwargs),
        queue="",
        missed=periodic.missed,
        enabled=True,
        source="code",
    )


def from_settings(name: object, entry: object) -> Declared:
    """One entry of ``DJANGO_TASKS["SCHEDULES"]``, checked."""
    where = f"DJANGO_TASKS['SCHEDULES'][{shown(name)}]"
    if not isinstance(name, str) or not name or len(name) > 255:
        raise ValueError(f"{where}: a schedule's name is a str of 1 to 255 characters.")
    if not isinstance(entry, dict):
        raise ValueError(f"{where} must be a dict, got {type(entry).__name__}.")
    unknown = set(entry) - _SETTINGS_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}.")
    task_name = entry.get("task")
    if not isinstance(task_name, str) or not task_name:
        raise ValueError(f"{where}: 'task' (the task's name) is required.")
    if ("cron" in entry) == ("every" in entry):
        raise ValueError(f"{where}: give 'cron' or 'every' (seconds), not both or neither.")
    try:
        timing: Timing = (
            Cron(entry["cron"], entry.get("tz", "UTC"))
            if "cron" in entry
            else Every(entry["every"])
        )
        periodic = Periodic(
            timing,
            tuple(entry.get("args", ())),
            dict(entry.get("kwargs", {})),
            entry.get("missed", "once"),
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from None
    queue = entry.get("queue", "")
    if not isinstance(queue, str):
        raise ValueError(f"{where}: 'queue' must be a str.")
    enabled = entry.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ValueError(f"{where}: 'enabled' must be True or False.")
    assert periodic.missed in MISSED_POLICIES
    return Declared(
        name=name,
        task_name=task_name,
        timing=timing,
        args=list(periodic.args),
        kwargs=dict(periodic.kwargs),
        queue=queue,
        missed=periodic.missed,
        enabled=enabled,
        source="settings",
    )


_TABLE = "django_tasks_schedule"

#: Declared schedules upserted; a changed timing moves next_tick (a row the admin disabled
#: stays disabled, with no next tick); unchanged rows are not rewritten.
UPSERT = f"""
INSERT INTO {_TABLE} AS s (
    name, task_name, cron, interval_seconds, timezone, args, kwargs, queue, missed, enabled,
    source, next_tick, last_error, created, updated
)
SELECT name, task_name, cron, interval_seconds, timezone, args, kwargs, queue, missed, enabled,
       source, next_tick, '', clock_timestamp(), clock_timestamp()
FROM jsonb_to_recordset(%(rows)s::jsonb) AS t(
    name text, task_name text, cron text, interval_seconds float8, timezone text, args jsonb,
    kwargs jsonb, queue text, missed text, enabled boolean, source text, next_tick timestamptz
)
ON CONFLICT (name) DO UPDATE
SET task_name = EXCLUDED.task_name, cron = EXCLUDED.cron,
    interval_seconds = EXCLUDED.interval_seconds,
    timezone = EXCLUDED.timezone, args = EXCLUDED.args, kwargs = EXCLUDED.kwargs,
    queue = EXCLUDED.queue, missed = EXCLUDED.missed, source = EXCLUDED.source,
    next_tick = CASE
        WHEN (s.cron, s.interval_seconds, s.timezone)
             IS NOT DISTINCT FROM (EXCLUDED.cron, EXCLUDED.interval_seconds, EXCLUDED.timezone)
        THEN s.next_tick
        WHEN s.enabled THEN EXCLUDED.next_tick
    END,
    updated = clock_timestamp()
WHERE (s.task_name, s.cron, s.interval_seconds, s.timezone, s.args, s.kwargs, s.queue, s.missed,
       s.source)
      IS DISTINCT FROM (EXCLUDED.task_name, EXCLUDED.cron, EXCLUDED.interval_seconds,
                        EXCLUDED.timezone, EXCLUDED.args, EXCLUDED.kwargs, EXCLUDED.queue,
                        EXCLUDED.missed, EXCLUDED.source)
"""

#: Declared schedules no longer declared.
DELETE_UNDECLARED = f"""
DELETE FROM {_TABLE} WHERE source IN ('code', 'settings') AND NOT (name = ANY(%(names)s))
"""


def sync_schedules(db: QueueConnection) -> int:
    """Make the table's declared rows match this process's declarations; returns how many
    are declared."""
    declared = declared_schedules()
    now = db.db_time()
    db.execute(UPSERT, {"rows": Json([d.row(now) for d in declared])}, give_up_on_stop=False)
    db.execute(DELETE_UNDECLARED, {"names": [d.name for d in declared]}, give_up_on_stop=False)
    return len(declared)
