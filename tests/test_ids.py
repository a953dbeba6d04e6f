import time
import uuid

from django_tasks.ids import uuid7


def test_uuid7_layout_and_order():
    first = uuid7()
    time.sleep(0.002)
    second = uuid7()
    assert first.version == 7
    assert first.variant == uuid.RFC_4122
    assert first < second  # later ids sort after earlier ones
    millis = first.int >> 80
    assert abs(millis - time.time() * 1000) < 5000
    assert len({uuid7() for _ in range(10_000)}) == 10_000
