"""`tagger watch --listen` as a real process: SIGTERM mid-request stops it cleanly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import PHOTOS

CAT = PHOTOS / "coral_cat_720p.jpg"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


class Daemon:
    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        self.inbox = tmp_path / "inbox"
        env = os.environ | {"TAGGER_WEB__INBOX": str(self.inbox)}
        command = [sys.executable, "-m", "tagger", "--db", str(tmp_path / "t.db"), "watch"]
        self.process = subprocess.Popen(
            [*command, "--listen", f"127.0.0.1:{self.port}"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 180  # the first start may export the model
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.process.kill()
        raise AssertionError(f"tagger watch --listen did not start: {self.process.communicate()}")

    def stop(self) -> tuple[int, str]:
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            _, err = self.process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGUSR2)  # every thread's stack, for the report
            time.sleep(1)
            self.process.kill()
            _, err = self.process.communicate()
            raise AssertionError(f"tagger watch did not stop in 30 s of SIGTERM:\n{err}") from None
        print(f"stopped {time.monotonic() - started:.1f} s after SIGTERM")
        return self.process.returncode, err


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    running = Daemon(tmp_path)
    yield running
    if running.process.poll() is None:
        running.process.kill()
        running.process.wait()


def test_sigterm_during_an_upload_leaves_nothing_half_written(daemon: Daemon) -> None:
    data = CAT.read_bytes()
    boundary = "tagger-test-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="cat.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    body = head + data + f"\r\n--{boundary}--\r\n".encode()
    with socket.create_connection(("127.0.0.1", daemon.port)) as client:
        client.sendall(
            (
                f"POST /api/uploads HTTP/1.1\r\nHost: 127.0.0.1:{daemon.port}\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            + body[: len(body) // 2]
        )
        time.sleep(0.5)  # the server is now reading the upload, which never completes
        code, err = daemon.stop()
    assert code == 0, err
    assert "Traceback" not in err
    assert list(daemon.inbox.iterdir()) == []


def test_sigterm_during_predict_requests_exits_cleanly(daemon: Daemon) -> None:
    answers: list[int] = []

    def ask() -> None:
        for _ in range(20):
            try:
                with CAT.open("rb") as handle:
                    reply = httpx.post(f"{daemon.url}/predict", files={"file": handle}, timeout=30)
                answers.append(reply.status_code)
            except httpx.HTTPError:
                return  # the server went away: what a stopping server may do

    clients = [threading.Thread(target=ask, name=f"client-{n}") for n in range(4)]
    for client in clients:
        client.start()
    deadline = time.monotonic() + 60
    while not answers and time.monotonic() < deadline:
        time.sleep(0.05)
    code, err = daemon.stop()
    for client in clients:
        client.join(timeout=30)
    assert code == 0, err
    assert "Traceback" not in err
    assert answers and set(answers) <= {200, 503}
    assert list(daemon.inbox.iterdir()) == []  # /predict stores nothing
