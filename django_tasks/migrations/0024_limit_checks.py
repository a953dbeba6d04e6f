"""Limit rows SQL can write are rows the model could have written (red team of issue 24).

``django_tasks_limit`` had no constraint but ``concurrency >= 0``: an UPDATE could set
``rate_interval`` to NaN, Infinity, a negative or a huge number, the scope to anything, the
name to ''. A NaN made every admission of a batch that held one of the limit's runs fail
("interval out of range"), and the worker handed back the whole batch, each run charged a
crash: runs no limit concerned ended CRASHED. Three CHECK constraints now refuse such rows:

* ``django_tasks_limit_scope``: the scope is 'tag' or 'queue';
* ``django_tasks_limit_name``: the name is not empty;
* ``django_tasks_limit_rate``: the rate is blank and ``rate_interval`` NULL, or the rate is
  set and ``rate_interval`` lies within the seconds between starts a rate can give
  (``limits.rates.SHORTEST_INTERVAL`` .. ``LONGEST_INTERVAL``; NaN is outside).

Rows already there that would fail them are mended first, so that the migration never fails
on them, each change logged: a row with an unknown scope or no name limits nothing any run
could have and is deleted; a rate's interval is derived again from its text, as
``Limit.save()`` does; a rate whose text does not parse keeps an interval within the bounds,
else the row loses its rate (its concurrency, if any, stays); an interval with a blank rate
is dropped.
"""

import logging

from django.db import migrations, models

from django_tasks.limits.rates import parse_rate

logger = logging.getLogger("django_tasks.limits")

#: The constraints' bounds as this migration knows them (``limits.rates``' in 2026-12).
SHORTEST_INTERVAL = 1.000000001e-09
LONGEST_INTERVAL = 86400.0


def _usable(interval: float | None) -> bool:
    return interval is not None and SHORTEST_INTERVAL <= interval <= LONGEST_INTERVAL


def _interval(rate: str) -> float | None:
    """The seconds between starts ``rate`` gives, or None when it does not parse."""
    try:
        return parse_rate(rate)
    except (TypeError, ValueError):
        return None


def mend_rows(apps, schema_editor):
    """Change the rows the constraints would refuse (see the module docstring)."""
    Limit = apps.get_model("django_tasks", "Limit")
    rows = Limit.objects.using(schema_editor.connection.alias)
    for limit in rows.filter(~models.Q(scope__in=("tag", "queue")) | models.Q(name="")):
        logger.warning("Limit %s %r deleted: no run can be under it", limit.scope, limit.name)
        limit.delete()
    for limit in rows.all():
        interval = _interval(limit.rate) if limit.rate else None
        if not limit.rate:
            wanted, rate = None, ""
        elif interval is not None:
            wanted, rate = interval, limit.rate
        elif _usable(limit.rate_interval):
            continue
        else:
            wanted, rate = None, ""
        if rate == limit.rate and limit.rate_interval == wanted:  # (NaN equals nothing)
            continue
        logger.warning(
            "Limit %s %r: rate %r with rate_interval %r becomes rate %r with rate_interval %r",
            limit.scope,
            limit.name,
            limit.rate,
            limit.rate_interval,
            rate,
            wanted,
        )
        rows.filter(pk=limit.pk).update(rate=rate, rate_interval=wanted)


class Migration(migrations.Migration):
    dependencies = [
        ("django_tasks", "0023_rate_start_clock"),
    ]

    operations = [
        migrations.RunPython(mend_rows, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="limit",
            constraint=models.CheckConstraint(
                condition=models.Q(("scope__in", ("tag", "queue"))),
                name="django_tasks_limit_scope",
            ),
        ),
        migrations.AddConstraint(
            model_name="limit",
            constraint=models.CheckConstraint(
                condition=models.Q(("name", ""), _negated=True), name="django_tasks_limit_name"
            ),
        ),
        migrations.AddConstraint(
            model_name="limit",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(("rate", ""), ("rate_interval__isnull", True)),
                    models.Q(
                        models.Q(("rate", ""), _negated=True),
                        ("rate_interval__gte", SHORTEST_INTERVAL),
                        ("rate_interval__isnull", False),
                        ("rate_interval__lte", LONGEST_INTERVAL),
                    ),
                    _connector="OR",
                ),
                name="django_tasks_limit_rate",
            ),
        ),
    ]
