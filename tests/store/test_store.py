"""Migrations and the single writer, on real SQLite files and a real PostgreSQL server."""

from __future__ import annotations

import os
import queue
import shutil
import sqlite3
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from alembic import command
from sqlalchemy import inspect, text
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.orm import Session

from tagger.errors import SchemaError, TaggerError
from tagger.pipeline.batching import END, batches
from tagger.query.language import parse
from tagger.records import (
    Decoded,
    Failure,
    FileInfo,
    Gone,
    Hashed,
    Link,
    ModelId,
    Moved,
    Swept,
    Tag,
    Tagged,
    utcnow,
)
from tagger.store.database import (
    Store,
    alembic_config,
    head_revision,
    make_engine,
    migrations_head,
    schema_revisions,
)
from tagger.store.maintenance import retag
from tagger.store.reports import failures
from tagger.store.writer import StoreWriter, write_once
from tests.helpers import PHOTOS, Result, sql

pytestmark = pytest.mark.both_databases


def test_the_schema_head_written_in_the_code_is_the_migrations_head() -> None:
    """A new migration must update SCHEMA_HEAD in store/database.py (read at every open
    without Alembic)."""
    assert head_revision() == migrations_head()


def test_upgrade_from_empty_to_head(db_url: str) -> None:
    engine = make_engine(db_url)
    assert schema_revisions(engine)[0] is None
    command.upgrade(alembic_config(engine), "head")
    current, head = schema_revisions(engine)
    assert current == head
    assert {"images", "files", "tags", "daemons"} <= set(inspect(engine).get_table_names())
    command.downgrade(alembic_config(engine), "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    engine.dispose()


def test_models_and_migrations_agree(db_url: str) -> None:
    engine = make_engine(db_url)
    config = alembic_config(engine)
    command.upgrade(config, "head")
    command.check(config)  # raises if the tables in tagger/store/schema.py need a new migration
    engine.dispose()


@pytest.mark.sqlite_only
def test_first_use_creates_the_schema_with_sqlite_settings(tmp_path: Path) -> None:
    Store(f"sqlite:///{tmp_path / 'sub' / 'auto.db'}").close()
    with sqlite3.connect(tmp_path / "sub" / "auto.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("SELECT count(*) FROM alembic_version").fetchone()[0] == 1


@pytest.mark.sqlite_only
def test_a_schema_from_elsewhere_is_never_used_silently(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'odd.db'}"
    Store(url).close()
    with sqlite3.connect(tmp_path / "odd.db") as db:
        db.execute("UPDATE alembic_version SET version_num = 'ffffffffffff'")
    with pytest.raises(SchemaError, match="newer than this tagger knows"):
        Store(url)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE photos (id INTEGER)")
    with pytest.raises(SchemaError, match="no tagger schema version"):
        Store(f"sqlite:///{other}")


@pytest.mark.sqlite_only
def test_db_commands(tagger: Callable[..., Result], tmp_path: Path) -> None:
    missing = tagger("db", "status")  # only looks: creates nothing (tests/cli/test_database_use.py)
    assert missing.code == 1 and "no database at" in missing.err
    assert not (tmp_path / "tagger.db").exists()
    assert "->" in tagger("db", "upgrade").out
    assert tagger("db", "status").out.rstrip().endswith("current")
    assert "is current" in tagger("db", "upgrade").out


def test_links_to_content_still_being_tagged_wait_for_it(tmp_path: Path, db_url: str) -> None:
    """A duplicate found while its twin is in the model is stored once the twin is."""
    store = Store(db_url)
    twin = FileInfo(str(tmp_path / "b.jpg"), 10, 1)
    first = Hashed(FileInfo(str(tmp_path / "a.jpg"), 10, 1), "ab" * 32)
    decoded = Decoded(first, np.zeros((2, 2, 3), np.uint8), 2, 2, "JPEG")
    with StoreWriter(store) as writer:
        writer.put(Link(twin, first.sha256))
        writer.put(Tagged(decoded, [Tag("tabby", 281, 0.9, 1)], ModelId("m", "0" * 64)))
    rows = sql(db_url, "SELECT path, image_id FROM files ORDER BY path")
    assert [r[0] for r in rows] == [first.file.path, twin.path] and rows[0][1] == rows[1][1]
    store.close()


def test_one_transaction_of_mixed_operations_reads_what_it_wrote(
    tmp_path: Path, db_url: str
) -> None:
    """The writer reads a group's rows up front; moves and deletes in the middle of the group
    must still see the rows written before them, and the ones after must see theirs."""
    store = Store(db_url)
    model = ModelId("m", "0" * 64)

    def file(name: str) -> FileInfo:
        (tmp_path / name).write_bytes(b"photo")
        return FileInfo(str(tmp_path / name), 5, 1)

    def tagged(name: str, sha: str, label: str) -> Tagged:
        decoded = Decoded(Hashed(file(name), sha * 32), np.zeros((2, 2, 3), np.uint8), 2, 2, "J")
        return Tagged(decoded, [Tag(label, 1, 0.9, 1), Tag("x", 2, 0.1, 2)], model)

    with StoreWriter(store) as writer:
        writer.put(tagged("c.jpg", "cc", "old"))
    with StoreWriter(store) as writer:
        writer._write(  # one group, one transaction, whatever the queue's timing
            [
                tagged("a.jpg", "aa", "tabby"),
                Link(file("b.jpg"), "aa" * 32),
                tagged("c.jpg", "cc", "new"),  # a re-tag: the old ranks make way
                Moved(str(tmp_path / "a.jpg"), str(tmp_path / "d.jpg")),
                tagged("a.jpg", "ff", "new arrival"),  # the old path is another file now
                Link(file("e.jpg"), "aa" * 32),
                Gone(str(tmp_path / "b.jpg")),
            ]
        )
    files = sql(
        db_url,
        "SELECT f.path, i.sha256, f.missing_since IS NOT NULL FROM files f"
        " JOIN images i ON i.id = f.image_id ORDER BY f.path",
    )
    tags = sql(
        db_url,
        "SELECT i.sha256, t.label FROM tags t JOIN images i ON i.id = t.image_id"
        " WHERE t.rank = 1 ORDER BY i.sha256",
    )
    names = [(Path(p).name, sha[:2], missing) for p, sha, missing in files]
    assert names == [
        ("a.jpg", "ff", 0),
        ("b.jpg", "aa", 1),
        ("c.jpg", "cc", 0),
        ("d.jpg", "aa", 0),
        ("e.jpg", "aa", 0),
    ]
    assert tags == [("aa" * 32, "tabby"), ("cc" * 32, "new"), ("ff" * 32, "new arrival")]
    store.close()


def test_a_failed_re_read_keeps_the_tags_an_earlier_model_gave(tmp_path: Path, db_url: str) -> None:
    """Re-tagging with a new model decodes again; if that fails (a lower scan.max_pixels,
    another Pillow), the old tags stay: nothing stored is lost."""
    store = Store(db_url)
    photo = tmp_path / "a.jpg"
    photo.write_bytes(b"photo")
    hashed = Hashed(FileInfo(str(photo), 5, 1), "ab" * 32)
    decoded = Decoded(hashed, np.zeros((2, 2, 3), np.uint8), 2, 2, "JPEG")
    with StoreWriter(store) as writer:
        writer.put(Tagged(decoded, [Tag("tabby", 281, 0.9, 1)], ModelId("old", "0" * 64)))
    with StoreWriter(store) as writer:
        writer.put(Failure(hashed.file, "too many pixels", sha256=hashed.sha256))
    rows = sql(
        db_url,
        "SELECT i.status, i.model, t.label, f.path FROM images i"
        " JOIN tags t ON t.image_id = i.id JOIN files f ON f.image_id = i.id",
    )
    assert rows == [("tagged", "old", "tabby", str(photo))]
    # Listed as an error, and not read again by every rescan until `tagger retag`.
    assert failures(store)[0]["reason"] == "too many pixels (kept the tags old gave before)"
    state = store.image_state(hashed.sha256)
    assert state is not None and state.current(ModelId("new", "1" * 64))
    assert write_once(store, lambda session: retag(session, parse([]), 0.0)) == 1
    state = store.image_state(hashed.sha256)
    assert state is not None and not state.current(ModelId("new", "1" * 64))
    store.close()


def test_batches_fill_up_or_leave_after_max_wait() -> None:
    source: queue.Queue[object] = queue.Queue()
    for item in range(5):
        source.put(item)
    got = batches(source, size=2, max_wait=60)
    assert next(got) == [0, 1] and next(got) == [2, 3]
    # A partial batch leaves after max_wait even though END has not come yet.
    assert next(batches(source, size=2, max_wait=0.05)) == [4]
    source.put(7)
    later = threading.Timer(0.01, source.put, args=(END,))
    later.start()
    assert list(batches(source, size=10, max_wait=60)) == [[7]]
    later.join()


@pytest.mark.sqlite_only
def test_a_new_database_is_private_to_owner_and_group(tmp_path: Path) -> None:
    old = os.umask(0o022)  # a typical umask, which would leave it world-readable
    try:
        store = Store(f"sqlite:///{tmp_path / 'tags.db'}")
        with store.session() as session:
            session.execute(text("SELECT 1"))
        store.close()
    finally:
        os.umask(old)
    for name in ("tags.db", "tags.db-wal", "tags.db-shm"):
        if (tmp_path / name).exists():
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) & 0o007 == 0, name
    assert stat.S_IMODE((tmp_path / "tags.db").stat().st_mode) == 0o640


def test_a_sweep_spares_files_stored_after_its_walk_began(tmp_path: Path, db_url: str) -> None:
    """A file that lands while a long rescan walks elsewhere is not marked missing by it."""
    store = Store(db_url)
    root = tmp_path / "photos"
    root.mkdir()
    model = ModelId("m", "0" * 64)

    def tagged(name: str, sha: str) -> Tagged:
        (root / name).write_bytes(b"photo")
        hashed = Hashed(FileInfo(str(root / name), 10, 1), sha * 32)
        decoded = Decoded(hashed, np.zeros((2, 2, 3), np.uint8), 2, 2, "JPEG")
        return Tagged(decoded, [Tag("tabby", 281, 0.9, 1)], model)

    with StoreWriter(store) as writer:
        writer.put(tagged("old.jpg", "aa"))
        writer.put(tagged("deleted.jpg", "bb"))
    (root / "deleted.jpg").unlink()
    walk_began = utcnow()
    with StoreWriter(store) as writer:
        writer.put(tagged("arrived-during-walk.jpg", "cc"))
        writer.put(Swept(str(root), frozenset({str(root / "old.jpg")}), walk_began))
    missing = sql(db_url, "SELECT path FROM files WHERE missing_since IS NOT NULL")
    assert missing == [(str(root / "deleted.jpg"),)]
    store.close()


def test_one_off_writes_run_on_the_writer_thread_after_what_was_queued(
    tmp_path: Path, db_url: str
) -> None:
    """submit(fn): fn sees the operations queued before it, and its result comes back."""
    store = Store(db_url)
    threads: list[str] = []

    def count_files(session: Session) -> int:
        threads.append(threading.current_thread().name)
        return int(session.scalar(text("SELECT count(*) FROM files")) or 0)

    with StoreWriter(store) as writer:
        writer.put(Failure(FileInfo(str(tmp_path / "a.jpg"), 1, 1), "bad"))
        assert writer.submit(count_files).result(timeout=10) == 1
    assert threads == ["tagger-store-writer"]
    store.close()


def test_a_failing_one_off_write_is_the_callers_error_and_the_writer_goes_on(
    tmp_path: Path, db_url: str
) -> None:
    store = Store(db_url)

    def broken(session: Session) -> None:
        session.execute(text("INSERT INTO no_such_table VALUES (1)"))

    with StoreWriter(store) as writer:
        with pytest.raises((OperationalError, ProgrammingError), match="no_such_table"):
            writer.submit(broken).result(timeout=10)
        writer.put(Failure(FileInfo(str(tmp_path / "b.jpg"), 1, 1), "bad"))
    assert sql(db_url, "SELECT count(*) FROM files") == [(1,)]
    store.close()


def test_a_one_off_write_after_close_is_refused_not_left_waiting(
    tmp_path: Path, db_url: str
) -> None:
    store = Store(db_url)
    writer = StoreWriter(store)
    writer.close()
    with pytest.raises(TaggerError, match="writer has stopped"):
        writer.submit(lambda session: None)
    store.close()


def test_a_one_off_write_that_stops_the_writer_fails_what_waits_behind_it(
    tmp_path: Path, db_url: str
) -> None:
    """A BaseException in a one-off write stops the writer; no caller waits forever."""
    store = Store(db_url)

    def interrupted(session: Session) -> None:
        raise KeyboardInterrupt

    writer = StoreWriter(store)
    first = writer.submit(interrupted)
    with pytest.raises(KeyboardInterrupt):
        first.result(timeout=10)
    with pytest.raises(TaggerError):
        writer.submit(lambda session: None).result(timeout=10)
    with pytest.raises(TaggerError, match="cannot write to the database"):
        writer.close()
    store.close()


def test_one_operation_the_database_refuses_costs_that_file_not_the_group(
    tmp_path: Path, db_url: str
) -> None:
    """A value SQLite cannot hold fails its own file; the rest of the group is stored and
    the writer goes on (before, the whole group was lost and the writer stopped for good)."""
    store = Store(db_url)
    odd = FileInfo(str(tmp_path / "odd.jpg"), 1, 2**64)  # no 64-bit integer holds it
    stop = threading.Event()
    with StoreWriter(store, stop=stop) as writer:
        writer.put(Failure(FileInfo(str(tmp_path / "a.jpg"), 1, 1), "bad"))
        writer.put(Failure(odd, "bad"))
        writer.put(Failure(FileInfo(str(tmp_path / "b.jpg"), 1, 1), "bad"))
    assert not stop.is_set()
    paths = {Path(p).name for (p,) in sql(db_url, "SELECT path FROM files")}
    assert paths == {"a.jpg", "b.jpg"}
    store.close()


def test_a_file_dated_past_2262_is_tagged_like_any_other(
    tagger: Callable[..., Result], tmp_path: Path
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, year_2300 in (("future.jpg", True), ("today.jpg", False)):
        shutil.copy(PHOTOS / "coral_cat_720p.jpg", folder / name)
        if year_2300:
            stamp = 10_413_792_000 * 10**9  # 2300-01-01 in ns: more than 64 bits hold
            os.utime(folder / name, ns=(stamp, stamp))
    scanned = tagger("scan", str(folder))
    assert scanned.code == 0, scanned.err
    assert "2 files: 1 new, 1 duplicate content" in scanned.out
    again = tagger("scan", str(folder))
    assert "2 unchanged" in again.out  # the clamped mtime is stable
