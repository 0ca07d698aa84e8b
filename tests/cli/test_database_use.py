"""Issue 16, class 9: the database is touched only when it should be.

A command that only reads never creates a database or its folder; another program's
SQLite file is refused before anything in it changes; a damaged file is one line with the
way out, for every command, and `tagger status` gives it an exit status of its own (4)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli.processes import damage, foreign_database, one_error_line, run_tagger
from tests.helpers import Result

READ_ONLY = [
    ("query",),
    ("query", "label:cat", "-0"),
    ("show", "cat.jpg"),
    ("labels",),
    ("labels", "--tree"),
    ("duplicates",),
    ("errors",),
    ("export",),
    ("db", "status"),
    # These write, but only to what is stored: with nothing stored there is nothing to do.
    ("prune",),
    ("retag",),
    ("xmp", "--mode", "mirror"),
]


@pytest.mark.parametrize("command", READ_ONLY, ids=" ".join)
def test_a_mistyped_db_creates_nothing(
    tagger: Callable[..., Result], tmp_path: Path, command: tuple[str, ...]
) -> None:
    db = tmp_path / "typo" / "tagger.db"
    result = tagger("--db", str(db), *command)
    assert result.code == 1 and result.out == ""
    assert result.err == f"error: no database at {db}; run tagger scan or tagger watch first\n"
    assert not (tmp_path / "typo").exists()


def test_status_and_config_show_create_nothing_either(
    tagger: Callable[..., Result], tmp_path: Path
) -> None:
    db = tmp_path / "typo" / "tagger.db"
    status = tagger("--db", str(db), "status")
    assert status.code == 3 and "not created yet" in status.out
    assert tagger("--db", str(db), "config", "show").code == 0
    assert not (tmp_path / "typo").exists()


def test_the_commands_that_tag_create_it(
    tagger: Callable[..., Result], tmp_path: Path, photo_dir: Path
) -> None:
    db = tmp_path / "new" / "tagger.db"
    assert tagger("--db", str(db), "scan", str(photo_dir)).code == 0
    assert db.is_file()
    assert tagger("--db", str(db), "query", "label:macaw").code == 0


FOREIGN_COMMANDS = [
    ("query",),
    ("show", "holiday.jpg"),
    ("labels",),
    ("export",),
    ("prune",),
    ("db", "status"),
    ("db", "upgrade"),
    ("scan", "{photos}"),
    ("watch", "{photos}"),
]


@pytest.mark.parametrize("command", FOREIGN_COMMANDS, ids=" ".join)
def test_another_programs_database_is_refused_untouched(
    tmp_path: Path, photo_dir: Path, command: tuple[str, ...]
) -> None:
    """Refused before the first change: it used to be switched to WAL mode first."""
    other = tmp_path / "photos.sqlite"
    before = foreign_database(other)
    args = [part.replace("{photos}", str(photo_dir)) for part in command]
    result = run_tagger("--db", str(other), *args)
    assert result.code == 1 and "is it a tagger database?" in result.err
    assert [line for line in result.err.splitlines() if line.startswith("error: ")] == [
        result.err.splitlines()[-1]
    ]
    assert other.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("photos.")) == [
        "photos.sqlite"
    ]
    with sqlite3.connect(other) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("delete",)


def test_status_of_another_programs_database_exits_4(tmp_path: Path) -> None:
    other = tmp_path / "photos.sqlite"
    before = foreign_database(other)
    result = run_tagger("--db", str(other), "status")
    assert result.code == 4 and one_error_line(result) and other.read_bytes() == before


def test_a_file_that_is_no_database_at_all(tagger: Callable[..., Result], tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a database, but long enough to have a header of sixteen bytes\n")
    result = tagger("--db", str(notes), "query")
    assert result.code == 1 and one_error_line(result) and "not a SQLite database" in result.err
    assert notes.read_text().startswith("not a database")


@pytest.fixture
def damaged_db(tagger: Callable[..., Result], tmp_path: Path, photo_dir: Path) -> Path:
    """A real tagger.db with pages in its middle overwritten by garbage."""
    assert tagger("scan", str(photo_dir)).code == 0
    assert len(damage(tmp_path / "tagger.db")) >= 3
    return tmp_path / "tagger.db"


DAMAGE_SEEN_BY = [
    ("query",),
    ("query", "label:cat"),
    ("show", "{photos}/coral_parrot.jpg"),
    ("labels",),
    ("duplicates",),
    ("errors",),
    ("export",),
    ("prune",),
    ("retag",),
    ("db", "status"),
    ("db", "upgrade"),
    ("scan", "{photos}"),
]


@pytest.mark.parametrize("command", DAMAGE_SEEN_BY, ids=" ".join)
def test_a_damaged_database_is_one_line_with_the_way_out(
    damaged_db: Path, photo_dir: Path, command: tuple[str, ...]
) -> None:
    args = [part.replace("{photos}", str(photo_dir)) for part in command]
    result = run_tagger("--db", str(damaged_db), *args)
    assert result.code == 1, result
    assert one_error_line(result), result.err
    assert f"error: the database {damaged_db} is damaged (" in result.err
    assert f"sqlite3 {damaged_db} .recover" in result.err
    assert "SELECT" not in result.err and "Traceback" not in result.err


def test_status_on_a_damaged_database_exits_4(damaged_db: Path) -> None:
    """1 would mean "running but not responding" (README); 4 is "database unreadable"."""
    for fmt in ("table", "json"):
        result = run_tagger("--db", str(damaged_db), "status", "--format", fmt)
        assert result.code == 4 and one_error_line(result) and "is damaged" in result.err
        assert result.out == ""


def test_status_help_documents_exit_4(tagger: Callable[..., Result]) -> None:
    text = " ".join(tagger("status", "--help").out.split())
    assert "4 when the database cannot be read" in text
