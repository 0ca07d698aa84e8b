"""One-off writes: forgetting what is gone (`tagger prune`) and marking images for a new
tagging (`tagger retag`). Each is a function of a session, run by the writer thread
(`StoreWriter.submit`), so that every write goes through the one writer."""

from __future__ import annotations

import os

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql import ColumnElement

from tagger.query.language import Query
from tagger.store.schema import File, Image
from tagger.store.search import matching_files


def prune(session: Session, dry_run: bool = False) -> tuple[int, int]:
    """Forget missing paths, then content no path holds; returns (files, images).

    A path is looked at once more, inside this transaction: a file restored since it was
    found missing keeps its row (and is no longer missing), not lost until the next rescan."""
    missing: ColumnElement[bool] = File.missing_since.is_not(None)
    back = [
        file_id
        for file_id, path in session.execute(select(File.id, File.path).where(missing))
        if os.path.lexists(path)
    ]
    if back and not dry_run:
        session.execute(update(File).where(File.id.in_(back)).values(missing_since=None))
    elif back:  # counted as if it were done
        missing = missing & File.id.not_in(back)
    held = select(File.id).where(File.image_id == Image.id, ~missing).exists()
    images = session.scalar(select(func.count()).select_from(Image).where(~held)) or 0
    files = session.scalar(select(func.count()).select_from(File).where(missing)) or 0
    if not dry_run:
        session.execute(delete(File).where(missing))
        session.execute(delete(Image).where(~held))  # tags go with them (ON DELETE CASCADE)
    return files, images


def retag(session: Session, query: Query, min_score: float) -> int:
    """Make the next scan classify the matching images again; returns how many.

    Forgetting the weights hash is what a model change does: the image is no longer
    "tagged by the current model", so the next scan re-tags it (full softmax, current
    `[labels]` settings) while its old tags stay searchable until then.
    """
    chosen = matching_files(query, min_score).with_only_columns(Image.id.label("image_id"))
    result = session.execute(
        update(Image).where(Image.id.in_(chosen)).values(weights_sha256="", error=None)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
