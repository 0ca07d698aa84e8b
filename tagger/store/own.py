"""Labels of one's own, in the database: the trained coefficients, the training set (content
hashes), and the tags they give. A label is a logistic regression on the stored embeddings,
so applying it is a dot product: to the whole library when trained, and by the writer to
each image as it is tagged. No pickles: the numbers are in `own_labels`."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session

from tagger import records
from tagger.records import ModelId, utcnow
from tagger.store.database import Store
from tagger.store.schema import OWN_PREFIX, OWN_RANK, Embedding, OwnExample, OwnLabel, Tag
from tagger.store.vectors import as_vector

OWN_MIN_SCORE = 0.5  # an own label is given where its probability reaches this


@dataclass(frozen=True)
class OwnModel:
    """A trained label, ready to score embeddings."""

    id: int
    name: str
    coefficients: npt.NDArray[np.float32]
    intercept: float

    @property
    def wnid(self) -> str:
        return f"{OWN_PREFIX}{self.id}"

    @property
    def rank(self) -> int:
        return OWN_RANK + self.id

    def scores(self, vectors: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
        """The probability of the label for each row of `vectors` (N x dim)."""
        logits = vectors.astype(np.float64) @ self.coefficients.astype(np.float64)
        result: npt.NDArray[np.float64] = 1 / (1 + np.exp(-(logits + self.intercept)))
        return result


def own_models(session: Session, model: ModelId) -> list[OwnModel]:
    """The labels trained on `model`'s embeddings (others cannot score its vectors)."""
    rows = session.scalars(
        select(OwnLabel).where(
            OwnLabel.model == model.name,
            OwnLabel.weights_sha256 == model.weights_sha256,
            OwnLabel.coefficients.is_not(None),
        )
    ).all()
    return [
        OwnModel(row.id, row.name, np.frombuffer(row.coefficients, "<f4"), row.intercept or 0.0)
        for row in rows
        if row.coefficients is not None
    ]


def own_tags(models: Iterable[OwnModel], vector: npt.NDArray[Any]) -> list[records.Tag]:
    """The tags the labels give one embedding."""
    tags = []
    for own in models:
        score = float(own.scores(vector[None])[0])
        if score >= OWN_MIN_SCORE:
            tags.append(records.Tag(own.name, None, score, own.rank, own.wnid))
    return tags


def save_label(
    session: Session,
    name: str,
    model: ModelId,
    coefficients: npt.NDArray[Any],
    intercept: float,
    accuracy: float | None,
    examples: dict[str, bool],
) -> tuple[int, int]:
    """Store (or replace) the label and its training set, then tag the library with it.
    Returns (its id, how many images now carry it)."""
    row = session.scalars(select(OwnLabel).where(OwnLabel.name == name)).one_or_none()
    if row is None:
        row = OwnLabel(name=name)
        session.add(row)
    row.model, row.weights_sha256 = model.name, model.weights_sha256
    row.dim = int(coefficients.shape[0])
    row.coefficients = np.ascontiguousarray(coefficients, "<f4").tobytes()
    row.intercept, row.accuracy, row.trained_at = float(intercept), accuracy, utcnow()
    if row.id is not None:
        session.execute(delete(OwnExample).where(OwnExample.label_id == row.id))
    session.flush()
    session.add_all(
        OwnExample(label_id=row.id, sha256=sha, positive=positive)
        for sha, positive in sorted(examples.items())
    )
    own = OwnModel(row.id, name, np.asarray(coefficients, np.float32), float(intercept))
    return row.id, apply_to_library(session, own, model)


def save_examples(session: Session, name: str, model: ModelId, examples: dict[str, bool]) -> None:
    """Keep a training set for a label too small to train yet (marked on the web page)."""
    row = session.scalars(select(OwnLabel).where(OwnLabel.name == name)).one_or_none()
    if row is None:
        row = OwnLabel(name=name, model=model.name, weights_sha256=model.weights_sha256, dim=0)
        row.trained_at = utcnow()
        session.add(row)
        session.flush()
    for sha, positive in examples.items():
        found = session.scalars(
            select(OwnExample).where(OwnExample.label_id == row.id, OwnExample.sha256 == sha)
        ).one_or_none()
        if found is None:
            session.add(OwnExample(label_id=row.id, sha256=sha, positive=positive))
        else:
            found.positive = positive


def apply_to_library(session: Session, own: OwnModel, model: ModelId, chunk: int = 2048) -> int:
    """Tag every stored image of `model` that the label scores high enough: no inference,
    only the embeddings. Replaces the label's tags; returns how many images carry it."""
    session.execute(delete(Tag).where(Tag.wnid == own.wnid))
    last, given = 0, 0
    while True:
        rows = session.execute(
            select(Embedding.id, Embedding.image_id, Embedding.vector)
            .where(
                Embedding.model == model.name,
                Embedding.weights_sha256 == model.weights_sha256,
                Embedding.id > last,
            )
            .order_by(Embedding.id)
            .limit(chunk)
        ).all()
        if not rows:
            return given
        scores = own.scores(np.stack([as_vector(row.vector) for row in rows]))
        tags = [
            {
                "image_id": row.image_id,
                "label": own.name,
                "class_index": None,
                "score": float(score),
                "rank": own.rank,
                "wnid": own.wnid,
                "derived": False,
            }
            for row, score in zip(rows, scores, strict=True)
            if score >= OWN_MIN_SCORE
        ]
        if tags:
            session.execute(insert(Tag), tags)
        given += len(tags)
        last = rows[-1].id


def remove_label(session: Session, name: str) -> bool:
    """Forget the label, its training set and its tags; False if there was none."""
    row = session.scalars(select(OwnLabel).where(OwnLabel.name == name)).one_or_none()
    if row is None:
        return False
    session.execute(delete(Tag).where(Tag.wnid == f"{OWN_PREFIX}{row.id}"))
    session.delete(row)
    return True


@dataclass(frozen=True)
class OwnSummary:
    id: int
    name: str
    wnid: str
    examples: int
    negatives: int
    accuracy: float | None
    trained_at: str
    trained: bool


def own_labels(store: Store) -> list[OwnSummary]:
    """Every label of one's own, by name, with the size of its training set."""
    counts = (
        select(
            OwnExample.label_id,
            func.sum(func.cast(OwnExample.positive, Tag.rank.type)).label("positives"),
            func.count().label("total"),
        )
        .group_by(OwnExample.label_id)
        .subquery()
    )
    statement = (
        select(OwnLabel, counts.c.positives, counts.c.total)
        .outerjoin(counts, counts.c.label_id == OwnLabel.id)
        .order_by(OwnLabel.name)
    )
    with store.session() as session:
        return [
            OwnSummary(
                row.id,
                row.name,
                f"{OWN_PREFIX}{row.id}",
                int(positives or 0),
                int(total or 0) - int(positives or 0),
                row.accuracy,
                row.trained_at.isoformat(),
                row.coefficients is not None,
            )
            for row, positives, total in session.execute(statement)
        ]


def training_set(store: Store, name: str) -> dict[str, bool] | None:
    """The label's examples (True) and negatives (False) by sha256; None if no such label."""
    with store.session() as session:
        row = session.scalars(select(OwnLabel).where(OwnLabel.name == name)).one_or_none()
        if row is None:
            return None
        return {example.sha256: example.positive for example in row.examples}
