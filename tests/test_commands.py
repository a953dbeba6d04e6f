from typing import Any

import pytest
from django.core.checks import Error, register
from django.core.checks.registry import registry
from django.core.management import CommandError, call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from tests.taskapp.tasks import add


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--concurrency", "0"], "--concurrency must be at least 1"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--max-tasks-per-child", "0"], "--max-tasks-per-child must be at least 1"),
        (["--concurrency", "99999"], "--concurrency must be at most 256, got 99999"),
        (["--async-concurrency", "100001"], "--async-concurrency must be at most 10000"),
        (["--batch-size", "10001"], "--batch-size must be at most 10000"),
        (["--shutdown-timeout", "-1"], "--shutdown-timeout must be a finite number of seconds"),
        (["--shutdown-timeout", "nan"], "--shutdown-timeout must be a finite number of seconds"),
        (["--shutdown-timeout", "inf"], "--shutdown-timeout must be a finite number of seconds"),
        (["--poll-interval", "0"], "--poll-interval must be a finite number of seconds, more"),
        (["--poll-interval", "-1"], "--poll-interval must be a finite number of seconds"),
        (["--poll-interval", "nan"], "--poll-interval must be a finite number of seconds"),
        (["--queues", "bad queue"], "queue must be"),
    ],
)
def test_bad_options(args, message):
    with pytest.raises(CommandError, match=message):
        call_command("runtaskworker", *args)


@pytest.mark.django_db(transaction=True)
def test_burst_run_in_process(monkeypatch):
    import signal

    from django.db import connection

    # The supervisor's children are fresh interpreters: tell them the test database's name.
    monkeypatch.setenv("DJANGO_TASKS_TEST_DB", connection.settings_dict["NAME"])

    before = signal.getsignal(signal.SIGTERM)
    future = add.apply_async((2, 3), queue="q2")
    call_command("runtaskworker", "--burst", "--queues", "q1, q2", "--concurrency", "1", "-v", "0")
    assert future.result(timeout=1) == 5
    assert signal.getsignal(signal.SIGTERM) is before  # handlers are put back


def test_the_worker_checks_its_settings_before_it_starts():
    with (
        override_settings(DJANGO_TASKS={"UNKNOWN": 1}),
        pytest.raises(SystemCheckError, match=r"django_tasks\.E002"),
    ):
        call_command("runtaskworker", "--burst", "-v", "0", skip_checks=False)


@pytest.mark.django_db(transaction=True)
def test_the_worker_does_not_check_the_urls_and_templates_it_never_serves(monkeypatch):
    from django.db import connection

    monkeypatch.setenv("DJANGO_TASKS_TEST_DB", connection.settings_dict["NAME"])
    future = add.apply_async((2, 3), queue="q3")
    with override_settings(ROOT_URLCONF="tests.no_such_urls"):
        with pytest.raises(ModuleNotFoundError, match="no_such_urls"):
            call_command("check")  # every check: the URL configuration is imported
        call_command(
            "runtaskworker", "--burst", "--queues", "q3", "--concurrency", "1", "-v", "0",
            skip_checks=False,
        )  # fmt: skip
    assert future.result(timeout=1) == 5


def _project_check(app_configs=None, **kwargs):
    return [Error("SMTP_RELAY is not set: the tasks that send mail cannot run", id="project.E001")]


def test_the_worker_runs_the_projects_untagged_checks():
    register(_project_check)
    try:
        with pytest.raises(SystemCheckError, match=r"project\.E001"):
            call_command("runtaskworker", "--burst", "-v", "0", skip_checks=False)
    finally:
        registry.registered_checks.discard(_project_check)
    registered: set[Any] = set(registry.registered_checks)
    assert _project_check not in registered
    assert any("urls" in check.tags for check in registry.registered_checks)  # put back
