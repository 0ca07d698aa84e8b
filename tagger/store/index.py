"""The vector index behind similar photos and near-duplicates: a derived cache, the database
stays the truth.

One usearch file per model in the data directory, keyed by the embeddings' row ids (never
reused), with a small JSON file beside it recording what it holds (count and newest row
id). Before each use it is compared with the database: rows added since are added (the
common case: a scan stored more), anything else (a file deleted or damaged, a crash between
a commit and the index's save, rows removed by prune or re-tagging) rebuilds it from the
database. Answers are checked against the database again (store/vectors.py,
`present_images`), so a path the store has dropped is never returned.

Exact search below `EXACT_BELOW` vectors (a scan of 10,000 x 1280 float16 takes a few ms);
HNSW above it (docs/benchmarks.md).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from tagger.errors import TaggerError
from tagger.records import ModelId
from tagger.store.database import Store
from tagger.store.vectors import Extent, embeddings_after, extent

if TYPE_CHECKING:
    from usearch.index import Index

log = logging.getLogger(__name__)
EXACT_BELOW = 50_000


def _usearch() -> type[Index]:
    try:
        from usearch.index import Index
    except ImportError:  # a wheel for every platform tagger runs on, but an install may lack it
        raise TaggerError("similar photos need usearch: pip install usearch") from None
    return Index


class VectorIndex:
    """The index of one model's embeddings, kept in step with the database."""

    def __init__(self, store: Store, model: ModelId, folder: Path) -> None:
        self._store, self._model = store, model
        stem = f"vectors-{model.name}-{model.weights_sha256[:12]}"
        self.path = folder / f"{stem}.usearch"
        self._meta = folder / f"{stem}.json"
        self._index: Index | None = None
        self._extent = Extent(0, 0)
        self._lock = threading.Lock()
        self.rebuilds = 0  # for tests and logs: how often the database was read in full

    def sync(self) -> None:
        """Bring the index up to the database: load it, add what is new, or rebuild it."""
        with self._lock:
            stored = extent(self._store, self._model)
            if self._index is None:
                self._load()
            if self._index is not None and self._extent == stored:
                return
            if (
                self._index is not None
                and len(self._index)
                and self._extent.max_id <= stored.max_id
            ):
                unchanged = extent(self._store, self._model, up_to=self._extent.max_id)
                if unchanged == self._extent:  # only additions since: catch up
                    self._add_after(self._index, self._extent.max_id)
                    self._save()
                    return
            self._rebuild()

    def search(
        self, vector: npt.NDArray[Any], count: int, exclude: int | None = None, sync: bool = True
    ) -> list[tuple[int, float]]:
        """Up to `count` (embedding row id, cosine similarity), most similar first
        (`sync=False`: the caller has just synced, for many searches in a row)."""
        if sync:
            self.sync()
        with self._lock:  # a web server searches from several threads while one catches up
            index = self._index
            if index is None or len(index) == 0:
                return []
            wanted = min(len(index), count + (exclude is not None))
            vector = np.asarray(vector, np.float16)
            found = index.search(vector, wanted, exact=len(index) < EXACT_BELOW)
        return [
            (int(key), 1.0 - float(distance))
            for key, distance in zip(found.keys, found.distances, strict=True)
            if int(key) != exclude
        ][:count]

    def neighbours(
        self, keys: npt.NDArray[np.int64], vectors: npt.NDArray[Any], count: int
    ) -> list[list[tuple[int, float]]]:
        """For many stored vectors at once (their row ids `keys`): each one's `count` nearest
        others, searched in one batch on every core (near-duplicates of a whole library).
        The caller syncs first."""
        with self._lock:
            index = self._index
            if index is None or len(index) == 0 or len(vectors) == 0:
                return [[] for _ in keys]
            wanted = min(len(index), count + 1)
            # the graph, whatever the size: an exact search of every photo against every
            # other is quadratic (90 s at 20,000 here), and a near-duplicate is so close
            # that the graph does not miss it
            found = index.search(np.asarray(vectors, np.float16), wanted, threads=0)
        found_keys = np.asarray(found.keys).reshape(len(vectors), -1)
        distances = np.asarray(found.distances).reshape(len(vectors), -1)
        # a batch answers BatchMatches (counts per row); one row may answer Matches (count)
        per_row = getattr(found, "counts", None)
        counts = np.asarray(per_row if per_row is not None else [len(found.keys)]).reshape(-1)
        return [
            [
                (int(other), 1.0 - float(distance))
                for other, distance in zip(row_keys[:n], row_distances[:n], strict=True)
                if int(other) != int(key)
            ][:count]
            for key, row_keys, row_distances, n in zip(
                keys, found_keys, distances, counts, strict=True
            )
        ]

    def __len__(self) -> int:
        return 0 if self._index is None else len(self._index)

    def _load(self) -> None:
        try:
            meta = json.loads(self._meta.read_text())
            recorded = Extent(int(meta["count"]), int(meta["max_id"]))
            index = _usearch().restore(str(self.path))
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            if self.path.exists() or self._meta.exists():
                log.info("vector index %s unusable (%s): rebuilding it", self.path, exc)
            return
        if index is None or len(index) != recorded.count:  # saved without its record
            return
        self._index, self._extent = index, recorded

    def _rebuild(self) -> None:
        self.rebuilds += 1
        self._index = None
        index: Index | None = None
        last = 0
        for ids, vectors in embeddings_after(self._store, self._model, 0):
            if index is None:
                index = self._new(vectors.shape[1])
            index.add(ids.astype(np.uint64), vectors)
            last = int(ids[-1])
        self._index = index if index is not None else self._new(0)
        self._extent = Extent(len(self._index), last)
        self._save()

    def _add_after(self, index: Index, after: int) -> None:
        last = after
        for ids, vectors in embeddings_after(self._store, self._model, after):
            index.add(ids.astype(np.uint64), vectors)
            last = int(ids[-1])
        self._extent = Extent(len(index), last)

    def _new(self, dim: int) -> Index:
        return _usearch()(ndim=max(dim, 1), metric="cos", dtype="f16")

    def _save(self) -> None:
        """Index first, then its record, each replaced whole: a crash in between leaves a
        record that does not match the file, which the next use rebuilds."""
        if self._index is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for target, write in (
            (self.path, lambda name: self._index.save(name) if self._index else None),
            (self._meta, lambda name: Path(name).write_text(json.dumps(asdict(self._extent)))),
        ):
            handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
            os.close(handle)
            try:
                write(name)
                os.replace(name, target)
            except BaseException:
                Path(name).unlink(missing_ok=True)
                raise
