"""The database: engine, schema version checks, and the single writer thread."""

from __future__ import annotations

import itertools
import logging
import os
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    ColumnElement,
    Engine,
    and_,
    create_engine,
    delete,
    event,
    func,
    inspect,
    or_,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from tagger.errors import SchemaError, TaggerError
from tagger.records import Decoded, Failure, FileInfo, Gone, ModelId, Moved, Swept, Tag, utcnow
from tagger.schema import File, Image, ImageStatus
from tagger.schema import Tag as TagRow

log = logging.getLogger(__name__)
_BUSY_TIMEOUT_S = 30
_MAX_RETRY_WAIT = 30.0  # seconds between tries while the database cannot be written
_QUEUE_LIMIT = 4096  # operations waiting for the writer
# How long the writer gathers operations into one transaction. A transaction costs ~4 ms
# of CPU besides its rows: per batch of 4 images that was 2.2 ms an image, a tenth of all.
_GATHER_S = 0.25
_DB_MODE = 0o640


def migrations_dir() -> Path:
    """`migrations/` in a source checkout, `tagger/_migrations` in an installed wheel."""
    packaged = Path(__file__).parent / "_migrations"
    return packaged if packaged.is_dir() else Path(__file__).parent.parent / "migrations"


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes["engine"] = engine
    return config


def make_engine(url: str) -> Engine:
    """An engine; for SQLite: WAL, foreign keys, and waiting (not failing) on a busy database."""
    parsed = make_url(url)
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


def schema_revisions(engine: Engine) -> tuple[str | None, str]:
    """(the database's schema revision, the revision this tagger needs)."""
    head = ScriptDirectory.from_config(alembic_config(engine)).get_current_head()
    assert head is not None
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    return current, head


def upgrade(engine: Engine) -> tuple[str | None, str]:
    """Bring the schema to the newest revision; returns (before, after)."""
    before, head = schema_revisions(engine)
    if before != head:
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

    def current(self, model: ModelId) -> bool:
        """True when nothing is left to do: tagged by this model, known bad content, or
        tagged before but unreadable now (kept as it was until `tagger retag`)."""
        return self.status == ImageStatus.FAILED or self.model == model or self.error is not None


class Store:
    """Opens the database (creating or checking its schema) and answers the pipeline's reads."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        try:
            check_schema(self.engine)
        except SQLAlchemyError as exc:
            raise TaggerError(
                f"cannot open database {url}: {exc.__class__.__name__}: {str(exc).splitlines()[0]}"
            ) from None

    @contextmanager
    def session(self) -> Iterator[Session]:
        with Session(self.engine) as session:
            yield session

    # The pipeline asks these once per file: plain SQL rows, no ORM objects (0.1 ms, not 0.8).
    def file_state(self, path: str) -> FileState | None:
        query = (
            select(File.size, File.mtime_ns, File.missing_since, *_IMAGE_STATE)
            .outerjoin(Image, File.image_id == Image.id)
            .where(File.path == path)
        )
        with self.engine.connect() as connection:
            row = connection.execute(query).one_or_none()
        if row is None:
            return None
        image = _image_state(*row[3:]) if row.status is not None else None
        return FileState(row.size, row.mtime_ns, image, row.missing_since is not None)

    def image_state(self, sha256: str) -> ImageState | None:
        with self.engine.connect() as connection:
            row = connection.execute(
                select(*_IMAGE_STATE).where(Image.sha256 == sha256)
            ).one_or_none()
        return _image_state(*row) if row is not None else None

    def prune(self, dry_run: bool = False) -> tuple[int, int]:
        """Forget missing paths, then content no path holds; returns (files, images)."""
        missing = File.missing_since.is_not(None)
        held = select(File.id).where(File.image_id == Image.id, ~missing).exists()
        with self.session() as session, session.begin():
            images = session.scalar(select(func.count()).select_from(Image).where(~held)) or 0
            files = session.scalar(select(func.count()).select_from(File).where(missing)) or 0
            if not dry_run:
                session.execute(delete(File).where(missing))
                session.execute(delete(Image).where(~held))  # tags go with them (ON DELETE CASCADE)
        return files, images

    def close(self) -> None:
        self.engine.dispose()


_IMAGE_STATE = (Image.status, Image.model, Image.weights_sha256, Image.error)


def _image_state(
    status: str, model: str | None, weights_sha256: str | None, error: str | None
) -> ImageState:
    return ImageState(status, ModelId(model, weights_sha256 or "") if model else None, error)


# What the pipeline asks the writer to record.
@dataclass(frozen=True)
class Tagged:
    decoded: Decoded
    tags: list[Tag]
    model: ModelId


@dataclass(frozen=True)
class Link:
    """A path that holds content already tagged, or being tagged in this run."""

    file: FileInfo
    sha256: str


@dataclass(frozen=True)
class Seen:
    """An unchanged path that had been marked missing and is back."""

    file: FileInfo


Op = Tagged | Failure | Link | Seen | Gone | Moved | Swept
_STOP = object()


class StoreWriter:
    """The one thread that writes to the database, fed by a queue, stopped by a sentinel.

    Each drained group of operations is one short transaction, so a kill loses at most the
    group in flight and never leaves half of one image behind.
    """

    def __init__(self, store: Store, group: int = 256, stop: threading.Event | None = None) -> None:
        self._store = store
        self._stop = stop or threading.Event()
        self._group = group
        # Bounded: when the database stalls (disk full), the pipeline waits instead of piling up.
        self._queue: queue.Queue[object] = queue.Queue(maxsize=_QUEUE_LIMIT)
        self._pending_links: defaultdict[str, list[FileInfo]] = defaultdict(list)
        self._closing = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="tagger-store-writer", daemon=True)
        self._thread.start()

    def put(self, op: Op) -> None:
        """Queue `op`; waits while the queue is full, unless told to stop."""
        while True:
            self.check()
            try:
                self._queue.put(op, timeout=0.5)
                return
            except queue.Full:
                if self._stop.is_set():
                    raise TaggerError("stopped while the database could not be written") from None

    def check(self) -> None:
        """Re-raise, in the caller, a failure of the writer thread."""
        if self._error is not None:
            raise TaggerError(f"cannot write to the database: {self._error}") from self._error

    def close(self) -> None:
        self._closing.set()  # a write that keeps failing now gives up instead of retrying
        self._queue.put(_STOP)
        self._thread.join()
        self.check()

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _run(self) -> None:
        while True:
            ops = [self._queue.get()]
            deadline = time.monotonic() + _GATHER_S
            while ops[-1] is not _STOP and len(ops) < self._group:
                try:
                    ops.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            stop = ops[-1] is _STOP
            work = [op for op in ops if op is not _STOP]
            if work and self._error is None:
                try:
                    self._write_until_done(work)
                except Exception as exc:
                    log.error("database write failed: %s", _first_line(exc))
                    self._error = exc
            if stop:
                return

    def _write_until_done(self, work: list[Any]) -> None:
        """Write one group, riding out what passes: a disk that is full until space is freed,
        a database locked by another tagger, a row another process inserted first."""
        for attempt in itertools.count(1):
            pending = {sha: list(files) for sha, files in self._pending_links.items()}
            try:
                self._write(work)
                if attempt > 1:
                    log.warning("database writes resumed")
                return
            except (IntegrityError, OperationalError) as exc:
                self._pending_links = defaultdict(list, pending)  # undo what the rollback undid
                lost_race = isinstance(exc, IntegrityError) and attempt < 3
                giving_up = self._closing.is_set() or self._stop.is_set()
                if not lost_race and (giving_up or isinstance(exc, IntegrityError)):
                    raise
                delay = 0 if lost_race else min(2.0**attempt, _MAX_RETRY_WAIT)
                if attempt == 1 or delay == _MAX_RETRY_WAIT:
                    log.warning("cannot write to the database (%s); retrying", _first_line(exc))
                deadline = time.monotonic() + delay
                while not giving_up and time.monotonic() < deadline:
                    giving_up = self._closing.wait(0.2) or self._stop.is_set()

    def _write(self, ops: list[Any]) -> None:
        now = utcnow()
        with Session(self._store.engine) as session, session.begin():
            rows = _Rows(session, ops)
            for op in ops:
                if isinstance(op, Gone | Moved | Swept):  # bulk updates, after an autoflush
                    if isinstance(op, Gone):
                        session.execute(
                            update(File)
                            .where(_under(op.path), File.missing_since.is_(None))
                            .values(missing_since=now)
                        )
                    elif isinstance(op, Moved):
                        _move(session, op, now)
                    else:
                        _sweep(session, op, now)
                    rows.forget()
                    continue
                with session.no_autoflush:
                    self._write_one(session, rows, op, now)

    def _write_one(self, session: Session, rows: _Rows, op: Any, now: Any) -> None:
        if isinstance(op, Tagged):
            image = self._upsert_image(
                session, rows, op.decoded.hashed.sha256, op.decoded.hashed.file.size, now
            )
            image.width, image.height = op.decoded.width, op.decoded.height
            image.format = op.decoded.format
            image.model, image.weights_sha256 = op.model.name, op.model.weights_sha256
            image.status, image.error = ImageStatus.TAGGED, None
            if image.id is not None:  # a re-tag: old ranks go first, or (image, rank) clashes
                session.execute(delete(TagRow).where(TagRow.image_id == image.id))
            image.tags = [
                TagRow(
                    label=t.label,
                    class_index=t.class_index,
                    score=t.score,
                    rank=t.rank,
                    wnid=t.wnid,
                    derived=t.derived,
                )
                for t in op.tags
            ]
            self._link_all(rows, image, op.decoded.hashed.file, now)
        elif isinstance(op, Failure) and op.transient:
            if op.sha256 is not None:  # its duplicates are found again next time
                self._pending_links.pop(op.sha256, None)
            if os.path.lexists(op.file.path):  # not a row for a file already gone
                _upsert_file(rows, op.file, None, now, error=op.reason)
        elif isinstance(op, Failure) and op.sha256 is not None:
            known = rows.image(op.sha256)
            if known is not None and known.status == ImageStatus.TAGGED:
                # Tags an earlier model gave are kept: a re-read that fails now (a lower
                # scan.max_pixels, another Pillow) must not erase them. The error says why
                # they are old, and stops rescans from reading the file again.
                known.error = f"{op.reason} (kept the tags {known.model} gave before)"
            else:
                known = self._upsert_image(session, rows, op.sha256, op.file.size, now)
                known.status, known.error = ImageStatus.FAILED, op.reason
                known.tags = []
            self._link_all(rows, known, op.file, now)
        elif isinstance(op, Failure):
            _upsert_file(rows, op.file, None, now, error=op.reason)
        elif isinstance(op, Link):
            found = rows.image(op.sha256)
            if found is None:
                self._pending_links[op.sha256].append(op.file)
            else:
                _upsert_file(rows, op.file, found, now)
        elif isinstance(op, Seen):
            _upsert_file(rows, op.file, None, now, touch_only=True)

    def _upsert_image(
        self, session: Session, rows: _Rows, sha256: str, size: int, now: Any
    ) -> Image:
        image = rows.image(sha256)
        if image is None:
            image = Image(sha256=sha256, size=size, status=ImageStatus.FAILED, tagged_at=now)
            session.add(image)
            rows.images[sha256] = image
        image.tagged_at = now
        return image

    def _link_all(self, rows: _Rows, image: Image, file: FileInfo, now: Any) -> None:
        for each in [file, *self._pending_links.pop(image.sha256, [])]:
            _upsert_file(rows, each, image, now)


_Row = TypeVar("_Row", Image, File)


class _Rows:
    """The images and files one transaction touches, read with a query per 500 keys rather
    than one per operation (each of which also flushed the session): on a scan that was
    most of the writer's time. New rows are added here as they are made."""

    def __init__(self, session: Session, ops: list[Any]) -> None:
        self.session = session
        self.images: dict[str, Image | None] = {}
        self.files: dict[str, File | None] = {}
        shas, paths = set(), set()
        for op in ops:
            if isinstance(op, Tagged):
                shas.add(op.decoded.hashed.sha256)
                paths.add(op.decoded.hashed.file.path)
            elif isinstance(op, Link | Failure):
                if op.sha256 is not None:
                    shas.add(op.sha256)
                paths.add(op.file.path)
            elif isinstance(op, Seen):
                paths.add(op.file.path)
        with session.no_autoflush:
            self._load(self.images, Image.sha256, shas)
            self._load(self.files, File.path, paths)

    def _load(self, into: dict[str, Any], key: Any, wanted: set[str]) -> None:
        ordered = sorted(wanted)
        for start in range(0, len(ordered), 500):
            chunk = ordered[start : start + 500]
            into.update(dict.fromkeys(chunk))
            for row in self.session.scalars(select(key.class_).where(key.in_(chunk))):
                into[getattr(row, key.key)] = row

    def image(self, sha256: str) -> Image | None:
        return self._get(self.images, Image.sha256, sha256)

    def file(self, path: str) -> File | None:
        return self._get(self.files, File.path, path)

    def _get(self, into: dict[str, _Row | None], key: Any, value: str) -> _Row | None:
        if value not in into:
            self._load(into, key, {value})
        return into[value]

    def forget(self) -> None:
        """After a bulk update: what was read may have moved or changed."""
        self.images.clear()
        self.files.clear()


def _upsert_file(
    rows: _Rows,
    file: FileInfo,
    image: Image | None,
    now: Any,
    error: str | None = None,
    touch_only: bool = False,
) -> None:
    row = rows.file(file.path)
    if row is None:
        if touch_only:
            return
        row = File(path=file.path, size=file.size, mtime_ns=file.mtime_ns, first_seen=now)
        rows.session.add(row)
        rows.files[file.path] = row
    row.last_seen, row.missing_since = now, None
    if image is not None and not os.path.lexists(file.path):
        # Deleted or renamed while it was being tagged: its `Gone` was written before this.
        row.missing_since = now
    if touch_only:
        return
    row.size, row.mtime_ns, row.error = file.size, file.mtime_ns, error
    row.image = image


def _under(path: str) -> ColumnElement[bool]:
    """The path itself, or anything below it as a folder (a range scan on the path index)."""
    return or_(File.path == path, and_(File.path > f"{path}/", File.path < f"{path}0"))


def _move(session: Session, op: Moved, now: Any) -> None:
    """Rows under `src` follow the rename; whatever `dst` held before is replaced.

    Nothing under `src` (a file's own event after its folder's, which moved it already):
    nothing to do, and `dst` must be left alone."""
    rows = session.scalars(select(File).where(_under(op.src))).all()
    if not rows:
        return
    session.execute(delete(File).where(_under(op.dst)))
    for row in rows:
        row.path = op.dst + row.path[len(op.src) :]
        row.last_seen, row.missing_since = now, None


def _sweep(session: Session, op: Swept, now: Any) -> None:
    rows = session.execute(
        select(File.id, File.path).where(
            _under(op.root), File.missing_since.is_(None), File.last_seen < op.started
        )
    ).all()
    gone = [row.id for row in rows if row.path not in op.present]
    if gone and not op.present:
        log.warning(
            "found nothing under %s, which held %d files: not marking them missing "
            "(is it mounted?)",
            op.root,
            len(gone),
        )
        return
    for start in range(0, len(gone), 500):
        chunk = gone[start : start + 500]
        session.execute(update(File).where(File.id.in_(chunk)).values(missing_since=now))
    if gone:
        log.info("%d files under %s are gone; marked missing", len(gone), op.root)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
