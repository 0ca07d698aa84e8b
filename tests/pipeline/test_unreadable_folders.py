"""One folder that cannot be read skips what lies under it, not the whole root's deletions.

Real folders made unreadable for real (see unreadable.py), the real walk, the real
`tagger scan` in a process of its own, a real SQLite file.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tagger.config import ScanSettings
from tagger.pipeline.files import PhotoFilter, walk_and_sweep
from tagger.records import Swept
from tests.helpers import PHOTOS, ROOT, Result
from tests.pipeline.unreadable import locked, unprivileged

WALK = """
import json, sys
from pathlib import Path
from tagger.config import ScanSettings
from tagger.pipeline.files import PhotoFilter, walk_and_sweep
out = []
for item in walk_and_sweep([Path(sys.argv[1])], PhotoFilter(ScanSettings()), False):
    if isinstance(item, Path):
        out.append(str(item))
    else:
        unreadable = [list(pair) for pair in getattr(item, "unreadable", ())]
        out.append({"root": item.root, "present": sorted(item.present), "unreadable": unreadable})
print(json.dumps(out))
"""


@pytest.fixture
def library(tmp_path: Path) -> Path:
    """Photos at the top, in a readable subfolder, and in a folder (and one below it) that
    the test locks."""
    root = tmp_path / "library"
    for relative, photo in [
        ("keep.jpg", "coral_cat_720p.jpg"),
        ("gone.jpg", "coral_parrot.jpg"),
        ("sub/lunch.jpg", "coral_hot_dog.jpg"),
        ("sub/gone too.jpg", "orientation_Landscape_1.jpg"),
        ("private/inside.jpg", "orientation_Portrait_1.jpg"),
        ("private/deleted inside.jpg", "orientation_Portrait_3.jpg"),
        ("private/deeper/below.jpg", "orientation_Portrait_6.jpg"),
    ]:
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(PHOTOS / photo, root / relative)
    return root


def run_unprivileged(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        unprivileged([sys.executable, *args]),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        check=False,
    )


def test_the_walk_sweeps_around_an_unreadable_folder(library: Path) -> None:
    with locked(library / "private"):
        done = run_unprivileged("-c", WALK, str(library))
    assert done.returncode == 0, done.stderr
    *paths, swept = json.loads(done.stdout)
    readable = {
        str(library / n) for n in ("keep.jpg", "gone.jpg", "sub/lunch.jpg", "sub/gone too.jpg")
    }
    assert set(paths) == readable
    assert swept == {
        "root": str(library),
        "present": sorted(readable),
        "unreadable": [[str(library / "private"), "Permission denied"]],
    }
    assert f"cannot read folder {library / 'private'}: Permission denied" in done.stderr


def test_an_unreadable_root_is_swept_around_entirely(library: Path) -> None:
    with locked(library):
        done = run_unprivileged("-c", WALK, str(library))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [
        {"root": str(library), "present": [], "unreadable": [[str(library), "Permission denied"]]}
    ]


def test_a_folder_deleted_while_the_walk_goes_on_is_swept(tmp_path: Path) -> None:
    """Not unreadable, gone: what it held is gone too (the walk is lazy, so the folder can
    be deleted between the root's files and its subfolders)."""
    (tmp_path / "b").mkdir()
    (tmp_path / "a.jpg").write_bytes(b"a")
    (tmp_path / "b" / "x.jpg").write_bytes(b"x")
    items = walk_and_sweep([tmp_path], PhotoFilter(ScanSettings()), False)
    assert next(items) == tmp_path / "a.jpg"
    shutil.rmtree(tmp_path / "b")
    rest = list(items)
    assert len(rest) == 1 and isinstance(rest[0], Swept)
    assert rest[0].present == {str(tmp_path / "a.jpg")}
    assert getattr(rest[0], "unreadable", ()) == ()


def missing(db: Path) -> dict[str, bool]:
    with sqlite3.connect(db) as connection:
        rows = connection.execute("select path, missing_since is not null from files").fetchall()
    return {path: bool(gone) for path, gone in rows}


def test_scan_marks_deletions_around_an_unreadable_folder_and_lists_it(
    tagger: Callable[..., Result], library: Path, tmp_path: Path
) -> None:
    db = tmp_path / "tagger.db"
    first = tagger("scan", str(library))
    assert first.code == 0, first.err
    assert "7 new" in first.out
    for deleted in ("gone.jpg", "sub/gone too.jpg", "private/deleted inside.jpg"):
        (library / deleted).unlink()

    private = library / "private"
    with locked(private):
        scan = run_unprivileged("-m", "tagger", "--db", str(db), "scan", str(library))
        assert scan.returncode == 0, scan.stderr
        assert f"cannot read folder {private}: Permission denied" in scan.stderr

        # Deleted elsewhere: marked missing. Under the folder nothing is known: left alone.
        assert missing(db) == {
            str(library / "keep.jpg"): False,
            str(library / "gone.jpg"): True,
            str(library / "sub" / "lunch.jpg"): False,
            str(library / "sub" / "gone too.jpg"): True,
            str(private / "inside.jpg"): False,
            str(private / "deleted inside.jpg"): False,
            str(private / "deeper" / "below.jpg"): False,
            str(private): False,
        }
        errors = tagger("errors", "--format", "json")
        assert errors.code == 0, errors.err
        listed = {row["path"]: row["reason"] for row in json.loads(errors.out)}
        assert listed == {str(private): "cannot read folder: Permission denied"}
        everything = tagger("query", "--format", "paths")
        assert str(private) not in everything.out.splitlines()
        assert str(library / "gone.jpg") not in everything.out.splitlines()

        # A second unreadable walk keeps one row for the folder, not two.
        again = run_unprivileged("-m", "tagger", "--db", str(db), "scan", str(library))
        assert again.returncode == 0, again.stderr
        assert list(missing(db)).count(str(private)) == 1

    # Readable again: the folder's row goes, and what was deleted under it is seen now.
    third = tagger("scan", str(library))
    assert third.code == 0, third.err
    assert str(private) not in missing(db)
    assert missing(db)[str(private / "deleted inside.jpg")] is True
    assert missing(db)[str(private / "inside.jpg")] is False
    assert json.loads(tagger("errors", "--format", "json").out) == []
