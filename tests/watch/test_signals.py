"""The signals a service manager or an admin sends to `tagger watch` (a real process):
SIGHUP and SIGUSR1 are answered in the log and it runs on; SIGQUIT stops it as SIGTERM does."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import PHOTOS, ROOT

FAST = {
    "TAGGER_WATCH__STABILITY_DELAY": "0.2",
    "TAGGER_WATCH__RESCAN_INTERVAL": "0",
    "TAGGER_BATCH__MAX_WAIT": "0.2",
}


class WatchProcess:
    """`tagger watch` on `uploads`, its log read line by line as it comes, and what it tells
    systemd (a real NOTIFY_SOCKET, heartbeats every 0.1 s)."""

    def __init__(self, tmp_path: Path) -> None:
        self.uploads, self.db = tmp_path / "uploads", tmp_path / "tagger.db"
        self.uploads.mkdir()
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(str(tmp_path / "notify.sock"))
        self.socket.settimeout(0.2)
        env = os.environ | FAST | {"NOTIFY_SOCKET": str(tmp_path / "notify.sock")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tagger", "--db", str(self.db), "watch", str(self.uploads)],
            env=env | {"WATCHDOG_USEC": "200000"},
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.log: list[str] = []
        self._reader = threading.Thread(target=self._read, name="test-log-reader")
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line.rstrip("\n"))

    def wait_log(self, wanted: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [line for line in self.log if wanted in line]
            if found:
                return found[-1]
            assert self.proc.poll() is None, f"tagger watch exited: {self.log}"
            time.sleep(0.05)
        raise AssertionError(f"no {wanted!r} in the log: {self.log}")

    def wait_status(self, wanted: str, timeout: float = 30) -> None:
        """Until a heartbeat tells systemd STATUS=`wanted`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                message = self.socket.recv(4096).decode()
            except TimeoutError:
                continue
            if f"STATUS={wanted}" in message.split("\n"):
                return
        raise AssertionError(f"systemd was never told STATUS={wanted}")

    def tagged(self) -> int:
        if not self.db.exists():
            return 0
        with sqlite3.connect(self.db) as db:
            return int(db.execute("select count(*) from images").fetchone()[0])

    def wait_exit(self, timeout: float = 30) -> str:
        """Its exit, with the whole log read; returns what it printed."""
        self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        assert self.proc.stdout is not None
        return self.proc.stdout.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._reader.join(timeout=10)
        self.socket.close()


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[WatchProcess]:
    running = WatchProcess(tmp_path)
    yield running
    running.close()


def test_hup_and_usr1_are_answered_in_the_log_and_quit_stops_cleanly(daemon: WatchProcess) -> None:
    daemon.wait_log("reconciled:")

    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_log("SIGHUP: configuration is read at start; restart to apply changes")
    shutil.copy(PHOTOS / "coral_hot_dog.jpg", daemon.uploads / "lunch.jpg")
    deadline = time.monotonic() + 30
    while daemon.tagged() < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    daemon.wait_log("new ")
    assert daemon.proc.poll() is None

    status = "watching: 1 tagged, 0 duplicates, 0 failed, 0 queued"
    daemon.wait_status(status)
    daemon.proc.send_signal(signal.SIGUSR1)
    assert daemon.wait_log("SIGUSR1:") == f"SIGUSR1: {status}"
    daemon.proc.send_signal(signal.SIGUSR1)  # as often as asked
    deadline = time.monotonic() + 10
    while sum("SIGUSR1:" in line for line in daemon.log) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sum("SIGUSR1:" in line for line in daemon.log) == 2
    assert daemon.proc.poll() is None

    daemon.proc.send_signal(signal.SIGQUIT)
    out = daemon.wait_exit()
    assert daemon.proc.returncode == 0, daemon.log
    assert "SIGQUIT: stopping" in daemon.log
    assert "Stopped after 1 files: 1 new" in out
    assert not [line for line in daemon.log if "Traceback" in line]


@pytest.mark.parametrize(
    "signum", [signal.SIGTERM, signal.SIGINT, signal.SIGQUIT], ids=lambda s: s.name
)
def test_each_stopping_signal_exits_0_and_says_which(daemon: WatchProcess, signum: int) -> None:
    daemon.wait_log("reconciled:")
    daemon.proc.send_signal(signum)
    daemon.wait_exit()
    assert daemon.proc.returncode == 0, daemon.log
    assert f"{signal.Signals(signum).name}: stopping" in daemon.log
