"""Several `tagger watch` processes, each on its own folder, writing to one PostgreSQL
database (as one daemon per machine would): content is classified once across all of
them, `tagger status` lists each, and a daemon killed outright leaves no lock behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import PHOTOS
from tests.postgres import Cluster
from tests.watch.test_daemon_process import FAST, Watch


@pytest.fixture
def shared_url(postgres: Cluster) -> Iterator[str]:
    url = postgres.new_database()
    yield url
    postgres.drop_database(url)


@pytest.fixture
def machines(tmp_path: Path, shared_url: str) -> Iterator[Callable[[str], Watch]]:
    """`machines(name)`: a daemon (not started) on the folder `name/uploads`, on the shared
    database; every one still running at the end is killed."""
    made: list[Watch] = []

    def machine(name: str) -> Watch:
        (tmp_path / name / "notify.sock").unlink(missing_ok=True)  # a killed one's
        made.append(Watch(tmp_path / name, shared_url))
        return made[-1]

    yield machine
    for watch in made:
        if watch.proc is not None and watch.proc.poll() is None:
            watch.proc.kill()
            watch.proc.wait()
        watch.socket.close()


def wait_for(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def status(url: str) -> tuple[int, dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-m", "tagger", "--db", url, "status", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, json.loads(done.stdout)


def test_two_daemons_one_database_classify_once_and_survive_a_kill(
    machines: Callable[[str], Watch], shared_url: str
) -> None:
    first, second = machines("nas1"), machines("nas2")
    first.start()  # the first creates the schema; the second finds it
    second.start()
    cat = PHOTOS / "coral_cat_720p.jpg"
    shutil.copy(cat, first.uploads / "cat.jpg")

    def linked() -> list[tuple[object, ...]]:
        return second.rows(
            "SELECT f.path FROM files f JOIN images i ON i.id = f.image_id"
            " WHERE i.status = 'tagged' ORDER BY f.path"
        )

    wait_for(lambda: len(linked()) == 1, "the first daemon to tag the cat")
    shutil.copy(cat, second.uploads / "same-cat.jpg")
    wait_for(lambda: len(linked()) == 2, "the second daemon to link its copy")
    assert linked() == [(str(first.uploads / "cat.jpg"),), (str(second.uploads / "same-cat.jpg"),)]
    assert second.rows("SELECT count(*) FROM images") == [(1,)]  # classified once

    def both_listed() -> bool:
        code, report = status(shared_url)
        counts = {tuple(d["roots"]): d["counts"] for d in report["daemons"]}
        return code == 0 and counts.get((str(second.uploads),), {}).get("duplicate") == 1

    wait_for(both_listed, "both daemons in tagger status, the second with its duplicate")
    code, report = status(shared_url)
    assert {tuple(d["roots"]) for d in report["daemons"]} == {
        (str(first.uploads),),
        (str(second.uploads),),
    }
    by_root = {d["roots"][0]: d for d in report["daemons"]}
    assert by_root[str(first.uploads)]["counts"]["new"] == 1
    assert by_root[str(second.uploads)]["counts"]["new"] == 0
    assert all(d["host"] and d["responsive"] for d in report["daemons"])

    # One daemon per folder: a second one on nas2's folder is refused, in one line.
    again = subprocess.run(
        [sys.executable, "-m", "tagger", "--db", shared_url, "watch", str(second.uploads)],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ | FAST,
    )
    assert again.returncode == 1
    assert again.stderr.endswith(  # after the log's lines (the model loaded)
        f"\nerror: another `tagger watch` is already watching {second.uploads} on this database\n"
    )

    # Killed outright: the other goes on, and the folder's lock went with the connection.
    assert first.proc is not None
    first.proc.kill()
    first.proc.wait()
    shutil.copy(PHOTOS / "coral_parrot.jpg", second.uploads / "parrot.jpg")
    wait_for(lambda: len(linked()) == 3, "the surviving daemon to tag the parrot")
    third = machines("nas1")  # the killed one's folder, by a new daemon
    third.start()
    shutil.copy(PHOTOS / "coral_hot_dog.jpg", third.uploads / "lunch.jpg")
    wait_for(lambda: len(linked()) == 4, "the new daemon on nas1 to tag the hot dog")
    wait_for(lambda: len(status(shared_url)[1]["daemons"]) == 2, "the killed daemon's row to go")
    for watch in (second, third):
        code, _, err = watch.stop()
        assert code == 0, err
    code, report = status(shared_url)
    assert code == 3 and report["daemons"] == [] and report["images_tagged"] == 3
