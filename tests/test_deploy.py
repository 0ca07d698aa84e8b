"""The systemd unit and the Dockerfile run the same `tagger watch` the other tests run."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tagger.cli.main import cli
from tests.helpers import ROOT


def unit() -> dict[str, list[str]]:
    """The unit file's keys (a key may repeat, as Environment= does)."""
    keys: dict[str, list[str]] = {}
    for line in (ROOT / "systemd" / "tagger.service").read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            keys.setdefault(key, []).append(value)
    return keys


def parses(argv: list[str]) -> None:
    """`tagger SUBCOMMAND ARGS...` is a valid command line (click raises if not)."""
    command = cli.commands[argv[0]]
    command.make_context(argv[0], argv[1:])


def test_systemd_unit_runs_watch_as_a_notify_service_with_a_watchdog() -> None:
    keys = unit()
    assert keys["Type"] == ["notify"]
    assert int(keys["WatchdogSec"][0]) >= 30
    assert keys["Restart"] == ["on-failure"]
    exec_start = shlex.split(keys["ExecStart"][0])
    assert Path(exec_start[0]).name == "tagger" and exec_start[1] == "watch"
    parses(exec_start[1:])
    # Writable: the state directory, which holds the database; the uploads are read-only.
    env = dict(e.split("=", 1) for e in keys["Environment"])
    state = f"/var/lib/{keys['StateDirectory'][0]}"
    assert env["TAGGER_DATA_DIR"] == state and keys["ReadWritePaths"] == [state]
    assert keys["ReadOnlyPaths"] == exec_start[2:]
    assert keys["ProtectSystem"] == ["strict"] and keys["NoNewPrivileges"] == ["yes"]
    assert keys["User"] == ["tagger"]


def test_docker_image_runs_watch_on_app_uploads_and_checks_health_with_status() -> None:
    text = (ROOT / "Dockerfile").read_text()
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (.+)$", text, re.M).group(1))  # type: ignore[union-attr]
    command = json.loads(re.search(r"^CMD (.+)$", text, re.M).group(1))  # type: ignore[union-attr]
    assert entrypoint + command == ["tagger", "watch", "/app/uploads"]
    parses(command)
    health = re.search(r"^HEALTHCHECK .* CMD (.+)$", text, re.M)
    assert health and json.loads(health.group(1)) == ["tagger", "status"]
    assert "TAGGER_DATA_DIR=/data" in text and re.search(r"^USER tagger$", text, re.M)


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="no systemd-analyze here")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    # verify also wants ExecStart to exist: point it at a real executable for the check.
    text = (ROOT / "systemd" / "tagger.service").read_text()
    copy = tmp_path / "tagger.service"
    copy.write_text(text.replace("/opt/tagger/bin/tagger", shutil.which("true") or "/bin/true"))
    done = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr  # warnings go here
