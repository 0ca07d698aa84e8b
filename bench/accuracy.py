"""Accuracy of every runtime and precision on labelled photos, judged by the issue 20 rule.

    python bench/accuracy.py FOLDER [--batch-size 8] [--threads 0] [--only RUNTIME:PRECISION ...]

FOLDER holds photos whose file names start with their ImageNet class's WordNet id, as
`n01440764_tench.JPEG` (../shared/imagenet-sample). Each photo is decoded once, exactly as
`tagger scan` decodes it (tagger/pipeline/decode.py: JPEG draft, shorter side to 256, centre
224 crop, EXIF rotation), then every installed runtime and precision classifies the same
pixels:

- top-1 / top-5: the photo's class is the best label / among the best five;
- agreement: the same best label as fp32 (torch fp32 if torch is installed, else ONNX
  Runtime fp32), on every photo of FOLDER, labelled or not;
- img/s and CPU ms per image: inference only (normalisation included, decoding not), the
  best of `--rounds` passes over all the photos after one warm-up batch. CPU time is this
  process's, runtime threads included: on a shared machine it says more than img/s.

THE RULE (issue 20): a runtime/precision may be a default where its top-1 is within 1.0 point
of fp32's and its top-1 agrees with fp32 on at least 97% of the photos.

Photos whose names start with no known wnid count for agreement only: on a folder of
unlabelled photos the script measures agreement alone. (bench/agreement.py stays for
random crops of a few photos, with the shipped calibration photos reported apart.)

Every artefact is exported afresh into a temporary data directory by tagger's own
`load_classifier`, so what is measured is what the code in this tree builds. On a 2-core
machine: 4-5 minutes for 500 photos, 1.5 of them NNCF quantising for the two int8 rows.

Example:

    PYTHONPATH=$PWD python bench/accuracy.py ../shared/imagenet-sample --batch-size 8 --threads 2
"""

from __future__ import annotations

import argparse
import re
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt

from tagger.errors import BadImage, RuntimeUnavailable
from tagger.inference.runtimes import installed, load_classifier
from tagger.inference.specs import spec_for
from tagger.labels.classes import imagenet_classes
from tagger.pipeline.decode import decode
from tagger.pipeline.hashing import hash_file, stat_file

RULE_POINTS, RULE_AGREEMENT = 1.0, 0.97
CONFIGS = (
    ("torch", "fp32"),
    ("onnxruntime", "fp32"),
    ("onnxruntime", "int8"),
    ("openvino", "fp32"),
    ("openvino", "bf16"),
    ("openvino", "int8"),
)
EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".heic", ".heif"}
_WNID = re.compile(r"^(n\d{8})")


@dataclass(frozen=True)
class Photos:
    pixels: npt.NDArray[np.uint8]  # N x 224 x 224 x 3, as the pipeline decodes them
    classes: npt.NDArray[np.int64]  # the labelled class index of each photo, -1 if none
    names: list[str]


@dataclass(frozen=True)
class Measured:
    runtime: str
    precision: str
    logits: npt.NDArray[np.float32]
    images_per_s: float
    cpu_ms: float


def load_photos(folder: Path, model: str, limit: int) -> Photos:
    index = {c.wnid: c.index for c in imagenet_classes()}
    geometry = spec_for(model).geometry
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in EXTENSIONS)[: limit or None]
    pixels, classes, names = [], [], []
    for path in paths:
        try:
            decoded = decode(hash_file(stat_file(str(path))), geometry, 10**9)
        except BadImage as exc:
            print(f"skipped {path.name}: {exc}", file=sys.stderr)
            continue
        match = _WNID.match(path.name)
        pixels.append(decoded.pixels)
        classes.append(index.get(match.group(1), -1) if match else -1)
        names.append(path.name)
    if not pixels:
        raise SystemExit(f"error: no photos in {folder}")
    return Photos(np.stack(pixels), np.asarray(classes, dtype=np.int64), names)


def measure(
    logits_of: Callable[[npt.NDArray[np.uint8]], npt.NDArray[np.float32]],
    pixels: npt.NDArray[np.uint8],
    batch: int,
    rounds: int,
) -> tuple[npt.NDArray[np.float32], float, float]:
    """Logits of every photo, fed `batch` at a time, with img/s and CPU ms per image (the
    fastest of `rounds` passes: other load on the machine only ever slows a pass down)."""
    logits_of(pixels[:batch])  # warm-up: the first call allocates and tunes
    out, speed, cpu_ms = np.empty(0, np.float32), 0.0, float("inf")
    for _ in range(rounds):
        cpu, wall = _cpu_s(), time.perf_counter()
        chunks = [logits_of(pixels[i : i + batch]) for i in range(0, len(pixels), batch)]
        wall, cpu = time.perf_counter() - wall, _cpu_s() - cpu
        out = np.concatenate(chunks)
        speed, cpu_ms = max(speed, len(pixels) / wall), min(cpu_ms, cpu * 1000 / len(pixels))
    return out, speed, cpu_ms


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_one(
    model: str, runtime: str, precision: str, photos: Photos, args: argparse.Namespace
) -> Measured | str:
    """One runtime/precision measured, or why it was skipped."""
    if runtime != "torch" and not installed(runtime):
        return f"{runtime} is not installed"
    with tempfile.TemporaryDirectory(prefix="tagger-accuracy-") as data_dir:
        started = time.perf_counter()
        try:
            classifier = load_classifier(
                model,
                Path(data_dir),
                threads=args.threads,
                runtime=runtime,
                precision=precision,
                batch_size=args.batch_size,
            )
        except RuntimeUnavailable as exc:
            return str(exc)
        prepared = time.perf_counter() - started

        def logits_of(pixels: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
            out = classifier.logits(pixels)  # type: ignore[attr-defined]
            return np.asarray(out.numpy() if hasattr(out, "numpy") else out, np.float32)

        logits, speed, cpu_ms = measure(logits_of, photos.pixels, args.batch_size, args.rounds)
    print(f"  {runtime} {precision}: exported and loaded in {prepared:.0f} s", file=sys.stderr)
    return Measured(runtime, precision, logits, speed, cpu_ms)


def table(results: list[Measured], photos: Photos) -> list[str]:
    """The markdown table, the reference (fp32) first, and a verdict per row."""
    labelled = photos.classes >= 0
    reference = results[0]
    best_ref = reference.logits.argmax(1)

    def top_k(m: Measured, k: int) -> float:
        ranked = np.argsort(-m.logits[labelled], axis=1)[:, :k]
        return float((ranked == photos.classes[labelled, None]).any(axis=1).mean() * 100)

    head = "| runtime | precision |"
    rule = "|---|---|"
    if labelled.any():
        head += " top-1 | top-5 |"
        rule += "---:|---:|"
    head += " top-1 agreement with fp32 | img/s | CPU ms/img | the rule |"
    rule += "---:|---:|---:|---|"
    rows = [head, rule]
    ref_top1 = top_k(reference, 1) if labelled.any() else 0.0
    for m in results:
        agreement = float((m.logits.argmax(1) == best_ref).mean())
        row = f"| {m.runtime} | {m.precision} |"
        passes = agreement >= RULE_AGREEMENT
        if labelled.any():
            top1 = top_k(m, 1)
            passes = passes and top1 >= ref_top1 - RULE_POINTS
            row += f" {top1:.1f}% | {top_k(m, 5):.1f}% |"
        verdict = "reference" if m is reference else "passes" if passes else "FAILS"
        row += f" {agreement:.1%} | {m.images_per_s:.0f} | {m.cpu_ms:.1f} | {verdict} |"
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="bench/accuracy.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "folder", type=Path, help="photos named by wnid (n01440764_tench.JPEG), or any photos"
    )
    parser.add_argument(
        "--model", default="efficientnet_lite0", help="efficientnet_lite0 (default) or resnet18"
    )
    parser.add_argument(
        "--batch-size", type=int, default=8, help="images per forward pass, the same for all"
    )
    parser.add_argument("--threads", type=int, default=0, help="runtime threads (0: all cores)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="timed passes; the fastest is reported"
    )
    parser.add_argument("--limit", type=int, default=0, help="only the first N photos (0: all)")
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="RUNTIME:PRECISION",
        help="measure only these (the fp32 reference is always measured first)",
    )
    args = parser.parse_args()
    photos = load_photos(args.folder, args.model, args.limit)
    count = int((photos.classes >= 0).sum())
    print(f"{len(photos.names)} photos, {count} labelled, from {args.folder}", file=sys.stderr)
    reference = ("torch", "fp32") if installed("torch") else ("onnxruntime", "fp32")
    wanted = [tuple(s.split(":", 1)) for s in args.only] if args.only else list(CONFIGS)
    configs = [reference, *(c for c in wanted if c != reference)]
    results, skipped = [], []
    for runtime, precision in configs:
        got = run_one(args.model, runtime, precision, photos, args)
        if isinstance(got, str):
            skipped.append(f"{runtime} {precision}: skipped ({got})")
        else:
            results.append(got)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(
        f"{args.model} on {len(photos.names)} photos ({count} labelled), batch {args.batch_size},"
        f" threads {args.threads or 'all'}, {when}; fp32 = {reference[0]} fp32"
    )
    print()
    print("\n".join(table(results, photos)))
    print()
    rule = f"top-1 agreement with fp32 >= {RULE_AGREEMENT:.0%}"
    if count:
        rule = f"top-1 within {RULE_POINTS} point of fp32 and {rule}"
    print(f"The rule (issue 20): {rule}.")
    for line in skipped:
        print(line)


if __name__ == "__main__":
    main()
