"""The squashed migration (``0001_squashed_0027_final_schema``) against the 27 it replaces.

A new install runs the squashed migration; an existing one goes on through the old files.
Both must end with the same schema, object for object: every table and column (in order,
with its type, default and nullability), index, constraint, function, trigger, sequence,
storage parameter and comment. Each test migrates scratch databases of its own with
``manage.py migrate`` subprocesses - the old path with a settings module whose
``MIGRATION_MODULES`` points django_tasks at copies of the old files, without the squashed
one - and drops them at the end.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.db import connection

from .conftest import ROOT

pytestmark = pytest.mark.slow

MIGRATIONS = ROOT / "django_tasks" / "migrations"
SQUASHED = "0001_squashed_0027_final_schema"
OLD_PACKAGE = "old_django_tasks_migrations"

#: Schemas of PostgreSQL itself, left out of the comparison.
USER_SCHEMAS = (
    "n.nspname NOT IN ('pg_catalog', 'information_schema')"
    " AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'"
)

#: What a schema is made of, one query per kind of object; each row names its object, so
#: that rows are compared whatever their order of creation (their OIDs differ).
CATALOG = {
    "schemas": f"SELECT n.nspname, n.nspacl::text FROM pg_namespace AS n WHERE {USER_SCHEMAS}",
    "relations": f"""
        SELECT n.nspname, c.relname, c.relkind, c.relpersistence, c.reloptions::text,
               c.relacl::text, c.relrowsecurity, c.relreplident,
               CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid) END
        FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE {USER_SCHEMAS}""",
    # Columns by position among the live ones: a column the old path added and dropped
    # (0002's retry_delay) leaves a hole in attnum, not a difference.
    "columns": f"""
        SELECT n.nspname, c.relname,
               row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum), a.attname,
               format_type(a.atttypid, a.atttypmod), a.attnotnull,
               pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated,
               (SELECT collname FROM pg_collation WHERE oid = a.attcollation),
               a.attstorage, a.attacl::text
        FROM pg_attribute AS a
        JOIN pg_class AS c ON c.oid = a.attrelid
        JOIN pg_namespace AS n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE {USER_SCHEMAS} AND a.attnum > 0 AND NOT a.attisdropped""",
    "indexes": f"""
        SELECT n.nspname, c.relname, pg_get_indexdef(i.indexrelid), i.indisunique,
               i.indisprimary, i.indisvalid, i.indisready, i.indislive, i.indisclustered
        FROM pg_index AS i
        JOIN pg_class AS c ON c.oid = i.indexrelid
        JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE {USER_SCHEMAS}""",
    "constraints": f"""
        SELECT n.nspname, co.conrelid::regclass::text, co.conname, co.contype,
               pg_get_constraintdef(co.oid), co.convalidated, co.condeferrable,
               co.condeferred, co.conindid::regclass::text
        FROM pg_constraint AS co JOIN pg_namespace AS n ON n.oid = co.connamespace
        WHERE {USER_SCHEMAS}""",
    "functions": f"""
        SELECT n.nspname, p.oid::regprocedure::text, p.prokind,
               CASE WHEN p.prokind <> 'a' THEN pg_get_functiondef(p.oid) END, p.proacl::text
        FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
        WHERE {USER_SCHEMAS}""",
    "triggers": f"""
        SELECT n.nspname, c.relname, t.tgname, pg_get_triggerdef(t.oid), t.tgenabled
        FROM pg_trigger AS t
        JOIN pg_class AS c ON c.oid = t.tgrelid
        JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE {USER_SCHEMAS} AND NOT t.tgisinternal""",
    "sequences": f"""
        SELECT n.nspname, c.relname, format_type(s.seqtypid, NULL), s.seqstart,
               s.seqincrement, s.seqmax, s.seqmin, s.seqcache, s.seqcycle,
               pg_describe_object(dep.refclassid, dep.refobjid, dep.refobjsubid), dep.deptype
        FROM pg_sequence AS s
        JOIN pg_class AS c ON c.oid = s.seqrelid
        JOIN pg_namespace AS n ON n.oid = c.relnamespace
        LEFT JOIN pg_depend AS dep
          ON dep.classid = 'pg_class'::regclass AND dep.objid = s.seqrelid
         AND dep.refclassid = 'pg_class'::regclass
        WHERE {USER_SCHEMAS}""",
    "types": f"""
        SELECT n.nspname, t.typname, t.typtype, format_type(t.typbasetype, t.typtypmod),
               t.typnotnull, t.typdefault
        FROM pg_type AS t JOIN pg_namespace AS n ON n.oid = t.typnamespace
        WHERE {USER_SCHEMAS}""",
    "rules": """
        SELECT schemaname, tablename, rulename, definition FROM pg_rules
        WHERE schemaname NOT IN ('pg_catalog', 'information_schema')""",
    "policies": """
        SELECT schemaname, tablename, policyname, permissive, roles::text, cmd, qual,
               with_check
        FROM pg_policies""",
    "comments": """
        SELECT pg_describe_object(classoid, objoid, objsubid), description
        FROM pg_description WHERE objoid >= 16384""",
    "extensions": "SELECT extname, extversion FROM pg_extension",
}


def server_params() -> dict[str, Any]:
    """psycopg's connection parameters of the server the test database is on."""
    params = connection.get_connection_params()
    for key in ("cursor_factory", "context"):
        params.pop(key, None)
    return params


def snapshot(database: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every object of ``database``'s schema, as :data:`CATALOG` reads them."""
    with psycopg.connect(**{**server_params(), "dbname": database}, autocommit=True) as conn:
        return {
            kind: sorted(conn.execute(query).fetchall(), key=repr)
            for kind, query in CATALOG.items()
        }


def differences(got: dict[str, list[Any]], wanted: dict[str, list[Any]]) -> list[str]:
    """The rows of one snapshot that the other lacks, kind by kind (empty when equal)."""
    found = []
    for kind in CATALOG:
        for row in got[kind]:
            if row not in wanted[kind]:
                found.append(f"{kind} only in the first: {row}")
        for row in wanted[kind]:
            if row not in got[kind]:
                found.append(f"{kind} only in the second: {row}")
    return found


@pytest.fixture(scope="module")
def old_path(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of ``manage.py`` with migrations 0001..0028 alone - the files as an
    install that predates the squashed migration has them - in a package of their own."""
    root = tmp_path_factory.mktemp("old_path")
    package = root / OLD_PACKAGE
    package.mkdir()
    (package / "__init__.py").write_text("")
    copied = []
    for path in sorted(MIGRATIONS.glob("0*.py")):
        if path.stem != SQUASHED:
            shutil.copy(path, package / path.name)
            copied.append(path.stem)
    assert len(copied) == 28
    assert copied[-1] == "0028_failed_runs_index"
    (root / "old_path_settings.py").write_text(
        "from tests.settings import *  # noqa: F403\n\n"
        f"MIGRATION_MODULES = {{'django_tasks': {OLD_PACKAGE!r}}}\n"
    )
    return environment(settings="old_path_settings", path=root)


def environment(settings: str = "tests.settings", path: Path | None = None) -> dict[str, str]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": settings, "PYTHONUNBUFFERED": "1"}
    if path is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(path), str(ROOT)])
    return env


def manage(database: str, *args: str, env: dict[str, str] | None = None) -> str:
    """Run ``manage.py *args`` on ``database``; its output (it must succeed)."""
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**(env or environment()), "DJANGO_TASKS_TEST_DB": database},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, f"manage.py {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def recorded(database: str) -> set[str]:
    """The migrations of django_tasks that ``database``'s django_migrations holds."""
    with psycopg.connect(**{**server_params(), "dbname": database}, autocommit=True) as conn:
        rows = conn.execute("SELECT name FROM django_migrations WHERE app = 'django_tasks'")
        return {name for (name,) in rows}


@pytest.fixture(scope="module")
def scratch_database(django_db_setup: Any) -> Iterator[Callable[[str], str]]:
    """``scratch_database(purpose)``: a new empty database ``sq_<purpose>_<pid>`` on the test
    server; every one made is dropped at the end of the module."""
    made: list[str] = []
    with psycopg.connect(**server_params(), autocommit=True) as conn:

        def make(purpose: str) -> str:
            name = f"sq_{purpose}_{os.getpid()}"
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
            made.append(name)
            return name

        try:
            yield make
        finally:
            for name in made:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def squashed_database(scratch_database: Callable[[str], str]) -> str:
    """A database a fresh ``migrate`` gave, through the squashed migration."""
    database = scratch_database("squashed")
    output = manage(database, "migrate")
    assert f"Applying django_tasks.{SQUASHED}... OK" in output
    assert "Applying django_tasks.0002" not in output
    return database


@pytest.fixture(scope="module")
def old_database(scratch_database: Callable[[str], str], old_path: dict[str, str]) -> str:
    """A database a fresh ``migrate`` gave through the 28 old migrations."""
    database = scratch_database("old")
    output = manage(database, "migrate", env=old_path)
    assert "Applying django_tasks.0027_slot_stats... OK" in output
    assert SQUASHED not in output
    return database


def test_a_fresh_migrate_runs_the_squashed_migration_and_records_what_it_replaces(
    squashed_database,
):
    old = {path.stem for path in MIGRATIONS.glob("0*.py")} - {SQUASHED}
    assert recorded(squashed_database) == old | {SQUASHED}


def test_the_squashed_migration_gives_the_schema_of_the_old_ones(squashed_database, old_database):
    squashed, old = snapshot(squashed_database), snapshot(old_database)
    assert differences(squashed, old) == []
    # The comparison saw the objects (a query that read nothing would compare nothing).
    functions = {row[1] for row in squashed["functions"]}
    assert {
        "django_tasks_enqueue(jsonb,bytea)",
        "django_tasks_admit(uuid[],jsonb,jsonb,boolean,boolean,text,double precision)",
        "django_tasks_slot_freed()",
    } <= functions
    assert len([row for row in squashed["triggers"] if row[1].startswith("django_tasks_")]) == 4
    assert any("autovacuum_vacuum_cost_delay=0" in str(row[4]) for row in squashed["relations"])


def pg_dump_major() -> int | None:
    """The major version of the pg_dump on PATH, or None without one."""
    if shutil.which("pg_dump") is None:
        return None
    version = subprocess.run(
        ["pg_dump", "--version"], capture_output=True, text=True, check=True
    ).stdout
    return int(re.search(r"(\d+)", version).group(1))  # type: ignore[union-attr]


def dump(database: str) -> str:
    """``pg_dump --schema-only`` of ``database`` without the lines that differ by nature:
    comments, SET lines, ``\\restrict`` keys (random per dump), runs of blank lines."""
    params = server_params()
    command = ["pg_dump", "--schema-only", "--no-owner", "--dbname", database]
    for option, key in (("--host", "host"), ("--port", "port"), ("--username", "user")):
        if params.get(key):
            command += [option, str(params[key])]
    env = {**os.environ}
    if params.get("password"):
        env["PGPASSWORD"] = str(params["password"])
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, check=True)
    lines = [
        line
        for line in done.stdout.splitlines()
        if not line.startswith(("--", "SET ", "SELECT pg_catalog.set_config", "\\restrict"))
        and not line.startswith("\\unrestrict")
    ]
    return re.sub(r"\n{2,}", "\n\n", "\n".join(lines)).strip()


def test_pg_dump_of_both_schemas_is_the_same(squashed_database, old_database):
    with psycopg.connect(**server_params(), autocommit=True) as conn:
        server = conn.info.server_version // 10000
    if pg_dump_major() != server:
        pytest.skip(f"no pg_dump of the server's version ({server}) on PATH")
    squashed, old = dump(squashed_database), dump(old_database)
    assert "CREATE FUNCTION public.django_tasks_admit(" in squashed
    assert squashed == old


@pytest.mark.parametrize("stop", ["0001_initial", "0015_schedules_unique_runs", "0027_slot_stats"])
def test_an_install_part_way_through_the_old_migrations_reaches_the_same_schema(
    stop, scratch_database, old_path, squashed_database
):
    database = scratch_database(f"from_{stop[:4]}")
    manage(database, "migrate", "django_tasks", stop, env=old_path)
    assert SQUASHED not in recorded(database)
    output = manage(database, "migrate")  # the current code: the squashed migration is there
    assert f"django_tasks.{SQUASHED}" not in output  # some it replaces are applied: not used
    if stop != "0027_slot_stats":
        assert "Applying django_tasks.0027_slot_stats... OK" in output
    assert "Applying django_tasks.0028_failed_runs_index... OK" in output
    # All that it replaces are applied now: the squashed migration counts as applied too.
    assert SQUASHED in recorded(database)
    assert differences(snapshot(database), snapshot(squashed_database)) == []
    assert "No migrations to apply." in manage(database, "migrate")


def test_migrating_the_squashed_schema_to_zero_leaves_nothing_of_django_tasks(
    scratch_database,
):
    database = scratch_database("zero")
    manage(database, "migrate", "django_tasks")
    output = manage(database, "migrate", "django_tasks", "zero")
    assert f"Unapplying django_tasks.{SQUASHED}... OK" in output
    left = snapshot(database)
    named = [
        (kind, row)
        for kind in ("relations", "indexes", "constraints", "functions", "triggers", "types")
        for row in left[kind]
        if any("django_tasks" in str(value) for value in row)
    ]
    assert named == []
    assert recorded(database) == set()  # the migrations it replaces are unrecorded too
    # And back: none of the replaced migrations is applied, so the squashed one runs again.
    assert f"Applying django_tasks.{SQUASHED}... OK" in manage(database, "migrate", "django_tasks")
