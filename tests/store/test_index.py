"""The vector index on a real SQLite file and real usearch files: searched memory-mapped,
its candidates ranked by the exact similarity of the stored vectors, rows added since its
save found before they are folded in, and the database the truth whatever happens to the
files. Vectors are random (64-d), checked against an exact search."""

from __future__ import annotations

import json
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

import tagger.store.index
from tagger.records import ModelId
from tagger.store.database import Store
from tagger.store.index import VectorIndex

MODEL = ModelId("efficientnet_lite0", "0" * 64)
DIM = 64


class Library:
    """A database of embeddings written as the writer stores them, and the truth to check
    the index against."""

    def __init__(self, tmp_path: Path) -> None:
        self.db = tmp_path / "tagger.db"
        self.store = Store(f"sqlite:///{self.db}")
        self.folder = tmp_path / "data"
        self.vectors: dict[int, npt.NDArray[np.float16]] = {}
        self.rng = np.random.default_rng(0)

    def add(self, count: int, like: npt.NDArray[np.float16] | None = None) -> list[int]:
        """`count` new embeddings (near copies of `like`, if given); their row ids."""
        raw = self.rng.standard_normal((count, DIM))
        if like is not None:
            raw = like.astype(np.float64) + raw * 0.01
        vectors = (raw / np.linalg.norm(raw, axis=1, keepdims=True)).astype("<f2")
        ids = []
        with sqlite3.connect(self.db) as connection:
            first = connection.execute("SELECT coalesce(max(id), 0) FROM images").fetchone()[0]
            for offset, vector in enumerate(vectors):
                image = first + offset + 1
                connection.execute(
                    "INSERT INTO images (id, sha256, size, tagged_at, status, model,"
                    " weights_sha256) VALUES (?, ?, 0, '2026-01-01', 'tagged', ?, ?)",
                    (image, f"{image:064x}", MODEL.name, MODEL.weights_sha256),
                )
                row = connection.execute(
                    "INSERT INTO embeddings (image_id, model, weights_sha256, dim, vector)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (image, MODEL.name, MODEL.weights_sha256, DIM, vector.tobytes()),
                ).lastrowid
                assert row is not None
                self.vectors[row] = vector
                ids.append(row)
        return ids

    def remove(self, row: int) -> None:
        with sqlite3.connect(self.db) as connection:
            connection.execute("DELETE FROM embeddings WHERE id = ?", (row,))
        del self.vectors[row]

    def index(self) -> VectorIndex:
        return VectorIndex(self.store, MODEL, self.folder)

    def similarity(self, key: int, query: npt.NDArray[np.float16]) -> float:
        vector, other = self.vectors[key].astype(np.float32), query.astype(np.float32)
        return float(vector @ other / np.linalg.norm(vector) / np.linalg.norm(other))

    def check(self, index: VectorIndex, query: npt.NDArray[np.float16], count: int = 10) -> None:
        """The index answers the `count` most similar rows there are (compared by score:
        float16 rounding may swap two that tie)."""
        answer = index.search(query, count)
        best = sorted((self.similarity(key, query) for key in self.vectors), reverse=True)
        assert [key in self.vectors for key, _ in answer] == [True] * len(answer)
        got = [self.similarity(key, query) for key, _ in answer]
        assert got == pytest.approx(best[:count], abs=1e-6)
        assert [score for _, score in answer] == pytest.approx(got, abs=1e-6)  # exact

    def record(self, index: VectorIndex) -> dict[str, Any]:
        return dict(json.loads(index.path.with_suffix(".json").read_text()))

    def saved_count(self, index: VectorIndex) -> int:
        return int(self.record(index)["count"])


@pytest.fixture
def library(tmp_path: Path) -> Iterator[Library]:
    made = Library(tmp_path)
    yield made
    made.store.close()


def found(index: VectorIndex, query: npt.NDArray[np.float16], count: int = 10) -> list[int]:
    return [key for key, _ in index.search(query, count)]


def queries(count: int = 20) -> npt.NDArray[np.float16]:
    return np.random.default_rng(1).standard_normal((count, DIM)).astype(np.float16)


def test_searches_the_saved_file_mapped_with_the_exact_answers(library: Library) -> None:
    library.add(300)
    index = library.index()
    index.sync()
    if sys.platform == "linux":  # the file is mapped, not read into the process
        assert str(index.path) in Path("/proc/self/maps").read_text()
    for query in queries():
        library.check(index, query)
    again = library.index()  # a later start maps the saved file, reads no embedding
    again.sync()
    assert again.rebuilds == 0 and len(again) == 300
    library.check(again, queries()[0])


def test_the_index_holds_less_than_the_vectors_but_answers_their_exact_similarity(
    library: Library, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reduced to 16 numbers, the index's own distances are far from the truth; the
    similarities it answers are those of the stored vectors all the same."""
    from usearch.index import Index

    monkeypatch.setattr(tagger.store.index, "REDUCED", 16)
    centres = library.add(20)
    for centre in centres:  # photos come in kinds, and some are near-duplicates
        library.add(30, like=library.vectors[centre] * 0.15)
        library.add(2, like=library.vectors[centre] * 2)
    index = library.index()
    index.sync()
    saved = Index.restore(str(index.path))
    assert saved is not None and saved.ndim == 16 and str(saved.dtype) == "ScalarKind.I8"
    projection = tagger.store.index.Projection.from_bytes(index.projection_path.read_bytes())
    off = []
    for key in centres[:5]:
        query = library.vectors[key]
        library.check(index, query)
        reduced = saved.search(projection(query[None]), 10)
        off += [
            abs(library.similarity(int(other), query) - (1 - distance / 2 / projection.scale**2))
            for other, distance in zip(reduced.keys, reduced.distances, strict=True)
        ]
    assert max(off) > 0.05  # what the index alone would have said
    # near-duplicates: what the graph finds (its recall is measured in bench/similar.py),
    # with the exact similarity; what it places too far to reach 0.95 is not read back
    keys = np.array(list(library.vectors))
    vectors = np.stack([library.vectors[int(key)] for key in keys])
    pairs = index.neighbours(keys, vectors, 3, at_least=0.95)
    close = sum(score >= 0.95 for row in pairs for _, score in row)
    assert close >= 100  # of the 120 pairs of tight copies, whatever the graph misses
    for key, row in zip(keys, pairs, strict=True):
        query = library.vectors[int(key)]
        scores = [score for _, score in row]
        assert scores == sorted(scores, reverse=True) and int(key) not in dict(row)
        assert scores == pytest.approx([library.similarity(k, query) for k, _ in row], abs=1e-6)


def test_rows_added_after_the_save_are_found_before_and_after_the_fold(
    library: Library,
) -> None:
    library.add(1000)
    index = library.index()
    index.sync()
    (new,) = library.add(1, like=library.vectors[7])  # a near copy, stored after the save
    index.sync()
    assert index.folds == 0 and library.saved_count(index) == 1000  # waiting in memory
    assert found(index, library.vectors[7], 2) == [7, new]
    assert [key for key, _ in index.neighbours(np.array([7]), library.vectors[7][None], 1)[0]] == [
        new
    ]
    for query in queries():
        library.check(index, query)
    library.add(150)  # past a tenth of the file: folded in
    index.sync()
    assert index.folds == 1 and index.rebuilds == 1 and library.saved_count(index) == 1151
    assert found(index, library.vectors[7], 2) == [7, new]
    for query in queries():
        library.check(index, query)
    later = library.index()
    later.sync()
    assert later.rebuilds == 0 and found(later, library.vectors[new], 1) == [new]


def test_the_database_stays_the_truth_whatever_happens_to_the_file(
    library: Library, monkeypatch: pytest.MonkeyPatch
) -> None:
    library.add(200)
    index = library.index()
    index.sync()
    other = library.index()  # another process: `tagger similar` beside the web server
    other.sync()
    index.path.unlink()  # deleted while the first one has it mapped: it still answers
    library.check(index, queries()[0])
    library.add(25)
    other.sync()  # a tenth more to fold in, but no file to fold into: rebuilt
    assert other.rebuilds == 1 and index.path.exists()
    library.add(5)
    index.sync()  # the file it mapped was replaced under it: it catches up all the same
    for query in queries():
        library.check(index, query)
        library.check(other, query)
    # a crash between a commit and the index's save: rows the file never saw, caught up
    missed = library.add(3)
    fresh = library.index()
    fresh.sync()
    assert fresh.rebuilds == 0 and found(fresh, library.vectors[missed[0]], 1) == missed[:1]
    # rows removed (prune, re-tagging): rebuilt without them, never answered again
    removed = library.vectors[missed[0]]
    library.remove(missed[0])
    monkeypatch.setattr(tagger.store.index, "RECOUNT_S", 0.0)  # a web server, a minute on
    fresh.sync()
    assert fresh.rebuilds == 1 and missed[0] not in found(fresh, removed)


def test_a_library_without_embeddings(library: Library) -> None:
    index = library.index()
    index.sync()
    assert len(index) == 0 and index.search(queries()[0], 5) == []
    assert index.neighbours(np.empty(0, np.int64), np.empty((0, DIM), np.float16), 3) == []
    again = library.index()
    again.sync()
    assert again.rebuilds == 0  # the empty index was saved and read back
    ids = library.add(3)
    assert found(again, library.vectors[ids[1]], 1) == [ids[1]]


def test_an_index_of_the_previous_format_or_without_its_projection_is_rebuilt(
    library: Library,
) -> None:
    from usearch.index import Index

    library.add(100)
    index = library.index()
    index.sync()
    # the previous version's files: the full float16 vectors, a record without a format
    old = Index(ndim=DIM, metric="cos", dtype="f16")
    old.add(np.array(list(library.vectors), np.uint64), np.stack(list(library.vectors.values())))
    old.save(str(index.path))
    index.path.with_suffix(".json").write_text(json.dumps({"count": 100, "max_id": 100}))
    index.projection_path.unlink()
    upgraded = library.index()
    upgraded.sync()
    assert upgraded.rebuilds == 1 and library.record(upgraded)["format"] == 2
    for query in queries():
        library.check(upgraded, query)
    for damage in ("delete", "replace"):  # the projection lost, or another build's
        if damage == "delete":
            index.projection_path.unlink()
        else:
            other = tagger.store.index.Projection.fit(np.stack(list(library.vectors.values()))[:9])
            index.projection_path.write_bytes(other.to_bytes())
        fresh = library.index()
        fresh.sync()
        assert fresh.rebuilds == 1 and fresh.projection_path.exists()
        library.check(fresh, queries()[0])


def test_the_projection_is_fitted_again_while_the_library_doubles(library: Library) -> None:
    library.add(10)
    index = library.index()
    index.sync()
    library.add(15)  # more than double what the projection was fitted on: fitted again
    index.sync()
    assert index.rebuilds == 2 and library.record(index)["fitted"] == 25
    library.add(5)  # a fifth more: folded in, projected as the rest
    index.sync()
    assert index.rebuilds == 2 and index.folds == 1 and library.record(index)["fitted"] == 25
    for query in queries():
        library.check(index, query)
