"""Benchmark: tagger's scan pipeline against the usual tutorial loop, in one run.

    python bench/run.py [--images 64] [--rounds 2]

Makes realistic JPEGs (real photos from tests/photos scaled to 1600x1200 and 4000x3000,
each with a little noise so every file is distinct content), then alternates the two
contenders on them and prints images/s and the ratio. The peer is the familiar
"Flask + ResNet-18" code path: full Pillow decode, torchvision Resize/CenterCrop/ToTensor/
Normalize, one image per forward pass. Both run the same model (the bundled
EfficientNet-Lite0), so the difference is the pipeline. Results: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision import transforms

from tagger.config import load_settings
from tagger.model import Classifier
from tagger.pipeline import Pipeline
from tagger.store import Store

PHOTOS = Path(__file__).parent.parent / "tests" / "photos"


def make_images(folder: Path, count: int, size: tuple[int, int]) -> list[Path]:
    rng = np.random.default_rng(0)
    sources = sorted(PHOTOS.glob("coral_*.jpg")) + sorted(PHOTOS.glob("orientation_*_1.jpg"))
    paths = []
    for i in range(count):
        base = (
            Image.open(sources[i % len(sources)])
            .convert("RGB")
            .resize(size, Image.Resampling.BICUBIC)
        )
        noisy = np.asarray(base, dtype=np.int16) + rng.integers(-3, 4, (size[1], size[0], 3))
        path = folder / f"{size[0]}x{size[1]}_{i:04d}.jpg"
        Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def naive(classifier: Classifier, paths: list[Path]) -> float:
    """One image at a time, as the tutorials do."""
    module = classifier._module  # the same weights, called the tutorial way
    prep = transforms.Compose([
        transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
        transforms.Normalize(classifier.spec.mean, classifier.spec.std),
    ])  # fmt: skip
    start = time.perf_counter()
    with torch.no_grad():
        for path in paths:
            module(prep(Image.open(path).convert("RGB")).unsqueeze(0)).softmax(1).topk(5)
    return len(paths) / (time.perf_counter() - start)


def tagger_scan(classifier: Classifier, paths: list[Path], workdir: Path, n: int) -> float:
    settings = load_settings(db=str(workdir / f"bench{n}.db"))
    store = Store(settings.db_url)
    start = time.perf_counter()
    summary = Pipeline(settings, store, classifier).run(paths)
    elapsed = time.perf_counter() - start
    store.close()
    assert summary.total == len(paths)
    return len(paths) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    classifier = Classifier.load("efficientnet_lite0", Path("."))
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        print(
            f"torch {torch.__version__}, {torch.get_num_threads()} threads,"
            f" {args.images} images per set"
        )
        run = 0
        for size in ((1600, 1200), (4000, 3000)):
            paths = make_images(workdir, args.images, size)
            for _ in range(args.rounds):
                run += 1
                slow = naive(classifier, paths)
                fast = tagger_scan(classifier, paths, workdir, run)
                label, ratio = f"{size[0]}x{size[1]}", fast / slow
                print(f"{label}: naive {slow:5.1f} img/s, tagger {fast:5.1f} img/s, x{ratio:.1f}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process: {peak:.0f} MB")


if __name__ == "__main__":
    main()
