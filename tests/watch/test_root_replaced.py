"""A watched folder renamed away, replaced, unmounted or remounted: the daemon watches it
afresh instead of going deaf (inotify stays on the dead folder)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.watch.test_daemon import CAT, HOTDOG, PARROT, Harness, wait_for


def status_of(harness: Harness) -> dict[str, object]:
    path = harness.db.with_name(harness.db.name + ".watch.json")
    data: dict[str, object] = json.loads(path.read_text())
    return data


def rearmed(harness: Harness) -> int:
    counts = status_of(harness).get("rearmed", {})
    assert isinstance(counts, dict)
    return int(counts.get(str(harness.uploads), 0))


def test_a_root_renamed_away_and_recreated_is_watched_again(harness: Harness) -> None:
    harness.start()  # rescan_interval = 0: only the observer can find new photos
    shutil.copy(CAT, harness.uploads / "cat.jpg")
    harness.wait_tagged(harness.uploads / "cat.jpg")
    harness.uploads.rename(harness.uploads.with_name("uploads.old"))
    harness.uploads.mkdir()
    shutil.copy(HOTDOG, harness.uploads / "lunch.jpg")  # maybe before the re-arm: the rescan
    wait_for(lambda: rearmed(harness) == 1, timeout=10, what="the root to be re-armed")
    harness.wait_tagged(harness.uploads / "lunch.jpg")
    shutil.copy(PARROT, harness.uploads / "parrot.jpg")  # after: the new watch sees it
    harness.wait_tagged(harness.uploads / "parrot.jpg")
    daemon = status_of(harness)
    assert daemon["observers"] == {str(harness.uploads): "inotify; re-armed 1x"}


def test_a_root_that_is_gone_is_waited_for(harness: Harness, tmp_path: Path) -> None:
    harness.start()
    shutil.rmtree(harness.uploads)
    wait_for(
        lambda: status_of(harness).get("waiting") == [str(harness.uploads)],
        timeout=10,
        what="the status to say it waits",
    )
    assert harness.running[0].thread.is_alive()
    harness.uploads.mkdir()
    shutil.copy(HOTDOG, harness.uploads / "lunch.jpg")
    harness.wait_tagged(harness.uploads / "lunch.jpg")
    assert status_of(harness)["waiting"] == []
    assert rearmed(harness) == 1


def mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount here: {done.stderr.strip()}")


@pytest.fixture
def mounted(harness: Harness) -> Iterator[list[Path]]:
    points: list[Path] = []
    yield points
    for point in reversed(points):
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def test_a_bind_mount_over_the_root_and_its_unmount_are_noticed(
    harness: Harness, tmp_path: Path, mounted: list[Path]
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    harness.start()
    mount("--bind", str(other), str(harness.uploads))
    mounted.append(harness.uploads)
    wait_for(lambda: rearmed(harness) == 1, timeout=10, what="the bind mount to be noticed")
    shutil.copy(CAT, harness.uploads / "cat.jpg")
    harness.wait_tagged(harness.uploads / "cat.jpg")
    subprocess.run(["umount", str(harness.uploads)], check=True)
    mounted.clear()
    wait_for(lambda: rearmed(harness) == 2, timeout=10, what="the unmount to be noticed")
    shutil.copy(HOTDOG, harness.uploads / "lunch.jpg")
    harness.wait_tagged(harness.uploads / "lunch.jpg")


def test_a_tmpfs_unmounted_and_mounted_again_is_watched_again(
    harness: Harness, mounted: list[Path]
) -> None:
    """The same place mounted again: only the mount id tells it is a new mount."""
    mount("-t", "tmpfs", "-o", "size=16m", "tagger-test", str(harness.uploads))
    mounted.append(harness.uploads)
    harness.start()
    subprocess.run(["umount", str(harness.uploads)], check=True)
    mounted.clear()
    mount("-t", "tmpfs", "-o", "size=16m", "tagger-test", str(harness.uploads))
    mounted.append(harness.uploads)
    wait_for(lambda: rearmed(harness) >= 1, timeout=10, what="the remount to be noticed")
    shutil.copy(PARROT, harness.uploads / "parrot.jpg")
    harness.wait_tagged(harness.uploads / "parrot.jpg")
