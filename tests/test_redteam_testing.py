"""Red team: django_tasks.testing.run_ready() against limits (issue 24, item 6: it returns as
soon as nothing is ready; runs scheduled for later stay SCHEDULED)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from django_tasks.models import Limit
from django_tasks.testing import run_ready
from tests.taskapp.redteam import hourly
from tests.taskapp.tasks import limited_sleep

from .conftest import ROOT

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.xfail(strict=True, reason="red team: run_ready() waits for a task's rate")
def test_run_ready_does_not_wait_an_hour_for_a_tasks_rate_limit(worker_env):
    """run_ready() in a subprocess (killed after 15 s): a thread of this process would keep
    the test database busy for the hour."""
    first, second = hourly.delay("first"), hourly.delay("second")
    code = "from django_tasks.testing import run_ready; print(run_ready())"
    try:
        subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", code],
            cwd=ROOT,
            env=worker_env,
            timeout=15,
            check=True,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("run_ready() still waiting after 15 s")
    assert first.state.is_completed()
    assert second.state.type == "SCHEDULED"


@pytest.mark.xfail(strict=True, reason="red team: run_ready() ignores Limit rows")
def test_run_ready_applies_a_limit_row_as_the_worker_does():
    Limit.objects.create(scope="tag", name="limited", rate="1/h")
    runs = [limited_sleep.delay(0.0, f"run-{i}") for i in range(6)]
    run_ready()
    print([f.state.type for f in runs])
    assert sum(f.state.is_completed() for f in runs) == 1
