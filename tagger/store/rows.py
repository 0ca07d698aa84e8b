"""The rows one write transaction touches: read in bulk, created or updated one by one,
and moved or marked missing by path. Only the writer thread (writer.py) calls these."""

from __future__ import annotations

import logging
import os
from typing import Any, TypeVar, cast

from sqlalchemy import ColumnElement, Table, and_, delete, insert, or_, select, update
from sqlalchemy.orm import Session

from tagger.records import Failure, FileInfo, Link, Moved, Seen, Swept, Tag, Tagged
from tagger.store.schema import File, Image
from tagger.store.schema import Tag as TagRow

log = logging.getLogger(__name__)

_Row = TypeVar("_Row", Image, File)


class Rows:
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


def upsert_file(
    rows: Rows,
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


def forget_tags(session: Session, image_id: int) -> None:
    session.execute(delete(TagRow).where(TagRow.image_id == image_id))


def insert_tags(session: Session, tagged: list[tuple[int, list[Tag]]]) -> None:
    """The tags of many images in one statement (executemany)."""
    values = [
        {
            "image_id": image_id,
            "label": tag.label,
            "class_index": tag.class_index,
            "score": tag.score,
            "rank": tag.rank,
            "wnid": tag.wnid,
            "derived": tag.derived,
        }
        for image_id, tags in tagged
        for tag in tags
    ]
    if values:
        session.execute(insert(cast(Table, TagRow.__table__)), values)  # Core: no ORM per row


def under(path: str) -> ColumnElement[bool]:
    """The path itself, or anything below it as a folder (a range scan on the path index)."""
    return or_(File.path == path, and_(File.path > f"{path}/", File.path < f"{path}0"))


def move(session: Session, op: Moved, now: Any) -> None:
    """Rows under `src` follow the rename; whatever `dst` held before is replaced.

    Nothing under `src` (a file's own event after its folder's, which moved it already):
    nothing to do, and `dst` must be left alone."""
    rows = session.scalars(select(File).where(under(op.src))).all()
    if not rows:
        return
    session.execute(delete(File).where(under(op.dst)))
    for row in rows:
        row.path = op.dst + row.path[len(op.src) :]
        row.last_seen, row.missing_since = now, None


UNREADABLE_FOLDER = "cannot read folder"  # the start of such a folder row's error


def sweep(session: Session, op: Swept, now: Any) -> None:
    """Mark missing what the walk of `op.root` did not find, but for what lies under a folder
    it could not read; record those folders, and forget the ones it reads again."""
    unreadable = dict(op.unreadable)
    skipped = tuple(f"{folder}/" for folder in unreadable)
    _record_unreadable_folders(session, op, unreadable, skipped, now)
    rows = session.execute(
        select(File.id, File.path).where(
            under(op.root), File.missing_since.is_(None), File.last_seen < op.started
        )
    ).all()
    gone = [
        row.id
        for row in rows
        if row.path not in op.present
        and row.path not in unreadable
        and not row.path.startswith(skipped)
    ]
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


def _record_unreadable_folders(
    session: Session, op: Swept, unreadable: dict[str, str], skipped: tuple[str, ...], now: Any
) -> None:
    """One row per folder the walk could not read (no content, an error), so that `tagger
    errors` lists it; the rows of folders read again this time are deleted."""
    recorded = session.scalars(
        select(File).where(
            under(op.root), File.image_id.is_(None), File.error.startswith(UNREADABLE_FOLDER)
        )
    ).all()
    for row in recorded:
        readable_again = row.path not in unreadable and not row.path.startswith(skipped)
        if readable_again and row.path not in op.present:
            session.delete(row)
    for folder, why in unreadable.items():
        found = session.scalars(select(File).where(File.path == folder)).one_or_none()
        row = found or File(path=folder, size=0, mtime_ns=0, first_seen=now)
        if found is None:
            session.add(row)
        row.image, row.size, row.mtime_ns = None, 0, 0
        row.last_seen, row.missing_since = now, None
        row.error = f"{UNREADABLE_FOLDER}: {why}"
    session.flush()
