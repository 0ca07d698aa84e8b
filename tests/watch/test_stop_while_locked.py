"""SIGTERM while another process holds the database's write lock: a quick, clean stop."""

from __future__ import annotations

import subprocess
import sys
import time

from tests.helpers import distinct_copies
from tests.watch.test_daemon_process import Watch

HOLD = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("begin immediate")
print("held", flush=True)
time.sleep(120)
"""


def test_sigterm_while_another_process_holds_the_write_lock_stops_at_once(watch: Watch) -> None:
    watch.start()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(watch.db)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        distinct_copies(watch.uploads, 8)  # work for the writer, which now waits on the lock
        time.sleep(3)
        started = time.monotonic()
        code, _, err = watch.stop()
        took = time.monotonic() - started
    finally:
        holder.kill()
        holder.wait()
    assert code == 0, err
    assert took < 5, f"took {took:.1f}s"
    assert "Traceback" not in err and "error" not in err.lower()
    warned = [line for line in err.splitlines() if "write lock" in line]
    assert len(warned) == 1, err

    watch.start()  # the next start stores what the stop left
    deadline = time.monotonic() + 60
    while watch.rows("select count(*) from images")[0][0] < 8 and time.monotonic() < deadline:
        time.sleep(0.1)
    code, _, err = watch.stop()
    assert code == 0, err
    assert watch.rows("select count(*) from images where status = 'tagged'") == [(8,)]
