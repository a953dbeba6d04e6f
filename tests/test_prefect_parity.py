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
