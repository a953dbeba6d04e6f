"""A second module with a task of the same name as one in tasks.py (task keys must differ)."""

from django_tasks import task


@task
def add(a: int, b: int) -> int:
    return a - b
