"""Caching: policies, key functions, expiry, refresh, persisted results, and runs with one
key on two worker processes calling the function once."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest

from django_tasks import StateType, TaskRunFuture, flush, task
from django_tasks.cache_policies import INPUTS, NO_CACHE, RUN_ID, TASK_SOURCE, CacheKeyError
from django_tasks.models import ResultRecord, TaskRun
from tests.conftest import drain, wait_for_live_workers, wait_until
from tests.taskapp.models import Effect
from tests.taskapp.tasks import (
    add,
    cached_briefly,
    cached_by_key_fn,
    cached_by_source,
    cached_ignoring_noise,
    cached_per_run,
    cached_square,
    persisted,
    slow_cached,
)

pytestmark = pytest.mark.django_db(transaction=True)


def marks(prefix: str) -> int:
    return Effect.objects.filter(label__startswith=prefix).count()


def test_inputs_hit_and_miss_inline():
    assert cached_square(3) == 9
    assert cached_square(3) == 9
    assert cached_square(4) == 16
    assert marks("square-") == 2  # 3 computed once, 4 once
    flush()
    names = list(TaskRun.objects.order_by("id").values_list("state_name", flat=True))
    assert names == ["Completed", "Cached", "Completed"]
    cached = TaskRun.objects.get(state_name="Cached")
    first = TaskRun.objects.order_by("id").first()
    assert first is not None
    assert cached.state_message == f"Cached result of run {first.id}."
    assert list(cached.states.values_list("name", flat=True)) == ["Pending", "Cached"]
    assert cached.result_preview == 9
    assert ResultRecord.objects.count() == 2


def test_equal_json_inputs_share_a_key_whatever_the_order():
    assert cached_square({"a": 1, "b": 2}) == {"a": 1, "b": 2}
    assert cached_square({"b": 2, "a": 1}) == {"a": 1, "b": 2}
    assert marks("square-") == 1


def test_excluded_inputs_and_key_functions():
    assert cached_ignoring_noise(1, noise=1) == 1
    assert cached_ignoring_noise(1, noise=2) == 1
    assert marks("noise-") == 1
    assert cached_by_key_fn(7, attempt=1) == 1
    assert cached_by_key_fn(7, attempt=2) == 1  # same key: the first result
    assert cached_by_key_fn(8, attempt=3) == 3
    assert marks("keyfn-") == 2
    assert ResultRecord.objects.filter(key="user-7").exists()


def test_run_id_policy_never_shares_between_runs():
    assert cached_per_run(1) == 1
    assert cached_per_run(1) == 1
    assert marks("per-run-") == 2


def test_task_source_and_combined_policies_key_on_the_code():
    assert cached_by_source(1) == 1
    assert cached_by_source(1) == 1
    assert marks("source-") == 1
    # Another function with the same name and module would hash its own source.
    key = ResultRecord.objects.get().key
    assert key.startswith(cached_by_source.key + ":")


def test_no_cache_and_policy_arithmetic():
    uncached = cached_square.with_options(cache_policy=NO_CACHE)
    uncached(5)
    uncached(5)
    assert marks("square-5") == 2
    assert repr(INPUTS + TASK_SOURCE) == "INPUTS + TASK_SOURCE"
    assert repr(INPUTS - "noise" + RUN_ID) == "INPUTS - 'noise' + RUN_ID"


def test_expiry():
    cached_briefly(1)
    cached_briefly(1)
    assert marks("briefly-") == 1
    time.sleep(0.6)
    cached_briefly(1)
    assert marks("briefly-") == 2
    record = ResultRecord.objects.get()
    assert record.expires is not None
    assert record.expires > record.created


def test_refresh_cache_recomputes_and_replaces_the_record():
    cached_square(6)
    first = ResultRecord.objects.get()
    cached_square.with_options(refresh_cache=True)(6)
    assert marks("square-6") == 2
    second = ResultRecord.objects.get()
    assert second.created > first.created
    assert second.run_id != first.run_id


def test_unhashable_input_is_a_clear_error_not_a_wrong_hit():
    lock = threading.Lock()
    with pytest.raises(CacheKeyError, match="cannot hash parameter 'x' \\(lock\\)"):
        cached_square(lock)
    assert marks("square-") == 0
    flush()
    run = TaskRun.objects.get()
    assert run.state_type == "FAILED"
    assert "INPUTS - 'x'" in run.state_message


def test_background_runs_share_results_with_inline_calls():
    assert cached_square(7) == 49
    future = cached_square.delay(7)
    drain()
    assert future.result(timeout=1) == 49
    run = TaskRun.objects.get(pk=future.id)
    assert (run.state_type, run.state_name) == ("COMPLETED", "Cached")
    assert list(run.states.values_list("name", flat=True)) == [
        "Scheduled",
        "Pending",
        "Cached",
    ]
    assert marks("square-7") == 1


def test_background_miss_stores_a_record():
    future = cached_square.delay(8)
    drain()
    assert future.result(timeout=1) == 64
    record = ResultRecord.objects.get()
    assert (record.run_id, record.result_preview) == (future.id, 64)
    assert cached_square(8) == 64
    assert marks("square-8") == 1


def test_two_workers_racing_on_one_key_run_the_function_once(start_worker):
    proc = start_worker("--concurrency", "2")
    wait_for_live_workers(2)  # both idle and listening: each claims one run at once
    futures = [slow_cached.delay(5, 0.5) for _ in range(2)]
    try:
        results = [f.result(timeout=30) for f in futures]
    finally:
        proc.terminate()
        proc.wait(30)
    assert results == [50, 50]
    assert marks("slow-cached-") == 1
    runs = TaskRun.objects.filter(pk__in=[f.id for f in futures])
    assert sorted(r.state_name for r in runs) == ["Cached", "Completed"]
    assert len({r.worker for r in runs}) == 2  # both workers took one


def test_persist_result_lets_another_process_read_an_inline_result():
    assert persisted(3) == {"x": 3}
    flush()
    run = TaskRun.objects.get()
    assert TaskRunFuture(run.id).result(timeout=1) == {"x": 3}
    plain = add.submit(1, 2)
    assert plain.result() == 3
    flush()
    assert TaskRun.objects.get(pk=plain.id).result is None  # not persisted by default


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"cache_policy": "inputs"}, TypeError, "cache_policy must be a cache policy"),
        ({"cache_key_fn": 3}, TypeError, "cache_key_fn must be callable"),
        ({"cache_expiration": 60}, TypeError, "cache_expiration must be a timedelta"),
        ({"cache_expiration": timedelta(0)}, ValueError, "must be positive"),
        ({"refresh_cache": "yes"}, TypeError, "refresh_cache must be True or False"),
        ({"cache_policy": INPUTS, "persist_result": False}, ValueError, "cannot go with caching"),
    ],
)
def test_bad_cache_options_fail_at_the_decorator(options: dict[str, Any], error, match):
    with pytest.raises(error, match=match):
        task(**options)


def test_a_key_fn_that_raises_means_no_caching(caplog):
    caplog.set_level("WARNING", logger="django_tasks")

    def broken(context: Any, parameters: Any) -> str:
        raise KeyError("no key")

    uncached = cached_square.with_options(cache_key_fn=broken, cache_policy=None)
    uncached(9)
    uncached(9)
    assert marks("square-9") == 2
    assert "cache_key_fn of" in caplog.text


def test_submitted_runs_use_the_cache_too():
    futures = cached_square.map([2, 2, 2])
    assert futures.result(timeout=10) == [4, 4, 4]
    assert marks("square-2") == 1
    wait_until(lambda: flush() and TaskRun.objects.filter(state_name="Cached").count() == 2)
    assert {f.state.type for f in futures} == {StateType.COMPLETED}
