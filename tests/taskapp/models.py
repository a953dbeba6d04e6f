from django.db import models


class Effect(models.Model):
    """A row a task writes, so tests can see that (and how often) a task really ran."""

    label = models.CharField(max_length=100)
    run_marker = models.CharField(max_length=100, blank=True)

    def __str__(self) -> str:
        return self.label
