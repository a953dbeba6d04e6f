import pytest
from django.conf import settings
from django.core.checks import run_checks
from django.test import override_settings

from django_tasks.checks import check_database, check_included_urls, check_settings
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
        ({"SNAPSHOT_WARNING": float("nan")}, ["django_tasks.E003"]),
        ({"POLL_INTERVAL": float("inf")}, ["django_tasks.E003"]),
        ({"SNAPSHOT_WARNING": 60}, []),
        ({"SCHEDULES": {}, "METRICS_TOKEN": "t", "API_PERMISSION_CLASSES": []}, []),
    ],
)
def test_settings_errors(value, expected):
    with override_settings(DJANGO_TASKS=value):
        assert ids(check_settings()) == expected


def test_database_alias_must_exist_and_be_postgresql(settings):
    with override_settings(DJANGO_TASKS={"DATABASE_ALIAS": "missing"}):
        assert ids(check_database()) == ["django_tasks.E004"]
    with override_settings(DJANGO_TASKS={"LISTEN_DATABASE_ALIAS": "missing"}):
        [error] = check_database()
        assert (error.id, error.msg) == (
            "django_tasks.E004",
            "LISTEN_DATABASE_ALIAS 'missing' is not in DATABASES.",
        )
    with override_settings(DJANGO_TASKS={"LISTEN_DATABASE_ALIAS": "default"}):
        assert check_database() == []


def test_non_postgresql_database_is_refused(monkeypatch):
    from django.db import connections

    monkeypatch.setattr(connections["default"], "vendor", "sqlite")
    assert ids(check_database()) == ["django_tasks.E005"]


def test_checks_are_registered():
    with override_settings(DJANGO_TASKS={"UNKNOWN": 1}):
        assert "django_tasks.E002" in ids(run_checks())


def test_included_urls_missing_what_they_need_are_warned_about(monkeypatch):
    assert check_included_urls() == []  # the test project has all it needs
    without_drf = [app for app in settings.INSTALLED_APPS if app != "rest_framework"]
    with override_settings(INSTALLED_APPS=without_drf):
        assert ids(check_included_urls()) == ["django_tasks.W002"]
    monkeypatch.setattr("django_tasks.checks.metrics_available", lambda: False)
    # Metrics are optional: the dashboard's URLs include them, which alone warns of nothing.
    assert check_included_urls() == []
    with override_settings(DJANGO_TASKS={"METRICS_TOKEN": "scraper-secret"}):
        assert ids(check_included_urls()) == ["django_tasks.W003"]  # configured: said
        with override_settings(ROOT_URLCONF="tests.urls_no_api"):
            assert check_included_urls() == []  # nothing included, nothing needed


def test_metrics_without_their_extra_answer_503_not_500(monkeypatch, admin_client, caplog):
    monkeypatch.setattr("django_tasks.metrics.metrics_available", lambda: False)
    monkeypatch.setattr("django_tasks.metrics._warned", set())
    for _ in range(2):
        response = admin_client.get("/tasks/metrics/")
        assert response.status_code == 503
        assert b"pip install 'django-taskruns[metrics]'" in response.content
    # Used without the extra: the log says so, once per process.
    warnings = [r for r in caplog.records if "prometheus-client is not installed" in r.message]
    assert len(warnings) == 1
    assert warnings[0].levelname == "WARNING"
