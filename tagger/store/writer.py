"""The one thread that writes to the database: the pipeline's operations, grouped into
short transactions, and one-off writes (prune, retag) sent to it as functions."""

from __future__ import annotations

import itertools
import logging
import os
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, and_, delete, or_, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from tagger.errors import TaggerError
from tagger.records import (
    Failure,
    FileInfo,
    Gone,
    Link,
    Moved,
    Seen,
    Swept,
    Tagged,
    utcnow,
)
from tagger.store.database import Store
from tagger.store.schema import File, Image, ImageStatus
from tagger.store.schema import Tag as TagRow

log = logging.getLogger(__name__)
_MAX_RETRY_WAIT = 30.0  # seconds between tries while the database cannot be written
_QUEUE_LIMIT = 4096  # operations waiting for the writer
# How long the writer gathers operations into one transaction. A transaction costs ~4 ms
# of CPU besides its rows: per batch of 4 images that was 2.2 ms an image, a tenth of all.
_GATHER_S = 0.25
Op = Tagged | Failure | Link | Seen | Gone | Moved | Swept
_STOP = object()
T = TypeVar("T")


@dataclass(frozen=True)
class _Call:
    """A one-off write: `fn` runs on the writer thread in a transaction of its own."""

    fn: Callable[[Session], Any]
    future: Future[Any]


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
        self._enqueue(op)

    def submit(self, fn: Callable[[Session], T]) -> Future[T]:
        """Have the writer thread run `fn(session)` in its own transaction, after the
        operations queued before it; the future holds its result or its exception."""
        future: Future[T] = Future()
        self._enqueue(_Call(fn, future))
        return future

    def _enqueue(self, op: Op | _Call) -> None:
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
            group: list[Any] = []
            for op in ops:
                if isinstance(op, _Call):  # the operations queued before it go first
                    self._write_group(group)
                    group = []
                    self._call(op)
                elif op is not _STOP:
                    group.append(op)
            self._write_group(group)
            if ops[-1] is _STOP:
                return

    def _write_group(self, work: list[Any]) -> None:
        if work and self._error is None:
            try:
                self._write_until_done(work)
            except Exception as exc:
                log.error("database write failed: %s", _first_line(exc))
                self._error = exc

    def _call(self, call: _Call) -> None:
        if not call.future.set_running_or_notify_cancel():
            return
        try:
            self.check()
            with Session(self._store.engine) as session, session.begin():
                result = call.fn(session)
        except Exception as exc:  # the caller's to report; the writer goes on
            call.future.set_exception(exc)
        else:
            call.future.set_result(result)

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


def write_once(store: Store, fn: Callable[[Session], T]) -> T:
    """Run one write through a writer of its own: for commands that start no pipeline."""
    with StoreWriter(store) as writer:
        return writer.submit(fn).result()
