"""Behaviours of Prefect's task model, each quoted, that this project now matches."""

from __future__ import annotations

from typing import Any

import pytest

from django_tasks import allow_failure, flush, task
from django_tasks.models import TaskRun
from tests.taskapp.tasks import explode

from .conftest import drain

pytestmark = pytest.mark.django_db(transaction=True)


@task
def echo(value: Any) -> Any:
    return value


def test_allow_failure_around_a_list_passes_the_exceptions_inside_it():
    """Prefect: ``allow_failure([failed_future, 1, 2])`` gives the downstream
    ``[ValueError(...), 1, 2]`` - the wrapper reaches every future in what it wraps."""
    broken = explode.submit("upstream broke")
    broken.wait()
    inline = echo(allow_failure([broken, 1, 2]))
    assert isinstance(inline[0], RuntimeError)
    assert inline[1:] == [1, 2]
    submitted = echo.submit(allow_failure({"first": broken, "n": 3}))
    value = submitted.result()
    assert isinstance(value["first"], RuntimeError)
    assert value["n"] == 3
    flush()
    # No run is left PENDING: every record reached a final state.
    assert not TaskRun.objects.filter(state_type="PENDING").exists()


def test_allow_failure_around_a_list_of_background_runs():
    broken = explode.delay("background upstream broke")
    downstream = echo.delay(allow_failure([broken, 1]))
    drain()
    value = downstream.result(timeout=1)
    assert isinstance(value[0], RuntimeError)
    assert "background upstream broke" in str(value[0])
    assert value[1] == 1


def test_an_unreadable_upstream_result_fails_the_run_instead_of_leaving_it_pending(monkeypatch):
    upstream = echo.submit(1)
    upstream.wait()

    def unreadable(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("cannot read it")

    monkeypatch.setattr(type(upstream), "result", unreadable)
    with pytest.raises(RuntimeError, match="cannot read it"):
        echo(upstream)
    flush()
    assert not TaskRun.objects.filter(state_type="PENDING").exists()


def test_an_inline_call_takes_wait_for():
    """Prefect: ``bar(2, wait_for=[f])`` waits for ``f`` - and does not run when ``f``
    failed."""
    first = echo.submit("first")
    # (a type checker does not know wait_for: ParamSpec allows no keyword beside P.kwargs)
    assert echo("second", wait_for=[first]) == "second"  # type: ignore[call-arg]
    broken = explode.submit("nope")
    with pytest.raises(Exception, match="this run did not start"):
        echo("never", wait_for=[broken])  # type: ignore[call-arg]
    flush()
    never = TaskRun.objects.get(task_name="echo", parameters_preview__value="never")
    assert never.state_type == "FAILED"
    assert never.upstream_edges.get().kind == "wait_for"


def test_wait_for_is_refused_as_a_task_parameter():
    """Prefect refuses a task function with a ``wait_for`` parameter at decoration."""

    def takes_wait_for(wait_for: int) -> int:
        return wait_for

    with pytest.raises(ValueError, match="parameter named 'wait_for'"):
        task(takes_wait_for)


def test_completion_and_failure_hooks_in_decorator_form():
    """Prefect: ``@my_task.on_completion`` / ``@my_task.on_failure`` add hooks, like the
    options, called with (task, task_run, state)."""
    seen: list[str] = []

    @task
    def maybe(fail: bool) -> str:
        if fail:
            raise ValueError("asked to")
        return "ok"

    @maybe.on_completion
    def completed(task: Any, task_run: Any, state: Any) -> None:
        seen.append(f"completed {state.result()}")

    @maybe.on_failure
    def failed(task: Any, task_run: Any, state: Any) -> None:
        seen.append(f"failed {type(state.exception).__name__}")

    assert maybe(False) == "ok"
    with pytest.raises(ValueError, match="asked to"):
        maybe(True)
    assert seen == ["completed ok", "failed ValueError"]
    assert completed.__name__ == "completed"  # the decorator gives the function back


def test_waiting_with_a_negative_timeout_is_refused():
    """Prefect: ``wait(futures, timeout=-1)`` raises ``ValueError``."""
    from django_tasks import as_completed, wait

    future = echo.submit(1)
    with pytest.raises(ValueError, match="timeout must be None or a number of seconds >= 0"):
        wait([future], timeout=-1)
    with pytest.raises(ValueError, match="timeout must be"):
        list(as_completed([future], timeout=-0.5))
    assert wait([future], timeout=5).done == {future}


def test_a_task_run_name_callable_must_return_a_string():
    """Prefect: a ``task_run_name`` function that returns something else raises
    ``TypeError`` (the run is not named 'None')."""

    @task(task_run_name=lambda: None)  # type: ignore[arg-type, return-value]
    def unnamed() -> int:
        return 1

    with pytest.raises(TypeError, match="must return a str, got None"):
        unnamed()
    assert not TaskRun.objects.filter(task_name="unnamed").exists()
