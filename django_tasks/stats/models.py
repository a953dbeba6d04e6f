"""The summary of one closed time slot of runs, by task and state (see :mod:`.slots`)."""

from __future__ import annotations

from django.db import models

__all__ = ["SlotStats"]


class SlotStats(models.Model):
    """Runs created in one closed slot, by task and final state, with a histogram of their
    durations: written once, the first time a window reads the slot after every run created
    in it has finished; a slot with no run is stored as one row with an empty ``task_key``,
    so that it is not counted again either."""

    id = models.BigAutoField(primary_key=True)
    slot = models.DateTimeField(help_text="The start of the slot (SLOT_SECONDS long).")
    task_key = models.CharField(max_length=64)
    state_type = models.CharField(max_length=16)
    runs = models.BigIntegerField()
    durations = models.JSONField(
        default=dict, help_text="Runs by duration bucket (stats.slots.bucket_seconds)."
    )

    class Meta:
        default_permissions = ()  # read through the run permissions, never edited
        constraints = [
            models.UniqueConstraint(
                fields=["slot", "task_key", "state_type"], name="django_tasks_slotstats_key"
            )
        ]

    def __str__(self) -> str:
        return f"{self.slot:%Y-%m-%d %H:%M} {self.task_key} {self.state_type}: {self.runs}"
