"""An index of failed runs by task, for the task page's most frequent exceptions.

Partial: a run enters it only when it fails, so enqueues and claims never touch it. Built
CONCURRENTLY: a table of millions of runs keeps taking enqueues and claims meanwhile.
"""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("django_tasks", "0027_slot_stats")]

    operations = [
        AddIndexConcurrently(
            model_name="taskrun",
            index=models.Index(
                models.F("task_key"),
                models.F("id"),
                condition=models.Q(("state_type__in", ["FAILED", "CRASHED"])),
                name="django_tasks_failed_idx",
            ),
        ),
    ]
