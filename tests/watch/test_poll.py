"""The polling observer on a real folder: what each change is reported as, one poll at a time."""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import time
from pathlib import Path

import pytest
from watchdog.observers.api import EventQueue, ObservedWatch

from tagger.watch.observe import Handler
from tagger.watch.poll import FolderPollingEmitter, FolderPollingObserver

Seen = set[tuple[str, str, str, bool]]  # kind, path, destination, is a folder


class Poller:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.queue = EventQueue()
        self.emitter = FolderPollingEmitter(self.queue, ObservedWatch(str(root), recursive=True))
        self.emitter.on_thread_start()  # the first listing, as when the observer starts

    def poll(self) -> Seen:
        """What one poll reports, folders' own "modified" left out (the daemon ignores it)."""
        self.emitter.poll()
        seen: Seen = set()
        while not self.queue.empty():
            event, _watch = self.queue.get()
            if event.event_type == "modified" and event.is_directory:
                continue
            dest = os.fsdecode(event.dest_path)
            relative = os.path.relpath(os.fsdecode(event.src_path), self.root)
            seen.add(
                (
                    event.event_type,
                    relative,
                    dest and os.path.relpath(dest, self.root),
                    event.is_directory,
                )
            )
        return seen


def write(path: Path, size: int = 10) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    return path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    write(root / "2024" / "a.jpg")
    write(root / "2024" / "b.jpg")
    write(root / "2025" / "c.jpg")
    return root


def test_nothing_changed_is_nothing_reported(tree: Path) -> None:
    poller = Poller(tree)
    assert poller.poll() == set()


def test_a_new_file_is_created(tree: Path) -> None:
    poller = Poller(tree)
    write(tree / "2024" / "new.jpg")
    assert poller.poll() == {("created", "2024/new.jpg", "", False)}
    assert poller.poll() == set()


def test_a_file_that_changes_size_is_modified(tree: Path) -> None:
    poller = Poller(tree)
    write(tree / "2024" / "a.jpg", size=20)  # rewritten in place: the folder's mtime stays
    os.utime(tree / "2024", ns=(0, 0))  # as if the folder had changed
    assert poller.poll() == {("modified", "2024/a.jpg", "", False)}


def test_a_new_file_still_growing_is_modified_as_it_grows(tree: Path) -> None:
    poller = Poller(tree)
    new = write(tree / "2025" / "copying.jpg", size=5)
    assert poller.poll() == {("created", "2025/copying.jpg", "", False)}
    os.utime(tree / "2025", ns=(10**18, 10**18))  # the folder quiet since: not listed again
    assert poller.poll() == set()
    with new.open("ab") as out:  # writing a file moves its mtime, not its folder's
        out.write(b"more")
    assert poller.poll() == {("modified", "2025/copying.jpg", "", False)}


def test_a_deleted_file_is_deleted(tree: Path) -> None:
    poller = Poller(tree)
    (tree / "2024" / "a.jpg").unlink()
    assert poller.poll() == {("deleted", "2024/a.jpg", "", False)}


def test_a_renamed_file_is_moved(tree: Path) -> None:
    poller = Poller(tree)
    (tree / "2024" / "a.jpg").rename(tree / "2024" / "renamed.jpg")
    (tree / "2024" / "b.jpg").rename(tree / "2025" / "b.jpg")
    assert poller.poll() == {
        ("moved", "2024/a.jpg", "2024/renamed.jpg", False),
        ("moved", "2024/b.jpg", "2025/b.jpg", False),
    }


def test_a_file_renamed_over_another_is_news(tree: Path) -> None:
    poller = Poller(tree)
    (tree / "2024" / "b.jpg").rename(tree / "2024" / "a.jpg")
    assert poller.poll() == {
        ("deleted", "2024/a.jpg", "", False),
        ("moved", "2024/b.jpg", "2024/a.jpg", False),
    }


def test_a_new_folder_with_files_is_created_and_then_watched(tree: Path) -> None:
    poller = Poller(tree)
    write(tree / "2026" / "jan" / "d.jpg")
    assert poller.poll() == {
        ("created", "2026", "", True),
        ("created", "2026/jan", "", True),
        ("created", "2026/jan/d.jpg", "", False),
    }
    write(tree / "2026" / "jan" / "e.jpg")
    assert poller.poll() == {("created", "2026/jan/e.jpg", "", False)}


def test_a_removed_folder_is_deleted_and_forgotten(tree: Path) -> None:
    poller = Poller(tree)
    shutil.rmtree(tree / "2024")
    assert poller.poll() == {("deleted", "2024", "", True)}
    write(tree / "2024" / "a.jpg")  # a new folder of the same name: new again
    assert poller.poll() == {("created", "2024", "", True), ("created", "2024/a.jpg", "", False)}


def test_a_renamed_folder_is_moved_and_watched_at_its_new_name(tree: Path) -> None:
    poller = Poller(tree)
    (tree / "2024").rename(tree / "holidays")
    assert poller.poll() == {("moved", "2024", "holidays", True)}
    write(tree / "holidays" / "f.jpg")
    assert poller.poll() == {("created", "holidays/f.jpg", "", False)}


def test_the_watched_folder_removed_stops_the_poller(tree: Path) -> None:
    poller = Poller(tree)
    shutil.rmtree(tree)
    assert poller.poll() == {("deleted", ".", "", True)}
    assert not poller.emitter.should_keep_running()


def test_the_observer_thread_feeds_the_daemon_handler(tree: Path) -> None:
    handler = Handler(capacity=100)
    observer = FolderPollingObserver(timeout=0.05)
    observer.start()
    new, paths = tree / "2025" / "g.jpg", set()
    try:
        observer.schedule(handler, str(tree), recursive=True)
        write(new)
        deadline = time.monotonic() + 10
        while str(new) not in paths and time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                paths.add(os.fsdecode(handler.events.get(timeout=0.1).src_path))
    finally:
        observer.stop()
        observer.join(5)
    assert str(new) in paths
