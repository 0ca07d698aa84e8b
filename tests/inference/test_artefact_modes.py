"""What `tagger model prepare` makes is readable by the service account, whoever ran it."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

from tagger.inference.specs import checked_weights, spec_for

LITE0 = spec_for("efficientnet_lite0")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_an_exported_model_is_readable_by_all_even_under_umask_077(tmp_path: Path) -> None:
    weights, _ = checked_weights(LITE0, tmp_path, None)
    target = tmp_path / "data" / "artefacts" / "lite0-onnxruntime-fp32"
    command = [sys.executable, "-m", "tagger.inference.export", LITE0.name, str(weights)]
    done = subprocess.run(
        [*command, "onnxruntime", "fp32", str(target)],
        capture_output=True,
        text=True,
        umask=0o077,  # as a careful admin's shell: mkdtemp ignores it anyway
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert mode(target) == 0o755
    files = list(target.iterdir())
    assert [f.name for f in files] == ["model.onnx"]
    assert {mode(f) for f in files} == {0o644}
