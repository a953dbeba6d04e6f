"""The ``python`` blocks of the README and the docs run, in order, as written.

A block whose first line names a module (``# myapp/tasks.py``) is executed as that module, so
that the next block's ``from myapp.tasks import ...`` works as in a project; the others share
one namespace. Tests that a block defines (a ``TestCase`` or ``test_*`` functions) are run.
"""

from __future__ import annotations

import json
import re
import sys
import types
import unittest
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from django_tasks import flush
from django_tasks.conf import DEFAULTS
from django_tasks.registry import registry

ROOT = Path(__file__).resolve().parent.parent
MODULE_LINE = re.compile(r"# (\w+)/(\w+)\.py\b")


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.DOTALL)


@pytest.fixture
def project_modules() -> Iterator[dict[str, types.ModuleType]]:
    """Modules made from blocks, registered in sys.modules for the test's length."""
    made: dict[str, types.ModuleType] = {}
    tasks = dict(registry._by_key)
    yield made
    for name in made:
        sys.modules.pop(name, None)
    # The docs' tasks leave with their modules: a declared schedule of theirs must not be
    # synced (and tick) in a later test's in-process worker.
    registry._by_key.clear()
    registry._by_key.update(tasks)


def run_blocks(path: Path, made: dict[str, types.ModuleType]) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": f"docs_{path.stem.lower()}"}
    for number, block in enumerate(python_blocks(path), 1):
        target = namespace
        first = MODULE_LINE.match(block)
        if first:
            package, module = first.groups()
            target = _module(f"{package}.{module}", made, package=package).__dict__
        try:
            exec(compile(block, f"{path.name} block {number}", "exec"), target)
        except Exception as exc:  # pragma: no cover - the failure message is the point
            pytest.fail(f"{path.name} python block {number} failed: {exc!r}\n{block}")
    return namespace


def _module(name: str, made: dict[str, types.ModuleType], package: str) -> types.ModuleType:
    if package not in sys.modules:
        parent = types.ModuleType(package)
        parent.__path__ = []
        sys.modules[package] = made[package] = parent
    if name not in sys.modules:
        sys.modules[name] = made[name] = types.ModuleType(name)
    return sys.modules[name]


def run_defined_tests(modules: list[types.ModuleType | dict[str, Any]]) -> None:
    """Run the TestCases and test functions the blocks defined; each must pass."""
    ran = 0
    for module in modules:
        names = module if isinstance(module, dict) else vars(module)
        for name, value in list(names.items()):
            if isinstance(value, type) and issubclass(value, unittest.TestCase):
                result = unittest.TextTestRunner(verbosity=0).run(
                    unittest.defaultTestLoader.loadTestsFromTestCase(value)
                )
                assert result.wasSuccessful(), result.failures + result.errors
                ran += result.testsRun
            elif name.startswith("test_") and callable(value):
                value()
                ran += 1
    assert ran, "the blocks define no test"


@pytest.mark.django_db(transaction=True)
def test_concepts_examples_run(project_modules):
    run_blocks(ROOT / "docs" / "concepts.md", project_modules)
    assert len(python_blocks(ROOT / "docs" / "concepts.md")) >= 8
    assert flush()


@pytest.mark.django_db
def test_readme_examples_run_and_its_test_passes(project_modules):
    namespace = run_blocks(ROOT / "README.md", project_modules)
    assert "django_tasks" in namespace["INSTALLED_APPS"]
    assert namespace["DATABASES"]["default"]["ENGINE"] == "django.db.backends.postgresql"
    assert {"myapp.tasks", "myapp.views", "myapp.tests"} <= set(project_modules)
    run_defined_tests([project_modules["myapp.tests"]])


@pytest.mark.django_db(transaction=True)
def test_periodic_and_unique_examples_run(project_modules):
    run_blocks(ROOT / "docs" / "periodic-and-unique.md", project_modules)
    assert len(python_blocks(ROOT / "docs" / "periodic-and-unique.md")) >= 4


@pytest.mark.django_db(transaction=True)
def test_limits_examples_run(project_modules):
    from django_tasks.models import Limit

    run_blocks(ROOT / "docs" / "limits.md", project_modules)
    assert set(Limit.objects.values_list("scope", "name")) == {
        ("tag", "email"),
        ("queue", "imports"),
    }


@pytest.mark.django_db
def test_quickstart_examples_run_and_its_settings_are_the_defaults(project_modules):
    namespace = run_blocks(ROOT / "docs" / "quickstart.md", project_modules)
    # The settings block lists every setting with its default value.
    assert namespace["DJANGO_TASKS"] == DEFAULTS
    assert namespace["urlpatterns"][-1].pattern.describe().startswith("'tasks/api/'")
    run_defined_tests([project_modules["myapp.test_reports"]])


@pytest.mark.django_db(transaction=True)
def test_async_examples_run(project_modules):
    import asyncio

    from django.test import RequestFactory

    from django_tasks.models import TaskRun

    namespace = run_blocks(ROOT / "docs" / "async.md", project_modules)
    assert len(python_blocks(ROOT / "docs" / "async.md")) >= 4
    request = RequestFactory().get("/")
    response = asyncio.run(namespace["order_paid"](request, 7))
    assert response.status_code == 202
    run_id = json.loads(response.content)["run"]
    status = asyncio.run(namespace["order_status"](request, run_id))
    assert json.loads(status.content) == {"state": "Scheduled"}
    asyncio.run(namespace["order_pay"](request, 8))
    with pytest.raises(RuntimeError, match="payment refused"):
        namespace["pay"](9, fail=True)
    assert TaskRun.objects.filter(origin="delay").count() == 2  # order 9's rolled back
    from asgiref.sync import sync_to_async
    from django.db import connections

    asyncio.run(sync_to_async(connections.close_all)())


# Drift: what the docs count and call planned, against what the code has.

NUMBERS = {
    word: n
    for n, word in enumerate(
        [
            "zero",
            "one",
            "two",
            "three",
            "four",
            "five",
            "six",
            "seven",
            "eight",
            "nine",
            "ten",
            "eleven",
            "twelve",
            "thirteen",
        ]
    )
}
#: Features that exist: a line calling one of them planned, or "not yet", has drifted.
SHIPPED = ("async", "adelay", "periodic", "schedule", "limit", "artifact", "progress", "unique")


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def flowing(path: Path) -> str:
    """The file's text with its line breaks folded (a sentence may wrap anywhere)."""
    return re.sub(r"\s+", " ", path.read_text())


@pytest.mark.django_db
def test_the_docs_count_the_tables_functions_and_triggers_that_migrate_creates():
    from django.apps import apps
    from django.db import connection

    tables = {m._meta.db_table for m in apps.get_app_config("django_tasks").get_models()}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal "
            "AND tgrelid::regclass::text LIKE 'django_tasks%%'"
        )
        triggers = cursor.fetchone()[0]
        cursor.execute("SELECT proname FROM pg_proc WHERE proname LIKE 'django_tasks%%'")
        functions = {row[0] for row in cursor.fetchall()}
    said = 0
    for path in doc_files():
        for match in re.finditer(r"creates (\w+) tables - (.*?)PL/pgSQL(.*?)\.", flowing(path)):
            said += 1
            count, listed, rest = match.groups()
            assert NUMBERS[count] == len(tables), f"{path.name}: {count} tables"
            names = {
                "django_tasks_" + name
                for name in re.findall(r"`(?:django_tasks|\.\.\.)_(\w+)`", listed)
            }
            assert names == tables, f"{path.name} lists {sorted(names ^ tables)} wrongly"
            assert set(re.findall(r"`(django_tasks_\w+)`", rest)) <= functions, path.name
            [trigger_count] = re.findall(r"(\w+) triggers", rest)
            assert NUMBERS[trigger_count] == triggers, f"{path.name}: {trigger_count} triggers"
    assert said >= 2  # the README and the quickstart


def test_no_doc_calls_a_shipped_feature_planned():
    drifted = []
    for path in doc_files():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            future = re.search(r"\bplanned\b|\| not yet \||\bnot implemented yet\b", line)
            if future and any(word in line.lower() for word in SHIPPED):
                drifted.append(f"{path.name}:{number}: {line.strip()[:120]}")
    assert drifted == []


@pytest.mark.skipif(sys.version_info < (3, 12), reason="the django.tasks backend: Django 6")
def test_the_backend_docs_state_its_flags_as_they_are():
    import django

    if django.VERSION < (6, 0):
        pytest.skip("Django 6 only")
    from django_tasks.backends import PostgresBackend

    text = flowing(ROOT / "docs" / "django-tasks-backend.md")
    for flag in (
        "supports_defer",
        "supports_priority",
        "supports_get_result",
        "supports_async_task",
    ):
        value = getattr(PostgresBackend, flag)
        assert f"{flag} = {not value}" not in text
        assert f"`{flag}` is `{not value}`" not in text
