"""Export a model from torch to ONNX or OpenVINO, quantised to int8 if asked.

    python -m tagger.inference.export MODEL WEIGHTS RUNTIME PRECISION TARGET_FOLDER

runtimes.py runs this in a child process, so that only the child imports torch. The
artefact is written to a temporary folder next to TARGET_FOLDER and renamed into place
when complete: a kill at any moment leaves either no artefact or a whole one.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image

from tagger.inference.base import normalise
from tagger.inference.specs import ModelSpec, spec_for
from tagger.inference.torch_model import load_module

if TYPE_CHECKING:
    import onnx

OPSET = 17
STALE_AFTER_S = 3600  # no export takes an hour: an older temporary folder is orphaned
# Readable by all: `tagger model prepare` run by root (a NAS admin, before the service
# starts) must leave a model the service account can load. mkdtemp makes its folder 0700.
FOLDER_MODE, FILE_MODE = 0o755, 0o644


def calibration_images(spec: ModelSpec) -> Iterator[npt.NDArray[np.uint8]]:
    """Crops of the shipped real photos, at the model's input size: centre, corners, mirrored.

    int8 ranges come from what real photos make the activations do; random noise would
    set them far too wide or narrow.
    """
    folder = resources.files("tagger").joinpath("data/calibration")
    crop = spec.geometry.crop
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".jpg"):
            continue
        with entry.open("rb") as handle, Image.open(handle) as opened:
            image = opened.convert("RGB")
        for short_side in (crop, spec.geometry.resize, round(crop * 1.4)):
            scale = short_side / min(image.size)
            scaled = image.resize(
                (max(crop, round(image.width * scale)), max(crop, round(image.height * scale))),
                spec.geometry.resample,
            )
            w, h = scaled.size
            for left, top in (((w - crop) // 2, (h - crop) // 2), (0, 0), (w - crop, h - crop)):
                patch = scaled.crop((left, top, left + crop, top + crop))
                yield np.asarray(patch, dtype=np.uint8)
                yield np.asarray(patch.transpose(Image.Transpose.FLIP_LEFT_RIGHT), dtype=np.uint8)


def export_onnx(spec: ModelSpec, weights: Path, target: Path) -> None:
    """fp32 ONNX: float32 NCHW input `pixels` (normalised), outputs `logits` and `features`
    (pooled, before the classifier), any batch size."""
    module = load_module(spec, weights)
    sample = torch.zeros(1, 3, spec.geometry.crop, spec.geometry.crop)
    with torch.inference_mode():
        torch.onnx.export(
            module,
            (sample,),
            str(target),
            input_names=["pixels"],
            output_names=["logits", "features"],
            dynamic_axes={"pixels": {0: "batch"}, "logits": {0: "batch"}, "features": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )


def quantise(spec: ModelSpec, fp32: Path, target: Path) -> None:
    """Static int8 for ONNX Runtime, quantised by NNCF: a QDQ graph whose every convolution
    but the first runs on ONNX Runtime's int8 kernels (QLinearConv).

    As quantise_openvino: preset MIXED, calibrated on every shipped calibration crop, full
    bias correction (ONNX Runtime's own quantiser has none, and its int8 agreed with fp32 on
    91% of labelled photos), first convolution and classifier in fp32. Besides:

    - activations per tensor: ONNX Runtime fuses no convolution whose input scale is per
      channel (NNCF's default for depthwise inputs), and runs those in fp32, 3x slower;
    - 7-bit weights (NNCF's overflow fix in every layer): ONNX Runtime's u8 x s8 kernels on
      x86 CPUs without VNNI add pairs of products in 16 bits, which 8-bit weights can
      overflow; it cost no top-1 on the labelled photos (docs/benchmarks.md);
    - activations all uint8 (`_unsigned_activations`).
    """
    import nncf
    import onnx
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        OverflowFix,
        QuantizationParameters,
    )

    model = onnx.load(str(fp32))
    first_conv = next(node for node in model.graph.node if node.op_type == "Conv")
    classifier = [node for node in model.graph.node if node.op_type in ("Gemm", "MatMul")][-1]
    photos = [{"pixels": normalise(image[None], spec)} for image in calibration_images(spec)]
    quantised = nncf.quantize(
        model,
        nncf.Dataset(photos),
        preset=nncf.QuantizationPreset.MIXED,
        subset_size=len(photos),
        fast_bias_correction=False,
        ignored_scope=nncf.IgnoredScope(names=[first_conv.name, classifier.name]),
        advanced_parameters=AdvancedQuantizationParameters(
            overflow_fix=OverflowFix.ENABLE,
            activations_quantization_params=QuantizationParameters(per_channel=False),
        ),
    )
    _unsigned_activations(quantised)
    onnx.save(quantised, str(target))


def _unsigned_activations(model: onnx.ModelProto) -> None:
    """Make every activation quantiser uint8, on the same grid.

    NNCF writes int8 where a tensor's range goes below zero and uint8 elsewhere, but ONNX
    Runtime fuses a convolution into QLinearConv only where its input and output types are
    the same. Zero point z in int8 is z + 128 in uint8: the same values, exactly."""
    import onnx
    from onnx import numpy_helper

    constants = {tensor.name: tensor for tensor in model.graph.initializer}
    quantisers = [
        node
        for node in model.graph.node
        if node.op_type == "QuantizeLinear" and node.input[0] not in constants
    ]
    for node in quantisers:
        zero_point = constants[node.input[2]]
        signed = numpy_helper.to_array(zero_point)
        if signed.dtype == np.int8:
            unsigned = (signed.astype(np.int16) + 128).astype(np.uint8)
            zero_point.CopyFrom(numpy_helper.from_array(unsigned, zero_point.name))
    outputs = {node.output[0] for node in quantisers}
    for info in model.graph.value_info:
        if info.name in outputs:
            info.type.tensor_type.elem_type = onnx.TensorProto.UINT8


def quantise_openvino(spec: ModelSpec, fp32: Path) -> Any:
    """Static int8 for OpenVINO with NNCF: per-channel symmetric weights, asymmetric
    activations (preset MIXED), calibrated on every shipped calibration crop, with full
    bias correction. Agreement and speed of the alternatives: docs/benchmarks.md.

    The first convolution (it sees the raw image, and is where 8-bit weights lose most)
    and the last matrix product (the classifier, small) stay fp32, whatever the model:
    quantising both cost a few points of agreement."""
    import nncf
    import openvino as ov

    model = ov.convert_model(str(fp32))
    ops = model.get_ordered_ops()
    first_conv = next(op for op in ops if op.get_type_name() == "Convolution")
    classifier = [op for op in ops if op.get_type_name() == "MatMul"][-1]
    photos = [normalise(image[None], spec) for image in calibration_images(spec)]
    return nncf.quantize(
        model,
        nncf.Dataset(photos),
        preset=nncf.QuantizationPreset.MIXED,
        subset_size=len(photos),
        fast_bias_correction=False,
        ignored_scope=nncf.IgnoredScope(
            names=[first_conv.get_friendly_name(), classifier.get_friendly_name()]
        ),
    )


def export(
    spec: ModelSpec,
    weights: Path,
    runtime: str,
    precision: str,
    target: Path,
    onnx: Path | None = None,
) -> None:
    """Build the artefact in a temporary folder beside `target`, then rename it into place.

    `onnx`, if given, is an fp32 ONNX graph of these weights exported before.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.*"):  # left by a killed export
        if time.time() - stale.stat().st_mtime > STALE_AFTER_S:
            shutil.rmtree(stale, ignore_errors=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        onnx_path = work / "model.onnx"
        if onnx is not None:
            shutil.copyfile(onnx, onnx_path)
        elif precision == "int8" and runtime == "onnxruntime":
            export_onnx(spec, weights, work / "fp32.onnx")
            quantise(spec, work / "fp32.onnx", onnx_path)
        else:
            export_onnx(spec, weights, onnx_path)
        if runtime == "openvino":
            import openvino as ov

            if precision == "int8":
                model = quantise_openvino(spec, onnx_path)
            else:
                model = ov.convert_model(str(onnx_path))
            ov.save_model(model, str(work / "model.xml"), False)
        for leftover in work.iterdir():
            if leftover.name not in ("model.onnx", "model.xml", "model.bin"):
                leftover.unlink()
        if runtime == "openvino":
            onnx_path.unlink()
        for made in work.iterdir():
            made.chmod(FILE_MODE)
        work.chmod(FOLDER_MODE)
        try:
            work.rename(target)
        except OSError:
            if not target.is_dir():  # else another process finished the same artefact first
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str]) -> None:
    name, weights, runtime, precision, target, *onnx = argv
    source = Path(onnx[0]) if onnx else None
    export(spec_for(name), Path(weights), runtime, precision, Path(target), source)


if __name__ == "__main__":
    main(sys.argv[1:])
