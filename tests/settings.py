"""Test settings: the demo's settings plus a test app with tasks of every shape.

Worker subprocesses started by the tests use these settings too; ``DJANGO_TASKS_TEST_DB`` tells
them the name of the test database that pytest-django created.
"""

import json
import os

from demo_project.settings import *  # noqa: F403
from demo_project.settings import DATABASES, INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "tests.taskapp"]
# Off, as pytest-django sets it in the test process: worker subprocesses must not reload on
# code changes (runtaskworker's default with DEBUG) unless a test asks for --reload.
DEBUG = False
SECRET_KEY = "tests-secret-key"
SECRET_KEY_FALLBACKS = ["tests-old-secret-key"]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

if os.environ.get("DJANGO_TASKS_TEST_DB"):
    DATABASES["default"]["NAME"] = os.environ["DJANGO_TASKS_TEST_DB"]
    DATABASES["default"]["TEST"] = {"NAME": os.environ["DJANGO_TASKS_TEST_DB"]}

# Worker subprocesses behind PgBouncer can LISTEN on PostgreSQL itself (test_pgbouncer.py):
# the connection settings of the direct alias, as JSON.
if os.environ.get("DJANGO_TASKS_TEST_LISTEN_DB"):
    DATABASES["listen"] = {
        **DATABASES["default"],
        **json.loads(os.environ["DJANGO_TASKS_TEST_LISTEN_DB"]),
    }

LOGGING = {"version": 1, "disable_existing_loggers": False}

# Worker subprocesses of a test can get faster heartbeats etc. through this variable.
DJANGO_TASKS = json.loads(os.environ.get("DJANGO_TASKS_TEST_SETTINGS", "{}"))

# Django 6: django.tasks runs on our backend (tests/taskapp/standard.py, test_django_backend.py).
import django  # noqa: E402

if django.VERSION >= (6, 0):
    TASKS = {
        "default": {
            "BACKEND": "django_tasks.backends.PostgresBackend",
            "QUEUES": ["default", "other"],
        }
    }
