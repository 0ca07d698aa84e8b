"""The one thread that writes to the database: the pipeline's operations, grouped into
short transactions, and one-off writes (prune, retag) sent to it as functions."""

from __future__ import annotations

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

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from tagger.errors import TaggerError
from tagger.records import (
    Failure,
    FileInfo,
    Gone,
    Link,
    ModelId,
    Moved,
    Seen,
    Swept,
    Tag,
    Tagged,
    utcnow,
)
from tagger.store.database import Store
from tagger.store.own import OwnModel, own_models, own_tags
from tagger.store.rows import Rows, forget_tags, insert_tags, move, sweep, under, upsert_file
from tagger.store.schema import File, Image, ImageStatus
from tagger.store.vectors import Vector, forget_embedding, insert_embeddings

log = logging.getLogger(__name__)
_MAX_RETRY_WAIT = 30.0  # seconds between tries while the database cannot be written
_QUEUE_LIMIT = 4096  # operations waiting for the writer
# How long the writer gathers operations into one transaction. A transaction costs ~4 ms
# of CPU besides its rows: per batch of 4 images that was 2.2 ms an image, a tenth of all.
# It stops gathering sooner when nothing more arrives for _IDLE_S: a photo dropped into an
# idle folder is then stored at once, while a scan's batches still share transactions.
_GATHER_S = 0.25
_IDLE_S = 0.08
Op = Tagged | Failure | Link | Seen | Gone | Moved | Swept
_STOP = object()
# SQLite's own wait for another process's write lock cannot be interrupted: the writer waits
# in short steps instead, each of this many ms, so that a stop is heard within one step.
_LOCK_STEP_MS = 250
_LOCK_WAIT_S = 30.0  # in all, as long as the engine's busy timeout, before it is an error
T = TypeVar("T")


@dataclass(frozen=True)
class _Analysed:
    """What a transaction stores for a tagged image once the image has its row id."""

    image: Image
    tags: list[Tag]
    model: ModelId
    vector: Vector | None


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

    def __init__(
        self,
        store: Store,
        group: int = 256,
        stop: threading.Event | None = None,
        on_commit: Callable[[list[Op]], object] | None = None,
    ) -> None:
        """`on_commit` is told, on this thread, each group of operations once it is stored
        (the sidecars follow the database this way); what it raises is logged, not fatal."""
        self._store = store
        self._on_commit = on_commit
        self._stop = stop or threading.Event()
        self._group = group
        # Bounded: when the database stalls (disk full), the pipeline waits instead of piling up.
        self._queue: queue.Queue[object] = queue.Queue(maxsize=_QUEUE_LIMIT)
        self._pending_links: defaultdict[str, list[FileInfo]] = defaultdict(list)
        self._own: dict[ModelId, list[OwnModel]] = {}
        self._closing = threading.Event()
        self._error: BaseException | None = None
        self._dropped = 0  # operations not stored because a stop came while the database was locked
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
            if self._closing.is_set() or not self._thread.is_alive():
                raise TaggerError("the database writer has stopped")
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
        try:
            self._serve()
        finally:  # a one-off write still queued must not leave its caller waiting forever
            while True:
                try:
                    op = self._queue.get_nowait()
                except queue.Empty:
                    break
                if isinstance(op, _Call) and op.future.set_running_or_notify_cancel():
                    op.future.set_exception(TaggerError("the database writer has stopped"))

    def _serve(self) -> None:
        while True:
            ops = [self._queue.get()]
            deadline = time.monotonic() + _GATHER_S
            # A one-off write has someone waiting for it: it ends the gathering.
            while (
                ops[-1] is not _STOP and not isinstance(ops[-1], _Call) and len(ops) < self._group
            ):
                wait = min(_IDLE_S, deadline - time.monotonic())
                try:
                    ops.append(self._queue.get(timeout=max(0.0, wait)))
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
        """Write a group; when it fails for a reason that is not the database's, write its
        operations one by one, so that one odd value costs one file, not the group."""
        if not work or self._error is not None:
            return
        if self._dropped:
            self._dropped += len(work)
            return
        try:
            self._write_until_done(work)
        except OperationalError as exc:  # the database itself: nothing more can be stored
            if self._stop.is_set() and _locked(exc):
                # Not an error: what was not stored is found again by the next reconcile.
                log.warning(
                    "stopping while another process holds the database's write lock: "
                    "the rest is stored at the next start"
                )
                self._dropped = len(work)
                return
            self._fail(exc)
        except Exception as exc:
            if len(work) > 1:
                for op in work:
                    self._write_group([op])
            else:
                self._refuse(work[0], exc)

    def _refuse(self, op: Op, exc: Exception) -> None:
        """Record the one operation the database would not take as its file's failure."""
        file = op.decoded.hashed.file if isinstance(op, Tagged) else getattr(op, "file", None)
        reason = f"cannot be stored: {type(exc).__name__}: {_first_line(exc)}"
        log.error("%s %s", getattr(file, "path", type(op).__name__), reason)
        if isinstance(file, FileInfo) and not isinstance(op, Failure):
            try:
                self._write_until_done([Failure(file, reason)])
                return
            except Exception as again:
                exc = again
        if isinstance(exc, OperationalError | IntegrityError):
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        """The writer cannot go on: say so, and stop the run (the daemon exits non-zero)."""
        log.error("database write failed: %s", _first_line(exc))
        self._error = exc
        self._stop.set()

    def _committed(self, work: list[Op]) -> None:
        if self._on_commit is None:
            return
        try:
            self._on_commit(work)
        except Exception as exc:
            log.warning("after a database write: %s: %s", type(exc).__name__, exc)

    def _call(self, call: _Call) -> None:
        if not call.future.set_running_or_notify_cancel():
            return
        try:
            self.check()
            with Session(self._store.engine) as session, session.begin():
                result = call.fn(session)
        except Exception as exc:  # the caller's to report; the writer goes on
            call.future.set_exception(exc)
        except BaseException as exc:  # not an error of the write: the writer stops here
            self._error = exc
            call.future.set_exception(exc)
        else:
            call.future.set_result(result)

    def _write_until_done(self, work: list[Any]) -> None:
        """Write one group, riding out what passes: a disk that is full until space is freed,
        a database locked by another tagger, a row another process inserted first."""
        lock_deadline = time.monotonic() + _LOCK_WAIT_S
        attempt = 0
        while True:
            pending = {sha: list(files) for sha, files in self._pending_links.items()}
            try:
                self._write(work)
                if attempt > 0:
                    log.warning("database writes resumed")
                self._committed(work)
                return
            except (IntegrityError, OperationalError) as exc:
                self._pending_links = defaultdict(list, pending)  # undo what the rollback undid
                waiting = _locked(exc) and time.monotonic() < lock_deadline
                if waiting and not self._stop.is_set():
                    continue  # each try waited one step: as SQLite's busy timeout would
                attempt += 1
                lost_race = _lost_race(exc) and attempt < 3
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
            raw = None
            if self._store.engine.dialect.name == "sqlite":
                raw = session.connection().connection.dbapi_connection
            if raw is not None:
                raw.execute(f"PRAGMA busy_timeout = {_LOCK_STEP_MS}")
            try:
                self._write_ops(session, ops, now)
                session.flush()  # every write here, so only a step is waited for the lock
            finally:
                if raw is not None:
                    raw.execute(f"PRAGMA busy_timeout = {int(_LOCK_WAIT_S * 1000)}")

    def _write_ops(self, session: Session, ops: list[Any], now: Any) -> None:
        rows = Rows(session, ops)
        self._own = {}  # labels of one's own, read once a transaction
        analysed: dict[str, _Analysed] = {}
        for op in ops:
            if isinstance(op, Gone | Moved | Swept):  # bulk updates, after an autoflush
                if isinstance(op, Gone):
                    session.execute(
                        update(File)
                        .where(under(op.path), File.missing_since.is_(None))
                        .values(missing_since=now)
                    )
                elif isinstance(op, Moved):
                    move(session, op, now)
                else:
                    sweep(session, op, now)
                rows.forget()
                continue
            with session.no_autoflush:
                self._write_one(session, rows, op, now, analysed)
        if analysed:  # one statement a table: the ORM's INSERT a row was most of the writing
            session.flush()  # the new images get their ids
            found = analysed.values()
            insert_tags(session, [(each.image.id, each.tags) for each in found])
            insert_embeddings(
                session,
                [
                    (each.image.id, each.model, each.vector)
                    for each in found
                    if each.vector is not None
                ],
            )

    def _write_one(
        self, session: Session, rows: Rows, op: Any, now: Any, analysed: dict[str, _Analysed]
    ) -> None:
        if isinstance(op, Tagged):
            sha256 = op.decoded.hashed.sha256
            image = self._upsert_image(session, rows, sha256, op.decoded.hashed.file.size, now)
            image.width, image.height = op.decoded.width, op.decoded.height
            image.format = op.decoded.format
            image.model, image.weights_sha256 = op.model.name, op.model.weights_sha256
            image.status, image.error = ImageStatus.TAGGED, None
            if image.id is not None:  # a re-tag: old ranks go first, or (image, rank) clashes
                forget_tags(session, image.id)
                if op.embedding is not None:
                    forget_embedding(session, image.id)
            tags = list(op.tags)
            if op.embedding is not None:
                if op.model not in self._own:
                    self._own[op.model] = own_models(session, op.model)
                tags += own_tags(self._own[op.model], op.embedding)
            analysed[sha256] = _Analysed(image, tags, op.model, op.embedding)
            self._link_all(rows, image, op.decoded.hashed.file, now)
        elif isinstance(op, Failure) and op.transient:
            if op.sha256 is not None:  # its duplicates are found again next time
                self._pending_links.pop(op.sha256, None)
            if os.path.lexists(op.file.path):  # not a row for a file already gone
                upsert_file(rows, op.file, None, now, error=op.reason)
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
            upsert_file(rows, op.file, None, now, error=op.reason)
        elif isinstance(op, Link):
            found = rows.image(op.sha256)
            if found is None:
                self._pending_links[op.sha256].append(op.file)
            else:
                upsert_file(rows, op.file, found, now)
        elif isinstance(op, Seen):
            upsert_file(rows, op.file, None, now, touch_only=True)

    def _upsert_image(
        self, session: Session, rows: Rows, sha256: str, size: int, now: Any
    ) -> Image:
        image = rows.image(sha256)
        if image is None:
            image = Image(sha256=sha256, size=size, status=ImageStatus.FAILED, tagged_at=now)
            session.add(image)
            rows.images[sha256] = image
        image.tagged_at = now
        return image

    def _link_all(self, rows: Rows, image: Image, file: FileInfo, now: Any) -> None:
        for each in [file, *self._pending_links.pop(image.sha256, [])]:
            upsert_file(rows, each, image, now)


def _locked(exc: BaseException) -> bool:
    """Another process holds SQLite's write lock (PostgreSQL waits for row locks itself:
    its conflicts are `_lost_race`)."""
    return isinstance(exc, OperationalError) and "locked" in str(getattr(exc, "orig", exc))


def _lost_race(exc: BaseException) -> bool:
    """Another process wrote the same rows first: a unique key taken (both databases), or,
    on PostgreSQL, a deadlock or serialization failure (SQLSTATE class 40). Tried again
    at once: the next try reads what the other wrote."""
    if isinstance(exc, IntegrityError):
        return True
    return str(getattr(getattr(exc, "orig", None), "sqlstate", "") or "").startswith("40")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def write_once(store: Store, fn: Callable[[Session], T]) -> T:
    """Run one write through a writer of its own: for commands that start no pipeline."""
    with StoreWriter(store) as writer:
        return writer.submit(fn).result()
