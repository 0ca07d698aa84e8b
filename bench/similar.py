"""How the similar-photos index scales: N synthetic embeddings of the real dimension (1280,
L2-normalised float16, clustered as photos are), written straight into a fresh tagger
database, then the real `VectorIndex` built from it and queried.

Prints: build time (reading the database included), query p50/p95 over 200 queries, and the
RSS the index added (VmRSS before and after building).

    python bench/similar.py [--vectors 100000] [--db /tmp/tagger-similar.db] [--duplicates]
"""

from __future__ import annotations

import argparse
import re
import sqlite3
import tempfile
import time
from pathlib import Path

import numpy as np

from tagger.records import ModelId
from tagger.store.database import Store
from tagger.store.index import VectorIndex

DIM = 1280
MODEL = ModelId("efficientnet_lite0", "0" * 64)


def rss_mb() -> float:
    status = Path("/proc/self/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    return int(match.group(1)) / 1024 if match else 0.0


def fill(db: Path, count: int, seed: int = 0) -> None:
    """`count` images with embeddings around 1000 random centres (photos come in kinds)."""
    Store(f"sqlite:///{db}").close()
    rng = np.random.default_rng(seed)
    centres = np.abs(rng.standard_normal((1000, DIM))).astype(np.float32)
    with sqlite3.connect(db) as connection:
        for start in range(0, count, 10_000):
            n = min(10_000, count - start)
            vectors = centres[rng.integers(0, 1000, n)] + rng.standard_normal((n, DIM)) * 0.5
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            half = vectors.astype("<f2")
            connection.executemany(
                "INSERT INTO images (id, sha256, size, tagged_at, status, model, weights_sha256)"
                " VALUES (?, ?, 0, '2026-01-01', 'tagged', ?, ?)",
                [
                    (i + 1, f"{i:064x}", MODEL.name, MODEL.weights_sha256)
                    for i in range(start, start + n)
                ],
            )
            connection.executemany(
                "INSERT INTO embeddings (image_id, model, weights_sha256, dim, vector)"
                " VALUES (?, ?, ?, ?, ?)",
                [
                    (start + j + 1, MODEL.name, MODEL.weights_sha256, DIM, half[j].tobytes())
                    for j in range(n)
                ],
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--db", type=Path)
    parser.add_argument(
        "--duplicates", action="store_true", help="also time near-duplicates of the whole library"
    )
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="tagger-similar-"))
    db = args.db or folder / "tagger.db"
    if not db.exists():
        started = time.perf_counter()
        fill(db, args.vectors)
        print(f"filled {args.vectors:,} embeddings in {time.perf_counter() - started:.1f} s")
    store = Store(f"sqlite:///{db}")
    before = rss_mb()
    index = VectorIndex(store, MODEL, folder)
    started = time.perf_counter()
    index.sync()
    built = time.perf_counter() - started
    added = rss_mb() - before
    rng = np.random.default_rng(1)
    queries = rng.standard_normal((200, DIM)).astype(np.float16)
    times = []
    for query in queries:
        started = time.perf_counter()
        index.search(query, 10)
        times.append((time.perf_counter() - started) * 1000)
    p50, p95 = np.percentile(times, [50, 95])
    print(
        f"{len(index):,} vectors: build {built:.1f} s, query p50 {p50:.1f} ms, p95 {p95:.1f} ms"
        f" (sync against the database included), added RSS {added:.0f} MB"
    )
    if args.duplicates:
        from tagger.config import Settings
        from tagger.service import near_duplicates

        settings = Settings(db=f"sqlite:///{db}", data_dir=folder)
        started = time.perf_counter()
        groups = near_duplicates(settings, store, 0.75)
        print(
            f"near-duplicates of {len(index):,}: {time.perf_counter() - started:.1f} s,"
            f" {len(groups)} groups"
        )
    store.close()


if __name__ == "__main__":
    main()
