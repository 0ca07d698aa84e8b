"""The database: engine, schema version checks, and the reads the pipeline makes per file.

Writes go through store/writer.py, the one thread that writes."""

from __future__ import annotations

import logging
import os
import shlex
import sqlite3
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

from sqlalchemy import (
    Engine,
    bindparam,
    create_engine,
    event,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session

from tagger.errors import SchemaError, TaggerError
from tagger.records import ModelId
from tagger.store.rows import under
from tagger.store.schema import Embedding, File, Image, ImageStatus

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger(__name__)
# The schema revision this tagger needs: the head of migrations/, written out so that
# opening a database imports no Alembic and reads no migration (a third of a query's
# start-up); tests/store/test_store.py checks that the two agree.
SCHEMA_HEAD = "ad06c2adb4fa"
T = TypeVar("T")
_BUSY_TIMEOUT_S = 30
_DB_MODE = 0o640
_SQLITE_HEADER = b"SQLite format 3\x00"
_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26  # SQLite's result codes for a damaged file
_SCHEMA_LOCK = 0x7A6768  # PostgreSQL advisory lock of schema changes (folders: daemons.py)


class NoDatabase(TaggerError):
    """A command that only reads was pointed at a database that is not there."""


class DamagedDatabase(TaggerError):
    """SQLite says the file is damaged: no retry helps, only a recovery."""


def sqlite_file(url: str) -> Path | None:
    """The file a SQLite URL names; None for other databases and in-memory ones."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def damage(exc: BaseException | None) -> str | None:
    """What SQLite said if `exc`, or an error that led to it, means a damaged file."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        for candidate in (exc, getattr(exc, "orig", None)):  # SQLAlchemy wraps the driver's
            code = getattr(candidate, "sqlite_errorcode", 0) & 0xFF
            if isinstance(candidate, sqlite3.DatabaseError) and code in (
                _SQLITE_CORRUPT,
                _SQLITE_NOTADB,
            ):
                return str(candidate)
        exc = exc.__cause__ or exc.__context__
    return None


def damaged(where: Path | str, detail: str) -> DamagedDatabase:
    """The one line for a damaged database, with the way out."""
    name = shlex.quote(str(where))
    # quick_check answers "*** in database main ***" and then a line per problem
    lines = [line.strip() for line in detail.splitlines() if not line.startswith("***")]
    detail = "; ".join(line for line in lines[:2] if line) or "quick_check failed"
    return DamagedDatabase(
        f"the database {where} is damaged ({detail}); stop tagger, keep a copy, then try "
        f"`sqlite3 {name} .recover | sqlite3 recovered.db` (or move it away and scan again)"
    )


@contextmanager
def _read_only(path: Path) -> Iterator[sqlite3.Connection]:
    """A connection that cannot change the file: no WAL switch, no journal, no lock kept."""
    try:
        uri = f"file:{quote(str(path))}?mode=ro"
    except UnicodeEncodeError:
        raise TaggerError(f"cannot open database {path!r}: its name is not UTF-8") from None
    try:
        connection = sqlite3.connect(uri, uri=True, timeout=_BUSY_TIMEOUT_S)
        try:
            yield connection
        finally:
            connection.close()
    except sqlite3.Error as exc:
        detail = damage(exc)
        if detail is not None:
            raise damaged(path, detail) from None
        raise TaggerError(f"cannot open database {path}: {exc}") from None


def peek(path: Path) -> str | None:
    """The schema revision of an existing SQLite file, read without changing anything.

    Another program's database must be refused before tagger's first connection turns it
    to WAL mode, so this looks with a read-only connection of its own. An empty file is a
    new database (SQLite treats it so)."""
    try:
        with path.open("rb") as file:
            header = file.read(len(_SQLITE_HEADER))
    except OSError as exc:
        raise TaggerError(f"cannot open database {path}: {exc.strerror}") from None
    if not header:
        return None
    if header != _SQLITE_HEADER:
        raise SchemaError(
            f"{path} is not a SQLite database: check --db (if it was tagger's, it is damaged:"
            f" try `sqlite3 {shlex.quote(str(path))} .recover`)"
        )
    with _read_only(path) as connection:
        tables = {
            name
            for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        revision = None
        if "alembic_version" in tables:
            row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
            revision = None if row is None else str(row[0])
    if revision is None and {t for t in tables if not t.startswith("sqlite_")} - {
        "alembic_version"
    }:
        raise SchemaError(
            f"{path} holds tables but no tagger schema version; is it a tagger database?"
        )
    return revision


def verify_intact(path: Path) -> None:
    """Refuse a damaged file (`PRAGMA quick_check`: a read of every page; for the commands
    that look after the database, not for every query)."""
    with _read_only(path) as connection:
        try:
            verdict = connection.execute("PRAGMA quick_check(1)").fetchone()
        except sqlite3.DatabaseError as exc:
            raise damaged(path, damage(exc) or str(exc)) from None
    if verdict is None or verdict[0] != "ok":
        raise damaged(path, str(verdict[0]) if verdict else "no answer to quick_check")


def migrations_dir() -> Path:
    """`migrations/` in a source checkout, `tagger/_migrations` in an installed wheel."""
    package = Path(__file__).parents[1]
    packaged = package / "_migrations"
    return packaged if packaged.is_dir() else package.parent / "migrations"


def alembic_config(engine: Engine) -> Config:
    from alembic.config import Config

    config = Config(stdout=sys.stdout)  # now: its default is the stdout of its first import
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes["engine"] = engine
    return config


def make_engine(url: str) -> Engine:
    """An engine; for SQLite: WAL, foreign keys, and waiting (not failing) on a busy database."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        if parsed.drivername == "postgresql":  # psycopg 3 (SQLAlchemy 2.0 would pick psycopg2)
            parsed = parsed.set(drivername="postgresql+psycopg")
        # UTC, as SQLite stores it; a pre-ping finds a server restarted under a daemon, and
        # the timeouts a network cut (a daemon's main loop must not hang on a dead socket).
        return create_engine(
            parsed,
            pool_pre_ping=True,
            connect_args={
                "options": "-c timezone=UTC",
                "connect_timeout": 10,
                "tcp_user_timeout": 30_000,
                "keepalives_idle": 30,
            },
        )
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url)
    if parsed.database and parsed.database != ":memory:":
        path = Path(parsed.database)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():  # owner and group only; SQLite's -wal and -shm copy the mode
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, _DB_MODE))
    engine = create_engine(url, connect_args={"timeout": _BUSY_TIMEOUT_S})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_S * 1000}")
        cursor.close()

    return engine


def head_revision() -> str:
    """The schema revision this tagger needs."""
    return SCHEMA_HEAD


def migrations_head() -> str:
    """The head of migrations/, as Alembic reads it."""
    from alembic.script import ScriptDirectory

    config = alembic_config(create_engine("sqlite://"))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


def schema_revisions(engine: Engine) -> tuple[str | None, str]:
    """(the database's schema revision, the revision this tagger needs)."""
    with engine.connect() as connection:
        current = None
        if inspect(connection).has_table("alembic_version"):
            row = connection.execute(text("SELECT version_num FROM alembic_version")).first()
            current = None if row is None else str(row[0])
    return current, head_revision()


def database_revisions(url: str) -> tuple[str | None, str]:
    """`schema_revisions` for `tagger db status`: creates nothing, changes nothing, and
    refuses a missing, foreign or damaged SQLite file."""
    path = sqlite_file(url)
    if path is None:
        return _opened(url, schema_revisions)
    if not path.exists():
        raise no_database(path)
    current = peek(path)
    verify_intact(path)
    return current, head_revision()


def describe_server(url: str) -> str | None:
    """For `tagger db status`: the server's version and where it is; None for SQLite."""
    if make_url(url).get_backend_name() != "postgresql":
        return None

    def ask(engine: Engine) -> str:
        with engine.connect() as connection:
            version = connection.scalar(text("SHOW server_version"))
            name = connection.scalar(text("SELECT current_database()"))
        return f"PostgreSQL {str(version).split()[0]} at {server_of(url)}, database {name}"

    return _opened(url, ask)


def upgrade_database(url: str) -> tuple[str | None, str]:
    """`upgrade` for `tagger db upgrade`: a new database is created; a foreign or damaged
    SQLite file is refused before anything is written to it."""
    path = sqlite_file(url)
    if path is not None and path.exists():
        peek(path)
        verify_intact(path)
    return _opened(url, _upgrade_alone)


def _upgrade_alone(engine: Engine) -> tuple[str | None, str]:
    with _migrating_alone(engine):
        return upgrade(engine)


def no_database(path: Path) -> NoDatabase:
    return NoDatabase(f"no database at {path}; run tagger scan or tagger watch first")


def _opened(url: str, use: Callable[[Engine], T]) -> T:
    """`use(engine)` on a new engine, its errors as one TaggerError naming the database."""
    try:
        engine = make_engine(url)
    except ImportError as exc:  # the URL's driver: psycopg, pymysql, ...
        raise missing_driver(url, exc) from None
    try:
        return use(engine)
    except SQLAlchemyError as exc:
        raise cannot_open(url, exc) from None
    finally:
        engine.dispose()


def missing_driver(url: str, exc: ImportError) -> TaggerError:
    if make_url(url).get_backend_name() == "postgresql":
        return TaggerError("PostgreSQL needs its driver, psycopg 3: pip install 'tagger[postgres]'")
    return TaggerError(
        f"cannot open database {url}: its driver is not installed (pip install {exc.name})"
    )


def server_of(url: str) -> str:
    """Where a PostgreSQL URL points: host:port, or the socket folder (`?host=/run/...`)."""
    parsed = make_url(url)
    host = parsed.host or parsed.query.get("host") or "the local socket"
    if isinstance(host, tuple):  # several hosts: libpq tries each
        host = ",".join(host)
    return f"{host}:{parsed.port}" if parsed.port else str(host)


def cannot_open(url: str, exc: SQLAlchemyError) -> TaggerError:
    detail = damage(exc)
    if detail is not None:
        return damaged(sqlite_file(url) or url, detail)
    cause = exc.orig if isinstance(exc, DBAPIError) else exc
    first = (str(cause).strip().splitlines() or [""])[0]
    postgresql = make_url(url).get_backend_name() == "postgresql"
    if postgresql and isinstance(exc, DBAPIError) and type(cause).__name__ == "OperationalError":
        return TaggerError(f"cannot connect to PostgreSQL at {server_of(url)}: {first}")
    return TaggerError(f"cannot open database {url}: {type(cause).__name__}: {first}")


@contextmanager
def _migrating_alone(engine: Engine) -> Iterator[None]:
    """On PostgreSQL, daemons on several machines may start at once on a new database: an
    advisory lock lets one of them create the schema while the others wait, then find it.
    (SQLite's write lock does this for a file.)"""
    if engine.dialect.name != "postgresql":
        yield
        return
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("SELECT pg_advisory_lock(:space, 0)"), {"space": _SCHEMA_LOCK})
        try:
            yield
        finally:
            connection.execute(
                text("SELECT pg_advisory_unlock(:space, 0)"), {"space": _SCHEMA_LOCK}
            )


def upgrade(engine: Engine) -> tuple[str | None, str]:
    """Bring the schema to the newest revision; returns (before, after)."""
    before, head = schema_revisions(engine)
    if before != head:
        from alembic import command

        command.upgrade(alembic_config(engine), "head")
    return before, head


def check_schema(engine: Engine) -> None:
    """Create the schema of a new database; refuse one whose schema is not the current one."""
    current, head = schema_revisions(engine)
    if current == head:
        return
    if current is None:
        if set(inspect(engine).get_table_names()) - {"alembic_version"}:
            raise SchemaError(
                f"{engine.url.database or engine.url} holds tables but no "
                "tagger schema version; is it a tagger database?"
            )
        upgrade(engine)
        return
    from alembic.script import ScriptDirectory

    known = {
        rev.revision for rev in ScriptDirectory.from_config(alembic_config(engine)).walk_revisions()
    }
    if current not in known:
        raise SchemaError(
            f"the database schema ({current}) is newer than this tagger knows; upgrade tagger"
        )
    raise SchemaError(
        f"the database schema is out of date ({current}, needs {head}): back it up, "
        "then run `tagger db upgrade`"
    )


@dataclass(frozen=True)
class FileState:
    size: int
    mtime_ns: int
    image: ImageState | None
    missing: bool


@dataclass(frozen=True)
class ImageState:
    status: str
    model: ModelId | None
    error: str | None = None
    embedded: bool = True

    def current(self, model: ModelId) -> bool:
        """True when nothing is left to do: tagged by this model with its embedding stored,
        known bad content, or tagged before but unreadable now (kept as it was until
        `tagger retag`). Content tagged before embeddings were stored is analysed again."""
        if self.status == ImageStatus.FAILED or self.error is not None:
            return True
        return self.model == model and self.embedded


class Store:
    """Opens the database (creating or checking its schema) and answers the pipeline's reads.

    With `create=False` (the commands that only read) a missing SQLite file is an error,
    not a new empty database; an existing one is looked at read-only first, so another
    program's file is refused before anything is changed in it."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        self.url = url
        path = sqlite_file(url)
        if path is not None and path.exists():
            peek(path)
        elif path is not None and not create:
            raise no_database(path)
        try:
            self.engine = make_engine(url)
        except ImportError as exc:
            raise missing_driver(url, exc) from None
        try:
            if path is None and not create and schema_revisions(self.engine)[0] is None:
                self.engine.dispose()
                raise NoDatabase(
                    f"no tagger schema in {make_url(url).render_as_string(hide_password=True)};"
                    " run tagger scan, tagger watch or tagger db upgrade first"
                )
            with _migrating_alone(self.engine):
                check_schema(self.engine)
        except SQLAlchemyError as exc:
            self.engine.dispose()
            raise cannot_open(url, exc) from None

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session for reading; every write goes through the writer (store/writer.py)."""
        with Session(self.engine) as session:
            yield session

    # The pipeline asks these once per file: plain SQL rows, no ORM objects, from statements
    # built once (`_FILE_STATE`, `_IMAGE_STATE_OF`).
    def file_state(self, path: str) -> FileState | None:
        with self.engine.connect() as connection:
            row = connection.execute(_FILE_STATE, {"path": path}).one_or_none()
        if row is None:
            return None
        image = _image_state(*row[3:]) if row.status is not None else None
        return FileState(row.size, row.mtime_ns, image, row.missing_since is not None)

    def unchanged_candidates(self, root: str, model: ModelId) -> dict[str, tuple[int, int]]:
        """(size, mtime_ns) of each present path under `root` whose content needs nothing
        more from `model`: one query, so that a rescan skips a file that still looks like
        this without asking about each (`file_state`, per file, was most of its cost)."""
        query = (
            select(File.path, File.size, File.mtime_ns, *_IMAGE_STATE)
            .join(Image, File.image_id == Image.id)
            .outerjoin(Embedding, Embedding.image_id == Image.id)
            .where(under(root), File.missing_since.is_(None))
        )
        verdicts: dict[tuple[Any, ...], bool] = {}  # few distinct image states: ask each once
        found = {}
        with self.engine.connect() as connection:
            for path, size, mtime_ns, status, name, weights, error, embedded in connection.execute(
                query
            ):
                key = (status, name, weights, error, embedded)
                current = verdicts.get(key)
                if current is None:
                    state = _image_state(status, name, weights, error, embedded)
                    current = verdicts[key] = state.current(model)
                if current:
                    found[path] = (size, mtime_ns)
        return found

    def image_state(self, sha256: str) -> ImageState | None:
        with self.engine.connect() as connection:
            row = connection.execute(_IMAGE_STATE_OF, {"sha256": sha256}).one_or_none()
        return _image_state(*row) if row is not None else None

    def close(self) -> None:
        self.engine.dispose()


_IMAGE_STATE = (
    Image.status,
    Image.model,
    Image.weights_sha256,
    Image.error,
    Embedding.id.is_not(None).label("embedded"),
)

# Built once: building the statement was most of a lookup's cost (0.25 ms of CPU, now 0.03).
_FILE_STATE = (
    select(File.size, File.mtime_ns, File.missing_since, *_IMAGE_STATE)
    .outerjoin(Image, File.image_id == Image.id)
    .outerjoin(Embedding, Embedding.image_id == Image.id)
    .where(File.path == bindparam("path"))
)
_IMAGE_STATE_OF = (
    select(*_IMAGE_STATE)
    .outerjoin(Embedding, Embedding.image_id == Image.id)
    .where(Image.sha256 == bindparam("sha256"))
)


def _image_state(
    status: str, model: str | None, weights_sha256: str | None, error: str | None, embedded: bool
) -> ImageState:
    model_id = ModelId(model, weights_sha256 or "") if model else None
    return ImageState(status, model_id, error, bool(embedded))
