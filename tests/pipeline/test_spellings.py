"""One file, one row: a folder reached through a symlink or `..` is stored by its real path."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import PHOTOS, Result


def test_three_spellings_of_a_folder_store_one_row(
    tagger: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = tmp_path / "disk" / "photos"
    real.mkdir(parents=True)
    shutil.copy(PHOTOS / "coral_cat_720p.jpg", real / "cat.jpg")
    link = tmp_path / "photos-link"
    link.symlink_to(real, target_is_directory=True)
    for spelling in (real, link, tmp_path / "disk" / ".." / "disk" / "photos"):
        assert tagger("scan", str(spelling)).code == 0
    with sqlite3.connect(tmp_path / "tagger.db") as db:
        rows = db.execute("SELECT path, missing_since FROM files").fetchall()
    assert rows == [(str(real / "cat.jpg"), None)]

    monkeypatch.chdir(link)  # a shell inside the symlinked folder
    shown = tagger("show", "--format", "json", "cat.jpg")
    assert shown.code == 0, shown.err
    assert json.loads(shown.out)["path"] == str(real / "cat.jpg")
    here = json.loads(tagger("query", "path:./", "--format", "json").out)
    assert [row["path"] for row in here] == [str(real / "cat.jpg")]
