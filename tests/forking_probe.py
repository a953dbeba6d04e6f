"""Drives a ForkServer with small child functions, outside pytest's process (which may run
threads): tests/test_forking.py runs it as a script and reads the JSON it prints."""

from __future__ import annotations

import ctypes
import json
import multiprocessing
import os
import signal
import sys
import time

from django_tasks.worker.forking import ForkedChild, ForkServer, ForkServerGone
from django_tasks.worker.journal import ProcessJournal

#: What the child using each journal does.
MODES = {0: "ok", 1: "raise", 2: "sleep"}


def child_main(journal: ProcessJournal, parent: int) -> int:
    index = next(i for i, j in enumerate(SERVER.journals) if j is journal)
    journal.set_error(f"{os.getppid()} {parent}")
    mode = MODES[index]
    if mode == "raise":
        raise RuntimeError("this child fails")
    if mode == "sleep":
        time.sleep(60)
    journal.count_processed()
    raise SystemExit(0)


context = multiprocessing.get_context("spawn")
SERVER = ForkServer([ProcessJournal.shared(context, 1024) for _ in MODES], child_main)


def ended(child: ForkedChild) -> int | None:
    child.join(timeout=10)
    return child.exitcode


def main() -> None:
    if "subreaper" in sys.argv[1:]:
        # As a supervisor that is PID 1 in a container: the orphans of the fork server are
        # adopted by this process (Linux: PR_SET_CHILD_SUBREAPER).
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)
    SERVER.start()
    found: dict[str, object] = {"server": SERVER.pid}
    ok = SERVER.start_child(0)
    found["ok"] = [ended(ok), SERVER.journals[0].processed, SERVER.journals[0].error]
    failing = SERVER.start_child(1)
    found["raise"] = ended(failing)
    sleeping = SERVER.start_child(2)
    found["sleeping_alive"] = sleeping.is_alive()
    sleeping.kill()
    found["killed"] = ended(sleeping)

    orphan = SERVER.start_child(2)
    assert SERVER.pid is not None
    os.kill(SERVER.pid, signal.SIGKILL)
    try:
        SERVER.start_child(0)
    except ForkServerGone as exc:
        found["gone"] = str(exc)
    found["server_alive"] = SERVER.alive
    found["orphan_alive"] = orphan.is_alive()
    orphan.kill()
    found["orphan_killed"] = ended(orphan)
    found["orphan_alive_after"] = orphan.is_alive()
    SERVER.close()
    print(json.dumps(found))


if __name__ == "__main__":
    main()
