"""Settler: a file is released once it has been quiet for the delay and kept its size and mtime."""

from __future__ import annotations

import os
from pathlib import Path

from tagger.watch.settle import Settler

DELAY = 2.0  # every step below is a multiple of 0.5, so the clock's sums are exact


class FakeClock:
    """A monotonic clock that only moves when the test says so."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def photo(folder: Path, name: str = "a.jpg", data: bytes = b"abc") -> str:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


def test_not_released_before_delay(tmp_path: Path) -> None:
    """An unchanged file is held until the whole delay has passed."""
    clock = FakeClock()
    settler = Settler(DELAY, capacity=10, clock=clock)
    path = photo(tmp_path)
    assert settler.touch(path)
    assert settler.settled() == []
    clock.advance(DELAY - 0.5)
    assert settler.settled() == []
    assert len(settler) == 1


def test_released_after_delay_when_unchanged(tmp_path: Path) -> None:
    """An unchanged file is released as soon as the delay has passed."""
    clock = FakeClock()
    settler = Settler(DELAY, capacity=10, clock=clock)
    path = photo(tmp_path)
    settler.touch(path)
    clock.advance(DELAY)
    assert settler.settled() == [path]


def test_released_until_release_is_called(tmp_path: Path) -> None:
    """A settled file is offered at every look until release() removes it."""
    clock = FakeClock()
    settler = Settler(DELAY, capacity=10, clock=clock)
    path = photo(tmp_path)
    settler.touch(path)
    clock.advance(DELAY)
    assert settler.settled() == [path]
    assert settler.settled() == [path]
    settler.release(path)
    assert len(settler) == 0
    assert settler.settled() == []
    settler.release(path)  # releasing an unknown path is harmless
    assert len(settler) == 0


def test_growing_file_restarts_wait(tmp_path: Path) -> None:
    """A file that grew during the wait is not released then, but a full delay later."""
    clock = FakeClock()
    settler = Settler(DELAY, capacity=10, clock=clock)
    path = photo(tmp_path)
    settler.touch(path)
    before = os.stat(path).st_mtime_ns
    with open(path, "ab") as f:
        f.write(b"more")
    os.utime(path, ns=(before, before))  # only the size tells
    clock.advance(DELAY)
    assert settler.settled() == []
    clock.advance(DELAY - 0.5)
    assert settler.settled() == []
    clock.advance(0.5)
    assert settler.settled() == [path]


def test_mtime_change_restarts_wait(tmp_path: Path) -> None:
    """A file whose mtime changed (same size) during the wait waits another full delay."""
    clock = FakeClock()
    settler = Settler(DELAY, capacity=10, clock=clock)
    path = photo(tmp_path)
    settler.touch(path)
    older = os.stat(path).st_mtime_ns - 5 * 10**9
    os.utime(path, ns=(older, older))
    clock.advance(DELAY)
    assert settler.settled() == []
    clock.advance(DELAY)
    assert settler.settled() == [path]


def test_touch_again_restarts_wait(tmp_path: Path) -> None:
    """A new event for a pending file pushes its release a full delay past that event."""
    clock = FakeClock()
    settler = Settler(DELAY, capacity=10, clock=clock)
    path = photo(tmp_path)
    settler.touch(path)
    clock.advance(1.5)
    assert settler.touch(path)
    clock.advance(1.0)
    assert settler.settled() == []
    clock.advance(1.0)
    assert settler.settled() == [path]
    assert len(settler) == 1


def test_closed_released_on_next_look(tmp_path: Path) -> None:
    """After close-after-write an unchanged file is released at the next look, with no wait."""
    clock = FakeClock()
    settler = Settler(DELAY, capacity=10, clock=clock)
    path = photo(tmp_path)
    settler.touch(path, closed=True)
    assert settler.settled() == [path]


def test_closed_but_changed_waits_full_delay(tmp_path: Path) -> None:
    """A closed file that changed again before the next look waits the whole delay."""
    clock = FakeClock()
    settler = Settler(DELAY, capacity=10, clock=clock)
    path = photo(tmp_path)
    settler.touch(path, closed=True)
    with open(path, "ab") as f:
        f.write(b"more")
    assert settler.settled() == []
    clock.advance(DELAY - 0.5)
    assert settler.settled() == []
    clock.advance(0.5)
    assert settler.settled() == [path]


def test_deleted_file_is_dropped(tmp_path: Path) -> None:
    """A file deleted before it settled is not released and no longer pending."""
    clock = FakeClock()
    settler = Settler(DELAY, capacity=10, clock=clock)
    gone, kept = photo(tmp_path, "gone.jpg"), photo(tmp_path, "kept.jpg")
    settler.touch(gone)
    settler.touch(kept)
    assert len(settler) == 2
    os.unlink(gone)
    clock.advance(DELAY)
    assert settler.settled() == [kept]
    assert len(settler) == 1


def test_full_refuses_new_path(tmp_path: Path) -> None:
    """When full, a new path is refused and never released."""
    clock = FakeClock()
    settler = Settler(DELAY, capacity=2, clock=clock)
    a, b, c = (photo(tmp_path, name) for name in ("a.jpg", "b.jpg", "c.jpg"))
    assert settler.touch(a)
    assert settler.touch(b)
    assert not settler.touch(c)
    assert len(settler) == 2
    clock.advance(DELAY)
    assert sorted(settler.settled()) == sorted([a, b])


def test_full_accepts_pending_path(tmp_path: Path) -> None:
    """When full, a path already pending is still accepted (its wait restarts)."""
    clock = FakeClock()
    settler = Settler(DELAY, capacity=1, clock=clock)
    path = photo(tmp_path)
    assert settler.touch(path)
    clock.advance(1.5)
    assert settler.touch(path)
    assert len(settler) == 1
    clock.advance(1.5)
    assert settler.settled() == []
    clock.advance(0.5)
    assert settler.settled() == [path]


def test_forget_drops_folder_and_contents_not_sibling(tmp_path: Path) -> None:
    """forget(folder) drops the folder and all below it, but not a sibling sharing its prefix."""
    clock = FakeClock()
    settler = Settler(DELAY, capacity=10, clock=clock)
    folder = tmp_path / "a" / "b"
    dropped = [photo(folder, "1.jpg"), photo(folder / "sub", "2.jpg"), str(folder)]
    kept = [photo(tmp_path / "a" / "bc", "3.jpg"), str(tmp_path / "a" / "bc")]
    for path in [*dropped, *kept]:
        assert settler.touch(path)
    settler.forget(str(folder))
    assert len(settler) == len(kept)
    clock.advance(DELAY)
    assert sorted(settler.settled()) == sorted(kept)


def test_forget_single_file(tmp_path: Path) -> None:
    """forget(file) drops just that file."""
    clock = FakeClock()
    settler = Settler(DELAY, capacity=10, clock=clock)
    a, b = photo(tmp_path, "a.jpg"), photo(tmp_path, "a.jpg.tmp")
    settler.touch(a)
    settler.touch(b)
    settler.forget(a)
    clock.advance(DELAY)
    assert settler.settled() == [b]


def test_explicit_delay_overrides_default(tmp_path: Path) -> None:
    """touch(delay=...) waits that long instead of the default, whether longer or shorter."""
    clock = FakeClock()
    settler = Settler(DELAY, capacity=10, clock=clock)
    slow, quick = photo(tmp_path, "slow.jpg"), photo(tmp_path, "quick.jpg")
    settler.touch(slow, delay=10.0)
    settler.touch(quick, delay=0.5)
    clock.advance(0.5)
    assert settler.settled() == [quick]
    settler.release(quick)
    clock.advance(DELAY)
    assert settler.settled() == []
    clock.advance(10.0 - DELAY - 0.5)
    assert settler.settled() == [slow]


def test_len_counts_pending(tmp_path: Path) -> None:
    """len() is the number of files waiting, settled or not, until released or forgotten."""
    settler = Settler(DELAY, capacity=10, clock=FakeClock())
    assert len(settler) == 0
    paths = [photo(tmp_path, f"{i}.jpg") for i in range(3)]
    for path in paths:
        settler.touch(path)
    settler.touch(paths[0])
    assert len(settler) == 3
    settler.release(paths[0])
    settler.forget(paths[1])
    assert len(settler) == 1
