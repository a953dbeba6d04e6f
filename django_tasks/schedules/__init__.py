"""Periodic tasks: ``@task(schedule=cron("0 3 * * *", tz="Europe/Paris"))``,
``every(minutes=5)``, ``DJANGO_TASKS["SCHEDULES"]`` and the ``Schedule`` model the admin edits.

Workers enqueue due ticks themselves (no beat process to keep alive); the database allows one
run per tick (:mod:`.ticker`).

This module must not import models: it is imported by ``@task`` while apps load.
"""

from __future__ import annotations

from .timing import Cron, Every, Periodic, cron, every

__all__ = ["Cron", "Every", "Periodic", "cron", "every"]
