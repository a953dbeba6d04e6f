"""A project set up halfway: no ROOT_URLCONF (a worker-only settings module), migrations not
applied. Each gets a clear message, never a crash or pages of tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.conf import settings
from django.db import connection, transaction
from django.test import override_settings

from django_tasks import topic
from django_tasks.checks import check_included_urls
from django_tasks.migrated import NotMigrated
from django_tasks.topic import open_worker_connection
from tests.taskapp.tasks import add

from .conftest import ROOT

pytestmark = pytest.mark.django_db(transaction=True)


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_checks_pass_without_root_urlconf():
    with override_settings():
        del settings.ROOT_URLCONF
        assert check_included_urls() == []


@pytest.mark.slow
def test_a_worker_only_settings_module_runs_commands(worker_env):
    env = {**worker_env, "DJANGO_SETTINGS_MODULE": "tests.settings_worker_only"}
    checked = manage("check", env=env)
    assert checked.returncode == 0, checked.stderr
    future = add.delay(20, 22)
    worker = manage("runtaskworker", "--burst", "--concurrency", "1", env=env)
    assert worker.returncode == 0, worker.stderr
    assert future.result(timeout=5) == 42


def test_delay_without_the_enqueue_function_says_run_migrate():
    connection.close()  # a new session: nothing prepared that still knows the function
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("DROP FUNCTION django_tasks_enqueue(jsonb, bytea)")
        with pytest.raises(NotMigrated) as info, transaction.atomic():
            add.delay(1, 2)
        message = str(info.value)
        assert "function django_tasks_enqueue(jsonb, bytea) does not exist" in message
        assert message.endswith("run `python manage.py migrate`.")
        assert isinstance(info.value.__cause__, Exception)
        transaction.set_rollback(True)  # the function comes back


@pytest.mark.parametrize("chunk", [1000, 1], ids=["one statement", "pipelined chunks"])
def test_bulk_enqueue_without_the_tables_says_run_migrate(chunk, monkeypatch):
    monkeypatch.setattr(topic, "BULK_CHUNK", chunk)
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE django_tasks_taskrun RENAME TO hidden_taskrun")
        with (
            pytest.raises(NotMigrated, match=r"run `python manage\.py migrate`"),
            transaction.atomic(),
        ):
            add.delay_many([(1, 2), (3, 4)])
        transaction.set_rollback(True)


@pytest.fixture
def empty_database():
    name = f"django_tasks_unmigrated_{os.getpid()}"
    conn = open_worker_connection()
    conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
    conn.execute(f'CREATE DATABASE "{name}"')
    yield name
    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


@pytest.mark.slow
def test_commands_on_an_unmigrated_database_say_run_migrate(worker_env, empty_database):
    env = {**worker_env, "DJANGO_TASKS_TEST_DB": empty_database}
    for command in (("runtaskworker", "--burst"), ("taskruns", "ls")):
        done = manage(*command, env=env)
        assert done.returncode == 1, done.stdout
        # A new database takes the squashed migration and those after it (0028...).
        migrations = (
            len(
                [
                    p
                    for p in (ROOT / "django_tasks" / "migrations").glob("0*.py")
                    if p.stem >= "0028"
                ]
            )
            + 1
        )
        assert (
            f"CommandError: The database 'default' lacks {migrations} migration(s) of django_tasks"
            in done.stderr
        )
        assert "run `python manage.py migrate`" in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1  # one line, no traceback


def test_other_programming_errors_are_not_taken_for_missing_migrations():
    from django.db import ProgrammingError

    from django_tasks.migrated import explain_missing_schema

    with pytest.raises(ProgrammingError) as info, explain_missing_schema("default"):
        raise ProgrammingError("syntax error at or near")
    assert not isinstance(info.value, NotMigrated)
