"""Built-in tasks: the periodic purge that keeps the run history bounded.

Every run leaves a row and about four history rows; nothing removes them by itself. A
schedule of :func:`purge_history` - declared once in the settings - makes the purge part of
the queue it cleans, with no cron job to deploy::

    DJANGO_TASKS = {
        "SCHEDULES": {
            "purge history": {
                "task": "django_tasks.purge_history",
                "cron": "17 * * * *",  # hourly: each purge stays small
                "kwargs": {"older_than": "14d"},
            }
        }
    }

It deletes at most ``max_rate`` runs a second (50,000 by default: ``benchmarks/history.py``
drains beside a purge of 5,000,000 runs), so the workers keep the database's CPU.
"""

from __future__ import annotations

from .retention import parse_age, purge
from .states import FINAL_TYPES
from .tasks import task

__all__ = ["purge_history"]


@task(name="django_tasks.purge_history", description="Delete finished runs older than an age.")
def purge_history(
    older_than: str = "14d",
    states: list[str] | None = None,
    max_rate: float | None = 50_000.0,
    batch_size: int = 10_000,
) -> int:
    """Delete the runs in ``states`` (every final state by default) finished more than
    ``older_than`` ago ("14d", "12h"), with their history; return how many."""
    return purge(
        parse_age(older_than), states or FINAL_TYPES, batch_size=batch_size, max_rate=max_rate
    )
