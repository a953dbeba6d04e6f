"""Tasks of the red team (issue 24's fixes): code that misbehaves in ways the fixed poison
tasks (poison.py) do not - a task that resets the worker's signal handlers or closes its file
descriptors.

Imported by ``tasks.py`` so that workers register them like any task.
"""

from __future__ import annotations

import os

from django_tasks import task
from django_tasks.cache_policies import INPUTS

from .models import Effect


@task
def closes_descriptors(label: str) -> str:
    """Closes every file descriptor above stderr (a daemonising helper does), then returns."""
    os.closerange(3, 65536)
    return label


@task(retries=3)
def fails_then_exits(label: str) -> None:
    """Attempt 1 fails as usual (a retry); every later attempt kills its process."""
    Effect.objects.create(label=label)
    if Effect.objects.filter(label=label).count() == 1:
        raise ValueError("first attempt fails normally")
    os._exit(7)


@task(atomic=True)
def atomic_exit(label: str) -> None:
    """Writes inside its atomic transaction, then kills its process before the commit."""
    Effect.objects.create(label=label)
    os._exit(7)


@task(cache_policy=INPUTS)
def cached_exit(x: int) -> int:
    """Kills its process while its cache key's advisory lock is held."""
    os._exit(7)
