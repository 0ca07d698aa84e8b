"""Issue 16, class 10: output that cannot be written is never lost in silence.

Closed stdout (`>&-`) and a full disk (/dev/full) are one `error:` line and exit 1; a
reader that went away (`| head -1`) ends tagger quietly with exit 1, as click (and so
sqlite-utils) does: no traceback, no "Exception ignored"."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.processes import run_in_shell, run_tagger
from tests.helpers import PHOTOS

COPIES = 1500  # about 150 kB of table: more than a pipe holds, so `head` really goes away


@pytest.fixture(scope="module")
def many_rows(tmp_path_factory: pytest.TempPathFactory, artefacts: Path) -> Path:
    """A database with COPIES paths (hard links to one photo: one inference), made once
    for the module by a real `tagger scan` in an environment of its own."""
    root = tmp_path_factory.mktemp("many_rows")
    folder = root / "many"
    folder.mkdir()
    source = folder / "cat.jpg"
    source.write_bytes((PHOTOS / "coral_cat_720p.jpg").read_bytes())
    for i in range(COPIES - 1):
        os.link(source, folder / f"cat_{i:04}.jpg")
    data_dir = root / "xdg-data" / "tagger"
    data_dir.mkdir(parents=True)
    (data_dir / "artefacts").symlink_to(artefacts, target_is_directory=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAGGER_")}
    env |= {"XDG_DATA_HOME": str(root / "xdg-data"), "XDG_CONFIG_HOME": str(root / "xdg")}
    scanned = run_tagger("--db", str(root / "tagger.db"), "scan", str(folder), env=env)
    assert scanned.code == 0, scanned.err
    return root / "tagger.db"


WRITERS = [
    ("query", "--min-score", "0"),
    ("query", "--min-score", "0", "-0"),
    ("query", "--min-score", "0", "--format", "json"),
    ("export",),
    ("export", "--format", "csv"),
    ("labels",),
    ("show", "{many}/cat.jpg"),
    ("duplicates",),
    ("db", "status"),
]


def _args(db: Path, command: tuple[str, ...]) -> list[str]:
    return ["--db", str(db), *(part.replace("{many}", str(db.parent / "many")) for part in command)]


@pytest.mark.parametrize("command", WRITERS, ids=" ".join)
def test_closed_stdout_is_an_error(many_rows: Path, command: tuple[str, ...]) -> None:
    """`tagger query >&-` used to exit 0 with the answer lost; export said AttributeError."""
    result = run_in_shell('"$@" >&-', *_args(many_rows, command))
    assert result.code == 1
    assert result.err == "error: cannot write to standard output: it is closed\n"


@pytest.mark.parametrize("command", WRITERS[:4], ids=" ".join)
def test_a_full_disk_is_an_error(many_rows: Path, command: tuple[str, ...]) -> None:
    with open("/dev/full", "wb") as full:
        result = run_tagger(*_args(many_rows, command), stdout=full)
    assert result.code == 1
    assert result.err == "error: cannot write to standard output: No space left on device\n"


def test_export_to_a_full_disk_names_the_file(many_rows: Path) -> None:
    result = run_tagger("--db", str(many_rows), "export", "-o", "/dev/full")
    assert result.code == 1
    assert result.err == "error: cannot write /dev/full: No space left on device\n"


@pytest.fixture
def reader_gone() -> Iterator[int]:
    """A pipe whose reading end is already closed: every write gets EPIPE at once."""
    read, write = os.pipe()
    os.close(read)
    yield write
    os.close(write)


@pytest.mark.parametrize("command", WRITERS, ids=" ".join)
def test_a_reader_that_went_away_ends_it_quietly(
    many_rows: Path, reader_gone: int, command: tuple[str, ...]
) -> None:
    result = run_tagger(*_args(many_rows, command), stdout=reader_gone)
    assert (result.code, result.err) == (1, "")


def test_query_piped_into_head(many_rows: Path) -> None:
    result = run_in_shell(
        '"$@" | head -1; echo "status ${PIPESTATUS[0]}"', *_args(many_rows, WRITERS[0])
    )
    lines = result.out.splitlines()
    assert lines[0].split() == ["PATH", "LABEL", "SCORE"]
    assert lines[1] in ("status 0", "status 1")  # 0 when all of it fitted the pipe in time
    assert result.err == ""


def test_output_that_can_be_written_is_all_there(many_rows: Path) -> None:
    """Standard output is rewrapped to tag its errors; what it writes must not change."""
    result = run_tagger(*_args(many_rows, ("query", "--min-score", "0", "-0")))
    assert result.code == 0 and result.err == ""
    assert len(result.out.split("\0")) == COPIES + 1 and result.out.endswith("\0")
    utf8 = run_tagger("--db", str(many_rows), "labels", "--lang", "zh", "--format", "json")
    assert utf8.code == 0 and "\\u732b" not in utf8.out and "猫" in utf8.out
