"""`tagger prune` against a photo restored after it was found missing (by a scan or by the
daemon's sweep) and before prune runs: the photo keeps its row and its tags."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

from tests.helpers import Result


def test_prune_keeps_a_file_restored_since_it_was_found_missing(
    tagger: Callable[..., Result], photo_dir: Path, tmp_path: Path
) -> None:
    assert tagger("scan", str(photo_dir)).code == 0
    lunch, cat = photo_dir / "coral_hot_dog.jpg", photo_dir / "coral_cat_720p.jpg"
    shutil.move(lunch, tmp_path / "away.jpg")
    cat.unlink()
    assert tagger("scan", str(photo_dir)).code == 0  # both marked missing
    shutil.move(tmp_path / "away.jpg", lunch)  # restored, with no scan since

    assert "Would remove 1 missing files and 1 images" in tagger("prune", "--dry-run").out
    assert "Removed 1 missing files and 1 images" in tagger("prune").out
    with sqlite3.connect(photo_dir.parent / "tagger.db") as db:
        assert db.execute(
            "select f.missing_since, t.label from files f join tags t on t.image_id = f.image_id"
            " where f.path = ? and t.rank = 1",
            (str(lunch),),
        ).fetchall() == [(None, "hotdog")]
        assert db.execute("select count(*) from files where path = ?", (str(cat),)).fetchone() == (
            0,
        )
