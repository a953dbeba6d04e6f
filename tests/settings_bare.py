"""A project that uses DRF's own schema generation and does not install DRF's app: the
django_tasks API must still work, and keep out of the project's own schema. (The test
settings themselves set no REST_FRAMEWORK at all.)"""

from tests.settings import *  # noqa: F403
from tests.settings import INSTALLED_APPS

INSTALLED_APPS = [app for app in INSTALLED_APPS if app != "rest_framework"]
REST_FRAMEWORK = {"DEFAULT_SCHEMA_CLASS": "rest_framework.schemas.openapi.AutoSchema"}
