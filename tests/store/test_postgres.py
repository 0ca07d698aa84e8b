"""What only PostgreSQL has: a locale collation, a server to reach, a driver to install,
advisory locks per folder and the `daemons` table, on the session's real server."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tagger.cli.main import main
from tagger.errors import TaggerError
from tagger.records import Gone, Moved, utcnow
from tagger.store.daemons import DaemonRecord, FolderLocks, beat, claim, daemons, leave
from tagger.store.database import Store
from tagger.store.writer import StoreWriter, write_once
from tests.helpers import Result, sql
from tests.postgres import Cluster


@pytest.fixture
def pg_url(postgres: Cluster) -> Iterator[str]:
    url = postgres.new_database()
    yield url
    postgres.drop_database(url)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> Result:
    capsys.readouterr()
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


def test_the_server_collates_by_locale_but_paths_compare_byte_wise(pg_url: str) -> None:
    """The fixture's server sorts as a locale does (ICU, punctuation ignored): there "/a/b"
    sorts after "/a0", and a folder's range scan would miss it without COLLATE "C"."""
    assert sql(pg_url, "SELECT '/a/b' < '/a0'") == [(False,)]
    store = Store(pg_url)
    assert sql(
        pg_url,
        "SELECT collation_name FROM information_schema.columns"
        " WHERE table_name = 'files' AND column_name = 'path'",
    ) == [("C",)]
    now = utcnow()
    with store.engine.begin() as connection:
        for path in ("/a/b.jpg", "/a/c/d.jpg", "/a0.jpg", "/a-b.jpg", "/A/e.jpg"):
            connection.exec_driver_sql(
                "INSERT INTO files (path, size, mtime_ns, first_seen, last_seen)"
                " VALUES (%(p)s, 1, 1, %(t)s, %(t)s)",
                {"p": path, "t": now},
            )
    with StoreWriter(store) as writer:
        writer.put(Moved("/a/c", "/z/c"))
        writer.put(Gone("/a"))
    assert sql(pg_url, "SELECT path FROM files WHERE missing_since IS NOT NULL") == [("/a/b.jpg",)]
    assert sql(pg_url, "SELECT path FROM files ORDER BY path") == [
        ("/A/e.jpg",),
        ("/a-b.jpg",),
        ("/a/b.jpg",),
        ("/a0.jpg",),
        ("/z/c/d.jpg",),
    ]
    store.close()


def test_db_status_and_upgrade_name_the_server(
    capsys: pytest.CaptureFixture[str], pg_url: str, postgres: Cluster
) -> None:
    empty = run(capsys, "--db", pg_url, "db", "status")
    assert empty.code == 0, empty.err
    assert "server: PostgreSQL 15" in empty.out or "server: PostgreSQL" in empty.out
    assert str(postgres.folder) in empty.out and empty.out.rstrip().endswith("empty")
    query = run(capsys, "--db", pg_url, "query", "label:cat")
    assert query.code == 1 and "no tagger schema in" in query.err  # asking creates nothing
    assert sql(pg_url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]
    assert "->" in run(capsys, "--db", pg_url, "db", "upgrade").out
    assert run(capsys, "--db", pg_url, "db", "status").out.rstrip().endswith("current")
    assert "is current" in run(capsys, "--db", pg_url, "db", "upgrade").out


def test_an_unreachable_server_is_one_line_without_the_password(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url = f"postgresql+psycopg://tagger:s3cret-pw@/tags?host={tmp_path}/nothing-here"
    for args in (["db", "status"], ["query", "label:cat"], ["status"]):
        result = run(capsys, "--db", url, *args)
        assert result.code in (1, 4), result
        assert result.err.startswith(
            f"error: cannot connect to PostgreSQL at {tmp_path}/nothing-here: "
        ), result.err
        assert len(result.err.strip().splitlines()) == 1
        assert "s3cret" not in result.err + result.out


def test_without_psycopg_the_error_says_what_to_install(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [m for m in sys.modules if m == "psycopg" or m.startswith("psycopg.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg: ImportError
    result = run(capsys, "--db", "postgresql+psycopg://u:pw@db.example/tags", "query", "cat")
    assert result.code == 1
    assert result.err.strip() == (
        "error: PostgreSQL needs its driver, psycopg 3: pip install 'tagger[postgres]'"
    )


def test_one_daemon_per_folder_and_the_lock_goes_with_its_connection(pg_url: str) -> None:
    store = Store(pg_url)
    with FolderLocks(store, ["/photos/a"]) as first, FolderLocks(store, ["/photos/b"]):
        with pytest.raises(TaggerError, match="already watching /photos/b on this database"):
            FolderLocks(store, ["/photos/c", "/photos/b"]).__enter__()
        with pytest.raises(TaggerError, match="already watching /photos/a"):
            FolderLocks(store, ["/photos/a"]).__enter__()
        with FolderLocks(store, ["/photos/c"]):  # let go when the refused one gave up
            pass
        assert first.alive()
    with FolderLocks(store, ["/photos/a"]):  # free again
        pass
    store.close()


def test_the_daemons_table_lists_each_daemon_and_a_successor_claims_a_dead_ones_rows(
    pg_url: str,
) -> None:
    store = Store(pg_url)
    one, two = DaemonRecord(["/nas1/photos"]), DaemonRecord(["/nas2/photos", "/nas2/scans"])
    status = {"pid": 1, "state": "watching", "counts": {"new": 3}}
    write_once(store, lambda session: beat(session, one, status))
    write_once(store, lambda session: beat(session, two, status | {"pid": 2}))
    listed = daemons(store)
    assert [d["roots"] for d in listed] == [one.roots, two.roots]
    assert all(d["heartbeat_age"] is not None and d["heartbeat_age"] < 60 for d in listed)
    assert listed[1]["pid"] == 2 and listed[1]["counts"] == {"new": 3}
    successor = DaemonRecord(["/nas2/scans"])  # took over a folder of `two`: it died
    assert write_once(store, lambda session: claim(session, successor)) == 1
    write_once(store, lambda session: leave(session, one.id))
    assert daemons(store) == []
    store.close()


def test_status_lists_every_daemon_of_a_shared_database(
    capsys: pytest.CaptureFixture[str], pg_url: str
) -> None:
    nothing = run(capsys, "--db", pg_url, "status")
    assert nothing.code == 3 and "not created yet" in nothing.out
    store = Store(pg_url)
    record = DaemonRecord(["/nas1/photos"], host="nas1")
    status = {"pid": 7, "state": "watching", "counts": {"new": 3, "duplicate": 1}}
    write_once(store, lambda session: beat(session, record, status))
    shown = run(capsys, "--db", pg_url, "status")
    assert shown.code == 0, shown
    assert "1 tagger watch running on this database:" in shown.out
    assert "nas1 (pid 7), watching" in shown.out and "watching:       /nas1/photos" in shown.out
    sql(pg_url, "UPDATE daemons SET heartbeat = now() - interval '5 minutes'")
    stale = run(capsys, "--db", pg_url, "status")
    assert stale.code == 1 and "NOT RESPONDING" in stale.out
    assert re.search(r"last heartbeat: 30\ds ago", stale.out), stale.out
    store.close()


def test_folder_locks_lost_with_their_connection_are_taken_again(pg_url: str) -> None:
    """A server restart or a network cut ends the connection, and the locks with it."""
    store = Store(pg_url)
    cut = (  # and wait (up to 10 s) until it has ended
        "SELECT pg_terminate_backend(pid, 10000) FROM pg_locks WHERE locktype = 'advisory'"
    )
    with FolderLocks(store, ["/photos/a"]) as locks:
        sql(pg_url, cut)
        assert not locks.alive()
        locks.keep()
        assert locks.alive()
        with pytest.raises(TaggerError, match="already watching /photos/a"):
            FolderLocks(store, ["/photos/a"]).__enter__()
        sql(pg_url, cut)
        with FolderLocks(store, ["/photos/a"]), pytest.raises(TaggerError, match="/photos/a"):
            locks.keep()  # another daemon took the folder meanwhile: this one must stop
    store.close()


def test_a_plain_postgresql_url_means_psycopg_3(pg_url: str) -> None:
    plain = pg_url.replace("postgresql+psycopg://", "postgresql://")
    store = Store(plain)
    assert store.engine.dialect.driver == "psycopg"
    store.close()


def test_a_folder_inside_a_live_daemons_folder_is_refused(pg_url: str) -> None:
    store = Store(pg_url)
    other = DaemonRecord(["/srv/photos"], host="nas1")
    write_once(store, lambda session: beat(session, other, {"pid": 1, "state": "watching"}))
    for nested in ("/srv/photos/2024", "/srv"):
        with pytest.raises(TaggerError, match=f"{nested} overlaps /srv/photos, which tagger"):
            FolderLocks(store, [nested]).__enter__()
    with FolderLocks(store, ["/srv/photos-2"]):  # a neighbour, not inside
        pass
    sql(pg_url, "UPDATE daemons SET heartbeat = now() - interval '5 minutes'")
    with FolderLocks(store, ["/srv/photos/2024"]):  # that daemon is gone
        pass
    store.close()
