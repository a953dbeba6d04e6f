"""A ``django.tasks`` Task module no installed app imports: a worker meets it first when a
run names it (Django 6). ``DJANGO_TASKS_TEST_LATE`` makes it fail there as a worker with old
settings or a broken environment would: ``runtime`` raises at import, ``import`` imports a
package that is not installed, ``queue`` declares a queue the backend's settings do not list
(Django raises InvalidTask)."""

from __future__ import annotations

import os

from django.tasks import task

_LATE = os.environ.get("DJANGO_TASKS_TEST_LATE", "")

if _LATE == "runtime":
    raise RuntimeError("late_standard cannot be imported in this process")
if _LATE == "import":  # a package the worker's environment lacks
    import a_package_this_worker_lacks  # type: ignore[import-not-found]  # noqa: F401
if _LATE == "attribute":  # its own code reads an attribute that is not there
    os.path.no_such_function  # type: ignore[attr-defined]  # noqa: B018
if _LATE == "name":  # a name its module no longer has (an older version installed)
    from json import no_such_name  # type: ignore[attr-defined]  # noqa: F401


@task(queue_name="emails" if _LATE == "queue" else "other")
def late_mark(label: str) -> str:
    return label
