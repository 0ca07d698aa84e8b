"""`tagger watch` (a real process) with a folder it cannot read under the watched one."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.helpers import PHOTOS, ROOT, Result
from tests.pipeline.unreadable import locked, unprivileged

FAST = {
    "TAGGER_WATCH__STABILITY_DELAY": "0.2",
    "TAGGER_WATCH__RESCAN_INTERVAL": "0",
    "TAGGER_WATCH__POLL_INTERVAL": "0.2",
    "TAGGER_BATCH__MAX_WAIT": "0.2",
}


def missing(db: Path, path: Path) -> bool | None:
    with sqlite3.connect(db) as connection:
        row = connection.execute(
            "select missing_since is not null from files where path = ?", (str(path),)
        ).fetchone()
    return None if row is None else bool(row[0])


def wait_missing(db: Path, path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not missing(db, path) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert missing(db, path), f"{path} was not marked missing"


@contextmanager
def watching(db: Path, folder: Path, observer: str) -> Iterator[subprocess.Popen[str]]:
    """`tagger watch` without root's power over permissions; stopped by SIGTERM after,
    which must end it cleanly."""
    daemon = subprocess.Popen(
        unprivileged([sys.executable, "-m", "tagger", "--db", str(db), "watch", str(folder)]),
        env=os.environ | FAST | {"TAGGER_WATCH__OBSERVER": observer},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield daemon
    finally:
        daemon.send_signal(signal.SIGTERM)
        _, err = daemon.communicate(timeout=60)
    assert daemon.returncode == 0, err
    assert "Traceback" not in err


def stored(tagger: Callable[..., Result], tmp_path: Path) -> tuple[Path, Path]:
    """A watched folder with two photos at the top and one in `private`, all stored."""
    uploads = tmp_path / "uploads"
    (uploads / "private").mkdir(parents=True)
    shutil.copy(PHOTOS / "coral_cat_720p.jpg", uploads / "keep.jpg")
    shutil.copy(PHOTOS / "coral_parrot.jpg", uploads / "gone.jpg")
    shutil.copy(PHOTOS / "coral_hot_dog.jpg", uploads / "private" / "inside.jpg")
    assert tagger("scan", str(uploads)).code == 0
    return uploads, tmp_path / "tagger.db"


def test_the_reconcile_sees_deletions_beside_an_unreadable_folder(
    tagger: Callable[..., Result], tmp_path: Path
) -> None:
    uploads, db = stored(tagger, tmp_path)
    private = uploads / "private"
    (uploads / "gone.jpg").unlink()  # while no daemon runs

    with locked(private), watching(db, uploads, "native") as daemon:
        deadline = time.monotonic() + 60
        while not missing(db, uploads / "gone.jpg") and time.monotonic() < deadline:
            assert daemon.poll() is None, daemon.communicate()
            time.sleep(0.1)
        assert missing(db, uploads / "gone.jpg"), "the reconcile did not sweep"
        assert missing(db, uploads / "keep.jpg") is False
        assert missing(db, private / "inside.jpg") is False
        listed = json.loads(tagger("errors", "--format", "json").out)
        assert [(row["path"], row["reason"]) for row in listed] == [
            (str(private), "cannot read folder: Permission denied")
        ]
        # The observer did not die of the folder either: a live deletion is seen.
        (uploads / "keep.jpg").unlink()
        wait_missing(db, uploads / "keep.jpg", timeout=30)


def test_a_folder_that_turns_unreadable_under_polling_is_not_deleted(
    tagger: Callable[..., Result], tmp_path: Path
) -> None:
    """Polling compares listings: a folder it can no longer list looks emptied, and each file
    in it deleted. A deletion is believed only of a path that is really gone."""
    uploads, db = stored(tagger, tmp_path)
    private = uploads / "private"
    with watching(db, uploads, "polling") as daemon:
        deadline = time.monotonic() + 60
        while "(polling" not in tagger("status").out and time.monotonic() < deadline:
            assert daemon.poll() is None, daemon.communicate()
            time.sleep(0.1)
        with locked(private):
            time.sleep(2)  # ten polls
            assert missing(db, private / "inside.jpg") is False
        (uploads / "gone.jpg").unlink()  # the observer still sees real deletions
        wait_missing(db, uploads / "gone.jpg", timeout=30)
        assert missing(db, private / "inside.jpg") is False
