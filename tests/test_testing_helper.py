"""django_tasks.testing: capture the runs a view enqueued, then run them in the test.

Under Django's ``TestCase`` (the test's transaction never commits), under pytest-django's
``db`` fixture (the same), and in autocommit (``transactional_db``)."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from typing import Any

import pytest
from django.test import TestCase
from django.urls import reverse

from django_tasks import TaskRunFailed
from django_tasks.models import Limit, RateState, TaskRun
from django_tasks.testing import captured_runs, run_ready
from tests.taskapp.models import Effect
from tests.taskapp.tasks import (
    add,
    always_fails,
    explode,
    fails_first,
    hourly,
    limited_sleep,
    record,
    total,
)

from .conftest import ROOT


def _demo_form(client, job: str, count: int = 1) -> None:
    response = client.post(reverse("index"), {"job": job, "email": "", "count": count})
    assert response.status_code == 302


class ViewTestCase(TestCase):
    """Django's TestCase: everything happens inside the test's transaction."""

    def test_a_view_that_enqueues_and_the_runs_it_enqueued(self):
        with captured_runs() as runs:
            _demo_form(self.client, "bad")
        assert runs.task_names == ["resize_image"]
        assert runs[0].state.type == "SCHEDULED"
        assert run_ready() == 1
        state = runs[0].state
        assert state.type == "FAILED"
        assert "scale must be in (0, 1]" in state.message
        run = TaskRun.objects.get(pk=runs[0].id)
        history = list(run.states.values_list("type", flat=True))
        assert history == ["SCHEDULED", "PENDING", "RUNNING", "FAILED"]

    def test_the_task_sees_what_the_test_created(self):
        Effect.objects.create(label="made by the test")
        future = record.delay("made by the task")
        assert run_ready() == 1
        assert future.result(timeout=0) == Effect.objects.get(label="made by the task").pk
        assert Effect.objects.count() == 2


@pytest.mark.django_db
def test_with_pytest_djangos_db_fixture_retries_and_failures_are_recorded():
    flaky = fails_first.delay("flaky in a test")
    broken = always_fails.delay("for good")
    assert run_ready() == 4  # executions: each run was tried twice (retries)
    assert flaky.result(timeout=0) == 1
    assert TaskRun.objects.get(pk=flaky.id).attempts == 2
    with pytest.raises(ValueError, match="attempt failed: for good"):
        broken.result(timeout=0)
    assert run_ready() == 0  # nothing left


@pytest.mark.django_db
def test_dependent_runs_are_released_and_run_in_the_same_call():
    # (futures stand for their results: a type checker sees a future where an int goes)
    first: Any = add.delay(1, 2)
    second: Any = add.delay(first, 10)
    gathered = total.delay([first, second])
    failed_upstream: Any = explode.delay("no")
    blocked = add.delay(failed_upstream, 1)
    run_ready()
    assert gathered.result(timeout=0) == 16
    assert blocked.state.type == "FAILED"
    with pytest.raises(TaskRunFailed):
        blocked.result(timeout=0)


@pytest.mark.django_db
def test_run_ready_returns_as_soon_as_nothing_is_ready_without_sleeping(monkeypatch):
    """Each run_ready() that ran something used to wait one POLL_INTERVAL (1 s) before it
    returned - five minutes for a suite of 300 view tests. It never waits when nothing is
    left: the completions written by its last claim are followed by one more claim, at
    once. (benchmarks/run_ready.py measures it: about 6 ms a call with one run.)"""
    from django_tasks.worker.claimer import Claimer

    slept: list[int] = []
    monkeypatch.setattr(Claimer, "sleep", lambda self, *args: slept.append(1))
    first: Any = add.delay(1, 2)
    add.delay(first, 10)  # released by the first run's completion
    assert run_ready() == 2
    assert run_ready() == 0
    assert slept == []


@pytest.mark.django_db
def test_runs_scheduled_for_later_are_left_alone_and_queues_can_be_chosen():
    later = add.apply_async(args=(1, 1), countdown=3600)
    elsewhere = add.apply_async(args=(2, 2), queue="elsewhere")
    assert run_ready(queues=["default"]) == 0
    assert elsewhere.state.type == "SCHEDULED"
    assert run_ready() == 1
    assert elsewhere.result(timeout=0) == 4
    assert later.state.type == "SCHEDULED"
    assert TaskRun.objects.get(pk=later.id).scheduled_time > TaskRun.objects.get(
        pk=elsewhere.id
    ).created + timedelta(minutes=59)


@pytest.mark.django_db(transaction=True)
def test_in_autocommit_the_runs_are_committed_like_a_workers(second_connection):
    with captured_runs() as runs:
        add.delay(20, 22)
        add.delay_many([(1, 1), (2, 2)])
    assert len(runs) == 3
    assert runs.of(add) == runs
    assert runs.of("other") == []
    assert run_ready() == 3
    row = second_connection.execute(
        "SELECT state_type FROM django_tasks_taskrun WHERE id = %s", (runs[0].id,)
    ).fetchone()
    assert row == ("COMPLETED",)
    assert [run.result(timeout=0) for run in runs] == [42, 2, 4]


@pytest.mark.django_db
def test_captured_runs_sees_only_its_block():
    add.delay(0, 0)
    with captured_runs() as runs:
        add.delay(1, 0)
    add.delay(2, 0)
    assert len(runs) == 1
    assert runs.ids == [runs[0].id]


@pytest.mark.django_db(transaction=True)
def test_run_ready_never_waits_for_a_rate_the_runs_it_holds_back_stay_scheduled(worker_env):
    """run_ready() used to wait for the start a rate reserved: an hour for a task of "1/h"
    with two runs. It runs in a subprocess here (killed after 15 s): a thread of this process
    would keep the test database busy for the hour."""
    first, second = hourly.delay("first"), hourly.delay("second")
    code = "from django_tasks.testing import run_ready; print(run_ready())"
    try:
        done = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", code],
            cwd=ROOT,
            env=worker_env,
            timeout=15,
            check=True,
            capture_output=True,
            text=True,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("run_ready() still waiting after 15 s")
    assert done.stdout.split()[-1] == "1"
    assert first.state.is_completed()
    assert (second.state.type, second.state.name) == ("SCHEDULED", "AwaitingRateLimit")


@pytest.mark.django_db
def test_run_ready_applies_the_limit_rows_as_the_worker_does():
    """A tag's rate of 1/h starts one run of six (run_ready() used to ignore Limit rows: all
    six ran); a queue's concurrency of 2**31 - 1, the largest, binds nothing."""
    Limit.objects.create(scope="tag", name="limited", rate="1/h")
    Limit.objects.create(scope="queue", name="default", concurrency=2**31 - 1)
    runs = [limited_sleep.delay(0.0, f"run-{i}") for i in range(6)]
    assert run_ready() == 1
    states = [(f.state.type.value, f.state.name) for f in runs]
    assert states.count(("COMPLETED", "Completed")) == 1, states
    assert states.count(("SCHEDULED", "AwaitingRateLimit")) == 5, states
    assert run_ready() == 0  # the others wait for their reserved starts, an hour apart


@pytest.mark.django_db
def test_run_ready_holds_the_runs_of_a_concurrency_limit_of_zero():
    Limit.objects.create(scope="tag", name="limited", concurrency=0)
    held = limited_sleep.delay(0.0, "held")
    free = record.delay("free")
    assert run_ready() == 1
    assert free.state.is_completed()
    assert (held.state.type, held.state.name) == ("SCHEDULED", "AwaitingConcurrencySlot")


@pytest.mark.django_db
def test_run_ready_without_limits_runs_every_ready_run_and_moves_no_rate_clock():
    Limit.objects.create(scope="tag", name="limited", concurrency=0, rate="1/h")
    runs = [hourly.delay(f"h{i}") for i in range(3)] + [limited_sleep.delay(0.0, "held")]
    assert run_ready(limits=False) == 4
    assert [f.result(timeout=0) for f in runs] == ["h0", "h1", "h2", "held"]
    assert not RateState.objects.exists()
