"""The ``python`` blocks of docs/concepts.md run, in order, as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from django_tasks import flush

DOC = Path(__file__).resolve().parent.parent / "docs" / "concepts.md"


@pytest.mark.django_db(transaction=True)
def test_concepts_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    assert len(blocks) >= 8
    namespace: dict[str, object] = {"__name__": "docs_concepts"}
    for number, block in enumerate(blocks, 1):
        try:
            exec(compile(block, f"{DOC.name} block {number}", "exec"), namespace)
        except Exception as exc:  # pragma: no cover - the failure message is the point
            pytest.fail(f"docs/concepts.md python block {number} failed: {exc!r}\n{block}")
    assert flush()
