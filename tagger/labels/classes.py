"""The ImageNet-1k class table shipped with the package, readable without importing torch."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources


@dataclass(frozen=True)
class ImageNetClass:
    index: int
    wnid: str  # WordNet 3.0 noun synset id, e.g. n02123045
    name: str  # torchvision's English name, e.g. "tabby"


@cache
def imagenet_classes() -> tuple[ImageNetClass, ...]:
    """The 1000 classes in model output order (tagger/data/imagenet1k.tsv)."""
    text = resources.files("tagger").joinpath("data/imagenet1k.tsv").read_text("utf-8")
    rows = [line.split("\t") for line in text.splitlines()[1:] if line]
    return tuple(ImageNetClass(int(i), wnid, name) for i, wnid, name in rows)


def imagenet_labels() -> list[str]:
    """The 1000 class names in model output order."""
    return [c.name for c in imagenet_classes()]
