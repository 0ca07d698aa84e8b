"""Read-only questions behind `tagger show`, `labels`, `duplicates` and `errors`.

`tagger query` and `export` are tagger.search, from the terms tagger.querylang parses.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from tagger.schema import File, Image, ImageStatus, Tag
from tagger.store import Store

Row = dict[str, Any]
PRESENT = File.missing_since.is_(None)  # answers leave out deleted paths until `tagger prune`


def file_report(store: Store, path: str) -> Row | None:
    """Everything known about one path, or None if it was never seen."""
    with store.session() as session:
        row = session.scalars(select(File).where(File.path == path)).one_or_none()
        if row is None:
            return None
        image = row.image
        report: Row = {
            "path": row.path,
            "status": "failed" if row.error else "unknown",
            "error": row.error,
            "missing_since": row.missing_since.isoformat() if row.missing_since else None,
            "tags": [],
        }
        if image is not None:
            report |= {
                "status": image.status,
                "error": image.error,
                "sha256": image.sha256,
                "width": image.width,
                "height": image.height,
                "format": image.format,
                "model": image.model,
                "weights_sha256": image.weights_sha256,
                "tagged_at": image.tagged_at.isoformat() if image.tagged_at else None,
                "tags": [
                    {
                        "rank": t.rank,
                        "label": t.label,
                        "class_index": t.class_index,
                        "wnid": t.wnid,
                        "score": round(t.score, 4),
                        "derived": t.derived,
                    }
                    for t in image.tags
                ],
            }
        return report


def label_counts(store: Store, min_score: float) -> list[Row]:
    """How many files carry each label at `min_score` or more, most common first."""
    files = func.count(func.distinct(File.id))
    statement = (
        select(Tag.label, files)
        .join(File, File.image_id == Tag.image_id)
        .where(Tag.score >= min_score, PRESENT)
        .group_by(Tag.label)
        .order_by(files.desc(), Tag.label)
    )
    with store.session() as session:
        return [{"label": label, "files": count} for label, count in session.execute(statement)]


def duplicate_groups(store: Store) -> list[Row]:
    """Paths that hold identical, successfully tagged content, grouped by content."""
    shared = (
        select(File.image_id)
        .where(File.image_id.is_not(None), PRESENT)
        .group_by(File.image_id)
        .having(func.count() > 1)
    )
    statement = (
        select(Image.sha256, File.path)
        .join(File, File.image_id == Image.id)
        .where(Image.id.in_(shared), Image.status == ImageStatus.TAGGED, PRESENT)
        .order_by(Image.sha256, File.path)
    )
    groups: dict[str, list[str]] = {}
    with store.session() as session:
        for sha256, path in session.execute(statement):
            groups.setdefault(sha256, []).append(path)
    return [{"sha256": sha, "paths": paths} for sha, paths in groups.items()]


def failures(store: Store) -> list[Row]:
    """Files that could not be tagged, with the reason."""
    statement = (
        select(File.path, func.coalesce(File.error, Image.error), File.last_seen)
        .outerjoin(Image, File.image_id == Image.id)
        .where((File.error.is_not(None)) | (Image.error.is_not(None)), PRESENT)
        .order_by(File.path)
    )
    with store.session() as session:
        return [
            {"path": path, "reason": reason, "last_seen": seen.isoformat()}
            for path, reason, seen in session.execute(statement)
        ]


def totals(store: Store) -> Row:
    """Counts for `tagger status`: content tagged or failed, paths present or missing."""
    with store.session() as session:
        images = dict(
            session.execute(select(Image.status, func.count()).group_by(Image.status)).all()
        )
        files = dict(
            session.execute(
                select(File.missing_since.is_not(None), func.count()).group_by(
                    File.missing_since.is_not(None)
                )
            ).all()
        )
    return {
        "images_tagged": images.get(ImageStatus.TAGGED, 0),
        "images_failed": images.get(ImageStatus.FAILED, 0),
        "files": files.get(False, 0),
        "files_missing": files.get(True, 0),
    }
