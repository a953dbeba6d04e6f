"""Creating artifacts from task code (Prefect's ``create_*_artifact`` functions).

Each call checks its input first - a mistake raises here and writes nothing - then writes one
row at once on a connection of its own, outside the caller's transaction (an artifact of a run
that fails afterwards is kept, as its logs are). Inside a run the artifact is attached to the
run; outside one it stands alone. Returns the artifact's id.
"""

from __future__ import annotations

import json
import math
import re
import threading
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from psycopg.types.json import Json

from ..context import _current
from ..ids import uuid7
from ..storable import shown, storable_text

__all__ = ["create_link_artifact", "create_markdown_artifact", "create_table_artifact"]

KEY_PATTERN = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
#: Characters of markdown (and of a table's JSON) kept: artifacts are summaries, not files.
MAX_LENGTH = 1_000_000
LINK_SCHEMES = ("http://", "https://", "mailto:")

INSERT = """
INSERT INTO django_tasks_artifact (id, key, type, data, description, run_id, created)
VALUES (%(id)s, %(key)s, %(type)s, %(data)s, %(description)s, %(run_id)s, clock_timestamp())
"""

_lock = threading.Lock()
_conn: Any = None


def _check_key(key: str | None) -> str:
    if key is None:
        return ""
    if not isinstance(key, str) or len(key) > 255 or not KEY_PATTERN.match(key):
        raise ValueError(
            "An artifact key is lowercase letters, digits and dashes (at most 255), got "
            f"{shown(key)}."
        )
    return key


def _check_text(name: str, value: object, limit: int = MAX_LENGTH) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}.")
    if len(value) > limit:
        raise ValueError(f"{name} is {len(value):,} characters; at most {limit:,} are kept.")
    return storable_text(value)


def _cell(value: object) -> Any:
    """A table cell as JSON keeps it; NaN and infinities (which JSON cannot hold) refused."""
    if value is None or isinstance(value, bool | str | int):
        return storable_text(value) if isinstance(value, str) else value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"A table cell must be a finite number, got {shown(value)}.")
        return value
    return storable_text(str(value))  # dates, decimals...: shown as text


def _check_table(table: object) -> dict[str, Any]:
    """``{"columns": [...], "rows": [[...], ...]}``: dict rows become lists in the order of
    their keys as first seen (JSONB would not keep the order of a dict's keys); list rows stay
    as they are (a table of lists only has no columns)."""
    if isinstance(table, Mapping):  # Prefect's {"column": [values...]} form
        names = [str(c) for c in table]
        values = [list(v) for v in table.values()]
        if len({len(v) for v in values}) > 1:
            raise ValueError("A table given as columns needs columns of one length.")
        by_row = [dict(zip(names, row, strict=True)) for row in zip(*values, strict=True)]
        return _check_table(by_row)
    if isinstance(table, str | bytes) or not isinstance(table, Sequence):
        raise TypeError("A table is a list of rows (dicts or lists), or a dict of columns.")
    columns: list[str] = []
    for row in table:
        if isinstance(row, Mapping):
            columns += [k for k in map(str, row) if k not in columns]
        elif not isinstance(row, Sequence) or isinstance(row, str | bytes):
            raise TypeError(f"Each row of a table is a dict or a list, got {shown(row)}.")
    rows = [
        [_cell({str(k): v for k, v in row.items()}.get(c)) for c in columns]
        if isinstance(row, Mapping)
        else [_cell(v) for v in row]
        for row in table
    ]
    data = {"columns": [storable_text(c) for c in columns], "rows": rows}
    if len(json.dumps(data)) > MAX_LENGTH:
        raise ValueError(f"The table is larger than {MAX_LENGTH:,} characters of JSON.")
    return data


def _check_link(link: object) -> str:
    url = _check_text("link", link, 2000).strip()
    if not url.lower().startswith(LINK_SCHEMES):
        raise ValueError(f"A link artifact's URL must be http(s) or mailto, got {shown(url)}.")
    return url


def _write(kind: str, data: Any, key: str, description: str | None) -> uuid.UUID:
    from ..connect import open_worker_connection

    global _conn
    text = "" if description is None else _check_text("description", description, 10_000)
    context = _current.get()
    artifact_id = uuid7()
    params = {
        "id": artifact_id,
        "key": key,
        "type": kind,
        "data": Json(data),
        "description": text,
        "run_id": context.id if context is not None else None,
    }
    with _lock:
        for attempt in range(2):
            if _conn is None or _conn.closed:
                _conn = open_worker_connection(name="artifacts")
            try:
                _conn.execute(INSERT, params)
                break
            except Exception:
                if attempt:
                    raise
                _conn = None  # a connection lost since the last artifact: once more
    return artifact_id


def create_markdown_artifact(
    markdown: str, key: str | None = None, description: str | None = None
) -> uuid.UUID:
    """Attach markdown to the current run (shown rendered, raw HTML escaped, sanitized)."""
    return _write("markdown", _check_text("markdown", markdown), _check_key(key), description)


def create_table_artifact(
    table: Sequence[Mapping[str, Any]] | Sequence[Sequence[Any]] | Mapping[str, Sequence[Any]],
    key: str | None = None,
    description: str | None = None,
) -> uuid.UUID:
    """Attach a table: a list of dicts (columns by key), a list of lists, or a dict of
    columns."""
    return _write("table", _check_table(table), _check_key(key), description)


def create_link_artifact(
    link: str, link_text: str | None = None, key: str | None = None, description: str | None = None
) -> uuid.UUID:
    """Attach a link (http, https or mailto only)."""
    text = "" if link_text is None else _check_text("link_text", link_text, 2000)
    data = {"url": _check_link(link), "text": text}
    return _write("link", data, _check_key(key), description)


def close() -> None:
    """Close the artifacts' connection (tests, before the test database goes)."""
    global _conn
    with _lock:
        if _conn is not None:
            _conn.close()
        _conn = None
