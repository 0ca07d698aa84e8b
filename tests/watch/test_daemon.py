"""`tagger watch` with a real observer on a real folder, real photos and a real database."""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from watchdog.observers import Observer

from tagger.config import Settings
from tagger.errors import TaggerError
from tagger.inference.torch_model import TorchClassifier
from tagger.records import Outcome
from tagger.store.database import Store
from tagger.watch.daemon import Daemon
from tagger.watch.observe import Observers, mount_of, remote
from tests.helpers import PHOTOS, sql

pytestmark = pytest.mark.both_databases  # the daemons in threads; processes: test_shared_database

CAT, HOTDOG, PARROT = (
    PHOTOS / n for n in ("coral_cat_720p.jpg", "coral_hot_dog.jpg", "coral_parrot.jpg")
)


def wait_for(condition: Callable[[], object], timeout: float = 30, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.05)


class Counting:
    """The real classifier, counting the images it is asked to classify."""

    def __init__(self, inner: TorchClassifier) -> None:
        self.inner, self.id, self.spec = inner, inner.id, inner.spec
        self.batch_size = inner.batch_size
        self.images = 0

    def classify(self, pixels: np.ndarray) -> Any:
        self.images += len(pixels)
        return self.inner.classify(pixels)

    def analyse(self, pixels: np.ndarray) -> Any:
        self.images += len(pixels)
        return self.inner.analyse(pixels)


class Running:
    def __init__(self, daemon: Daemon, thread: threading.Thread, stop: threading.Event) -> None:
        self.daemon, self.thread, self.stop_event = daemon, thread, stop

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "the daemon did not stop"


class Harness:
    """Starts daemons on `uploads`, all writing to one database file."""

    def __init__(self, tmp_path: Path, classifier: TorchClassifier, db_url: str = "") -> None:
        """`db_url`: a PostgreSQL database's, else a SQLite file in tmp_path (`db`)."""
        self.uploads = tmp_path / "uploads"
        self.uploads.mkdir()
        self.db = tmp_path / "tagger.db"
        self.server_url = "" if db_url.startswith("sqlite") else db_url
        self.model = Counting(classifier)
        self.data_dir = tmp_path / "data"
        self.running: list[Running] = []
        self.errors: list[BaseException] = []

    @property
    def url(self) -> str:
        return self.server_url or str(self.db)

    def start(self, **watch: Any) -> Running:
        settings = Settings(
            db=self.url,
            data_dir=self.data_dir,
            batch={"max_wait": 0.2},
            watch={"stability_delay": 0.3, "rescan_interval": 0, "poll_interval": 0.2} | watch,
        )
        daemon = Daemon(settings, Store(settings.db_url), self.model, [self.uploads])  # type: ignore[arg-type]
        stop = threading.Event()

        def run() -> None:
            try:
                daemon.run(stop)
            except BaseException as exc:
                self.errors.append(exc)

        thread = threading.Thread(target=run, name="tagger-test-daemon")
        thread.start()
        wait_for(lambda: daemon.state in ("watching", "stopping"), what="the daemon to start")
        running = Running(daemon, thread, stop)
        self.running.append(running)
        return running

    def rows(self, statement: str, *args: object) -> list[tuple[Any, ...]]:
        if self.server_url:  # "?" placeholders as SQLAlchemy's named ones
            pieces = statement.split("?")
            named = pieces[0] + "".join(f":p{i}{rest}" for i, rest in enumerate(pieces[1:]))
            return sql(self.server_url, named, **{f"p{i}": arg for i, arg in enumerate(args)})
        with sqlite3.connect(self.db) as db:
            return db.execute(statement, args).fetchall()

    def top1(self, path: Path) -> str | None:
        found = self.rows(
            "select t.label from files f join tags t on t.image_id = f.image_id "
            "where f.path = ? and t.rank = 1 and f.missing_since is null",
            str(path),
        )
        return found[0][0] if found else None

    def wait_tagged(self, path: Path, label: str | None = None) -> None:
        wait_for(
            lambda: (
                (self.server_url or self.db.exists())
                and self.top1(path) == (label or self.top1(path))
                and self.top1(path)
            ),
            what=f"{path.name} to be tagged",
        )


@pytest.mark.parametrize("observer", ["native", "polling"])
def test_dropped_files_are_tagged(harness: Harness, observer: str) -> None:
    running = harness.start(observer=observer)
    assert next(iter(running.daemon.observers.kinds.values())).startswith(
        "inotify" if observer == "native" else "polling"
    )
    shutil.copy(CAT, harness.uploads / "cat.jpg")
    shutil.copy(HOTDOG, harness.uploads / "lunch.jpg")
    harness.wait_tagged(harness.uploads / "lunch.jpg", "hotdog")
    harness.wait_tagged(harness.uploads / "cat.jpg")
    assert harness.model.images == 2


def test_a_slowly_written_file_is_read_once_complete(harness: Harness) -> None:
    harness.start(stability_delay=1.0)
    data, target = CAT.read_bytes(), harness.uploads / "slow.jpg"
    with open(target, "wb") as handle:  # about 3 s, pauses shorter than the delay
        for start in range(0, len(data), len(data) // 10 + 1):
            handle.write(data[start : start + len(data) // 10 + 1])
            handle.flush()
            time.sleep(0.3)
    harness.wait_tagged(target)
    time.sleep(1.5)
    assert harness.model.images == 1
    assert harness.rows("select count(*) from files where error is not null") == [(0,)]
    assert harness.rows("select status from images") == [("tagged",)]


def test_rsync_temp_file_renamed_into_place(harness: Harness) -> None:
    harness.start()
    temp = harness.uploads / ".holiday.jpg.Xk3q9Z"  # rsync's temp name
    shutil.copy(HOTDOG, temp)
    os.rename(temp, harness.uploads / "holiday.jpg")
    harness.wait_tagged(harness.uploads / "holiday.jpg", "hotdog")
    assert [p for (p,) in harness.rows("select path from files")] == [
        str(harness.uploads / "holiday.jpg")
    ]


def test_nested_folders_created_after_start(harness: Harness) -> None:
    harness.start()
    deep = harness.uploads / "2024" / "summer" / "day1"
    deep.mkdir(parents=True)
    shutil.copy(PARROT, deep / "bird.jpg")
    harness.wait_tagged(deep / "bird.jpg")


def test_move_delete_and_overwrite(harness: Harness) -> None:
    # Made before the start: a file moved into a folder created a moment earlier can arrive
    # before inotify watches the folder, as a delete and a create (linked by its hash).
    (harness.uploads / "pets").mkdir()
    running = harness.start()
    cat, lunch = harness.uploads / "cat.jpg", harness.uploads / "lunch.jpg"
    shutil.copy(CAT, cat)
    shutil.copy(HOTDOG, lunch)
    harness.wait_tagged(cat)
    harness.wait_tagged(lunch)
    (image_id,) = harness.rows("select image_id from files where path = ?", str(cat))[0]

    # A move within the tree: the row follows, nothing is classified again.
    os.rename(cat, harness.uploads / "pets" / "cat.jpg")
    wait_for(
        lambda: (
            harness.rows("select path, image_id from files where image_id = ?", image_id)
            == [(str(harness.uploads / "pets" / "cat.jpg"), image_id)]
        ),
        what="the move",
    )

    # A folder move takes its files along: the same row, not a new one for a re-read file.
    (row_id, first_seen) = harness.rows(
        "select id, first_seen from files where image_id = ?", image_id
    )[0]
    os.rename(harness.uploads / "pets", harness.uploads / "animals")
    moved = harness.uploads / "animals" / "cat.jpg"
    wait_for(lambda: harness.top1(moved) is not None, what="the folder move")
    time.sleep(1)  # the file's own move event, and the settle after it
    assert harness.rows("select id, first_seen from files where path = ?", str(moved)) == [
        (row_id, first_seen)
    ]
    assert running.daemon.intake.summary.counts[Outcome.DUPLICATE] == 0  # nothing re-read

    # A delete marks the path missing; its tags are kept until `tagger prune`.
    lunch.unlink()
    wait_for(
        lambda: (
            harness.rows("select missing_since is not null from files where path = ?", str(lunch))
            == [(1,)]
        ),
        what="the delete",
    )
    assert harness.top1(lunch) is None

    # Overwritten with new content: hashed again and re-tagged.
    shutil.copy(HOTDOG, moved)
    harness.wait_tagged(moved, "hotdog")
    assert harness.model.images == 2  # the two originals; the hotdog content was known
    assert harness.rows("select count(*) from files") == [(2,)]


def test_500_events_for_one_file_cost_one_inference(harness: Harness) -> None:
    harness.start()
    target, data = harness.uploads / "burst.jpg", PARROT.read_bytes()
    for _ in range(500):
        target.write_bytes(data)
    harness.wait_tagged(target)
    time.sleep(1)
    assert harness.model.images == 1


def test_a_flood_beyond_max_pending_is_caught_by_a_rescan(harness: Harness, tmp_path: Path) -> None:
    running = harness.start(max_pending=3)
    staging = tmp_path / "staging"
    staging.mkdir()
    for i in range(12):  # distinct content: each a differently cropped cat
        with open(CAT, "rb") as src, open(staging / f"{i:02}.jpg", "wb") as dst:
            dst.write(src.read())
            dst.write(bytes([i]))  # bytes after the JPEG end marker change the hash only
    for path in sorted(staging.iterdir()):
        os.rename(path, harness.uploads / path.name)
    wait_for(
        lambda: harness.rows("select count(*) from files where image_id is not null") == [(12,)],
        what="all 12 files",
    )
    assert len(running.daemon.settler) <= 3
    assert harness.model.images == 12


def test_startup_reconcile_tags_what_arrived_while_stopped(harness: Harness) -> None:
    shutil.copy(CAT, harness.uploads / "before.jpg")
    first = harness.start()
    harness.wait_tagged(harness.uploads / "before.jpg")
    first.stop()
    assert harness.model.images == 1

    shutil.copy(HOTDOG, harness.uploads / "while-down.jpg")
    (harness.uploads / "before.jpg").rename(harness.uploads / "renamed-while-down.jpg")
    harness.start()
    harness.wait_tagged(harness.uploads / "while-down.jpg", "hotdog")
    harness.wait_tagged(harness.uploads / "renamed-while-down.jpg")
    wait_for(
        lambda: (
            harness.rows(
                "select missing_since is not null from files where path = ?",
                str(harness.uploads / "before.jpg"),
            )
            == [(1,)]
        )
    )
    assert harness.model.images == 2  # the cat was not classified again


def test_a_second_daemon_on_the_same_database_is_refused(harness: Harness) -> None:
    harness.start()
    settings = Settings(db=harness.url, data_dir=harness.data_dir)
    second = Daemon(settings, Store(settings.db_url), harness.model, [harness.uploads])  # type: ignore[arg-type]
    # SQLite: one daemon per database; PostgreSQL: one per folder.
    with pytest.raises(TaggerError, match=r"already (running|watching)"):
        second.run(threading.Event())


MOUNTS = """\
/dev/sda1 / ext4 rw,relatime 0 0
nas:/volume1/photos /mnt/photos nfs4 rw,vers=4.1 0 0
//nas/share /mnt/smb\\040share cifs rw 0 0
nas:/fotos /mnt/fotos\\040usér nfs rw 0 0
photos: /mnt/rclone fuse.rclone rw 0 0
/dev/sdb1 /mnt/usb fuseblk rw 0 0
"""


@pytest.mark.parametrize(
    ("path", "point", "polled"),
    [
        ("/home/me/Pictures", "/", False),
        ("/mnt/photos/2024", "/mnt/photos", True),
        ("/mnt/smb share/x", "/mnt/smb share", True),
        ("/mnt/fotos usér/2024", "/mnt/fotos usér", True),
        ("/mnt/rclone", "/mnt/rclone", True),
        ("/mnt/usb/DCIM", "/mnt/usb", False),
        ("/mnt/photosynth", "/", False),
    ],
)
def test_network_and_fuse_mounts_are_polled(path: str, point: str, polled: bool) -> None:
    found, fstype = mount_of(Path(path), MOUNTS)
    assert found == point
    assert remote(fstype) is polled


def test_auto_observer_polls_a_folder_on_nfs(tmp_path: Path) -> None:
    from tagger.config import WatchSettings
    from tagger.watch.observe import Handler

    observers = Observers(WatchSettings(), Handler(10))
    try:
        observers.watch(tmp_path, mounts=f"nas:/photos {tmp_path} nfs4 rw 0 0\n")
        assert observers.kinds[str(tmp_path)].startswith("polling: nfs4 filesystem")
    finally:
        observers.stop()


def test_the_periodic_rescan_catches_what_the_observer_missed(harness: Harness) -> None:
    # A polling observer that never gets round to looking: only the rescan can find the file.
    harness.start(observer="polling", poll_interval=3600, rescan_interval=0.5)
    shutil.copy(HOTDOG, harness.uploads / "missed.jpg")
    harness.wait_tagged(harness.uploads / "missed.jpg", "hotdog")


def test_a_rescan_leaves_a_file_being_written_to_its_settle(harness: Harness) -> None:
    # Only rescans look here, every 0.2 s, while a copy takes a second: none may read it
    # half-written (which would record the partial content as a damaged image).
    harness.start(observer="polling", poll_interval=3600, rescan_interval=0.2, stability_delay=1.5)
    photo, data = harness.uploads / "slow.jpg", HOTDOG.read_bytes()
    with photo.open("wb") as out:
        for start in range(0, len(data), len(data) // 5):
            out.write(data[start : start + len(data) // 5])
            out.flush()
            time.sleep(0.25)
    harness.wait_tagged(photo, "hotdog")
    assert harness.rows("select count(*) from images where status = 'failed'") == [(0,)]


class FullInotify(Observer):  # type: ignore[misc,valid-type]
    """inotify as it behaves when fs.inotify.max_user_watches is used up (watchdog's error)."""

    def schedule(self, *args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.ENOSPC, "inotify watch limit reached")


def test_a_full_inotify_falls_back_to_polling(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tagger.watch.observe.Observer", FullInotify)
    running = harness.start(observer="auto")
    assert running.daemon.observers.kinds == {
        str(harness.uploads): "polling: inotify limit reached, every 0.2s"
    }
    shutil.copy(CAT, harness.uploads / "cat.jpg")
    harness.wait_tagged(harness.uploads / "cat.jpg")


def test_a_full_inotify_is_an_error_when_native_is_required(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tagger.config import WatchSettings
    from tagger.watch.observe import Handler

    monkeypatch.setattr("tagger.watch.observe.Observer", FullInotify)
    observers = Observers(WatchSettings(observer="native"), Handler(10))
    try:
        with pytest.raises(TaggerError, match="max_user_watches"):
            observers.watch(tmp_path)
    finally:
        observers.stop()


# A watched folder that disappears is waited for: tests/watch/test_root_replaced.py.


def test_bad_files_dropped_into_the_watched_folder_never_stop_the_daemon(
    harness: Harness, tmp_path: Path
) -> None:
    from tests.corpus import make_corpus

    staging, outside = tmp_path / "staging", tmp_path / "outside"
    staging.mkdir()
    outside.mkdir()
    bad, good = make_corpus(staging, outside)
    bad.pop("huge.jpg")  # under the default size limit here
    good.append("huge.jpg")
    running = harness.start()
    for entry in sorted(staging.iterdir()):
        os.rename(entry, harness.uploads / entry.name)
    uploads = str(harness.uploads)

    def recorded() -> set[str]:
        rows = harness.rows(
            "select f.path from files f left join images i on i.id = f.image_id "
            "where f.error is not null or i.status = 'failed'"
        )
        return {os.path.relpath(path, uploads) for (path,) in rows}

    wait_for(lambda: recorded() == set(bad), what=f"the bad files {set(bad) - recorded()}")
    for name in good:
        harness.wait_tagged(harness.uploads / name)
    assert running.thread.is_alive()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 4 MB filesystem (tmpfs), for a database that runs out of space."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(folder: Path) -> Path:
    junk = folder / "junk"
    with open(junk, "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return junk


@pytest.mark.sqlite_only
def test_a_full_disk_pauses_writes_keeps_what_is_stored_and_resumes(
    harness: Harness, small_disk: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.helpers import distinct_copies

    harness.db = small_disk / "tagger.db"
    staging = tmp_path / "staging"
    staging.mkdir()
    distinct_copies(staging, 40)
    arriving = sorted(staging.iterdir())
    running = harness.start()
    for path in arriving[:10]:
        path.rename(harness.uploads / path.name)
    wait_for(lambda: harness.rows("select count(*) from images") == [(10,)], what="10 tagged")

    junk = fill(small_disk)
    for path in arriving[10:]:
        path.rename(harness.uploads / path.name)
    wait_for(lambda: "cannot write to the database" in caplog.text, what="the disk-full warning")
    assert running.thread.is_alive()
    assert harness.rows("select count(*) from images") == [(10,)]  # what was stored stays
    assert harness.rows("pragma integrity_check") == [("ok",)]

    junk.unlink()
    wait_for(
        lambda: harness.rows("select count(*) from images") == [(40,)],
        timeout=90,
        what="the rest, once there is space again",
    )
    assert "database writes resumed" in caplog.text
    assert harness.rows("select count(*), count(distinct path) from files") == [(40, 40)]


def tree(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.lstat().st_size, p.lstat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
    }


def test_a_read_only_upload_folder_works_and_is_never_written(
    harness: Harness, tmp_path: Path
) -> None:
    """A read-only bind mount, as `-v /photos:/app/uploads:ro` gives in Docker."""
    source = tmp_path / "nas-share"
    source.mkdir()
    shutil.copy(CAT, source / "cat.jpg")
    (source / "broken.jpg").write_bytes(b"not a photo")
    mounted = subprocess.run(["mount", "--bind", str(source), str(harness.uploads)])
    remounted = subprocess.run(["mount", "-o", "remount,ro,bind", str(harness.uploads)])
    if mounted.returncode or remounted.returncode:
        pytest.skip("cannot make a read-only bind mount here")
    try:
        with pytest.raises(OSError, match="Read-only"):
            (harness.uploads / "probe").write_bytes(b"")
        before = tree(source)
        running = harness.start()
        harness.wait_tagged(harness.uploads / "cat.jpg")
        shutil.copy(HOTDOG, source / "lunch.jpg")  # written on the other side of the mount
        harness.wait_tagged(harness.uploads / "lunch.jpg", "hotdog")
        running.stop()
        assert tree(source) == before | {"lunch.jpg": tree(source)["lunch.jpg"]}
    finally:
        subprocess.run(["umount", "-l", str(harness.uploads)], check=False)


def test_unreadable_files_are_retried_with_backoff_then_left_alone(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    from tagger.records import Outcome
    from tagger.watch.daemon import MAX_TRIES

    running = harness.start()
    daemon, target = running.daemon, str(harness.uploads / "locked.jpg")
    shutil.copy(CAT, target)
    running.stop()  # drive the report by hand from here: as root, nothing is unreadable
    delays = []
    for _ in range(MAX_TRIES + 1):
        daemon._done(target, Outcome.UNREADABLE)
        while not daemon._later.empty():
            delays.append(daemon._later.get()[1])
    assert len(delays) == MAX_TRIES
    assert all(later == pytest.approx(3 * earlier) for earlier, later in pairwise(delays))
    assert f"gave up on {target} after {MAX_TRIES} tries" in caplog.text
    daemon._done(target, Outcome.NEW)  # success forgets the count
    daemon._done(target, Outcome.UNREADABLE)
    assert daemon._later.get()[1] == delays[0]
