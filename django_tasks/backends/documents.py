"""The JSON the backend stores beside a run: what PostgreSQL's ``jsonb`` accepts, or a clear
error before anything is written.

Python's JSON allows NaN and infinities and any string; ``jsonb`` refuses both NaN/infinity
and the NUL character. Django calls such values JSON (``normalize_json`` keeps them), so the
backend checks: arguments at ``enqueue()`` (a ``ValueError`` at the call, nothing written)
and a return value in the worker (the attempt fails with that error, a ``TaskError``).
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["jsonb_text"]


def jsonb_text(value: Any, what: str) -> str:
    """``value`` as JSON text PostgreSQL's ``jsonb`` stores, else ``ValueError`` naming
    ``what`` and the reason."""
    try:
        text = json.dumps(value, allow_nan=False)
    except ValueError:
        raise ValueError(
            f"The {what} cannot be stored: NaN and infinities are not JSON that PostgreSQL accepts."
        ) from None
    if "\\u0000" in text:
        raise ValueError(f"The {what} cannot be stored: PostgreSQL's jsonb refuses NUL (\\x00).")
    return text
