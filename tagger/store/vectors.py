"""Every line of SQL about embeddings: what the writer stores with the tags, what the vector
index (store/index.py) is built from, and the rows of labels of one's own (store/own.py).

An embedding is kept as the model gave it: L2-normalised float16 bytes, so that a dot
product is the cosine similarity."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar, cast

import numpy as np
import numpy.typing as npt
from sqlalchemy import ColumnElement, Select, Table, delete, func, insert, select
from sqlalchemy.orm import Session

from tagger.records import ModelId
from tagger.store.database import Store
from tagger.store.schema import PRESENT, Embedding, File, Image, ImageStatus

Vector = npt.NDArray[np.float16]
K = TypeVar("K", int, str)


def as_bytes(vector: Vector) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f2").tobytes()


def as_vector(data: bytes) -> Vector:
    return np.frombuffer(data, dtype="<f2")


def forget_embedding(session: Session, image_id: int) -> None:
    """Before a re-analysis of the image is stored (the writer's)."""
    session.execute(delete(Embedding).where(Embedding.image_id == image_id))


def insert_embeddings(session: Session, analysed: list[tuple[int, ModelId, Vector]]) -> None:
    """The embeddings of many images in one statement (the writer's, with their tags)."""
    if analysed:
        session.execute(
            insert(cast(Table, Embedding.__table__)),  # Core: no ORM per row
            [
                {
                    "image_id": image_id,
                    "model": model.name,
                    "weights_sha256": model.weights_sha256,
                    "dim": int(vector.shape[0]),
                    "vector": as_bytes(vector),
                }
                for image_id, model, vector in analysed
            ],
        )


@dataclass(frozen=True)
class Extent:
    """What the index must hold for one model: how many embeddings, and the newest row id.
    Recorded beside the index file, compared with the database to find it stale."""

    count: int
    max_id: int


def extent(
    store: Store, model: ModelId, up_to: int | None = None, after: int | None = None
) -> Extent:
    """The embeddings of `model` (with row id `up_to` or less, above `after`, if given)."""
    statement = select(func.count(), func.coalesce(func.max(Embedding.id), 0)).where(
        *_of(model),
        *([Embedding.id <= up_to] if up_to is not None else []),
        *([Embedding.id > after] if after is not None else []),
    )
    with store.session() as session:
        count, max_id = session.execute(statement).one()
    return Extent(int(count), int(max_id))


def newest(store: Store, model: ModelId) -> int:
    """The newest row id of `model`'s embeddings (0 for none): one step down the index,
    where a count reads all of it (1 s at a million rows on a busy machine)."""
    statement = select(func.coalesce(func.max(Embedding.id), 0)).where(*_of(model))
    with store.session() as session:
        return int(session.execute(statement).scalar_one())


def embeddings_after(
    store: Store, model: ModelId, after: int, chunk: int = 4096
) -> Iterator[tuple[npt.NDArray[np.int64], npt.NDArray[np.float16]]]:
    """(row ids, vectors) of `model`'s embeddings with an id above `after`, in id order,
    `chunk` rows at a time (to build or catch up the index without holding the rows)."""
    last = after
    while True:
        statement = (
            select(Embedding.id, Embedding.vector)
            .where(*_of(model), Embedding.id > last)
            .order_by(Embedding.id)
            .limit(chunk)
        )
        with store.session() as session:
            rows = session.execute(statement).all()
        if not rows:
            return
        ids = np.fromiter((row.id for row in rows), dtype=np.int64, count=len(rows))
        vectors = np.stack([as_vector(row.vector) for row in rows])
        yield ids, vectors
        last = int(ids[-1])


def vectors_by_id(store: Store, ids: Sequence[int]) -> dict[int, Vector]:
    """The stored vectors of these embedding row ids (those still stored): the vector
    index's candidates, re-ranked with them exactly."""
    return _in_chunks(
        store,
        ids,
        lambda chunk: select(Embedding.id, Embedding.vector).where(Embedding.id.in_(chunk)),
    )


@dataclass(frozen=True)
class Stored:
    """One image's embedding as read back: its row id, content, and the vector."""

    id: int
    image_id: int
    sha256: str
    model: ModelId
    vector: Vector


def embedding_of(store: Store, sha256: str) -> Stored | None:
    """The content's embedding, whichever model made it; None if it has none."""
    statement = (
        select(
            Embedding.id,
            Embedding.image_id,
            Image.sha256,
            Embedding.model,
            Embedding.weights_sha256,
            Embedding.vector,
        )
        .join(Image, Image.id == Embedding.image_id)
        .where(Image.sha256 == sha256)
    )
    with store.session() as session:
        row = session.execute(statement).one_or_none()
    if row is None:
        return None
    model = ModelId(row.model, row.weights_sha256)
    return Stored(row.id, row.image_id, row.sha256, model, as_vector(row.vector))


def embedding_models(store: Store) -> list[ModelId]:
    """The models that made stored embeddings, the one with most first."""
    statement = (
        select(Embedding.model, Embedding.weights_sha256)
        .group_by(Embedding.model, Embedding.weights_sha256)
        .order_by(func.count().desc())
    )
    with store.session() as session:
        return [ModelId(name, sha) for name, sha in session.execute(statement)]


def embeddings_of(store: Store, shas: Sequence[str], model: ModelId) -> dict[str, Vector]:
    """The vectors of these contents that have one for `model`, by sha256."""
    return _in_chunks(
        store,
        shas,
        lambda chunk: (
            select(Image.sha256, Embedding.vector)
            .join(Embedding, Embedding.image_id == Image.id)
            .where(Image.sha256.in_(chunk), *_of(model))
        ),
    )


def _in_chunks(
    store: Store, keys: Sequence[K], statement: Callable[[list[K]], Select[K, bytes]]
) -> dict[K, Vector]:
    """(key, vector) rows for many keys, 500 keys a query (SQLite's parameter limit)."""
    found: dict[K, Vector] = {}
    ordered = sorted(set(keys))
    with store.session() as session:
        for start in range(0, len(ordered), 500):
            rows = session.execute(statement(ordered[start : start + 500]))
            found |= {key: as_vector(data) for key, data in rows}
    return found


def present_images(store: Store, embedding_ids: Sequence[int]) -> dict[int, tuple[str, str]]:
    """For the embedding row ids the index answered: (sha256, first present path) of those
    still stored, tagged and held by a present path. What the index says is checked here,
    so that it can never return a path the store has dropped."""
    found: dict[int, tuple[str, str]] = {}
    if not embedding_ids:
        return found
    statement = (
        select(Embedding.id, Image.sha256, func.min(File.path))
        .join(Image, Image.id == Embedding.image_id)
        .join(File, File.image_id == Image.id)
        .where(Embedding.id.in_(list(embedding_ids)), PRESENT, Image.status == ImageStatus.TAGGED)
        .group_by(Embedding.id, Image.sha256)
    )
    with store.session() as session:
        for row_id, sha256, path in session.execute(statement):
            found[int(row_id)] = (sha256, path)
    return found


def missing_embeddings(store: Store) -> int:
    """Tagged images without an embedding: the next scan analyses them again."""
    statement = (
        select(func.count())
        .select_from(Image)
        .outerjoin(Embedding, Embedding.image_id == Image.id)
        .where(Image.status == ImageStatus.TAGGED, Embedding.id.is_(None))
    )
    with store.session() as session:
        return int(session.execute(statement).scalar_one())


def library_sample(
    store: Store, model: ModelId, count: int, leave_out: set[str], seed: int = 0
) -> dict[str, Vector]:
    """Up to `count` stored embeddings of present images not in `leave_out`, spread evenly
    over the library (every n-th by row id: the same sample each time)."""
    total = extent(store, model).count
    step = max(1, total // max(1, count + len(leave_out)))
    statement = (
        select(Image.sha256, Embedding.vector)
        .join(Embedding, Embedding.image_id == Image.id)
        .where(*_of(model), Image.id.in_(select(File.image_id).where(PRESENT)))
        .order_by(Embedding.id)
    )
    found: dict[str, Vector] = {}
    with store.session() as session:
        for index, (sha, data) in enumerate(session.execute(statement)):
            if (index + seed) % step == 0 and sha not in leave_out:
                found[sha] = as_vector(data)
                if len(found) >= count:
                    break
    return found


def _of(model: ModelId) -> tuple[ColumnElement[bool], ...]:
    return (Embedding.model == model.name, Embedding.weights_sha256 == model.weights_sha256)
