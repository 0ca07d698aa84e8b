"""Intake: the bounded, de-duplicated queue between the watcher and the pipeline."""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tagger.pipeline.runner import Item
from tagger.records import Gone, Moved, Outcome
from tagger.watch.intake import Intake

JOIN = 5.0  # the most a test waits for one of its threads; a pass takes milliseconds


@pytest.fixture
def stop() -> Iterator[threading.Event]:
    """The pipeline's stop event, set by a guard after a while so that no test can hang."""
    event = threading.Event()
    guard = threading.Timer(2 * JOIN, event.set)
    guard.name = "test-stop-guard"
    guard.start()
    yield event
    guard.cancel()
    guard.join()


def reading(intake: Intake, stop: threading.Event) -> Generator[Item, None, None]:
    """items(), closable: closing it in a finally frees the intake even if a test failed."""
    yield from intake.items(stop)


def drain(intake: Intake) -> list[Item]:
    """Close the intake and return what the pipeline would still read from it."""
    intake.close()
    stop = threading.Event()
    guard = threading.Timer(JOIN, stop.set)  # so that a broken close() fails, not hangs
    guard.name = "test-drain-guard"
    guard.start()
    try:
        left = list(intake.items(stop))
    finally:
        guard.cancel()
        guard.join()
    assert not stop.is_set(), "items() did not end after close()"
    return left


def test_offer_dedups_queued_path(tmp_path: Path) -> None:
    """Offering a path already queued succeeds but queues it only once."""
    intake = Intake(capacity=10)
    path = tmp_path / "a.jpg"
    assert intake.offer(path)
    assert intake.offer(Path(str(path)))
    assert intake.depth == 1
    assert drain(intake) == [path]


def test_offer_refuses_when_full(tmp_path: Path) -> None:
    """A new path is refused when the queue is full."""
    intake = Intake(capacity=2)
    a, b, c = tmp_path / "a.jpg", tmp_path / "b.jpg", tmp_path / "c.jpg"
    assert intake.offer(a)
    assert intake.offer(b)
    assert not intake.offer(c)
    assert intake.offer(a)  # already queued: still fine
    assert drain(intake) == [a, b]


def test_offer_refuses_busy_path_until_done(tmp_path: Path, stop: threading.Event) -> None:
    """A path being processed is refused until done() frees it."""
    intake = Intake(capacity=10)
    path = tmp_path / "a.jpg"
    intake.offer(path)
    items = intake.items(stop)
    assert next(items) == path
    assert not intake.offer(path)
    intake.done(str(path), Outcome.NEW)
    assert intake.offer(path)
    assert next(items) == path


def test_items_fifo_then_ends_on_close(tmp_path: Path) -> None:
    """items() yields in offer order and, once closed, ends when the queue is empty."""
    intake = Intake(capacity=10)
    paths = [tmp_path / f"{i}.jpg" for i in range(5)]
    for path in paths:
        intake.offer(path)
    assert drain(intake) == paths


def test_items_waits_for_work_until_close(tmp_path: Path, stop: threading.Event) -> None:
    """A waiting reader gets items offered later and ends when the intake is closed."""
    intake = Intake(capacity=10)
    got: list[Item] = []
    reader = threading.Thread(target=lambda: got.extend(intake.items(stop)), name="test-reader")
    reader.start()
    try:
        intake.offer(tmp_path / "a.jpg")
        intake.offer(tmp_path / "b.jpg")
        intake.close()
        reader.join(JOIN)
        assert not reader.is_alive()
    finally:
        stop.set()
        reader.join(JOIN)
    assert got == [tmp_path / "a.jpg", tmp_path / "b.jpg"]


def test_items_ends_on_stop_with_work_left(tmp_path: Path, stop: threading.Event) -> None:
    """items() ends at once when stop is set, even with paths still queued."""
    intake = Intake(capacity=10)
    intake.offer(tmp_path / "a.jpg")
    intake.offer(tmp_path / "b.jpg")
    items = intake.items(stop)
    assert next(items) == tmp_path / "a.jpg"
    stop.set()
    assert list(items) == []


def test_done_counts_and_records_activity(tmp_path: Path, stop: threading.Event) -> None:
    """done() adds the outcome to the summary and stamps last_activity with the clock."""
    now = [1234.5]
    intake = Intake(capacity=10, clock=lambda: now[0])
    assert intake.last_activity is None
    a, b = tmp_path / "a.jpg", tmp_path / "b.jpg"
    intake.offer(a)
    intake.offer(b)
    items = intake.items(stop)
    next(items)
    intake.done(str(a), Outcome.NEW)
    assert intake.last_activity == 1234.5
    now[0] = 2000.0
    next(items)
    intake.done(str(b), Outcome.FAILED)
    assert intake.last_activity == 2000.0
    assert intake.summary.counts[Outcome.NEW] == 1
    assert intake.summary.counts[Outcome.FAILED] == 1
    assert intake.summary.total == 2


def test_gone_drops_queued_paths_below_it(tmp_path: Path) -> None:
    """Gone(folder) drops the folder and paths below it from the queue, not a prefix sibling."""
    intake = Intake(capacity=10)
    x = tmp_path / "x"
    under = [x / "a", x / "a" / "1.jpg", x / "a" / "sub" / "2.jpg"]
    kept = [x / "ab", x / "b.jpg"]
    for path in [under[0], kept[0], under[1], kept[1], under[2]]:
        assert intake.offer(path)
    assert intake.offer(Gone(str(x / "a")))
    assert drain(intake) == [*kept, Gone(str(x / "a"))]


def test_gone_frees_room_and_dedup(tmp_path: Path) -> None:
    """Paths dropped by a Gone free their room and can be queued again."""
    intake = Intake(capacity=2)
    a, b = tmp_path / "a" / "1.jpg", tmp_path / "a" / "2.jpg"
    intake.offer(a)
    intake.offer(b)
    assert not intake.offer(tmp_path / "c.jpg")
    intake.offer(Gone(str(tmp_path / "a")))
    assert intake.offer(tmp_path / "c.jpg")
    assert intake.offer(a)
    assert drain(intake) == [Gone(str(tmp_path / "a")), tmp_path / "c.jpg", a]


def test_moves_and_removals_accepted_when_full(tmp_path: Path) -> None:
    """Moved and Gone are always queued, even when the queue is full of paths."""
    intake = Intake(capacity=1)
    a = tmp_path / "a.jpg"
    intake.offer(a)
    assert not intake.offer(tmp_path / "b.jpg")
    moved = Moved(str(tmp_path / "m1.jpg"), str(tmp_path / "m2.jpg"))
    gone = Gone(str(tmp_path / "gone.jpg"))
    assert intake.offer(moved)
    assert intake.offer(gone)
    assert drain(intake) == [a, moved, gone]


def test_depth_counts_queued_and_busy(tmp_path: Path, stop: threading.Event) -> None:
    """depth counts what is queued plus what is being processed, until done."""
    intake = Intake(capacity=10)
    a, b = tmp_path / "a.jpg", tmp_path / "b.jpg"
    assert intake.depth == 0
    intake.offer(a)
    intake.offer(b)
    assert intake.depth == 2
    items = intake.items(stop)
    next(items)
    assert intake.depth == 2
    intake.done(str(a), Outcome.NEW)
    assert intake.depth == 1
    next(items)
    intake.done(str(b), Outcome.UNCHANGED)
    assert intake.depth == 0


def test_put_waits_for_room(tmp_path: Path, stop: threading.Event) -> None:
    """put() on a full intake waits, and queues the path once the reader takes one."""
    intake = Intake(capacity=1)
    a, b = tmp_path / "a.jpg", tmp_path / "b.jpg"
    intake.offer(a)
    items = reading(intake, stop)
    writer = threading.Thread(target=intake.put, args=(b, stop), name="test-put")
    writer.start()
    try:
        writer.join(0.1)
        assert writer.is_alive()  # still waiting for room
        assert intake.depth == 1
        assert next(items) == a
        writer.join(JOIN)
        assert not writer.is_alive()
    finally:
        items.close()
        stop.set()
        writer.join(JOIN)
    assert intake.depth == 2  # a busy, b queued
    assert drain(intake) == [b]


def test_put_skips_busy_path(tmp_path: Path, stop: threading.Event) -> None:
    """put() of a path being processed returns at once without queuing it, even when full."""
    intake = Intake(capacity=1)
    a, b = tmp_path / "a.jpg", tmp_path / "b.jpg"
    intake.offer(a)
    items = reading(intake, stop)
    assert next(items) == a
    intake.offer(b)  # now full
    writer = threading.Thread(target=intake.put, args=(a, stop), name="test-put")
    writer.start()
    try:
        writer.join(JOIN)
        assert not writer.is_alive()
    finally:
        items.close()
        stop.set()
        intake.close()
        writer.join(JOIN)
    assert intake.depth == 2  # b queued, a busy: a was not queued again
    assert drain(intake) == [b]


def test_put_after_stop_does_not_wait(tmp_path: Path, stop: threading.Event) -> None:
    """put() with stop already set on a full intake returns without queuing."""
    intake = Intake(capacity=1)
    stop.set()
    a = tmp_path / "a.jpg"
    intake.offer(a)
    intake.put(tmp_path / "b.jpg", stop)
    assert drain(intake) == [a]


def test_put_of_queued_path_does_not_wait(tmp_path: Path, stop: threading.Event) -> None:
    """put() of a path already queued returns at once, even when the intake is full."""
    intake = Intake(capacity=1)
    a = tmp_path / "a.jpg"
    intake.offer(a)
    writer = threading.Thread(target=intake.put, args=(a, stop), name="test-put")
    writer.start()
    try:
        writer.join(JOIN)
        assert not writer.is_alive()
    finally:
        stop.set()
        writer.join(JOIN)
    assert drain(intake) == [a]
