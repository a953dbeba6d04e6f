"""Settings of a host that only runs workers: the test settings without any URLs."""

from tests.settings import *  # noqa: F403

del ROOT_URLCONF  # noqa: F821
