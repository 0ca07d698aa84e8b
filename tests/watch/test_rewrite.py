"""A photo rewritten in place while `tagger watch` runs is hashed again, even when its size
and mtime say nothing changed. A real daemon, a real observer, the real model."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tagger.records import Outcome
from tagger.watch.settle import Settler
from tests.watch.test_daemon import CAT, HOTDOG, Harness, wait_for


def same_size(tmp_path: Path) -> tuple[Path, Path]:
    """The cat and the hotdog, padded after their end to one size (JPEG readers stop at the
    end-of-image marker)."""
    cat, hotdog = CAT.read_bytes(), HOTDOG.read_bytes()
    size = max(len(cat), len(hotdog))
    pair = tmp_path / "cat.jpg", tmp_path / "hotdog.jpg"
    for path, data in zip(pair, (cat, hotdog), strict=True):
        path.write_bytes(data + bytes(size - len(data)))
    return pair


def rewrite_in_place(target: Path, source: Path, _tmp: Path) -> None:
    """Write over the same inode, then put the mtime back, as a careful editor does."""
    before = target.stat()
    with target.open("r+b") as out:
        out.write(source.read_bytes())
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))


def cp_then_touch_r(target: Path, source: Path, tmp: Path) -> None:
    """The shell's way: `touch -r` copies the old mtime back from a reference file."""
    reference = tmp / "reference"
    subprocess.run(["touch", "-r", str(target), str(reference)], check=True)
    subprocess.run(["cp", str(source), str(target)], check=True)
    subprocess.run(["touch", "-r", str(reference), str(target)], check=True)


@pytest.mark.parametrize("rewrite", [rewrite_in_place, cp_then_touch_r])
def test_a_same_size_rewrite_with_the_old_mtime_is_tagged_again(
    harness: Harness, tmp_path: Path, rewrite: Callable[[Path, Path, Path], None]
) -> None:
    cat, hotdog = same_size(tmp_path)
    harness.start(observer="native")
    photo = harness.uploads / "photo.jpg"
    shutil.copy(cat, photo)
    harness.wait_tagged(photo)
    first = harness.top1(photo)
    assert first != "hotdog"
    stored = harness.rows("select size, mtime_ns from files where path = ?", str(photo))

    rewrite(photo, hotdog, tmp_path)
    assert [(photo.stat().st_size, photo.stat().st_mtime_ns)] == stored  # "unchanged" by stat
    harness.wait_tagged(photo, "hotdog")
    assert harness.model.images == 2
    assert harness.rows("select count(*) from files") == [(1,)]


def test_rewriting_the_same_content_costs_a_read_not_an_inference(
    harness: Harness, tmp_path: Path
) -> None:
    cat, _ = same_size(tmp_path)
    running = harness.start(observer="native")
    photo = harness.uploads / "photo.jpg"
    shutil.copy(cat, photo)
    harness.wait_tagged(photo)
    daemon, counts = running.daemon, running.daemon.intake.summary.counts
    wait_for(lambda: daemon.intake.depth == 0 and len(daemon.settler) == 0, what="quiet")
    looks = sum(counts.values())
    rewrite_in_place(photo, cat, tmp_path)
    wait_for(lambda: sum(counts.values()) > looks, what="another look")
    assert counts[Outcome.DUPLICATE] == 1  # hashed again, found known: linked
    assert harness.model.images == 1
    assert harness.top1(photo) not in (None, "hotdog")


def test_a_write_event_stays_with_the_path_until_it_is_released() -> None:
    clock = [0.0]
    settler = Settler(delay=1.0, capacity=10, clock=lambda: clock[0])
    settler.touch("/p/a.jpg", written=True)
    settler.touch("/p/a.jpg", delay=5.0)  # a retry, say: the write is still news
    settler.touch("/p/b.jpg")  # a file a rescan found being written: no event said so
    assert settler.written("/p/a.jpg") and not settler.written("/p/b.jpg")
    settler.release("/p/a.jpg")
    settler.touch("/p/a.jpg")
    assert not settler.written("/p/a.jpg")
    assert not settler.written("/p/never.jpg")
