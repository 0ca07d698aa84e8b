"""The torch side: build a model, load its weights, and `classify(batch)` in torch."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from tagger.errors import WeightsError
from tagger.inference.base import (
    BEST_BATCH,
    FromOutputs,
    Outputs,
    normalise,
)
from tagger.inference.specs import ModelSpec, checked_weights, spec_for, weights_file
from tagger.labels.classes import imagenet_labels
from tagger.labels.hierarchy import LabelRules
from tagger.records import ModelId

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Builder:
    """How to make the torch module for a spec, and fit a state dict's names to it."""

    build: Callable[[], nn.Module]
    adapt: Callable[[nn.Module, dict[str, torch.Tensor]], dict[str, torch.Tensor]]


def _lite0() -> nn.Module:
    import timm

    module: nn.Module = timm.create_model(
        "tf_efficientnet_lite0", pretrained=False, num_classes=1000
    )
    return module


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


_BUILDERS = {
    "efficientnet_lite0": _Builder(_lite0, _by_order),
    "resnet18": _Builder(_resnet18, _same),
}


def fetch(name: str, data_dir: Path) -> Path:
    """Download a model's weights once, hash-checked, into the data directory."""
    spec = spec_for(name)
    if spec.fetch_url is None:
        return weights_file(spec, data_dir, None)
    target = data_dir / "models"
    target.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.load_state_dict_from_url(
            spec.fetch_url, model_dir=str(target), map_location="cpu", check_hash=True
        )
    except Exception as exc:
        raise WeightsError(f"could not download {spec.fetch_url}: {exc}") from None
    return target / spec.file_name


class WithFeatures(nn.Module):
    """The model with two outputs from one forward pass: the logits, and the pooled
    features its classifier reads (1280 values for EfficientNet-Lite0, 512 for ResNet-18),
    for similar photos and labels of one's own at no extra inference."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        model: Any = module
        if hasattr(model, "reset_classifier"):  # timm: the body then returns pooled features
            self.head: nn.Module = model.get_classifier()
            model.reset_classifier(0)
        else:  # torchvision's ResNet
            self.head = model.fc
            model.fc = nn.Identity()
        self.body = module

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features: torch.Tensor = self.body(pixels)
        logits: torch.Tensor = self.head(features)
        return logits, features


def load_module(spec: ModelSpec, path: Path) -> WithFeatures:
    """The torch module with the weights from `path` (already hash-checked) loaded."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"cannot read weights {path}: {exc}") from None
    if not isinstance(state, dict):
        raise WeightsError(f"{path} holds no state dict")
    builder = _BUILDERS[spec.name]
    module = builder.build()
    try:
        module.load_state_dict(builder.adapt(module, state))
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise WeightsError(f"{path} does not fit {spec.name}: {first}") from None
    return WithFeatures(module).eval()


class TorchClassifier(FromOutputs):
    """A model with its weights loaded once into torch, ready for batches of decoded images."""

    def __init__(
        self,
        spec: ModelSpec,
        module: nn.Module,
        weights_sha256: str,
        precision: str = "fp32",
        batch_size: int = BEST_BATCH["fp32"],
    ) -> None:
        self.spec = spec
        self.id = ModelId(spec.name, weights_sha256)
        self.batch_size = batch_size
        self.labels = imagenet_labels()
        self.label_rules = LabelRules()  # the `[labels]` settings; load_classifier sets them
        self._dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        self._module = module.eval().to(self._dtype).to(memory_format=torch.channels_last)

    @classmethod
    def load(
        cls,
        name: str,
        data_dir: Path,
        weights_path: Path | None = None,
        threads: int = 0,
        precision: str = "fp32",
        batch_size: int = BEST_BATCH["fp32"],
    ) -> TorchClassifier:
        if threads:
            torch.set_num_threads(threads)
        spec = spec_for(name)
        path, digest = checked_weights(spec, data_dir, weights_path)
        module = load_module(spec, path)
        log.info("loaded %s from %s (sha256 %s)", spec.name, path, digest[:12])
        return cls(spec, module, digest, precision, batch_size)

    def outputs(self, pixels: npt.NDArray[np.uint8]) -> Outputs:
        """Raw scores (N, 1000) and pooled features for a batch of HxWx3 uint8 images."""
        batch = torch.from_numpy(normalise(pixels, self.spec)).to(self._dtype)
        with torch.inference_mode():
            logits, features = self._module(batch.contiguous(memory_format=torch.channels_last))
        return logits.float().numpy(), features.float().numpy()
