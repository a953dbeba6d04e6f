"""Artifacts (Prefect's): rich results a task attaches to its run - markdown, a table, a link -
optionally under a key whose latest version is kept across runs (a nightly report).

Created with :func:`create_markdown_artifact`, :func:`create_table_artifact` and
:func:`create_link_artifact` (:mod:`.create`), stored in PostgreSQL (:mod:`.models`) and shown
on the admin's run page, the dashboard and the API - always through :mod:`.render`, which
treats every artifact as untrusted: a run's output must never be able to attack the staff
member who views it.
"""

from __future__ import annotations

from .create import create_link_artifact, create_markdown_artifact, create_table_artifact

__all__ = ["create_link_artifact", "create_markdown_artifact", "create_table_artifact"]
