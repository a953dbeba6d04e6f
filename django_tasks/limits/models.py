"""Concurrency and rate limits, stored in the database where every worker on every host reads
them (:mod:`.gate`).

A :class:`Limit` names a tag or a queue: at most ``concurrency`` of its runs hold a slot at
once (Prefect's tag concurrency limits), and/or at most ``rate`` of them start per period.
:class:`RateState` holds the shared clocks of each rate (the generic cell rate algorithm's
"theoretical arrival time": one for the starts, one for the line of reserved starts), for tag
and queue rates and for tasks' ``rate_limit=``.
"""

from __future__ import annotations

import contextlib
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models

from .rates import LONGEST_INTERVAL, SHORTEST_INTERVAL, parse_rate
from .validity import SCOPES

__all__ = ["Limit", "RateState"]


def _check_rate(value: str) -> None:
    if value:
        try:
            parse_rate(value)
        except (TypeError, ValueError) as exc:
            raise ValidationError(str(exc)) from None


class Limit(models.Model):
    """A concurrency limit and/or a rate limit on the runs of a tag or a queue."""

    class Scope(models.TextChoices):
        TAG = "tag", "Tag"
        QUEUE = "queue", "Queue"

    id = models.BigAutoField(primary_key=True)
    scope = models.CharField(max_length=8, choices=Scope.choices, default=Scope.TAG)
    name = models.CharField(max_length=100, help_text="The tag or the queue.")
    concurrency = models.PositiveIntegerField(
        null=True, blank=True, help_text="Runs at once, on all workers (blank: no limit)."
    )
    rate = models.CharField(
        max_length=32,
        blank=True,
        validators=[_check_rate],
        help_text="Runs started per period: '100/m', '5/s', '1000/h' (blank: no limit).",
    )
    # ``rate`` as seconds between two starts, for the database's admission function.
    rate_interval = models.FloatField(null=True, blank=True, editable=False)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["scope", "name"]
        # What the model forbids, SQL cannot write either (migration 0024; the worker checks
        # again what it loads: .validity). A rate is blank with no interval, or set with the
        # seconds between starts parse_rate() gives (NaN and the infinities are outside).
        # (``concurrency >= 0``: PositiveIntegerField's own constraint.)
        constraints = [
            models.UniqueConstraint("scope", "name", name="django_tasks_one_limit_per_name"),
            models.CheckConstraint(
                condition=models.Q(scope__in=SCOPES), name="django_tasks_limit_scope"
            ),
            models.CheckConstraint(condition=~models.Q(name=""), name="django_tasks_limit_name"),
            models.CheckConstraint(
                condition=models.Q(rate="", rate_interval__isnull=True)
                | models.Q(
                    ~models.Q(rate=""),
                    rate_interval__isnull=False,
                    rate_interval__gte=SHORTEST_INTERVAL,
                    rate_interval__lte=LONGEST_INTERVAL,
                ),
                name="django_tasks_limit_rate",
            ),
        ]

    def __str__(self) -> str:
        parts = [f"{self.concurrency} at once"] if self.concurrency is not None else []
        parts += [self.rate] if self.rate else []
        return f"{self.scope} {self.name}: {', '.join(parts) or 'no limit'}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        _check_rate(self.rate)
        self.clean()
        super().save(*args, **kwargs)

    def clean(self) -> None:
        """Derive ``rate_interval`` from the rate (also before ``full_clean()`` validates the
        constraints, which read it; a rate that does not parse is its validator's to report)."""
        with contextlib.suppress(TypeError, ValueError):
            self.rate_interval = parse_rate(self.rate) if self.rate else None


class RateState(models.Model):
    """A rate's two clocks (written by the admission, ``limits.gate``).

    ``tat`` is the end of the line: the start the next run that has not reserved one gets
    (every run sent to wait reserved the start before). ``next_start`` is the start clock:
    the next start the starts so far allow - what judges every start, reserved or not, so
    that runs whose reserved starts have passed cannot start together (migration 0023).
    """

    key = models.CharField(max_length=120, primary_key=True)
    tat = models.DateTimeField()
    next_start = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.key}: next start {self.next_start or self.tat}, line ends {self.tat}"
