"""The vector index behind similar photos and near-duplicates: a derived cache, the database
stays the truth.

The index only finds candidates; the stored vectors rank them. It holds each embedding
reduced to `REDUCED` int8 numbers (its principal components, fitted on a sample of the
library when the index is built: 256 bytes for 2,560 of float16), so the pages a search
touches fit a daemon's memory (40 MB at 100,000 photos, where the full vectors took 271).
Its `CANDIDATES` nearest (more in a large library: a million photos hold more alike, and
the graph misses more) are read back from the database (rows by primary key) and ranked
by their exact cosine similarity: the similarities shown and compared with thresholds are
exact, only recall depends on the index (docs/benchmarks.md).

One usearch file per model in the data directory, keyed by the embeddings' row ids (never
reused), with the projection (`.projection.npz`) and a small JSON record beside it (what
the file holds: format, count, newest row id, the projection's digest). It is searched
memory-mapped (`view`): page cache the kernel shares and drops, not memory of the process.
Rows added since the file was saved wait in a small delta in memory, full-size and searched
exactly, merged with the file's candidates; past `FOLD_AT` rows (or a tenth of the file,
which keeps small libraries always saved) they are folded into the file, projected as the
rest; while the projection was fitted on fewer than `SAMPLE` rows and the library has
doubled since, the index is rebuilt instead (fitted again).

Before each use it is compared with the database: rows added since are added (the common
case: a scan stored more), anything else (a file deleted or damaged, a record of an older
format, a crash between a commit and the index's save, rows removed by prune or
re-tagging) rebuilds it from the database. Answers are checked against the database again
(store/vectors.py, `present_images`), so a path the store has dropped is never returned.
That check makes counting the rows before every search unneeded: a long-running process
(the web server) compares only the newest row id (instant; rows past it are counted, a
short range), and counts them all (which reads the whole of the table's index: a second at
a million rows on a busy machine) on its first use and every `RECOUNT_S` after, to rebuild
without removed rows.

Exact search of the reduced vectors below `EXACT_BELOW`; HNSW above it.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from tagger.errors import TaggerError
from tagger.records import ModelId
from tagger.store.database import Store
from tagger.store.vectors import Extent, embeddings_after, extent, newest, vectors_by_id

if TYPE_CHECKING:
    from usearch.index import BatchMatches, Index, Matches

log = logging.getLogger(__name__)
FORMAT = 2  # of the record; 1 (no "format" in it) held the full vectors: rebuilt
REDUCED = 256  # int8 numbers the index holds of each vector
SAMPLE = 20_000  # vectors the projection is fitted on
CANDIDATES = 160  # the index's nearest, re-ranked exactly, for a search
PER_CANDIDATE = 1_000  # photos: past 160,000, a candidate more each (1,000 at a million)
MARGIN = 0.02  # of similarity, for int8 rounding (see `Projection.reach`)
EXACT_BELOW = 50_000
FOLD_AT = 5_000  # delta rows (12 MB of float16) before they go into the file
RECOUNT_S = 60.0

Vectors = npt.NDArray[np.float16]
Candidates = dict[int, Vectors | None]  # row id: its vector, if held here


def _usearch() -> type[Index]:
    try:
        from usearch.index import Index
    except ImportError:  # a wheel for every platform tagger runs on, but an install may lack it
        raise TaggerError("similar photos need usearch: pip install usearch") from None
    return Index


@dataclass(frozen=True)
class Projection:
    """What the index holds of a vector: its `REDUCED` principal components (of a sample
    of the library), scaled into int8."""

    mean: npt.NDArray[np.float32]
    basis: npt.NDArray[np.float32]  # (dim, reduced), orthonormal columns, largest first
    scale: float

    @classmethod
    def fit(cls, sample: Vectors) -> Projection:
        data = sample.astype(np.float32)
        mean = data.mean(axis=0)
        data -= mean
        _, components = np.linalg.eigh(data.T @ data)  # ascending
        basis = np.ascontiguousarray(components[:, ::-1][:, : min(REDUCED, data.shape[1])])
        reach = float(np.abs(data @ basis).max())
        return cls(mean, basis, 127.0 / reach if reach > 0 else 1.0)

    def __call__(self, vectors: Vectors) -> npt.NDArray[np.int8]:
        reduced = (vectors.astype(np.float32) - self.mean) @ self.basis * self.scale
        return np.clip(np.rint(reduced), -127, 127).astype(np.int8)

    def reach(self, distances: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
        """The highest cosine similarity a candidate at these index distances can have: a
        projection only shortens distances, and for unit vectors |a - b|^2 = 2 - 2 cos
        (int8 rounding can lengthen them a little: `MARGIN`)."""
        return 1.0 - np.asarray(distances, np.float64) / (2 * self.scale**2)

    def to_bytes(self) -> bytes:
        out = io.BytesIO()
        np.savez(out, mean=self.mean, basis=self.basis, scale=np.float64(self.scale))
        return out.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Projection:
        with np.load(io.BytesIO(data)) as saved:
            return cls(saved["mean"], saved["basis"], float(saved["scale"]))


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


class VectorIndex:
    """The index of one model's embeddings, kept in step with the database."""

    def __init__(self, store: Store, model: ModelId, folder: Path) -> None:
        self._store, self._model = store, model
        stem = f"vectors-{model.name}-{model.weights_sha256[:12]}"
        self.path = folder / f"{stem}.usearch"
        self._meta = folder / f"{stem}.json"
        self.projection_path = folder / f"{stem}.projection.npz"
        self._file: Index | None = None  # the saved file, mapped; None while it holds nothing
        self._projection: Projection | None = None  # None while the library has no vector
        self._record: dict[str, Any] = {}  # the saved file's, as loaded; empty until then
        self._delta_keys = np.empty(0, np.int64)  # rows after the file's newest, in id order
        self._delta = np.empty((0, 0), np.float16)
        self._lock = threading.Lock()
        self._counted = -RECOUNT_S  # time.monotonic() of the last count
        self.rebuilds = 0  # for tests and logs: how often the database was read in full
        self.folds = 0  # how often the delta went into the file

    def sync(self) -> None:
        """Bring the index up to the database: load it, add what is new, or rebuild it."""
        with self._lock:
            if not self._loaded:
                self._load()
            held = self._held()
            if self._loaded and time.monotonic() - self._counted < RECOUNT_S:
                latest = newest(self._store, self._model)
                if latest == held.max_id:
                    return
                if latest > held.max_id and self._file is not None:  # counted since
                    self._catch_up(extent(self._store, self._model, after=held.max_id).count)
                    return
            stored = extent(self._store, self._model)
            self._counted = time.monotonic()
            if self._loaded and held == stored:
                return
            if self._file is not None and held.max_id <= stored.max_id:
                unchanged = extent(self._store, self._model, up_to=held.max_id)
                if unchanged == held:  # only additions since: catch up
                    self._catch_up(stored.count - held.count)
                    return
            self._rebuild()

    def search(
        self, vector: npt.NDArray[Any], count: int, exclude: int | None = None, sync: bool = True
    ) -> list[tuple[int, float]]:
        """Up to `count` (embedding row id, cosine similarity), most similar first
        (`sync=False`: the caller has just synced, for many searches in a row)."""
        if sync:
            self.sync()
        query = np.asarray(vector, np.float16)[None]
        with self._lock:  # a web server searches from several threads while one catches up
            wanted = max(CANDIDATES, len(self) // PER_CANDIDATE, count + 1)
            found = self._candidates(query, wanted, graph=False)
        (ranked,) = self._ranked(query, found)
        return [(key, score) for key, score in ranked if key != exclude][:count]

    def neighbours(
        self,
        keys: npt.NDArray[np.int64],
        vectors: npt.NDArray[Any],
        count: int,
        at_least: float = -1.0,
    ) -> list[list[tuple[int, float]]]:
        """For many stored vectors at once (their row ids `keys`): each one's `count` nearest
        others, searched in one batch on every core (near-duplicates of a whole library).
        Candidates the index places too far to reach a similarity of `at_least` are not
        read back. The caller syncs first."""
        if len(vectors) == 0:
            return [[] for _ in keys]
        queries = np.asarray(vectors, np.float16)
        with self._lock:
            # the graph, whatever the size: an exact search of every photo against every
            # other is quadratic (90 s at 20,000 here), and a near-duplicate is so close
            # that the graph does not miss it
            found = self._candidates(queries, 4 * (count + 1), graph=True, at_least=at_least)
        return [
            [(other, score) for other, score in row if other != int(key)][:count]
            for key, row in zip(keys, self._ranked(queries, found), strict=True)
        ]

    def __len__(self) -> int:
        return self._saved.count + len(self._delta_keys)

    @property
    def _loaded(self) -> bool:
        return bool(self._record)

    @property
    def _saved(self) -> Extent:
        """What the file holds, as its record says."""
        return Extent(int(self._record.get("count", 0)), int(self._record.get("max_id", 0)))

    def _held(self) -> Extent:
        newest = int(self._delta_keys[-1]) if len(self._delta_keys) else self._saved.max_id
        return Extent(len(self), newest)

    def _candidates(
        self, queries: Vectors, count: int, graph: bool, at_least: float | None = None
    ) -> list[Candidates]:
        """Each query's `count` nearest in the file (by the graph when `graph` or when
        large, else exact; those within reach of `at_least`) and in the delta (exact,
        their vectors copied: the delta may change once the lock is let go)."""
        found: list[Candidates] = [{} for _ in queries]
        if self._file is not None and self._projection is not None and len(self._file):
            exact = not graph and len(self._file) < EXACT_BELOW
            reduced = self._projection(queries)
            matches = self._file.search(reduced, min(count, len(self._file)), exact=exact)
            for row, match in zip(found, _each(matches, len(queries)), strict=True):
                near = match.keys
                if at_least is not None:
                    near = near[self._projection.reach(match.distances) >= at_least - MARGIN]
                row.update(dict.fromkeys(near.tolist()))
        if len(self._delta_keys):
            from usearch.index import search

            matches = search(
                self._delta,
                queries,
                min(count, len(self._delta_keys)),
                metric="cos",
                exact=True,
                threads=0 if len(queries) > 1 else 1,  # a few ms: no pool
            )
            for row, match in zip(found, _each(matches, len(queries)), strict=True):
                row.update(
                    (int(self._delta_keys[at]), self._delta[at].copy())
                    for at in match.keys.tolist()
                )
        return found

    def _ranked(self, queries: Vectors, found: list[Candidates]) -> list[list[tuple[int, float]]]:
        """Each query's candidates by their exact cosine similarity, best first, read back
        from the database (one that is no longer stored is dropped)."""
        stored = vectors_by_id(
            self._store, [key for row in found for key, vector in row.items() if vector is None]
        )
        ranked: list[list[tuple[int, float]]] = []
        for query, row in zip(queries, found, strict=True):
            known = {
                key: vector if vector is not None else stored[key]
                for key, vector in row.items()
                if vector is not None or key in stored
            }
            if not known:
                ranked.append([])
                continue
            scores = _cosines(query, np.stack(list(known.values())))
            order = np.argsort(-scores, kind="stable")
            keys = list(known)
            ranked.append([(keys[at], float(scores[at])) for at in order])
        return ranked

    def _load(self) -> None:
        """The saved file, mapped, with its projection, if they match their record; else
        nothing (a rebuild)."""
        self._close()
        try:
            record, projection, index = self._read(view=True)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            if self.path.exists() or self._meta.exists():
                log.info("vector index %s unusable (%s): rebuilding it", self.path, exc)
            return
        self._file = index if len(index) else None
        self._projection, self._record = projection, record

    def _read(self, view: bool) -> tuple[dict[str, Any], Projection | None, Index]:
        """The record, the projection and the file (mapped, or loaded whole), or an error
        saying why they do not belong together."""
        record = json.loads(self._meta.read_text())
        if record.get("format") != FORMAT:
            raise ValueError(f"format {record.get('format', 1)}, this version reads {FORMAT}")
        projection = None
        if record["projection"] is not None:
            data = self.projection_path.read_bytes()
            if _digest(data) != record["projection"]:
                raise ValueError("its projection is not the one recorded")
            projection = Projection.from_bytes(data)
        index = _usearch().restore(str(self.path), view=view)
        if index is None or len(index) != int(record["count"]):  # saved without its record
            raise ValueError("it holds other rows than its record says")
        if (projection is None) != (len(index) == 0) or (
            projection is not None and index.ndim != projection.basis.shape[1]
        ):
            raise ValueError("its projection does not fit it")
        return record, projection, index

    def _close(self) -> None:
        if self._file is not None:
            self._file.reset()  # type: ignore[no-untyped-call]  # unmaps the file
        self._file, self._projection, self._record = None, None, {}
        self._delta_keys = np.empty(0, np.int64)
        self._delta = np.empty((0, 0), np.float16)

    def _rebuild(self) -> None:
        """The projection fitted on a sample of the rows, then every row projected into a
        new file (two reads of the table: the sample is spread over all of it)."""
        self.rebuilds += 1
        self._close()
        projection = self._fitted()
        index = self._new(projection)
        last = 0
        if projection is not None:
            for ids, vectors in embeddings_after(self._store, self._model, 0):
                index.add(ids.astype(np.uint64), projection(vectors))
                last = int(ids[-1])
        self._replace(index, last, projection, fitted=len(index))

    def _fitted(self) -> Projection | None:
        """The projection fitted on every n-th row of the table (`SAMPLE` rows)."""
        total = extent(self._store, self._model).count
        step = max(1, -(-total // SAMPLE))
        sample, seen = [], 0
        for ids, vectors in embeddings_after(self._store, self._model, 0):
            sample.append(vectors[(-seen) % step :: step].copy())  # not a view of the chunk
            seen += len(ids)
        return Projection.fit(np.concatenate(sample)) if sample else None

    def _fold(self) -> None:
        """The delta and the rows after it into the file, projected as the rest: loaded
        whole for a moment (usearch cannot add to a mapped index), saved, mapped again."""
        self.folds += 1
        projection = self._projection
        try:
            record, _, index = self._read(view=False)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError):
            record, index = {}, None
        if index is None or projection is None or record != self._record:
            self._rebuild()  # replaced under us: start over
            return
        if len(self._delta_keys):
            index.add(self._delta_keys.astype(np.uint64), projection(self._delta))
        last = self._held().max_id
        for ids, vectors in embeddings_after(self._store, self._model, last):
            index.add(ids.astype(np.uint64), projection(vectors))
            last = int(ids[-1])
        self._close()
        self._replace(index, last, projection, fitted=int(record["fitted"]))

    def _catch_up(self, added: int) -> None:
        """The `added` rows after the newest held: into the delta, or all into the file
        (or a rebuild, while the projection was fitted on too few of them)."""
        waiting = len(self._delta_keys) + added
        fitted = int(self._record.get("fitted", 0))
        if fitted < SAMPLE and self._saved.count + waiting > 2 * fitted:
            self._rebuild()
        elif waiting >= FOLD_AT or waiting * 10 >= self._saved.count:
            self._fold()
        else:
            self._add_to_delta(self._held().max_id)

    def _add_to_delta(self, after: int) -> None:
        for ids, vectors in embeddings_after(self._store, self._model, after):
            known = (
                self._delta if len(self._delta_keys) else self._delta.reshape(0, vectors.shape[1])
            )
            self._delta = np.concatenate([known, vectors])
            self._delta_keys = np.concatenate([self._delta_keys, ids])

    def _new(self, projection: Projection | None) -> Index:
        dim = projection.basis.shape[1] if projection is not None else 1
        return _usearch()(ndim=dim, metric="l2sq", dtype="i8")

    def _replace(
        self, index: Index, newest: int, projection: Projection | None, fitted: int
    ) -> None:
        """Save a whole in-memory index as the file, let go of it, and map the file."""
        data = projection.to_bytes() if projection is not None else None
        record = {
            "format": FORMAT,
            "count": len(index),
            "max_id": newest,
            "fitted": fitted,  # rows the projection was fitted on a sample of
            "projection": _digest(data) if data is not None else None,
        }
        self._save(index, record, data)
        index.reset()  # type: ignore[no-untyped-call]
        self._load()

    def _save(self, index: Index, record: dict[str, Any], projection: bytes | None) -> None:
        """Projection and index first, then their record, each replaced whole: a crash in
        between leaves a record that does not match them, which the next use rebuilds."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        writes: list[tuple[Path, Callable[[str], object]]] = [
            (self.path, lambda name: index.save(name)),
            (self._meta, lambda name: Path(name).write_text(json.dumps(record))),
        ]
        if projection is not None:
            writes.insert(
                0, (self.projection_path, lambda name: Path(name).write_bytes(projection))
            )
        for target, write in writes:
            handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
            os.close(handle)
            try:
                write(name)
                os.replace(name, target)
            except BaseException:
                Path(name).unlink(missing_ok=True)
                raise


def _cosines(query: npt.NDArray[Any], vectors: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    """The exact cosine similarity of `query` with each of `vectors` (float32 sums)."""
    wide, target = vectors.astype(np.float32), query.astype(np.float32)
    norms = np.linalg.norm(wide, axis=1) * float(np.linalg.norm(target))
    return np.asarray(wide @ target / np.where(norms > 0, norms, 1.0), np.float32)


def _each(found: Matches | BatchMatches, queries: int) -> list[Matches]:
    """One Matches per query (usearch answers a batch of one with a Matches)."""
    from usearch.index import Matches

    if isinstance(found, Matches):
        return [found]
    return [found[row] for row in range(queries)]
