import subprocess
import sys

import pytest

from django_tasks import Task, task
from django_tasks.registry import UnknownTask, registry, task_key
from tests.taskapp import other_tasks
from tests.taskapp import tasks as taskapp

from .conftest import ROOT


def test_bare_and_configured_decorator():
    assert isinstance(taskapp.add, Task)
    assert taskapp.add.name == "add"
    assert taskapp.add.queue == "default"
    assert taskapp.explode.tags == ("errors",)
    assert taskapp.on_other_queue.queue == "other"

    @task(name="custom", queue="q1", priority=5, tags=["b", "a", "a"], description="why")
    def fn(x: int) -> int:
        """Docstring."""
        return x

    assert (fn.name, fn.queue, fn.priority, fn.tags, fn.description) == (
        "custom",
        "q1",
        5,
        ("a", "b"),
        "why",
    )


def test_description_defaults_to_docstring():
    @task
    def documented():
        """Says why."""

    assert documented.description == "Says why."
    assert documented.__name__ == "documented"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"name": 3}, TypeError, "Task name must be a str"),
        ({"name": " "}, ValueError, "1 to 255 characters"),
        ({"queue": 5}, TypeError, "queue must be a str"),
        ({"queue": "has space"}, ValueError, "queue must be 1 to 100"),
        ({"priority": "high"}, TypeError, "priority must be an int"),
        ({"priority": True}, TypeError, "priority must be an int"),
        ({"priority": 101}, ValueError, "between -100 and 100"),
        ({"tags": "email"}, TypeError, "tags must be an iterable"),
        ({"tags": [1]}, TypeError, "each tag must be a non-empty str"),
        ({"description": 5}, TypeError, "description must be a str"),
        ({"retries": 1.5}, TypeError, "retries must be an int"),
        ({"retries": -1}, ValueError, "retries must not be negative"),
        ({"retry_delay_seconds": "soon"}, TypeError, "retry_delay_seconds must be a number"),
        ({"retry_delay_seconds": -1}, ValueError, "must not be negative"),
        ({"timeout_seconds": 0}, ValueError, "must not be zero or negative"),
    ],
)
def test_bad_options_fail_at_decoration(options, error, message):
    with pytest.raises(error, match=message):
        task(**options)


def test_decorator_refuses_non_functions_and_takes_async_functions():
    with pytest.raises(TypeError, match="decorates a function"):
        Task(5)  # type: ignore[arg-type]

    async def coro() -> int:
        return 1

    assert task(coro).is_async  # docs/async.md; tests/test_async.py
    assert not taskapp.add.is_async


def test_with_options_copies_and_validates():
    copy = taskapp.add.with_options(queue="fast", priority=10)
    assert (copy.queue, copy.priority, copy.name) == ("fast", 10, "add")
    assert copy.key == taskapp.add.key  # same name and function: same task
    renamed = taskapp.add.with_options(name="add2")
    assert renamed.key != taskapp.add.key
    with pytest.raises(ValueError, match="priority"):
        taskapp.add.with_options(priority=1000)
    with pytest.raises(TypeError, match="Unknown task option"):
        taskapp.add.with_options(retry=3)  # type: ignore[call-arg]
    assert taskapp.add.with_options(retries=2, timeout_seconds=5).options.retries == 2


def test_task_key_is_stable_across_fresh_processes():
    code = (
        "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='tests.settings'; django.setup();"
        "from tests.taskapp.tasks import add; print(add.key)"
    )
    keys = {
        subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        for _ in range(2)
    }
    assert keys == {taskapp.add.key}
    assert len(taskapp.add.key) == 32


def test_same_name_in_other_module_has_other_key():
    assert other_tasks.add.name == taskapp.add.name == "add"
    assert other_tasks.add.key != taskapp.add.key
    assert task_key("add", other_tasks.add.fn) == other_tasks.add.key


def test_registry_lookup():
    assert registry.get(taskapp.add.key) is taskapp.add
    assert taskapp.add.key in registry
    assert taskapp.add in registry.all()
    with pytest.raises(UnknownTask):
        registry.get("nope")
