"""The vector index behind similar photos and near-duplicates: a derived cache, the database
stays the truth.

One usearch file per model in the data directory, keyed by the embeddings' row ids (never
reused), with a small JSON file beside it recording what it holds (count and newest row
id). It is searched memory-mapped (`view`): its vectors and graph are page cache the kernel
shares and drops, not memory of the process (256 MB of vectors at 100,000 photos, which a
web server would otherwise hold). Rows added since the file was saved wait in a small delta
in memory, searched exactly and merged with the file's answers; past `FOLD_AT` rows (or a
tenth of the file, which keeps small libraries always saved) they are folded into the file.

Before each use it is compared with the database: rows added since are added (the common
case: a scan stored more), anything else (a file deleted or damaged, a crash between a
commit and the index's save, rows removed by prune or re-tagging) rebuilds it from the
database. Answers are checked against the database again (store/vectors.py,
`present_images`), so a path the store has dropped is never returned. That check makes
counting the rows before every search unneeded: a long-running process (the web server)
compares only the newest row id (instant; rows past it are counted, a short range), and
counts them all (which reads the whole of the table's index: a second at a million rows on
a busy machine) on its first use and every `RECOUNT_S` after, to rebuild without removed
rows.

Exact search below `EXACT_BELOW` vectors (a scan of 10,000 x 1280 float16 takes a few ms);
HNSW above it (docs/benchmarks.md).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from tagger.errors import TaggerError
from tagger.records import ModelId
from tagger.store.database import Store
from tagger.store.vectors import Extent, embeddings_after, extent, newest

if TYPE_CHECKING:
    from usearch.index import BatchMatches, Index, Matches

log = logging.getLogger(__name__)
EXACT_BELOW = 50_000
FOLD_AT = 5_000  # delta rows (12 MB of float16) before they go into the file
RECOUNT_S = 60.0

Found = list[tuple[int, float]]  # (embedding row id, cosine distance), nearest first


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
        self._loaded = False
        self._file: Index | None = None  # the saved file, mapped; None while it holds nothing
        self._saved = Extent(0, 0)  # what the file holds
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
            (found,) = self._nearest(query, count + (exclude is not None), graph=False)
        return [(key, 1.0 - distance) for key, distance in found if key != exclude][:count]

    def neighbours(
        self, keys: npt.NDArray[np.int64], vectors: npt.NDArray[Any], count: int
    ) -> list[list[tuple[int, float]]]:
        """For many stored vectors at once (their row ids `keys`): each one's `count` nearest
        others, searched in one batch on every core (near-duplicates of a whole library).
        The caller syncs first."""
        if len(vectors) == 0:
            return [[] for _ in keys]
        with self._lock:
            # the graph, whatever the size: an exact search of every photo against every
            # other is quadratic (90 s at 20,000 here), and a near-duplicate is so close
            # that the graph does not miss it
            found = self._nearest(np.asarray(vectors, np.float16), count + 1, graph=True)
        return [
            [(other, 1.0 - distance) for other, distance in row if other != int(key)][:count]
            for key, row in zip(keys, found, strict=True)
        ]

    def __len__(self) -> int:
        return self._saved.count + len(self._delta_keys)

    def _held(self) -> Extent:
        newest = int(self._delta_keys[-1]) if len(self._delta_keys) else self._saved.max_id
        return Extent(len(self), newest)

    def _nearest(
        self, queries: npt.NDArray[np.float16], count: int, graph: bool, threads: int = 0
    ) -> list[Found]:
        """Each query's `count` nearest of the file's (the graph when `graph` or when large,
        else exact) and the delta's (always exact), merged by distance."""
        found: list[Found] = [[] for _ in queries]
        if self._file is not None and len(self._file):
            exact = not graph and len(self._file) < EXACT_BELOW
            matches = self._file.search(
                queries, min(count, len(self._file)), exact=exact, threads=threads
            )
            for row, match in zip(found, _each(matches, len(queries)), strict=True):
                row += zip(match.keys.tolist(), match.distances.tolist(), strict=True)
        if len(self._delta_keys):
            from usearch.index import search

            matches = search(
                self._delta,
                queries,
                min(count, len(self._delta_keys)),
                metric="cos",
                exact=True,
                threads=threads if len(queries) > 1 else 1,  # a few ms: no pool
            )
            for row, match in zip(found, _each(matches, len(queries)), strict=True):
                keys = self._delta_keys[match.keys].tolist()
                row += zip(keys, match.distances.tolist(), strict=True)
                row.sort(key=lambda pair: pair[1])
        return [[(int(key), float(distance)) for key, distance in row[:count]] for row in found]

    def _load(self) -> None:
        """The saved file, mapped, if it matches its record; else nothing (a rebuild)."""
        self._close()
        try:
            meta = json.loads(self._meta.read_text())
            recorded = Extent(int(meta["count"]), int(meta["max_id"]))
            index = _usearch().restore(str(self.path), view=True)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            if self.path.exists() or self._meta.exists():
                log.info("vector index %s unusable (%s): rebuilding it", self.path, exc)
            return
        if index is None or len(index) != recorded.count:  # saved without its record
            return
        self._file = index if len(index) else None
        self._saved, self._loaded = recorded, True

    def _close(self) -> None:
        if self._file is not None:
            self._file.reset()  # type: ignore[no-untyped-call]  # unmaps the file
        self._file, self._saved, self._loaded = None, Extent(0, 0), False
        self._delta_keys = np.empty(0, np.int64)
        self._delta = np.empty((0, 0), np.float16)

    def _rebuild(self) -> None:
        self.rebuilds += 1
        self._close()
        index: Index | None = None
        last = 0
        for ids, vectors in embeddings_after(self._store, self._model, 0):
            if index is None:
                index = self._new(vectors.shape[1])
            index.add(ids.astype(np.uint64), vectors)
            last = int(ids[-1])
        self._replace(index if index is not None else self._new(0), last)

    def _fold(self) -> None:
        """The delta and the rows after it into the file: loaded whole for a moment (usearch
        cannot add to a mapped index), saved, mapped again."""
        self.folds += 1
        try:
            index = _usearch().restore(str(self.path))
        except (OSError, ValueError, RuntimeError):
            index = None
        if index is None or len(index) != self._saved.count:  # replaced under us: start over
            self._rebuild()
            return
        if len(self._delta_keys):
            index.add(self._delta_keys.astype(np.uint64), self._delta)
        last = self._held().max_id
        for ids, vectors in embeddings_after(self._store, self._model, last):
            index.add(ids.astype(np.uint64), vectors)
            last = int(ids[-1])
        self._close()
        self._replace(index, last)

    def _catch_up(self, added: int) -> None:
        """The `added` rows after the newest held: into the delta, or all into the file."""
        waiting = len(self._delta_keys) + added
        if waiting >= FOLD_AT or waiting * 10 >= self._saved.count:
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

    def _new(self, dim: int) -> Index:
        return _usearch()(ndim=max(dim, 1), metric="cos", dtype="f16")

    def _replace(self, index: Index, newest: int) -> None:
        """Save a whole in-memory index as the file, let go of it, and map the file."""
        self._save(index, Extent(len(index), newest))
        index.reset()  # type: ignore[no-untyped-call]
        self._load()

    def _save(self, index: Index, held: Extent) -> None:
        """Index first, then its record, each replaced whole: a crash in between leaves a
        record that does not match the file, which the next use rebuilds."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for target, write in (
            (self.path, lambda name: index.save(name)),
            (self._meta, lambda name: Path(name).write_text(json.dumps(asdict(held)))),
        ):
            handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
            os.close(handle)
            try:
                write(name)
                os.replace(name, target)
            except BaseException:
                Path(name).unlink(missing_ok=True)
                raise


def _each(found: Matches | BatchMatches, queries: int) -> list[Matches]:
    """One Matches per query (usearch answers a batch of one with a Matches)."""
    from usearch.index import Matches

    if isinstance(found, Matches):
        return [found]
    return [found[row] for row in range(queries)]
