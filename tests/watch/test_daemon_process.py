"""`tagger watch` as systemd and Docker run it: a real process, real signals, a real socket."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers import PHOTOS, distinct_copies, sql

FAST = {
    "TAGGER_WATCH__STABILITY_DELAY": "0.2",
    "TAGGER_WATCH__RESCAN_INTERVAL": "0",
    "TAGGER_BATCH__MAX_WAIT": "0.2",
}


class Watch:
    """A `tagger watch` subprocess on `uploads`, reporting to a real NOTIFY_SOCKET."""

    def __init__(self, tmp_path: Path, db: str | None = None) -> None:
        """`db`: a database URL (PostgreSQL); else a SQLite file in tmp_path."""
        self.tmp = tmp_path
        self.uploads = tmp_path / "uploads"
        self.uploads.mkdir(parents=True, exist_ok=True)
        self.db: Path | str = db or tmp_path / "tagger.db"
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(str(tmp_path / "notify.sock"))
        self.socket.settimeout(0.5)
        self.messages: list[str] = []
        self.proc: subprocess.Popen[str] | None = None

    def start(self, **env: str) -> None:
        environ = os.environ | FAST | env | {"NOTIFY_SOCKET": str(self.tmp / "notify.sock")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tagger", "--db", str(self.db), "watch", str(self.uploads)],
            env=environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.expect("READY=1")

    def expect(self, message: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(message in m.split("\n") for m in self.messages):
                return
            try:
                self.messages.append(self.socket.recv(4096).decode())
            except TimeoutError:
                assert self.proc is not None and self.proc.poll() is None, self.proc.communicate()
        raise AssertionError(f"no {message} from tagger watch; got {self.messages}")

    def stop(self) -> tuple[int, str, str]:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=60)
        return self.proc.returncode, out, err

    def rows(self, statement: str) -> list[tuple[object, ...]]:
        if isinstance(self.db, str):
            return sql(self.db, statement)
        with sqlite3.connect(self.db) as db:
            return db.execute(statement).fetchall()

    def status(self) -> tuple[int, dict[str, object]]:
        done = subprocess.run(
            [sys.executable, "-m", "tagger", "--db", str(self.db), "status", "--format", "json"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        return done.returncode, json.loads(done.stdout)


def test_systemd_hears_ready_watchdog_and_stopping(watch: Watch) -> None:
    watch.start(WATCHDOG_USEC="400000")
    watch.expect("WATCHDOG=1")
    assert any(m.startswith("STATUS=") or "\nSTATUS=" in m for m in watch.messages)
    shutil.copy(PHOTOS / "coral_hot_dog.jpg", watch.uploads / "lunch.jpg")
    deadline = time.monotonic() + 30
    while watch.rows("select count(*) from images") != [(1,)] and time.monotonic() < deadline:
        time.sleep(0.1)

    code, status = watch.status()
    assert code == 0
    assert status["running"] and status["responsive"] and status["images_tagged"] == 1
    daemon = status["daemon"]
    assert isinstance(daemon, dict) and daemon["observers"] == {str(watch.uploads): "inotify"}

    code, out, err = watch.stop()
    assert code == 0, err
    watch.expect("STOPPING=1")
    assert "1 new" in out
    code, status = watch.status()
    assert code == 3 and status["running"] is False


def new_count(stdout: str) -> int:
    found = re.search(r"(\d+) new", stdout)
    assert found, stdout
    return int(found.group(1))


def test_sigterm_in_a_200_file_drop_then_restart_tags_each_exactly_once(watch: Watch) -> None:
    watch.start()
    distinct_copies(watch.uploads, 200)
    deadline = time.monotonic() + 60
    while watch.rows("select count(*) from images")[0][0] < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    code, first_out, err = watch.stop()
    assert code == 0, err
    tagged_first = watch.rows("select count(*) from images")[0][0]
    assert 20 <= tagged_first < 200, "stopped too late to prove anything"

    watch.start()
    deadline = time.monotonic() + 120
    while watch.rows("select count(*) from images")[0][0] < 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    code, second_out, err = watch.stop()
    assert code == 0, err

    assert watch.rows(
        "select count(*), count(distinct path) from files where image_id is not null"
    ) == [(200, 200)]
    assert watch.rows(
        "select count(*), count(distinct sha256) from images where status = 'tagged'"
    ) == [(200, 200)]
    assert watch.rows(
        "select count(*) from images i"
        " where (select count(*) from tags t where t.image_id = i.id and not t.derived) != 5"
    ) == [(0,)]
    assert new_count(first_out) + new_count(second_out) == 200  # nothing classified twice
    assert watch.rows("pragma integrity_check") == [("ok",)]


KILL_ROUNDS = int(os.environ.get("TAGGER_TEST_KILL_ROUNDS", "10"))  # bench: set it higher


def test_sigkill_at_random_points_loses_and_duplicates_nothing(watch: Watch) -> None:
    rng = random.Random(7)
    per_round = 200 // KILL_ROUNDS
    staging = watch.tmp / "staging"
    staging.mkdir()
    distinct_copies(staging, per_round * KILL_ROUNDS)
    arriving = sorted(staging.iterdir())
    for round_ in range(KILL_ROUNDS):
        watch.start()
        for path in arriving[round_ * per_round : (round_ + 1) * per_round]:
            path.rename(watch.uploads / path.name)
        time.sleep(rng.uniform(0.0, 1.5))  # mid-reconcile, mid-batch, mid-commit or idle
        assert watch.proc is not None
        watch.proc.kill()
        watch.proc.wait()
        watch.messages.clear()
    watch.start()
    deadline = time.monotonic() + 120
    total = per_round * KILL_ROUNDS
    while watch.rows("select count(*) from images")[0][0] < total and time.monotonic() < deadline:
        time.sleep(0.1)
    code, _, err = watch.stop()
    assert code == 0, err

    assert watch.rows("pragma integrity_check") == [("ok",)]
    assert watch.rows("select count(*), count(distinct path) from files") == [(total, total)]
    assert watch.rows("select count(*) from files where image_id is null or error is not null") == [
        (0,)
    ]
    assert watch.rows("select count(*), count(distinct sha256) from images") == [(total, total)]
    assert watch.rows(
        "select count(*) from images i"
        " where (select count(*) from tags t where t.image_id = i.id and not t.derived) != 5"
    ) == [(0,)]


def test_scan_while_watch_runs_neither_locks_nor_duplicates(watch: Watch) -> None:
    watch.start()
    distinct_copies(watch.uploads, 120)
    scan = subprocess.run(
        [sys.executable, "-m", "tagger", "--db", str(watch.db), "scan", str(watch.uploads)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert scan.returncode == 0, scan.stderr
    assert "locked" not in scan.stderr
    deadline = time.monotonic() + 60
    while watch.rows("select count(*) from images")[0][0] < 120 and time.monotonic() < deadline:
        time.sleep(0.1)
    code, _, err = watch.stop()
    assert code == 0, err
    assert "locked" not in err and "Traceback" not in err
    assert watch.rows("select count(*), count(distinct path) from files") == [(120, 120)]
    assert watch.rows("select count(*), count(distinct sha256) from images") == [(120, 120)]
    assert watch.rows("select count(*) from tags where not derived") == [(600,)]


def test_a_systemd_that_never_reads_cannot_stall_the_daemon(watch: Watch) -> None:
    watch.start(WATCHDOG_USEC="100000")  # a heartbeat every 50 ms into a queue nobody reads
    time.sleep(3)
    shutil.copy(PHOTOS / "coral_hot_dog.jpg", watch.uploads / "lunch.jpg")
    deadline = time.monotonic() + 30
    while watch.rows("select count(*) from images") != [(1,)] and time.monotonic() < deadline:
        time.sleep(0.1)
    code, out, err = watch.stop()
    assert code == 0, err
    assert "1 new" in out
