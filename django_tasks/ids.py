"""Time-ordered run ids (UUID version 7, RFC 9562).

Random (version 4) ids scatter new rows over the whole primary-key index and the history's
(run, timestamp) index; with a million finished runs those pages no longer fit in memory and
every claim and completion pays for it. Version 7 ids start with the creation time in
milliseconds, so new runs sit together at the right edge of both indexes and history costs the
queue nothing. Python 3.14 has ``uuid.uuid7``; this is the same layout for 3.11-3.13.
"""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from datetime import datetime

__all__ = ["uuid7", "uuid7_floor"]


_RAND_BITS = 74
_lock = threading.Lock()
_last = (0, 0)  # (millis, rand) of this process's latest id


def _forget_last() -> None:
    global _last
    _last = (0, 0)  # a forked child draws its own random bits: it must not repeat the parent's


os.register_at_fork(after_in_child=_forget_last)


def uuid7() -> uuid.UUID:
    """48 bits of Unix time in ms, version 7, 74 random bits (with the RFC 9562 variant).

    The random bits come from :mod:`random` (seeded from the OS at start and again in a forked
    child): ids must be unique, not secret - nothing is granted by knowing one - and a system
    call per id cost more than the rest of a submitted run's bookkeeping. Within a process ids
    only grow (RFC 9562's monotonic counter: an id made in the same millisecond as the one
    before is that one plus one), so "newest first" holds within a millisecond too."""
    global _last
    millis = time.time_ns() // 1_000_000
    rand = random.getrandbits(_RAND_BITS)
    with _lock:
        last_millis, last_rand = _last
        if millis <= last_millis:
            millis, rand = last_millis, last_rand + 1
            if rand >> _RAND_BITS:  # 2**74 ids in one millisecond: borrow the next one
                millis, rand = millis + 1, random.getrandbits(_RAND_BITS)
        _last = (millis, rand)
    value = (millis & 0xFFFF_FFFF_FFFF) << 80
    value |= 0x7 << 76  # version
    value |= ((rand >> 62) & 0xFFF) << 64  # rand_a: 12 bits
    value |= 0b10 << 62  # variant
    value |= rand & 0x3FFF_FFFF_FFFF_FFFF  # rand_b: 62 bits
    return uuid.UUID(int=value)


def uuid7_floor(moment: datetime) -> uuid.UUID:
    """The smallest version-7 id of ``moment``: ``id >= uuid7_floor(t)`` selects the runs created
    at or after ``t`` through the primary key, with no index on ``created``."""
    millis = int(moment.timestamp() * 1000)
    value = (millis & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | 0b10 << 62
    return uuid.UUID(int=value)
