"""How queries, `labels --tree` and export scale: a synthetic library of N tagged images.

Each image gets a random softmax row (one class boosted, as a photo would have), its top 5
and its derived labels through the real `LabelRules.apply`, written straight into a fresh
tagger database; then the real `tagger` commands are timed, start-up included.

    python bench/labels_scale.py [--images 100000] [--db /tmp/tagger-bench.db] [--runs 7]
    python bench/labels_scale.py --reuse --db /tmp/tagger-bench.db   # time, not rebuild
"""

from __future__ import annotations

import argparse
import compileall
import os
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import tagger as tagger_package
from tagger.labels.hierarchy import LabelRules, hierarchy
from tagger.records import Tag
from tagger.store.database import Store

# `tagger` as installed (its console entry point), printing its peak RSS (VmHWM, which
# starts afresh at exec) to stderr at exit.
PEAK_REPORTING_TAGGER = (
    "import atexit, re, sys; from tagger.cli.entry import main; "
    "atexit.register(lambda: sys.stderr.write("
    "re.search(r'VmHWM:.*', open('/proc/self/status').read()).group() + chr(10))); "
    "main()"
)
GOAL = ["query", "label:dog"]  # under 0.5 s, start-up included: timed --runs times
COMMANDS = [
    ["query", "label:dog"],
    ["query", "label:tabby"],
    ["query", "label:animal", "^label:dog"],
    ["query", "score:0.9.."],
    ["query", "path:/photos/7/*", "label:bird"],
    ["query", "format:png"],
    ["labels"],
    ["labels", "--tree"],
    ["export", "-o", "/dev/null"],
    ["export", "--format", "csv", "-o", "/dev/null"],
]


def build(db: Path, images: int) -> int:
    Store(f"sqlite:///{db}").close()
    tree, rules = hierarchy(), LabelRules()
    rng = np.random.default_rng(0)
    count = 0
    with sqlite3.connect(db) as con:
        for start in range(0, images, 1000):
            logits = rng.normal(0, 1, (1000, 1000)).astype(np.float32)
            logits[np.arange(1000), rng.integers(0, 1000, 1000)] += rng.uniform(3, 9, 1000)
            probs = np.exp(logits)
            probs /= probs.sum(axis=1, keepdims=True)
            top = np.argsort(-probs, axis=1)[:, :5]
            direct = [
                [Tag(tree.classes[c].name, int(c), float(p[c]), k + 1) for k, c in enumerate(t)]
                for p, t in zip(probs, top, strict=True)
            ]
            for offset, tags in enumerate(rules.apply(direct, probs)):
                i = start + offset + 1
                now = "2026-01-01 00:00:00.000000"
                con.execute(
                    "INSERT INTO images (id, sha256, size, tagged_at, status, format, model,"
                    " weights_sha256) VALUES (?, ?, 1, ?, 'tagged', ?, 'bench', 'x')",
                    (i, f"{i:064x}", now, "PNG" if i % 3 == 0 else "JPEG"),
                )
                con.execute(
                    "INSERT INTO files (path, image_id, size, mtime_ns, first_seen, last_seen)"
                    " VALUES (?, ?, 1, 0, ?, ?)",
                    (f"/photos/{i % 50}/img_{i}.jpg", i, now, now),
                )
                con.executemany(
                    "INSERT INTO tags (image_id, label, class_index, score, rank, wnid, derived)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(i, t.label, t.class_index, t.score, t.rank, t.wnid, t.derived) for t in tags],
                )
                count += len(tags)
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--db", type=Path, default=Path("/tmp/tagger-bench.db"))
    parser.add_argument("--runs", type=int, default=7, help="runs of the goal's command")
    parser.add_argument("--reuse", action="store_true", help="time an existing --db")
    args = parser.parse_args()
    if not args.reuse:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{args.db}{suffix}").unlink(missing_ok=True)
        started = time.monotonic()
        tags = build(args.db, args.images)
        size = args.db.stat().st_size / 2**20
        print(f"{args.images} images, {tags} tags ({tags / args.images:.1f} per image), ", end="")
        print(f"{size:.0f} MiB, built in {time.monotonic() - started:.0f}s")
    # Bytecode written, as pip does at install: else each run compiles tagger's sources
    # again where PYTHONDONTWRITEBYTECODE is set (25 ms of the goal's 0.5 s).
    compileall.compile_dir(Path(tagger_package.__file__).parent, quiet=1)
    tagger = [sys.executable, "-c", PEAK_REPORTING_TAGGER, "--db", str(args.db)]
    for command in [["db", "status"], *COMMANDS]:
        started = time.monotonic()
        done = subprocess.run([*tagger, *command], capture_output=True, text=True, check=True)
        elapsed = time.monotonic() - started
        peak = int(done.stderr.split("VmHWM:")[1].split()[0]) / 1024
        lines = done.stdout.count("\n")
        print(f"{elapsed:6.2f}s  {peak:5.0f} MiB  {lines:7d} lines  tagger {' '.join(command)}")
    times = []
    for _ in range(args.runs):
        started = time.monotonic()
        subprocess.run([*tagger, *GOAL], capture_output=True, check=True)
        times.append(time.monotonic() - started)
    print(
        f"tagger {' '.join(GOAL)}, {args.runs} runs: min {min(times):.2f}s,"
        f" median {statistics.median(times):.2f}s (goal 0.5 s),"
        f" load average {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    main()
