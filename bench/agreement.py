"""How often int8 and bf16 give fp32's answer, on real photos.

    python bench/agreement.py [PHOTO_FOLDER ...] [--crops 12]

Photos that are (or show the same picture as) one of the shipped calibration photos,
tagger/data/calibration, are reported apart from the held-out ones: int8 is calibrated
on those, so only the held-out photos say how int8 does on a user's pictures.

Each photo is seen as several random crops (scale 0.45-1, random position, mirrored half
the time), drawn with another seed than the calibration crops. Reports top-1 agreement
(same best label as torch fp32) and top-5 agreement (fp32's best label among the top 5),
and for int8 what sending its near ties to fp32 would cost and give (docs/benchmarks.md).
Only efficientnet_lite0's real weights are here; resnet18's cannot be fetched offline.
"""

from __future__ import annotations

import argparse
import tempfile
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from tagger.inference.runtimes import load_classifier
from tagger.inference.specs import spec_for
from tagger.inference.torch_model import TorchClassifier

EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".heic", ".heif"}


def thumbnail(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L").resize((16, 16), Image.Resampling.BOX), dtype=np.float32)


def calibration_thumbnails() -> list[np.ndarray]:
    folder = resources.files("tagger").joinpath("data/calibration")
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".jpg"):
            with entry.open("rb") as handle, Image.open(handle) as image:
                found.append(thumbnail(ImageOps.exif_transpose(image)))
    return found


def is_calibration_photo(path: Path, known: list[np.ndarray]) -> bool:
    """The same picture as a calibration photo: another format or EXIF orientation of it."""
    try:
        with Image.open(path) as image:
            small = thumbnail(ImageOps.exif_transpose(image))
    except Exception:
        return False
    return any(np.abs(small - other).mean() < 6 for other in known)


def crops(paths: list[Path], count: int, size: int) -> np.ndarray:
    try:
        from pillow_heif import register_heif_opener

        register_heif_opener()
    except ImportError:
        pass
    rng = np.random.default_rng(1)
    out = []
    for path in paths:
        try:
            image = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
        except Exception:
            continue
        image.thumbnail((800, 800))
        for _ in range(count):
            side = int(min(image.size) * rng.uniform(0.45, 1.0))
            left = int(rng.integers(0, image.width - side + 1))
            top = int(rng.integers(0, image.height - side + 1))
            patch = image.crop((left, top, left + side, top + side)).resize(
                (size, size), Image.Resampling.BICUBIC
            )
            if rng.random() < 0.5:
                patch = patch.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            out.append(np.asarray(patch, dtype=np.uint8))
    return np.stack(out)


def near_ties(logits: np.ndarray, best: np.ndarray) -> str:
    """Share of images a cascade would send to fp32, and the agreement it would then reach."""
    scores = np.exp(logits - logits.max(axis=1, keepdims=True))
    scores /= scores.sum(axis=1, keepdims=True)
    top2 = np.sort(scores, axis=1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    same = logits.argmax(axis=1) == best
    return "; ".join(
        f"gate {gate}: {(margin < gate).mean():.1%} sent, {(same | (margin < gate)).mean():.1%}"
        for gate in (0.02, 0.05, 0.1)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", type=Path, default=[Path("tests/photos")])
    parser.add_argument("--crops", type=int, default=12)
    args = parser.parse_args()
    paths = sorted(p for f in args.folders for p in f.iterdir() if p.suffix.lower() in EXTENSIONS)
    spec = spec_for("efficientnet_lite0")
    known = calibration_thumbnails()
    calibration = [p for p in paths if is_calibration_photo(p, known)]
    held_out = [p for p in paths if p not in calibration]
    groups = {
        "held-out": crops(held_out, args.crops, spec.geometry.crop),
        "calibration": crops(calibration, args.crops, spec.geometry.crop),
    }
    print(f"held-out: {len(held_out)} photos, {len(groups['held-out'])} crops")
    print(f"calibration photos: {len(calibration)} photos, {len(groups['calibration'])} crops")
    torch_fp32 = TorchClassifier.load(spec.name, Path("."))
    best = {name: torch_fp32.logits(batch).numpy().argmax(1) for name, batch in groups.items()}
    gates: list[str] = []
    with tempfile.TemporaryDirectory() as data_dir:
        for runtime, precision in [
            ("onnxruntime", "fp32"),
            ("onnxruntime", "int8"),
            ("openvino", "int8"),
            ("openvino", "bf16"),
            ("torch", "bf16"),
        ]:
            model = load_classifier(spec.name, Path(data_dir), runtime=runtime, precision=precision)
            line = f"{runtime:12} {precision}:"
            for name, batch in groups.items():
                logits = np.concatenate(
                    [model.logits(batch[i : i + 32]) for i in range(0, len(batch), 32)]  # type: ignore[attr-defined]
                )
                if not isinstance(logits, np.ndarray):
                    logits = logits.numpy()
                top5 = np.argsort(-logits, axis=1)[:, :5]
                agree1 = (top5[:, 0] == best[name]).mean()
                agree5 = np.mean([b in row for b, row in zip(best[name], top5, strict=True)])
                line += f"  {name} top-1 {agree1:.1%}, top-5 {agree5:.1%};"
                if precision == "int8":
                    gates.append(f"  {runtime} int8, {name}: {near_ties(logits, best[name])}")
            print(line.rstrip(";"))
        print("If int8's near ties went to fp32 (gate: int8's top-1 minus top-2 probability):")
        print("\n".join(gates))


if __name__ == "__main__":
    main()
