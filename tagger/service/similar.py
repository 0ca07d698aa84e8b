"""Similar photos and near-duplicates, from the stored embeddings: the use cases `tagger
similar`, `tagger duplicates --similar` and the web page's strip and API share."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from tagger.config import Settings
from tagger.errors import SkipFile, TaggerError
from tagger.records import ModelId
from tagger.store.database import Store

if TYPE_CHECKING:
    from tagger.inference.base import Classifier
    from tagger.store.index import VectorIndex


def vector_index(settings: Settings, store: Store, model: ModelId) -> VectorIndex:
    """The model's vector index, a cache file in the data directory."""
    from tagger.store.index import VectorIndex

    return VectorIndex(store, model, settings.data_dir)


@dataclass(frozen=True)
class Target:
    """The photo a similarity search starts from: its content and embedding."""

    sha256: str | None  # None for a photo not in the library
    model: ModelId
    vector: npt.NDArray[np.float16]
    embedding_id: int | None = None


def similar_target(
    store: Store,
    photo: str,
    classifier: Callable[[], Classifier] | None = None,
    max_pixels: int = 0,
) -> Target:
    """What `photo` names: a stored content's sha256, a stored path, or (given `classifier`)
    any photo, analysed on the spot. A TaggerError says what is missing."""
    from tagger.pipeline.files import storable
    from tagger.store.reports import file_report
    from tagger.store.vectors import embedding_of

    sha256: str | None = None
    if re.fullmatch(r"[0-9a-f]{64}", photo.lower()):
        sha256 = photo.lower()
    else:
        report = file_report(store, storable(os.path.realpath(photo)))
        sha256 = report.get("sha256") if report else None
    if sha256 is not None:
        stored = embedding_of(store, sha256)
        if stored is not None:
            return Target(sha256, stored.model, stored.vector, stored.id)
        if classifier is None or not Path(photo).exists():
            raise TaggerError(
                f"{photo} has no embedding yet (tagged before embeddings were stored, or "
                "not tagged): run `tagger scan` on its folder"
            )
    if classifier is None or not Path(photo).exists():
        raise TaggerError(f"{photo}: no such photo in the database, nor a file")
    return _analysed(photo, classifier(), max_pixels)


def _analysed(photo: str, classifier: Classifier, max_pixels: int) -> Target:
    from tagger.pipeline.decode import decode
    from tagger.pipeline.hashing import hash_file, stat_file

    try:
        image = decode(hash_file(stat_file(photo)), classifier.spec.geometry, max_pixels)
    except SkipFile as skip:
        raise TaggerError(f"{photo}: {skip.reason}") from None
    vector = classifier.analyse(image.pixels[None]).embeddings[0]
    return Target(None, classifier.id, vector)


def similar(
    store: Store, index: VectorIndex, target: Target, limit: int, min_similarity: float = 0.0
) -> list[dict[str, Any]]:
    """The stored photos most like `target` by cosine similarity, best first: never the
    photo itself, only content a present path holds (the index is checked against the
    database), one row per content with its first path."""
    from tagger.store.vectors import present_images

    rows: list[dict[str, Any]] = []
    wanted = limit * 2 + 8  # some answers may be dropped content, filtered below
    while True:
        found = index.search(target.vector, wanted, exclude=target.embedding_id)
        known = present_images(store, [key for key, _ in found])
        rows = [
            {"path": known[key][1], "sha256": known[key][0], "similarity": round(score, 4)}
            for key, score in found
            if key in known and known[key][0] != target.sha256 and score >= min_similarity
        ]
        if len(rows) >= limit or len(found) < wanted or found[-1][1] < min_similarity:
            return rows[:limit]
        wanted *= 4


def near_duplicates(
    settings: Settings, store: Store, threshold: float, neighbours: int = 8
) -> list[dict[str, Any]]:
    """Groups of contents whose embeddings are at least `threshold` alike: copies that are
    not byte-identical (resized, re-compressed, lightly cropped). Each group lists its
    present paths, the most-connected content first."""
    from tagger.store.vectors import embedding_models, embeddings_after, present_images

    parent: dict[int, int] = {}

    def root(key: int) -> int:
        while parent.setdefault(key, key) != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    best: dict[int, float] = {}
    for model in embedding_models(store):
        index = vector_index(settings, store, model)
        index.sync()
        for ids, vectors in embeddings_after(store, model, 0):
            for key, found in zip(
                ids, index.neighbours(ids, vectors, neighbours, threshold), strict=True
            ):
                for other, score in found:
                    if score >= threshold:
                        parent[root(other)] = root(int(key))
                        best[int(key)] = max(best.get(int(key), 0.0), score)
                        best[other] = max(best.get(other, 0.0), score)
    members: dict[int, list[int]] = {}
    for key in parent:
        members.setdefault(root(key), []).append(key)
    known = present_images(store, [k for keys in members.values() if len(keys) > 1 for k in keys])
    groups = []
    for keys in members.values():
        present = sorted((known[k][1], known[k][0], best[k]) for k in keys if k in known)
        if len(present) > 1:
            groups.append(
                {
                    "paths": [path for path, _, _ in present],
                    "sha256": [sha for _, sha, _ in present],
                    "similarity": round(min(score for _, _, score in present), 4),
                }
            )
    return sorted(groups, key=lambda group: group["paths"][0])
