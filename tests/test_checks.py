import pytest
from django.core.checks import run_checks
from django.test import override_settings

from django_tasks.checks import check_api_schema_class, check_database, check_settings
from django_tasks.conf import task_settings


def ids(messages):
    return [m.id for m in messages]


def test_defaults_are_clean():
    assert check_settings() == []
    assert check_database() == []
    assert task_settings().DEFAULT_QUEUE == "default"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("nope", ["django_tasks.E001"]),
        ({"UNKNOWN": 1}, ["django_tasks.E002"]),
        ({"POLL_INTERVAL": "1"}, ["django_tasks.E003"]),
        ({"BATCH_SIZE": 0}, ["django_tasks.E003"]),
        ({"BATCH_SIZE": True}, ["django_tasks.E003"]),
        ({"BATCH_SIZE": None}, []),
        ({"BATCH_SIZE": 2.5}, ["django_tasks.E003"]),
        ({"POLL_INTERVAL": 2, "BATCH_SIZE": 5}, []),
        ({"PREPARE_STATEMENTS": "yes"}, ["django_tasks.E003"]),
        ({"PREPARE_STATEMENTS": False}, []),
    ],
)
def test_settings_errors(value, expected):
    with override_settings(DJANGO_TASKS=value):
        assert ids(check_settings()) == expected


def test_database_alias_must_exist_and_be_postgresql(settings):
    with override_settings(DJANGO_TASKS={"DATABASE_ALIAS": "missing"}):
        assert ids(check_database()) == ["django_tasks.E004"]


def test_non_postgresql_database_is_refused(monkeypatch):
    from django.db import connections

    monkeypatch.setattr(connections["default"], "vendor", "sqlite")
    assert ids(check_database()) == ["django_tasks.E005"]


def test_checks_are_registered():
    with override_settings(DJANGO_TASKS={"UNKNOWN": 1}):
        assert "django_tasks.E002" in ids(run_checks())


def test_api_schema_class_must_be_drf_spectaculars_when_the_api_is_included():
    assert check_api_schema_class() == []  # the test project sets it
    drf_own = {"DEFAULT_SCHEMA_CLASS": "rest_framework.schemas.openapi.AutoSchema"}
    with override_settings(REST_FRAMEWORK=drf_own):
        assert ids(check_api_schema_class()) == ["django_tasks.W001"]
        with override_settings(ROOT_URLCONF="tests.urls_no_api"):
            assert check_api_schema_class() == []  # no API, nothing to warn about
    assert "django_tasks.W001" not in ids(run_checks())
