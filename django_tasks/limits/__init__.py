"""Concurrency limits (tags, queues) and rate limits (tasks' ``rate_limit=``, tags, queues),
kept by the database across every worker (docs/limits.md).

This module must not import models: ``@task`` imports it while apps load.
"""

from __future__ import annotations

from .rates import parse_rate

__all__ = ["parse_rate"]
