"""The runner's two modes run the same stages: threaded for real work, sequential for tests."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from tagger.config import load_settings
from tagger.inference.torch_model import TorchClassifier
from tagger.pipeline.runner import Pipeline
from tagger.records import Outcome
from tagger.store.database import Store


def stored(db: Path) -> list[tuple[str, str, int]]:
    """(file name, best label, tags) for every stored file, by name."""
    with sqlite3.connect(db) as connection:
        rows = connection.execute(
            "SELECT f.path, t.label, (SELECT count(*) FROM tags WHERE image_id = i.id)"
            " FROM files f JOIN images i ON f.image_id = i.id"
            " JOIN tags t ON t.image_id = i.id AND t.rank = 1"
        ).fetchall()
    return sorted((Path(path).name, label, count) for path, label, count in rows)


@pytest.mark.parametrize("threaded", [True, False], ids=["threaded", "sequential"])
def test_both_modes_tag_link_and_refuse_alike(
    threaded: bool, photo_dir: Path, tmp_path: Path, classifier: TorchClassifier
) -> None:
    shutil.copy(photo_dir / "coral_cat_720p.jpg", photo_dir / "copy of cat.jpg")
    (photo_dir / "broken.jpg").write_bytes(b"not a photo")
    photos = sorted(photo_dir.iterdir())
    settings = load_settings(db=str(tmp_path / "t.db"))
    store = Store(settings.db_url)
    summary = Pipeline(settings, store, classifier).run(photos, threaded=threaded)
    again = Pipeline(settings, store, classifier).run(photos, threaded=threaded)
    store.close()
    counts = summary.counts
    assert (counts[Outcome.NEW], counts[Outcome.DUPLICATE], counts[Outcome.FAILED]) == (
        len(photos) - 2,
        1,
        1,
    )
    assert again.counts[Outcome.UNCHANGED] == len(photos)  # known bad content is not read again
    best = {name: label for name, label, _ in stored(tmp_path / "t.db")}
    assert "broken.jpg" not in best
    assert best["copy of cat.jpg"] == best["coral_cat_720p.jpg"]  # linked, not tagged twice


def test_sequential_mode_stores_the_same_tags_as_the_threaded_one(
    photo_dir: Path, tmp_path: Path, classifier: TorchClassifier
) -> None:
    photos = sorted(photo_dir.iterdir())
    for name, threaded in (("threaded.db", True), ("sequential.db", False)):
        settings = load_settings(db=str(tmp_path / name))
        store = Store(settings.db_url)
        Pipeline(settings, store, classifier).run(photos, threaded=threaded)
        store.close()
    assert stored(tmp_path / "threaded.db") == stored(tmp_path / "sequential.db")
    assert len(stored(tmp_path / "threaded.db")) == len(photos)
