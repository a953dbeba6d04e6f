"""Behaviours of Prefect's task model, each quoted, that this project now matches."""

from __future__ import annotations

from typing import Any

import pytest

from django_tasks import (
    TaskRunFailed,
    UpstreamFailed,
    allow_failure,
    flush,
    task,
    transaction,
)
from django_tasks.cache_policies import INPUTS, NO_CACHE, TASK_SOURCE
from django_tasks.models import TaskRun
from tests.taskapp.manual import ends_as, plain_with_commit_hook, stops
from tests.taskapp.models import Effect
from tests.taskapp.tasks import add, explode

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


# -- a task that returns a state -------------------------------------------------------------


def _marks(label: str) -> int:
    return Effect.objects.filter(label=label).count()


def test_a_returned_failed_state_fails_the_run_and_is_retried_inline():
    """Prefect: a task that returns ``Failed(...)`` ends FAILED with that message (not
    COMPLETED with a state as its result), and is retried when it has retries left."""
    with pytest.raises(TaskRunFailed, match="inline-no said no"):
        ends_as("failed", "inline-no")
    flush()
    run = TaskRun.objects.get(parameters_preview__label="inline-no")
    assert (run.state_type, run.state_name, run.state_message) == (
        "FAILED",
        "Failed",
        "inline-no said no",
    )
    assert run.attempts == 2
    assert _marks("inline-no") == 2
    future = ends_as.submit("failed-with", "submitted-no")
    with pytest.raises(LookupError, match="submitted-no"):
        future.result()
    assert future.state.is_failed()


def test_a_returned_completed_state_gives_its_data_and_message():
    """Prefect: ``Completed(data=x, message=m)`` ends COMPLETED with result ``x``."""
    assert ends_as("completed", "by-hand") == {"label": "by-hand"}
    flush()
    run = TaskRun.objects.get(parameters_preview__label="by-hand")
    assert (run.state_type, run.state_message) == ("COMPLETED", "done by hand")


@pytest.mark.parametrize(
    ("kind", "state_type"), [("cancelled", "CANCELLED"), ("crashed", "CRASHED")]
)
def test_returned_cancelled_and_crashed_states_are_final_and_not_retried(kind, state_type):
    label = f"ends-{kind}"
    with pytest.raises(TaskRunFailed):
        ends_as(kind, label)
    flush()
    assert TaskRun.objects.get(parameters_preview__label=label).state_type == state_type
    assert _marks(label) == 1


def test_a_returned_state_that_is_not_final_fails_the_run_clearly():
    with pytest.raises(TypeError, match="a task may return only a final state"):
        ends_as("running", "still-running")


def test_returned_states_end_background_runs_the_same_way():
    failed = ends_as.delay("failed", "bg-no")
    completed = ends_as.delay("completed", "bg-yes")
    crashed = ends_as.delay("crashed", "bg-crashed")
    drain()
    assert failed.state.type == "FAILED"
    assert failed.state.message == "bg-no said no"
    assert _marks("bg-no") == 2  # retried once, as inline
    with pytest.raises(TaskRunFailed, match="bg-no said no"):
        failed.result(timeout=1)
    assert completed.result(timeout=1) == {"label": "bg-yes"}
    assert completed.state.message == "done by hand"
    assert crashed.state.type == "CRASHED"
    assert _marks("bg-crashed") == 1


# -- interrupts and exits --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("how", "raised"), [("exit", SystemExit), ("interrupt", KeyboardInterrupt)]
)
def test_an_exit_or_interrupt_inside_a_task_crashes_its_run(how, raised):
    """Prefect: ``KeyboardInterrupt`` / ``SystemExit`` inside a task end the run CRASHED
    (not FAILED), are not retried, and propagate to the caller."""
    label = f"inline-{how}"
    with pytest.raises(raised):
        stops(how, label)
    flush()
    run = TaskRun.objects.get(parameters_preview__label=label)
    assert (run.state_type, run.state_name) == ("CRASHED", "Crashed")
    assert _marks(label) == 1  # retries=2, yet never retried


def test_an_exit_inside_a_background_run_crashes_it_and_the_worker_goes_on():
    exited = stops.delay("exit", "bg-exit")
    interrupted = stops.delay("interrupt", "bg-interrupt")
    after = echo.delay("after")
    drain()
    for future, label in ((exited, "bg-exit"), (interrupted, "bg-interrupt")):
        assert future.state.type == "CRASHED"
        assert _marks(label) == 1
    assert after.result(timeout=1) == "after"


# -- .map() over futures ---------------------------------------------------------------------


@task
def numbers(n: int) -> list[int]:
    return list(range(n))


@task
def plus_one(x: Any) -> Any:
    return x + 1 if isinstance(x, int) else x


def test_map_over_a_future_maps_over_its_result():
    """Prefect: ``add_one.map(numbers_future)`` maps over the list the future returns."""
    futures = plus_one.map(numbers.submit(3))
    assert [f.result() for f in futures] == [1, 2, 3]


def test_map_over_allow_failure_of_futures_passes_each_failure_on():
    """Prefect: ``.map(allow_failure(futures))`` runs once per future, a failed one giving
    that run its exception instead of stopping it."""
    upstreams = [echo.submit(1), explode.submit("one broke"), echo.submit(3)]
    results = plus_one.map(allow_failure(upstreams)).result()
    assert results[0] == 2
    assert results[2] == 4
    assert isinstance(results[1], RuntimeError)
    assert str(results[1]) == "one broke"


def test_map_with_a_failed_future_fails_each_run_naming_the_upstream():
    """A failed future that is not mapped over is an upstream of every run: each fails
    without starting, as any run with a failed upstream does."""
    broken = explode.submit("no number")
    futures = add.map([1, 2], broken)
    for future in futures:
        with pytest.raises(UpstreamFailed, match="this run did not start"):
            future.result()
    flush()
    assert TaskRun.objects.filter(task_name="add", state_type="FAILED").count() == 2


# -- cache policy arithmetic -----------------------------------------------------------------


def test_subtracting_a_name_from_a_policy_without_inputs_changes_nothing():
    """Prefect: ``TASK_SOURCE - "x"`` (any policy that does not hash inputs) is a no-op."""
    assert (TASK_SOURCE - "x") is TASK_SOURCE
    assert (NO_CACHE - "x") is NO_CACHE
    with pytest.raises(TypeError):
        TASK_SOURCE - 1  # type: ignore[operator]


def test_subtracting_a_name_from_a_compound_policy_leaves_it_out_of_the_inputs():
    """Prefect: ``(INPUTS + TASK_SOURCE) - "y"`` excludes ``y`` from the key."""

    @task(cache_policy=(INPUTS + TASK_SOURCE) - "y")
    def cached(x: int, y: int) -> int:
        Effect.objects.create(label="compound-cached")
        return x

    assert cached(1, 10) == 1
    assert cached(1, 20) == 1  # a cache hit: y is not in the key
    assert cached(2, 10) == 2
    assert _marks("compound-cached") == 2
    assert repr((INPUTS + TASK_SOURCE) - "y") == "INPUTS - 'y' + TASK_SOURCE"


# -- transactions ----------------------------------------------------------------------------


def test_a_plain_call_outside_a_transaction_commits_on_its_own():
    """Prefect gives every run a transaction: a completed run of a task that is not atomic
    calls its ``on_commit`` hooks; a failed one does not (it staged nothing)."""
    assert plain_with_commit_hook("plain") == "plain"
    assert _marks("plain-committed") == 1
    plain_with_commit_hook.submit("submitted").result()
    assert _marks("plain-committed") == 2
    with pytest.raises(ValueError, match="broken"):
        plain_with_commit_hook("broken", fail=True)
    assert _marks("plain-committed") == 2
    plain_with_commit_hook.delay("background")
    drain()
    assert _marks("plain-committed") == 3


def test_a_nested_transaction_reads_its_parents_values():
    """Prefect: ``inner.get("key")`` finds what the outer transaction set; what the inner
    one sets stays its own."""
    with transaction() as outer:
        outer.set("key", "outer value")
        with transaction() as inner:
            assert inner.get("key") == "outer value"
            inner.set("own", 1)
            inner.set("key", "inner value")
            assert inner.get("key") == "inner value"
        assert outer.get("own") is None
        assert outer.get("key") == "outer value"
        assert inner.get("missing", "default") == "default"


def test_return_state_gives_the_final_state_instead_of_the_value():
    """Prefect: ``my_task(return_state=True)`` returns the run's state and raises nothing;
    ``state.result()`` gives the value or raises the exception."""
    state = echo("value", return_state=True)  # type: ignore[call-arg]
    assert state.is_completed()
    assert state.result() == "value"
    failed: Any = explode("kept in the state", return_state=True)  # type: ignore[call-arg]
    assert failed.is_failed()
    with pytest.raises(RuntimeError, match="kept in the state"):
        failed.result()
    assert isinstance(failed.result(raise_on_failure=False), RuntimeError)
    with pytest.raises(TypeError, match="return_state must be True or False"):
        echo(1, return_state="yes")  # type: ignore[call-arg]

    def takes_return_state(return_state: bool) -> bool:
        return return_state

    with pytest.raises(ValueError, match="parameter named 'return_state'"):
        task(takes_return_state)
