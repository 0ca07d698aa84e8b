"""Read-only questions behind `tagger show`, `labels`, `duplicates`, `errors` and `status`.

`tagger query` and `export` are store/search.py, from the terms query/language.py parses.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import Select, func, select

from tagger.labels.hierarchy import hierarchy
from tagger.labels.names import Language, chinese, with_chinese
from tagger.store.database import Store
from tagger.store.schema import OWN_PREFIX, PRESENT, File, Image, ImageStatus, Tag
from tagger.store.vectors import missing_embeddings

Row = dict[str, Any]


def file_report(store: Store, path: str, language: Language = "en") -> Row | None:
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
            report |= _image_facts(image, language)
        return report


def _image_facts(image: Image, language: Language) -> Row:
    return {
        "status": image.status,
        "error": image.error,
        "sha256": image.sha256,
        "width": image.width,
        "height": image.height,
        "format": image.format,
        "model": image.model,
        "weights_sha256": image.weights_sha256,
        "tagged_at": image.tagged_at.isoformat() if image.tagged_at else None,
        "tags": with_chinese(
            (
                {
                    "rank": t.rank,
                    "label": t.label,
                    "class_index": t.class_index,
                    "wnid": t.wnid,
                    "score": round(t.score, 4),
                    "derived": t.derived,
                }
                for t in image.tags
            ),
            language,
        ),
    }


def image_report(store: Store, sha256: str, language: Language = "en") -> Row | None:
    """Everything known about one content: its facts, tags, and every path that holds it
    (present ones first), or None for content never seen."""
    with store.session() as session:
        image = session.scalars(select(Image).where(Image.sha256 == sha256)).one_or_none()
        if image is None:
            return None
        files = session.scalars(
            select(File)
            .where(File.image_id == image.id)
            .order_by(File.missing_since.is_not(None), File.path)
        ).all()
        return _image_facts(image, language) | {
            "bytes": image.size,
            "paths": [
                {
                    "path": f.path,
                    "missing_since": f.missing_since.isoformat() if f.missing_since else None,
                    "added": f.first_seen.isoformat(),
                }
                for f in files
            ],
        }


def present_paths(store: Store, sha256: str) -> list[tuple[str, int, int]]:
    """(path, size, mtime_ns) of each file that holds this content, as the store knows it."""
    statement = (
        select(File.path, File.size, File.mtime_ns)
        .join(Image, File.image_id == Image.id)
        .where(Image.sha256 == sha256, PRESENT)
        .order_by(File.path)
    )
    with store.session() as session:
        return [(path, size, mtime) for path, size, mtime in session.execute(statement)]


def label_covers(store: Store, min_score: float) -> dict[str, str]:
    """For each label, the content (sha256) that carries it with the best score."""
    ranked = (
        select(
            Tag.label,
            Image.sha256,
            func.row_number()
            .over(partition_by=Tag.label, order_by=(Tag.score.desc(), Image.sha256))
            .label("place"),
        )
        .join(Image, Image.id == Tag.image_id)
        .where(
            Tag.score >= min_score,
            select(File.id).where(File.image_id == Image.id, PRESENT).exists(),
        )
        .subquery()
    )
    statement = select(ranked.c.label, ranked.c.sha256).where(ranked.c.place == 1)
    with store.session() as session:
        return {label: sha for label, sha in session.execute(statement)}


_FILES = func.count(func.distinct(File.id))


def _files_per(key: Any, min_score: float) -> Select[Any]:
    """(key, files) for each value of `key` among the tags at `min_score` or more."""
    return (
        select(key, _FILES)
        .join(File, File.image_id == Tag.image_id)
        .where(Tag.score >= min_score, PRESENT)
        .group_by(key)
    )


def label_counts(store: Store, min_score: float, language: Language = "en") -> list[Row]:
    """How many files carry each label at `min_score` or more, most common first."""
    statement = (
        _files_per(Tag.label, min_score)
        .add_columns(func.min(Tag.wnid))
        .order_by(_FILES.desc(), Tag.label)
    )
    with store.session() as session:
        rows = session.execute(statement).all()
    own = {"own": True}  # a label of one's own (`tagger train`): marked as such
    if language == "zh":
        return [
            {"label": label, "label_zh": chinese(w), "files": n}
            | (own if w.startswith(OWN_PREFIX) else {})
            for label, n, w in rows
        ]
    return [
        {"label": label, "files": count} | (own if w.startswith(OWN_PREFIX) else {})
        for label, count, w in rows
    ]


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
        # Tagged before embeddings were stored: the next scan analyses them again.
        "images_without_embedding": missing_embeddings(store),
    }


def label_tree(store: Store, min_score: float, language: Language = "en") -> list[Row]:
    """Files per label at `min_score` or more, as a tree: each label under its nearest
    counted ancestor on WordNet's main line (`tabby` under `domestic cat` under `cat`...)."""
    statement = _files_per(Tag.wnid, min_score)
    tree = hierarchy()
    with store.session() as session:
        counts = {w: n for w, n in session.execute(statement) if w in tree.synsets}
    children: defaultdict[str | None, list[str]] = defaultdict(list)
    for wnid in counts:
        parent = next((w for w in tree.main_line(wnid)[1:] if w in counts), None)
        children[parent].append(wnid)
    rows: list[Row] = []

    def visit(parent: str | None, depth: int) -> None:
        for wnid in sorted(children[parent], key=lambda w: (-counts[w], tree[w].name)):
            rows.append(
                {"label": tree[wnid].name, "wnid": wnid, "files": counts[wnid], "depth": depth}
            )
            visit(wnid, depth + 1)

    visit(None, 0)
    return with_chinese(rows, language)
