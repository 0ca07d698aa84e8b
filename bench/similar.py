"""How the similar-photos index scales: N synthetic embeddings of the real dimension (1280,
L2-normalised float16, clustered as photos are), written straight into a fresh tagger
database, then the real `VectorIndex` built from it and queried.

Prints: build time (reading the database included), query p50/p95 over 200 queries, and what
the process holds afterwards, split as the kernel counts it: RssAnon (its own memory) and
RssFile (pages of the memory-mapped index it has touched: page cache, shared and dropped
under pressure). `--recall` compares the answers for 200 stored photos with an exact search
of every stored vector (recall of the top 10, and how far the similarities shown are from
the exact ones); `--added N` then stores N more rows and times the catch-up (a delta below
the fold threshold, else a fold into the file); `--daemon` starts a real `tagger watch
--listen` on the database and reads its RSS after opening 50 photo pages (each shows
similar photos). `--db` may name a real library's database: its model's embeddings are
used.

    python bench/similar.py [--vectors 100000] [--db /tmp/tagger-similar.db] [--duplicates]
        [--recall] [--candidates 160] [--added 1000] [--daemon] [--data FOLDER]
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import tagger.store.index
from tagger.records import ModelId
from tagger.store.database import Store
from tagger.store.index import VectorIndex
from tagger.store.vectors import embedding_models

DIM = 1280
MODEL = ModelId("efficientnet_lite0", "0" * 64)


def memory(pid: int | str = "self") -> dict[str, float]:
    """VmRSS, RssAnon, RssFile and VmHWM (peak) of a process, in MB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return {
        key: int(match.group(1)) / 1024
        for key in ("VmRSS", "RssAnon", "RssFile", "VmHWM")
        if (match := re.search(rf"{key}:\s+(\d+) kB", status))
    }


def shown(now: dict[str, float], before: dict[str, float] | None = None) -> str:
    base = before or dict.fromkeys(now, 0.0)
    added = ", ".join(
        f"{key} {'+' if before else ''}{now[key] - base[key]:.0f} MB"
        for key in ("RssAnon", "RssFile")
    )
    return f"{added}, peak VmHWM {now['VmHWM']:.0f} MB"


def fill(db: Path, count: int, seed: int = 0, first: int = 0) -> None:
    """`count` images (ids after `first`) with embeddings around 1000 random centres (photos
    come in kinds), each held by a present path that is not on disk (never served)."""
    Store(f"sqlite:///{db}").close()
    rng = np.random.default_rng(seed)
    centres = np.abs(np.random.default_rng(0).standard_normal((1000, DIM))).astype(np.float32)
    with sqlite3.connect(db) as connection:
        for start in range(first, first + count, 10_000):
            n = min(10_000, first + count - start)
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
        with_paths(connection)


def with_paths(connection: sqlite3.Connection) -> None:
    """A present path for every image without one (the similar photos a page shows)."""
    connection.execute(
        "INSERT INTO files (path, image_id, size, mtime_ns, first_seen, last_seen)"
        " SELECT '/nowhere/bench/' || id || '.jpg', id, 0, 0, '2026-01-01 00:00:00',"
        " '2026-01-01 00:00:00' FROM images WHERE id NOT IN (SELECT image_id FROM files"
        " WHERE image_id IS NOT NULL)"
    )


def queried(index: VectorIndex, seed: int = 1) -> tuple[float, float]:
    """p50 and p95 in ms of 200 searches of 10 neighbours, each checked against the database
    as every search is."""
    queries = np.random.default_rng(seed).standard_normal((200, DIM)).astype(np.float16)
    times = []
    for query in queries:
        started = time.perf_counter()
        index.search(query, 10)
        times.append((time.perf_counter() - started) * 1000)
    p50, p95 = np.percentile(times, [50, 95])
    return float(p50), float(p95)


def recall(store: Store, model: ModelId, index: VectorIndex, count: int = 200) -> None:
    """Recall of the exact top 10 for `count` stored photos (spread over the library, each
    left out of its own answer), and the largest difference between a similarity shown and
    the exact one, the exact search a pass over every stored vector."""
    from tagger.store.vectors import embeddings_after

    total = len(index)
    picks = set(np.linspace(0, total - 1, count).astype(int).tolist())
    keys, queries, seen = [], [], 0
    for ids, vectors in embeddings_after(store, model, 0):
        for at in range(len(ids)):
            if seen + at in picks:
                keys.append(int(ids[at]))
                queries.append(vectors[at])
        seen += len(ids)
    wide = np.stack(queries).astype(np.float32)
    wide /= np.linalg.norm(wide, axis=1, keepdims=True)
    best_ids = np.zeros((len(keys), 0), np.int64)
    best = np.zeros((len(keys), 0), np.float32)
    for ids, vectors in embeddings_after(store, model, 0):
        block = vectors.astype(np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        scores = np.concatenate([best, wide @ block.T], axis=1)
        every = np.concatenate([best_ids, np.broadcast_to(ids, (len(keys), len(ids)))], axis=1)
        scores[every == np.array(keys)[:, None]] = -2.0  # not itself
        top = np.argsort(-scores, axis=1)[:, :10]
        best, best_ids = np.take_along_axis(scores, top, 1), np.take_along_axis(every, top, 1)
    hits, off, times, gaps = 0, 0.0, [], []
    for key, query, exact_ids in zip(keys, queries, best_ids, strict=True):
        started = time.perf_counter()
        answer = index.search(query, 10, exclude=key)
        times.append((time.perf_counter() - started) * 1000)
        hits += len({found for found, _ in answer} & set(exact_ids.tolist()))
        gaps.append(float(best[keys.index(key)].mean()) - float(np.mean([s for _, s in answer])))
        shown = dict(answer)
        for other, score in zip(exact_ids.tolist(), best[keys.index(key)].tolist(), strict=True):
            if other in shown:
                off = max(off, abs(shown[other] - score))
    p50, p95 = np.percentile(times, [50, 95])
    print(
        f"recall@10 of {len(keys)} stored photos against an exact search: "
        f"{hits / len(keys) / 10:.4f} (mean similarity of the 10 shown {np.mean(gaps):.4f}"
        f" below the exact 10's, at most {max(gaps):.4f}); similarities shown off by"
        f" {off:.1e} at most;"
        f" p50 {p50:.1f} ms, p95 {p95:.1f} ms"
    )


def added(db: Path, store: Store, index: VectorIndex, count: int) -> None:
    """Store `count` more rows, time the catch-up and the searches after it, then remove
    them again (the database is reused between runs)."""
    with sqlite3.connect(db) as connection:
        first = int(connection.execute("SELECT max(id) FROM images").fetchone()[0])
    fill(db, count, seed=2, first=first)
    folds = index.folds
    started = time.perf_counter()
    index.sync()
    caught_up = time.perf_counter() - started
    how = "folded into the file" if index.folds > folds else "kept as the delta"
    p50, p95 = queried(index, seed=3)
    print(
        f"+{count:,} rows {how} in {caught_up:.1f} s; then query p50 {p50:.1f} ms,"
        f" p95 {p95:.1f} ms; {shown(memory())}"
    )
    with sqlite3.connect(db) as connection:
        for table, key in (("files", "image_id"), ("embeddings", "image_id"), ("images", "id")):
            connection.execute(f"DELETE FROM {table} WHERE {key} > ?", (first,))


def daemon(db: Path, data: Path, pages: int = 50) -> None:
    """A real `tagger watch --listen` on the database (its index file already saved in
    `data`): its memory once started, and after `pages` photo pages with similar photos."""
    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = os.environ | {
        "TAGGER_DATA_DIR": str(data),
        "TAGGER_WEB__INBOX": str(data / "inbox"),
    }
    command = [sys.executable, "-m", "tagger", "--db", str(db), "watch"]
    process = subprocess.Popen(
        [*command, "--listen", f"127.0.0.1:{port}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            raise SystemExit("tagger watch --listen did not start")
        time.sleep(2)
        start = memory(process.pid)
        print(f"daemon started: VmRSS {start['VmRSS']:.0f} MB ({shown(start)})")
        with sqlite3.connect(db) as connection:
            total = int(connection.execute("SELECT count(*) FROM images").fetchone()[0])
        shas = [f"{i:064x}" for i in np.linspace(0, total - 1, pages).astype(int)]
        times = []
        for sha in shas:
            started = time.perf_counter()
            answer = httpx.get(f"{url}/photos/{sha}", timeout=600)
            times.append(time.perf_counter() - started)
            if answer.status_code != 200 or "/nowhere/bench/" not in answer.text:
                raise SystemExit(f"/photos/{sha}: {answer.status_code}, no similar photos")
        after = memory(process.pid)
        print(
            f"daemon after {pages} photo pages (first {times[0] * 1000:.0f} ms, median"
            f" {np.median(times) * 1000:.0f} ms): VmRSS {after['VmRSS']:.0f} MB ({shown(after)})"
        )
    finally:
        process.terminate()
        process.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--db", type=Path)
    parser.add_argument(
        "--duplicates", action="store_true", help="also time near-duplicates of the whole library"
    )
    parser.add_argument(
        "--recall", action="store_true", help="also the recall against an exact search"
    )
    parser.add_argument(
        "--candidates", type=int, help="re-rank this many (default: the index's CANDIDATES)"
    )
    parser.add_argument("--added", type=int, default=0, help="then store this many more rows")
    parser.add_argument("--daemon", action="store_true", help="then a real watch --listen")
    parser.add_argument("--data", type=Path, help="the index folder of an earlier run: reused")
    args = parser.parse_args()
    if args.candidates:
        tagger.store.index.CANDIDATES = args.candidates
    folder = args.data or Path(tempfile.mkdtemp(prefix="tagger-similar-"))
    db = args.db or folder / "tagger.db"
    if not db.exists():
        started = time.perf_counter()
        fill(db, args.vectors)
        print(f"filled {args.vectors:,} embeddings in {time.perf_counter() - started:.1f} s")
    with sqlite3.connect(db) as connection:
        with_paths(connection)
    store = Store(f"sqlite:///{db}")
    model = embedding_models(store)[0]
    before = memory()
    index = VectorIndex(store, model, folder)
    started = time.perf_counter()
    index.sync()
    built = time.perf_counter() - started
    after_build = memory()
    p50, p95 = queried(index)
    print(f"index in {folder}")
    print(
        f"{len(index):,} vectors: {'built' if index.rebuilds else 'mapped'} in {built:.1f} s,"
        f" query p50 {p50:.1f} ms, p95 {p95:.1f} ms (sync against the database included)"
    )
    print(
        f"process memory added: after the build {shown(after_build, before)};"
        f" after 200 searches {shown(memory(), before)}"
    )
    reopened = VectorIndex(store, model, folder)
    started = time.perf_counter()
    reopened.sync()
    print(f"the saved file mapped again (a later start): {time.perf_counter() - started:.2f} s")
    del reopened
    if args.recall:
        recall(store, model, index)
    if args.added:
        added(db, store, index, args.added)
    if args.duplicates:
        from tagger.config import Settings
        from tagger.service.similar import near_duplicates

        settings = Settings(db=f"sqlite:///{db}", data_dir=folder)
        started = time.perf_counter()
        groups = near_duplicates(settings, store, 0.75)
        print(
            f"near-duplicates of {len(index):,}: {time.perf_counter() - started:.1f} s,"
            f" {len(groups)} groups"
        )
    store.close()
    if args.daemon:
        daemon(db, folder)


if __name__ == "__main__":
    main()
