import subprocess
import sys
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


def test_ids_made_in_the_same_millisecond_still_grow():
    ids = [uuid7() for _ in range(20_000)]  # tens of ids per millisecond
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in ids[:100])


#: Run in a fresh, single-threaded interpreter: fork() in the test process (which has threads)
#: is a deadlock risk Python warns about.
FORK_SCRIPT = """
import os, time, uuid
from django_tasks.ids import uuid7

frozen = time.time_ns()
time.time_ns = lambda: frozen  # every id in one millisecond: the counter decides them all
read, write = os.pipe()
uuid7()  # the parent has a latest id the child would continue from
pid = os.fork()
if pid == 0:
    os.write(write, b"".join(uuid7().bytes for _ in range(50)))
    os._exit(0)
os.close(write)
parents = {uuid7() for _ in range(50)}
os.waitpid(pid, 0)
data = os.read(read, 16 * 50)
childs = {uuid.UUID(bytes=data[i : i + 16]) for i in range(0, len(data), 16)}
print(len(childs), len(parents & childs))
"""


def test_a_forked_child_does_not_repeat_its_parents_ids():
    done = subprocess.run(
        [sys.executable, "-c", FORK_SCRIPT], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split() == ["50", "0"]  # 50 ids from the child, none of the parent's
