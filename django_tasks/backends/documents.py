"""The JSON the backend stores beside a run: what PostgreSQL's ``jsonb`` accepts, or a clear
error before anything is written.

Python's JSON allows NaN and infinities and any string; ``jsonb`` refuses both NaN/infinity
and the NUL character. Django calls such values JSON (``normalize_json`` keeps them), so the
backend checks: arguments at ``enqueue()`` (a ``ValueError`` at the call, nothing written)
and a return value in the worker (the attempt fails with that error, a ``TaskError``).
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["jsonb_text"]

#: A NUL escaped in JSON text (``\u0000``), not a backslash that is itself escaped.
_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def jsonb_text(value: Any, what: str) -> str:
    """``value`` as JSON text PostgreSQL's ``jsonb`` stores, else ``ValueError`` naming
    ``what`` and the reason: NaN or an infinity, NUL, a lone surrogate (not UTF-8), an
    integer too long for Python to write out, a value nested too deeply or holding itself."""
    try:
        text = json.dumps(value, allow_nan=False, ensure_ascii=False)
    except RecursionError:
        raise ValueError(f"The {what} cannot be stored: they are nested too deeply.") from None
    except ValueError as exc:
        raise ValueError(f"The {what} cannot be stored: {_why(str(exc))}") from None
    if _NUL.search(text):
        raise ValueError(f"The {what} cannot be stored: PostgreSQL's jsonb refuses NUL (\\x00).")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"The {what} cannot be stored: a lone surrogate ({exc.object[exc.start]!a}) is not "
            f"text PostgreSQL accepts."
        ) from None
    return text


def _why(error: str) -> str:
    if "Out of range float" in error:
        return "NaN and infinities are not JSON that PostgreSQL accepts."
    if "integer string conversion" in error:
        return "an integer has more digits than Python writes out (sys.get_int_max_str_digits())."
    if "Circular reference" in error:
        return "a list or dict holds itself."
    return error[:200]
