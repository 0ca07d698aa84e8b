"""Issue 16, class 8 (the CLI's part): a file name cannot drive the terminal, a database
path is a path whatever characters it has, and `--help` says how scripts read paths."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tagger.config import load_settings
from tests.helpers import PHOTOS, Result

# A window title (OSC, which click's own ANSI stripping leaves alone), a colour, a bell
# and a carriage return that would overwrite the line: all legal in a Linux file name.
HOSTILE = "\x1b]0;owned\x07\x1b[31mred\r.jpg"


@pytest.fixture
def hostile_photos(tmp_path: Path) -> Path:
    folder = tmp_path / "odd"
    folder.mkdir()
    shutil.copy(PHOTOS / "coral_parrot.jpg", folder / HOSTILE)
    shutil.copy(PHOTOS / "coral_parrot.jpg", folder / "plain.jpg")  # a duplicate of it
    return folder


def test_show_and_duplicates_escape_control_characters(
    tagger: Callable[..., Result], hostile_photos: Path
) -> None:
    assert tagger("scan", str(hostile_photos)).code == 0
    shown = tagger("show", str(hostile_photos / HOSTILE))
    assert shown.code == 0 and "macaw" in shown.out
    assert (
        shown.out.splitlines()[0] == str(hostile_photos) + "/\\x1b]0;owned\\x07\\x1b[31mred\\r.jpg"
    )
    duplicates = tagger("duplicates")
    assert "2 copies" in duplicates.out and "\\x1b]0;owned" in duplicates.out
    for result in (shown, duplicates):
        assert not any(c in result.out for c in "\x1b\x07\r"), repr(result.out)
    # JSON keeps the real name (escaped by JSON itself), for programs.
    as_json = json.loads(tagger("show", "--format", "json", str(hostile_photos / HOSTILE)).out)
    assert as_json["path"] == str(hostile_photos / HOSTILE)
    missing = tagger("show", str(hostile_photos / ("gone" + HOSTILE)))
    assert missing.code == 1 and missing.err.count("\n") == 1 and "\x1b" not in missing.err


@pytest.mark.parametrize("name", ["what?.db", "pct%41.db", "hash#1.db", "a b;c=d.db", "ü.db"])
def test_a_database_path_is_a_path(
    tagger: Callable[..., Result], photo_dir: Path, tmp_path: Path, name: str
) -> None:
    """`--db 'what?.db'` used to write to `what`, `--db 'pct%41.db'` to `pctA.db`."""
    db = tmp_path / "dbs" / name
    assert tagger("--db", str(db), "scan", str(photo_dir)).code == 0
    assert [p.name for p in db.parent.iterdir() if not p.name.endswith(("-wal", "-shm"))] == [name]
    found = tagger("--db", str(db), "query", "label:macaw", "--format", "paths")
    assert found.out == f"{photo_dir / 'coral_parrot.jpg'}\n"


@pytest.mark.parametrize(
    "name", ["what?.db", "pct%41.db", "hash#x.db", "semi;x=1.db", "sp ace.db", "at@h:1.db", "ü.db"]
)
def test_the_sqlite_url_of_a_path_round_trips(tmp_path: Path, name: str) -> None:
    url = load_settings(db=str(tmp_path / name)).db_url
    parsed = make_url(url)
    assert parsed.get_backend_name() == "sqlite" and not parsed.query
    assert parsed.database == str(tmp_path / name)


def test_query_help_says_scripts_use_nul_separated_paths(tagger: Callable[..., Result]) -> None:
    text = " ".join(tagger("query", "--help").out.split())
    assert "scripts use -0" in text  # at --format, where `paths` is offered
    assert "the safe form for scripts" in text  # at -0 itself
    assert "In scripts, read paths with -0" in text  # in the command's description
