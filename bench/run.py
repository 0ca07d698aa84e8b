"""Benchmark: tagger's scan pipeline against the usual tutorial loop, in one interleaved run.

    python bench/run.py [--images 48] [--rounds 2] [--runtime auto] [--precision auto]
                        [--batch-size 0] [--model efficientnet_lite0 | --model resnet18]
                        [--peer same | --peer resnet18]

Makes photo-like files (real photos from tests/photos scaled to 1600x1200 and 4000x3000
JPEGs, plus 1600x1200 PNGs, each with a little noise so every file is distinct content),
then alternates the two contenders on them. The peer is the familiar "Flask + ResNet-18"
code path: full Pillow decode, torchvision Resize/CenterCrop/ToTensor/Normalize, one image
per forward pass in torch fp32. tagger runs in a child process, as `tagger scan` would, so
its peak RSS is its own and torch is never imported there (unless runtime = torch). Both
use the same model: the bundled EfficientNet-Lite0, or with `--model resnet18` the issue's
ResNet-18 with random weights (its real ones cannot be fetched offline; only the speed
means anything then). Results: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

PHOTOS = Path(__file__).parent.parent / "tests" / "photos"
SETS = (("1600x1200", (1600, 1200), "jpg"), ("4000x3000", (4000, 3000), "jpg"))
PNG_SET = ("1600x1200 PNG", (1600, 1200), "png")


def make_images(folder: Path, count: int, size: tuple[int, int], ext: str) -> list[Path]:
    rng = np.random.default_rng(0)
    sources = sorted(PHOTOS.glob("coral_*.jpg")) + sorted(PHOTOS.glob("orientation_*_1.jpg"))
    paths = []
    for i in range(count):
        base = Image.open(sources[i % len(sources)]).convert("RGB")
        base = base.resize(size, Image.Resampling.BICUBIC)
        noisy = np.asarray(base, dtype=np.int16) + rng.integers(-3, 4, (size[1], size[0], 3))
        path = folder / f"{size[0]}x{size[1]}_{i:04d}.{ext}"
        Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def naive(paths: list[Path], model: str, weights: Path | None) -> float:
    """One image at a time, as the tutorials do, in torch fp32."""
    import torch
    from torchvision import transforms

    from tagger.inference.torch_model import TorchClassifier

    classifier = TorchClassifier.load(model, Path("."), weights)
    module = classifier._module  # the same weights, called the tutorial way
    prep = transforms.Compose([
        transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
        transforms.Normalize(classifier.spec.mean, classifier.spec.std),
    ])  # fmt: skip
    start = time.perf_counter()
    with torch.no_grad():
        for path in paths:
            logits, _features = module(prep(Image.open(path).convert("RGB")).unsqueeze(0))
            logits.softmax(1).topk(5)
    return len(paths) / (time.perf_counter() - start)


def random_resnet18(path: Path) -> Path:
    """ResNet-18 with seeded random weights: the same FLOPs as the real ones."""
    import torch
    from torchvision.models import resnet18

    torch.manual_seed(0)
    torch.save(resnet18(weights=None).state_dict(), path)
    return path


def tagger_child(args: argparse.Namespace) -> dict[str, Any]:
    """Run in the child: a scan through the real pipeline, timed per stage."""
    from tagger.config import load_settings
    from tagger.inference.runtimes import load_classifier
    from tagger.pipeline.decode import decode
    from tagger.pipeline.hashing import hash_file, stat_file
    from tagger.pipeline.runner import Pipeline
    from tagger.store.database import Store

    paths = [Path(p) for p in args.paths]
    settings = load_settings(
        db=args.db,
        data_dir=args.data_dir,
        model={"runtime": args.runtime, "precision": args.precision},
        batch={"size": args.batch_size},
    )

    def load(batch_size: int) -> Any:
        return load_classifier(
            args.model,
            settings.data_dir,
            args.weights,
            runtime=settings.model.runtime,
            precision=settings.model.precision,
            batch_size=batch_size,
        )

    model = load(settings.batch.size)
    inference = [0.0, 0]

    class Timed:
        spec, id, batch_size = model.spec, model.id, model.batch_size
        label_rules = model.label_rules

        def analyse(self, pixels: Any, top_k: int = 5) -> Any:
            start = time.perf_counter()
            out = model.analyse(pixels, top_k)
            inference[0] += time.perf_counter() - start
            inference[1] += len(pixels)
            return out

    store = Store(settings.db_url)
    with ThreadCpu() as cpu:
        start = time.perf_counter()
        summary = Pipeline(settings, store, Timed()).run(paths)  # type: ignore[arg-type]
        wall = time.perf_counter() - start
    store.close()
    assert summary.total == len(paths), summary
    rss = peak_rss_mb()
    # Stage costs alone, one thread, after the run (files are in the page cache).
    sample = paths[:16]
    t0 = time.perf_counter()
    hashed = [hash_file(stat_file(str(p))) for p in sample]
    t1 = time.perf_counter()
    decoded = [decode(h, model.spec.geometry, 10**9) for h in hashed]
    t2 = time.perf_counter()
    batch = np.stack([d.pixels for d in decoded])
    peaks = {}
    for size in (1, 4, 8, 16, 32):
        model = load(size)  # compiled for exactly this batch size, as a scan would be
        tiled = np.resize(batch, (size, *batch.shape[1:]))
        model.classify(tiled)
        start = time.perf_counter()
        rounds = max(2, 64 // size)
        for _ in range(rounds):
            model.classify(tiled)
        peaks[size] = rounds * size / (time.perf_counter() - start)
    return {
        "rate": len(paths) / wall,
        "cpu_ms": {k: v * 1000 / len(paths) for k, v in cpu.seconds.items()},
        "busy": sum(cpu.seconds.values()) / wall / len(os.sched_getaffinity(0)),
        "rss_mb": rss,
        "torch": "torch" in sys.modules,
        "runtime": f"{type(model).__name__}, batch {Timed.batch_size}",
        "hash_ms": (t1 - t0) / len(sample) * 1000,
        "decode_ms": (t2 - t1) / len(sample) * 1000,
        "in_pipeline_rate": inference[1] / inference[0],
        "peak_by_batch": peaks,
    }


STAGES = {"tagger-decode": "hash+decode", "tagger-inference": "inference"}
STAGES |= {"tagger-store-writer": "writer", "MainThread": "feed"}


class ThreadCpu:
    """CPU seconds per pipeline stage while in the block, from /proc (robust to other load:
    a stage's CPU time, unlike its wall time, does not grow while it waits for a core)."""

    def __init__(self) -> None:
        self._start: dict[str, tuple[str, float]] = {}
        self._last: dict[str, tuple[str, float]] = {}
        self._names: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self.seconds: dict[str, float] = {}

    def _sample(self) -> dict[str, tuple[str, float]]:
        # Names as first seen: a thread that has just ended is still in /proc for a moment
        # but no longer known to `threading`, and must not turn into a runtime thread.
        for thread in threading.enumerate():
            self._names.setdefault(str(thread.native_id), thread.name.split("_")[0])
        names = self._names
        tick = os.sysconf("SC_CLK_TCK")
        out = {}
        for tid in os.listdir("/proc/self/task"):
            try:
                fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # ended
            stage = STAGES.get(names.get(tid, ""), "runtime threads")
            out[tid] = (stage, (int(fields[11]) + int(fields[12])) / tick)
        return out

    def _poll(self) -> None:
        while not self._stop.wait(0.02):
            self._last |= self._sample()

    def __enter__(self) -> ThreadCpu:
        self._start = self._sample()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self._last |= self._sample()
        for tid, (stage, used) in self._last.items():
            if tid == str(self._thread.native_id):
                continue
            before = self._start.get(tid, (stage, 0.0))[1]
            self.seconds[stage] = self.seconds.get(stage, 0.0) + used - before


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM); ru_maxrss would include the parent's before exec."""
    status = Path("/proc/self/status").read_text()
    line = next(x for x in status.splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def tagger_scan(paths: list[Path], workdir: Path, n: int, args: argparse.Namespace) -> Any:
    command = [sys.executable, __file__, "--child", "--db", str(workdir / f"bench{n}.db")]
    command += ["--data-dir", str(workdir / "data"), "--runtime", args.runtime]
    command += ["--precision", args.precision, "--batch-size", str(args.batch_size)]
    command += ["--model", args.model]
    if args.weights:
        command += ["--weights", str(args.weights)]
    command += map(str, paths)
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--runtime", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--batch-size", type=int, default=0, help="0: as tagger picks")
    parser.add_argument(
        "--model", default="efficientnet_lite0", choices=("efficientnet_lite0", "resnet18")
    )
    parser.add_argument(
        "--peer",
        choices=("same", "resnet18"),
        default="same",
        help="the naive loop's model: tagger's, or the demos' ResNet-18 (random weights)",
    )
    parser.add_argument("--weights", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument("paths", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(tagger_child(args)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if args.model == "resnet18":
            args.weights = random_resnet18(workdir / "resnet18-random.pth")
        peer_model, peer_weights = args.model, args.weights
        if args.peer == "resnet18":
            peer_model = "resnet18"
            peer_weights = random_resnet18(workdir / "resnet18-peer.pth")
        warm = make_images(workdir, 2, (640, 480), "jpg")
        tagger_scan(warm, workdir, 0, args)  # exports the artefact once, outside the timings
        print(
            f"{args.model}, runtime {args.runtime}, precision {args.precision},"
            f" batch {args.batch_size}, {args.images} images per set"
        )
        run = 0
        for label, size, ext in (*SETS, PNG_SET):
            count = args.images if ext == "jpg" else args.images // 2
            paths = make_images(workdir, count, size, ext)
            for _ in range(args.rounds):
                run += 1
                slow = naive(paths, peer_model, peer_weights)
                fast = tagger_scan(paths, workdir, run, args)
                peak = max(fast["peak_by_batch"].values())
                print(
                    f"{label}: naive {slow:5.1f} img/s, tagger {fast['rate']:5.1f} img/s,"
                    f" x{fast['rate'] / slow:.1f} | {fast['runtime']}, peak RSS"
                    f" {fast['rss_mb']:.0f} MB, torch imported: {fast['torch']} | per image:"
                    f" hash {fast['hash_ms']:.1f} ms, decode {fast['decode_ms']:.1f} ms,"
                    f" inference {1000 / fast['in_pipeline_rate']:.1f} ms in the pipeline"
                    f" ({fast['in_pipeline_rate']:.0f} img/s)"
                )
                cpu = fast["cpu_ms"]
                stages = ", ".join(f"{k} {v:.1f}" for k, v in sorted(cpu.items()))
                total = sum(cpu.values())
                print(
                    f"  CPU ms per image: {stages}; total {total:.1f}"
                    f" ({fast['busy']:.0%} of the cores busy)"
                )
                # The decode-bound limit: every core decoding or inferring, nothing else. The
                # decode workers also hash (measured alone, after the run): not decoding.
                decode = cpu.get("hash+decode", 0) - fast["hash_ms"]
                work = decode + cpu.get("inference", 0) + cpu.get("runtime threads", 0)
                limit = len(os.sched_getaffinity(0)) * 1000 / work
                print(
                    f"  decode-bound limit {limit:.1f} img/s (cores / decode + inference CPU);"
                    f" tagger reaches {fast['rate'] / limit:.0%} of it"
                )
            by_batch = ", ".join(
                f"b{b} {r:.0f} ({r / peak:.0%})" for b, r in fast["peak_by_batch"].items()
            )
            print(f"  inference alone, img/s (% of peak): {by_batch}")
    peak_rss = peak_rss_mb()
    print(f"peak RSS of the naive loop's process: {peak_rss:.0f} MB")


if __name__ == "__main__":
    main()
