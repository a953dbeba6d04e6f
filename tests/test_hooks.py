"""State hooks, run names and the run context, inline and in the background."""

from __future__ import annotations

import pytest

from django_tasks import MissingContextError, flush, get_run_context, task
from django_tasks.models import TaskRun
from tests.taskapp.models import Effect
from tests.taskapp.tasks import context_report, hooked

from .conftest import drain

pytestmark = pytest.mark.django_db(transaction=True)


def marks() -> list[str]:
    return sorted(Effect.objects.values_list("label", flat=True))


def test_inline_completion_hook_runs_once_after_success():
    assert hooked("a") == "a"
    assert marks() == ["done:a:Completed"]


def test_inline_failure_hooks_run_once_after_the_last_attempt():
    with pytest.raises(ValueError, match="b fails"):
        hooked("b", fail=True)
    # retries=1: two attempts, but the failure hooks run once, at the end, in order.
    assert marks() == ["failed-again:b:Failed", "failed:b:Failed"]
    flush()
    assert TaskRun.objects.get(name="hooked-b").attempts == 2


def test_background_hooks_run_in_the_worker():
    done = hooked.delay("c")
    failed = hooked.delay("d", fail=True)
    drain()
    assert done.result(timeout=1) == "c"
    assert failed.state.is_failed()
    assert marks() == ["done:c:Completed", "failed-again:d:Failed", "failed:d:Failed"]


def test_a_hook_that_raises_is_logged_and_changes_nothing(caplog):
    caplog.set_level("WARNING", logger="django_tasks")

    def broken(task, task_run, state):
        raise RuntimeError("hook broke")

    def fine(task, task_run, state):
        Effect.objects.create(label=f"fine:{state.result()}")

    both = hooked.with_options(on_completion=[broken, fine])
    assert both("e") == "e"
    assert marks() == ["fine:e"]
    flush()
    assert TaskRun.objects.get(name="hooked-e").state_type == "COMPLETED"
    assert "hook broke" in caplog.text


def test_run_names_from_a_template_inline_and_in_the_background():
    hooked("f")
    future = hooked.delay("g")
    flush()
    assert TaskRun.objects.get(pk=future.id).name == "hooked-g"
    assert set(TaskRun.objects.values_list("name", flat=True)) == {"hooked-f", "hooked-g"}
    assert set(TaskRun.objects.values_list("task_name", flat=True)) == {"hooked"}


def test_a_template_naming_a_missing_parameter_fails_at_the_call_and_writes_nothing():
    broken = hooked.with_options(task_run_name="run-{nope}")
    with pytest.raises(ValueError, match=r"task_run_name 'run-\{nope\}'.*\['fail', 'label'\]"):
        broken.delay("h")
    with pytest.raises(ValueError, match="cannot be formatted"):
        broken("h")
    assert not TaskRun.objects.exists()
    assert not Effect.objects.exists()


def test_run_context_inside_an_inline_run():
    report = context_report(7)
    flush()
    run = TaskRun.objects.get()
    assert report == {
        "id": str(run.id),
        "name": "ctx-7",
        "attempt": 1,
        "parameters": {"n": 7},
        "origin": "call",
        "task": "context_report",
    }
    assert run.name == "ctx-7"


def test_run_context_inside_a_background_run():
    future = context_report.delay(8)
    drain()
    report = future.result(timeout=1)
    assert report["id"] == str(future.id)
    assert (report["name"], report["origin"], report["attempt"]) == ("ctx-8", "delay", 1)
    assert report["parameters"] == {"n": 8}


def test_no_run_context_outside_a_run():
    with pytest.raises(MissingContextError):
        get_run_context()


def test_a_callable_name_that_raises_falls_back_to_the_task_name(caplog):
    caplog.set_level("WARNING", logger="django_tasks")

    def bad_name() -> str:
        raise KeyError("x")

    named = task(task_run_name=bad_name, name="named")(context_report.fn)
    assert named(1)["name"] == "named"
    assert "task_run_name of" in caplog.text
