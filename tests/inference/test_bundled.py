"""The default model ships exported: a plain install runs it with no torch, and what ships
is exactly what tagger's own export makes from the pinned weights."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tagger.inference.export import export
from tagger.inference.runtimes import ARTEFACT_FORMAT, bundled, load_classifier
from tagger.inference.specs import checked_weights, sha256_of, spec_for
from tests.helpers import PHOTOS

LITE0 = spec_for("efficientnet_lite0")
SHIPPED = Path(__file__).resolve().parents[2] / "tagger" / "models" / "efficientnet_lite0"
# A plain install: none of the torch extra importable.
NO_TORCH = (
    "import sys\n"
    "for m in ('torch', 'torchvision', 'timm', 'onnx', 'nncf'):\n"
    "    sys.modules[m] = None\n"
)


def test_the_shipped_files_are_what_the_manifest_says() -> None:
    manifest = json.loads((SHIPPED / "manifest.json").read_text())
    assert manifest["format"] == ARTEFACT_FORMAT  # else: run scripts/export_bundled.py
    assert manifest["weights_sha256"] == LITE0.sha256_prefix
    on_disk = {
        str(p.relative_to(SHIPPED)): sha256_of(p)
        for p in SHIPPED.rglob("*")
        if p.is_file() and p.parent != SHIPPED
    }
    assert on_disk == manifest["files_sha256"]
    assert bundled(LITE0, "openvino", "bf16") == bundled(LITE0, "openvino", "fp32")
    assert bundled(LITE0, "onnxruntime", "int8") is not None  # NNCF's passes the rule
    assert bundled(LITE0, "openvino", "bf16") is not None
    assert bundled(spec_for("resnet18"), "onnxruntime", "fp32") is None


def test_a_fresh_export_of_the_pinned_weights_gives_the_shipped_outputs(tmp_path: Path) -> None:
    """Re-exported here with torch: logits and features within 1e-5 on real photos."""
    weights, _ = checked_weights(LITE0, tmp_path, None)
    export(LITE0, weights, "onnxruntime", "fp32", tmp_path / "fresh")
    shipped = load_classifier("efficientnet_lite0", tmp_path, runtime="onnxruntime")
    fresh = load_classifier("efficientnet_lite0", tmp_path, weights, runtime="onnxruntime")
    assert not (tmp_path / "artefacts").exists() or shipped.id == fresh.id
    from tagger.pipeline.decode import decode
    from tagger.pipeline.hashing import hash_file, stat_file

    batch = np.stack(
        [
            decode(hash_file(stat_file(str(p))), LITE0.geometry, 10**9).pixels
            for p in sorted(PHOTOS.glob("*.jpg"))
        ]
    )
    for ours, theirs in zip(shipped.outputs(batch), fresh.outputs(batch), strict=True):  # type: ignore[attr-defined]
        assert np.abs(ours - theirs).max() < 1e-5


@pytest.mark.parametrize(
    ("runtime", "precision"),
    [("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "int8"), ("openvino", "fp32")],
)
def test_a_plain_install_tags_with_no_torch_and_exports_nothing(
    runtime: str, precision: str, tmp_path: Path
) -> None:
    script = NO_TORCH + (
        "from tagger.cli.main import main\n"
        f"main(['--db', {str(tmp_path / 't.db')!r}, 'scan', {str(PHOTOS)!r}])\n"
    )
    env = {
        "TAGGER_MODEL__RUNTIME": runtime,
        "TAGGER_MODEL__PRECISION": precision,
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "PATH": "/usr/bin:/bin",
    }
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert " new" in done.stdout
    assert not (tmp_path / "data" / "tagger" / "artefacts").exists()
    query = NO_TORCH + (
        "from tagger.cli.main import main\n"
        f"main(['--db', {str(tmp_path / 't.db')!r}, 'query', '--label', 'macaw',"
        " '--format', 'paths'])\n"
    )
    found = subprocess.run([sys.executable, "-c", query], env=env, capture_output=True, text=True)
    assert found.stdout.strip().endswith("coral_parrot.jpg"), found.stderr


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"TAGGER_MODEL__NAME": "resnet18"},
            "error: resnet18 on openvino fp32 must be exported from its weights once, which"
            " needs torch: pip install 'tagger[torch]'",
        ),
        (
            {"TAGGER_MODEL__WEIGHTS_PATH": "/srv/models/finetuned-lite0.pth"},
            "error: efficientnet_lite0 on openvino int8 must be exported from its weights"
            " once, which needs torch: pip install 'tagger[torch]'",
        ),
        (
            {"TAGGER_MODEL__RUNTIME": "torch"},
            "error: model.runtime = torch, but torch is not installed: pip install 'tagger[torch]'",
        ),
    ],
)
def test_what_needs_torch_says_so_in_one_line(
    settings: dict[str, str], message: str, tmp_path: Path
) -> None:
    script = NO_TORCH + (
        "from tagger.cli.main import main\n"
        f"main(['--db', {str(tmp_path / 't.db')!r}, 'scan', {str(PHOTOS)!r}])\n"
    )
    env = settings | {"XDG_DATA_HOME": str(tmp_path / "data"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1].startswith(message), done.stderr
    assert "Traceback" not in done.stderr
