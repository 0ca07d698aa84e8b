"""What every runtime shares: the `Classifier` protocol the pipeline calls, the input
normalisation, and the softmax and labels on the output, so that every runtime gives the
same answers apart from numerics. Imports neither torch nor any runtime."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Literal, NamedTuple, Protocol

import numpy as np
import numpy.typing as npt

from tagger.inference.specs import ModelSpec
from tagger.labels.hierarchy import LabelRules
from tagger.records import ModelId, Tag

TOP_K = 5  # tags stored per image
Precision = Literal["fp32", "bf16", "int8"]

# `batch.size = 0`: the fastest per image on a 2-core CPU, end to end (docs/benchmarks.md).
# fp32 was as fast at 8 as at 4, with 34 MB more peak RSS; int8 did 137 img/s at 8 and 116
# at 4 (1600x1200 JPEGs), for 20 MB more.
BEST_BATCH: dict[Precision, int] = {"fp32": 4, "bf16": 4, "int8": 8}

# What one forward pass gives: the logits (N, 1000) and the pooled features (N, D).
Outputs = tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]


class Analysis(NamedTuple):
    """Per image of a batch: its tags, and its embedding (the pooled features, L2-normalised,
    float16: what similar photos and labels of one's own are computed from)."""

    tags: list[list[Tag]]
    embeddings: npt.NDArray[np.float16]


class Classifier(Protocol):
    """What the pipeline needs from a model, whatever runs it."""

    @property
    def spec(self) -> ModelSpec: ...

    @property
    def id(self) -> ModelId: ...

    @property
    def label_rules(self) -> LabelRules: ...

    @property
    def batch_size(self) -> int:
        """Images per forward pass; the pipeline gathers batches of this size."""
        ...

    def classify(self, pixels: npt.NDArray[np.uint8], top_k: int = TOP_K) -> list[list[Tag]]:
        """The `top_k` labels with softmax confidences for each HxWx3 image of the batch."""
        ...

    def analyse(self, pixels: npt.NDArray[np.uint8], top_k: int = TOP_K) -> Analysis:
        """`classify`'s tags and each image's embedding, from the same forward pass."""
        ...


def normalise(pixels: npt.NDArray[np.uint8], spec: ModelSpec) -> npt.NDArray[np.float32]:
    """A batch of HxWx3 uint8 images as the model's float32 NCHW input.

    Transposed while still bytes, then scaled in place: 13x faster than the other way round
    (5 ms a batch of 4, a tenth of the inference time)."""
    mean = np.asarray(spec.mean, dtype=np.float32).reshape(1, 3, 1, 1) * 255
    scale = 1 / (np.asarray(spec.std, dtype=np.float32).reshape(1, 3, 1, 1) * 255)
    batch = np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)).astype(np.float32)
    batch -= mean
    batch *= scale
    return batch


def in_fixed_batches(
    run: Callable[[npt.NDArray[np.float32], int], Outputs],
    pixels: npt.NDArray[np.uint8],
    spec: ModelSpec,
    size: int,
) -> Outputs:
    """Outputs for any number of images from a model compiled for exactly `size` of them.

    A fixed input shape lets the runtime plan its buffers once: measured here, 16 MB
    (OpenVINO) and 75 MB (ONNX Runtime) less peak memory than a dynamic batch, and faster.
    The last batch is padded with black images, whose rows are dropped; `run` is told how
    many images are real.
    """
    logits, features = [], []
    for start in range(0, len(pixels), size):
        chunk = pixels[start : start + size]
        count = len(chunk)
        if count < size:
            chunk = np.concatenate([chunk, np.zeros((size - count, *chunk.shape[1:]), np.uint8)])
        scores, pooled = run(normalise(chunk, spec), count)
        logits.append(scores[:count])
        features.append(pooled[:count])
    return np.concatenate(logits), np.concatenate(features)


def cores() -> int:
    """The cores this process may use: its CPU affinity (taskset, cpusets), not the machine's."""
    return len(os.sched_getaffinity(0)) or 1


def top_tags(
    logits: npt.NDArray[Any], labels: list[str], rules: LabelRules, top_k: int = TOP_K
) -> list[list[Tag]]:
    """Softmax over the classes, the `top_k` best of each row (best first), then the WordNet
    labels above them that `rules` keep (`dog` for five breeds), marked derived."""
    wide = logits.astype(np.float64)
    exp = np.exp(wide - wide.max(axis=1, keepdims=True))
    scores = exp / exp.sum(axis=1, keepdims=True)
    best = np.argsort(-scores, axis=1, kind="stable")[:, :top_k]
    direct = [
        [Tag(labels[i], int(i), float(row[i]), rank) for rank, i in enumerate(order, 1)]
        for row, order in zip(scores, best, strict=True)
    ]
    return rules.apply(direct, scores.astype(np.float32))


def embeddings(features: npt.NDArray[np.float32]) -> npt.NDArray[np.float16]:
    """Pooled features as stored: L2-normalised (a dot product is then the cosine), float16."""
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    unit: npt.NDArray[np.float16] = (features / np.maximum(norms, 1e-12)).astype(np.float16)
    return unit


class FromOutputs:
    """What every runtime derives from its forward pass (`outputs`): the logits, the tags,
    and the tags with each image's embedding."""

    labels: list[str]
    label_rules: LabelRules

    def outputs(self, pixels: npt.NDArray[np.uint8]) -> Outputs:
        """Raw scores (N, 1000) and pooled features for a batch of HxWx3 uint8 images."""
        raise NotImplementedError

    def logits(self, pixels: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        return self.outputs(pixels)[0]

    def classify(self, pixels: npt.NDArray[np.uint8], top_k: int = TOP_K) -> list[list[Tag]]:
        """The `top_k` labels with softmax confidences for each image of the batch."""
        return top_tags(self.logits(pixels), self.labels, self.label_rules, top_k)

    def analyse(self, pixels: npt.NDArray[np.uint8], top_k: int = TOP_K) -> Analysis:
        logits, features = self.outputs(pixels)
        return Analysis(
            top_tags(logits, self.labels, self.label_rules, top_k), embeddings(features)
        )
