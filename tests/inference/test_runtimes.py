"""The exported runtimes: same answers as torch, cached once, and torch kept out."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from tagger.config import load_settings
from tagger.errors import RuntimeUnavailable, WeightsError
from tagger.inference.base import Analysis
from tagger.inference.runtimes import (
    ARTEFACT_FORMAT,
    artefact_dir,
    bundled,
    choose,
    cpu_has_bf16,
    installed,
    load_classifier,
)
from tagger.inference.specs import checked_weights, spec_for
from tagger.inference.torch_model import TorchClassifier
from tagger.pipeline.decode import decode
from tagger.pipeline.hashing import hash_file, stat_file
from tagger.pipeline.runner import Pipeline
from tagger.records import Tag
from tagger.store.database import Store
from tests.helpers import PHOTOS, Result

LITE0 = spec_for("efficientnet_lite0")
NAMED = ("coral_cat_720p.jpg", "coral_hot_dog.jpg", "coral_parrot.jpg")


def pixels(*names: str) -> np.ndarray:
    return np.stack(
        [decode(hash_file(stat_file(str(PHOTOS / n))), LITE0.geometry, 10**9).pixels for n in names]
    )


def data_dir() -> Path:
    return Path(os.environ["XDG_DATA_HOME"]) / "tagger"


def reporting_on(home: Path) -> dict[str, str]:
    """An environment where the runtimes would report usage, into an empty `home`: they
    are quiet in CI, and write under $HOME (or $XDG_CACHE_HOME) before sending."""
    home.mkdir()
    quiet = ("CI", "TF_BUILD", "JENKINS_URL", "NNCF_CI", "NNCF_DEV", "ORT_DISABLE_TELEMETRY")
    env = {k: v for k, v in os.environ.items() if k not in quiet}
    return env | {"HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache")}


@pytest.mark.parametrize(
    ("runtime", "precision"),
    [
        ("onnxruntime", "fp32"),
        ("onnxruntime", "int8"),
        ("openvino", "fp32"),
        ("openvino", "int8"),
        ("openvino", "bf16"),
        ("torch", "bf16"),
    ],
)
def test_every_runtime_names_what_is_in_the_photos(runtime: str, precision: str) -> None:
    if precision == "bf16" and runtime == "openvino" and not cpu_has_bf16():
        pytest.skip("this CPU has no bf16")
    model = load_classifier("efficientnet_lite0", data_dir(), runtime=runtime, precision=precision)
    top1 = [tags[0].label for tags in model.classify(pixels(*NAMED))]
    assert top1[0] in {"Egyptian cat", "tabby", "tiger cat"}
    assert top1[1:] == ["hotdog", "macaw"]
    assert model.id == TorchClassifier.load("efficientnet_lite0", data_dir()).id


def test_onnx_fp32_gives_torchs_logits_and_int8_its_top1(classifier: TorchClassifier) -> None:
    from tagger.inference.runtimes import OnnxRuntimeClassifier

    batch = pixels(*sorted(p.name for p in PHOTOS.glob("*.jpg")))
    reference, features = classifier.outputs(batch)
    fp32 = load_classifier(
        "efficientnet_lite0", data_dir(), runtime="onnxruntime", precision="fp32"
    )
    assert isinstance(fp32, OnnxRuntimeClassifier)
    logits, pooled = fp32.outputs(batch)
    assert np.abs(logits - reference).max() < 1e-3
    assert pooled.shape == (len(batch), 1280) and np.abs(pooled - features).max() < 1e-3
    int8 = load_classifier(
        "efficientnet_lite0", data_dir(), runtime="onnxruntime", precision="int8"
    )
    assert isinstance(int8, OnnxRuntimeClassifier)
    # The waterfall is a near tie of geyser and fountain; int8 may swap such neighbours.
    top3 = np.argsort(-reference, axis=1)[:, :3]
    quantised = int8.logits(batch).argmax(1)
    assert all(best in row for best, row in zip(quantised, top3, strict=True))
    coral = [i for i, p in enumerate(sorted(PHOTOS.glob("*.jpg"))) if p.name.startswith("coral")]
    assert (quantised[coral] == reference.argmax(1)[coral]).all()


def test_onnx_runtime_int8_runs_every_convolution_but_the_first_on_int8_kernels(
    tmp_path: Path,
) -> None:
    """NNCF's QDQ graph as ONNX Runtime optimises it: 48 QLinearConv, the stem in fp32.

    A convolution ONNX Runtime cannot fuse (a per-channel or mixed-type activation
    quantiser) runs in fp32 between a DequantizeLinear and a QuantizeLinear: as
    accurate, but slower than fp32 itself."""
    import onnx
    import onnxruntime as ort

    folder = bundled(LITE0, "onnxruntime", "int8")  # the shipped one, made by this export
    assert folder is not None
    options = ort.SessionOptions()
    options.add_free_dimension_override_by_name("batch", 8)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
    kinds = [node.op_type for node in onnx.load(tmp_path / "optimised.onnx").graph.node]
    assert kinds.count("QLinearConv") == 48
    fp32_convolutions = [kind for kind in kinds if kind in ("Conv", "FusedConv")]
    assert len(fp32_convolutions) == 1 and "Gemm" in kinds  # the stem and the classifier


def test_openvino_int8_is_quantised_by_nncf_from_fp32(classifier: TorchClassifier) -> None:
    import openvino as ov

    from tagger.inference.runtimes import OpenVinoClassifier

    # ONNX Runtime's QDQ graph is exported first: OpenVINO must not convert it.
    load_classifier("efficientnet_lite0", data_dir(), runtime="onnxruntime", precision="int8")
    weights, _ = checked_weights(LITE0, data_dir(), None)
    int8 = load_classifier(  # the weights named: exported here, not the shipped artefact
        "efficientnet_lite0", data_dir(), weights, runtime="openvino", precision="int8"
    )
    assert isinstance(int8, OpenVinoClassifier)
    folder = next((data_dir() / "artefacts").glob("efficientnet_lite0-*-openvino-int8-v*"))
    ops = ov.Core().read_model(folder / "model.xml").get_ordered_ops()
    assert not [op for op in ops if op.get_type_name() in ("QuantizeLinear", "DequantizeLinear")]
    quantised = {
        consumer.get_node().get_friendly_name()
        for op in ops
        if op.get_type_name() == "FakeQuantize"
        for consumer in op.output(0).get_target_inputs()
    }
    fp32_layers = {"/conv_stem/Conv/WithoutBiases", "/classifier/Gemm/WithoutBiases"}
    assert len(quantised) > 50 and not quantised & fp32_layers
    batch = pixels(*sorted(p.name for p in PHOTOS.glob("*.jpg")))
    top3 = np.argsort(-classifier.logits(batch), axis=1)[:, :3]
    assert all(best in row for best, row in zip(int8.logits(batch).argmax(1), top3, strict=True))


def test_resnet18_int8_keeps_its_own_first_conv_and_classifier_in_fp32(tmp_path: Path) -> None:
    """The layers left in fp32 are found by kind, not by EfficientNet's layer names."""
    import openvino as ov
    from torchvision.models import resnet18

    weights = tmp_path / "resnet18-random.pth"
    torch.manual_seed(0)
    torch.save(resnet18(weights=None).state_dict(), weights)
    model = load_classifier("resnet18", tmp_path, weights, runtime="openvino", precision="int8")
    assert len(model.classify(pixels(*NAMED))) == 3
    folder = next((tmp_path / "artefacts").glob("resnet18-*-openvino-int8-v*"))
    ops = ov.Core().read_model(folder / "model.xml").get_ordered_ops()
    quantised = {
        consumer.get_node().get_type_name()
        for op in ops
        if op.get_type_name() == "FakeQuantize"
        for consumer in op.output(0).get_target_inputs()
    }
    assert "Convolution" in quantised and "MatMul" not in quantised
    first_conv = next(op for op in ops if op.get_type_name() == "Convolution")
    assert all(i.get_node().get_type_name() != "FakeQuantize" for i in first_conv.input_values())


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_a_model_compiled_for_a_fixed_batch_takes_any_number_of_images(runtime: str) -> None:
    five = pixels(*NAMED, *NAMED[:2])
    model = load_classifier(
        "efficientnet_lite0", data_dir(), runtime=runtime, precision="fp32", batch_size=3
    )
    together = model.logits(five)  # type: ignore[attr-defined]
    alone = np.concatenate([model.logits(five[i : i + 1]) for i in range(5)])  # type: ignore[attr-defined]
    assert together.shape == (5, 1000)
    assert np.abs(together - alone).max() < 1e-4
    assert [tags[0].label for tags in model.classify(five)][1:3] == ["hotdog", "macaw"]


def test_batch_size_0_gathers_the_fastest_batch_for_the_precision(
    photo_dir: Path, tmp_path: Path
) -> None:
    """The default `batch.size = 0`: batches of 4 in fp32, of 8 in int8 (which at 4 ran at
    72-90% of its peak; docs/benchmarks.md). A size the user sets is kept."""
    fp32 = load_classifier("efficientnet_lite0", data_dir(), runtime="openvino", precision="fp32")
    int8 = load_classifier("efficientnet_lite0", data_dir(), runtime="openvino", precision="int8")
    torch_fp32 = load_classifier("efficientnet_lite0", data_dir(), runtime="torch")
    assert (fp32.batch_size, int8.batch_size, torch_fp32.batch_size) == (4, 8, 4)
    asked = load_classifier("efficientnet_lite0", data_dir(), runtime="onnxruntime", batch_size=3)
    assert asked.batch_size == 3

    sizes: list[int] = []

    class Recording:
        spec, id, batch_size, label_rules = int8.spec, int8.id, int8.batch_size, int8.label_rules

        def classify(self, pixels: np.ndarray) -> list[list[Tag]]:
            sizes.append(len(pixels))
            return int8.classify(pixels)

        def analyse(self, pixels: np.ndarray) -> Analysis:
            sizes.append(len(pixels))
            return int8.analyse(pixels)

    settings = load_settings(db=str(tmp_path / "t.db"), batch={"max_wait": 60})
    assert settings.batch.size == 0
    photos = sorted(photo_dir.iterdir())
    store = Store(settings.db_url)
    Pipeline(settings, store, Recording()).run(photos)
    store.close()
    assert sizes == [8, len(photos) - 8]  # the last, partial batch leaves at the end


@pytest.mark.parametrize(
    ("runtime", "precision"),
    [("onnxruntime", "fp32"), ("openvino", "int8"), ("onnxruntime", "int8")],
)
def test_scan_with_a_cached_artefact_imports_neither_torch_nor_telemetry(
    runtime: str, precision: str, photo_dir: Path, tmp_path: Path
) -> None:
    """The shipped artefacts (ONNX fp32, OpenVINO int8) and one exported once before."""
    load_classifier("efficientnet_lite0", data_dir(), runtime=runtime, precision=precision)
    before = sorted((data_dir() / "artefacts").iterdir())
    script = (
        "import json, sys\n"
        "from tagger.cli.main import main\n"
        "try:\n"
        f"    main(['--db', {str(tmp_path / 'x.db')!r}, 'scan', {str(photo_dir)!r}])\n"
        "except SystemExit as exit:\n"
        "    telemetry = sys.modules.get('openvino_telemetry') is not None\n"
        "    print(json.dumps([exit.code, 'torch' in sys.modules, telemetry]))\n"
    )
    home = tmp_path / "home"
    env = reporting_on(home) | {
        "TAGGER_MODEL__RUNTIME": runtime,
        "TAGGER_MODEL__PRECISION": precision,
    }
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    lines = done.stdout.splitlines()
    assert "9 new" in lines[0], done.stderr
    assert json.loads(lines[-1]) == [0, False, False]
    assert list(home.iterdir()) == []  # no device or client id, no queued usage events
    assert "preparing" not in done.stderr  # loaded from the cache, not exported again
    assert sorted((data_dir() / "artefacts").iterdir()) == before


def test_exporting_with_openvino_and_nncf_reports_nothing(tmp_path: Path) -> None:
    """The export child converts with OpenVINO and quantises with NNCF: both report each
    use unless kept from it."""
    home, target = tmp_path / "home", tmp_path / "artefact"
    weights, _ = checked_weights(LITE0, data_dir(), None)
    command = [sys.executable, "-m", "tagger.inference.export", "efficientnet_lite0", str(weights)]
    done = subprocess.run(
        [*command, "openvino", "int8", str(target)],
        env=reporting_on(home),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert (target / "model.xml").is_file()
    assert list(home.iterdir()) == []


def test_auto_picks_int8_only_where_it_passed_the_accuracy_rule() -> None:
    """EfficientNet-Lite0 int8 passed on OpenVINO and ONNX Runtime (docs/benchmarks.md)."""
    assert choose(LITE0, "auto", "auto") == ("openvino", "int8")
    assert choose(LITE0, "onnxruntime", "auto").precision == "int8"
    assert choose(LITE0, "torch", "auto").precision == "fp32"
    assert choose(spec_for("resnet18"), "openvino", "auto").precision == "fp32"  # not measured
    only_openvino = replace(LITE0, int8_default_on=("openvino",))
    assert choose(only_openvino, "onnxruntime", "auto").precision == "fp32"


def test_unsupported_or_missing_runtime_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(RuntimeUnavailable) as error:
        choose(LITE0, "torch", "int8")
    assert str(error.value) == (
        "model.precision = int8 is not supported by model.runtime = torch;"
        " use onnxruntime or openvino"
    )
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if it were not installed
    assert not installed("openvino")
    with pytest.raises(RuntimeUnavailable) as error:
        choose(LITE0, "openvino", "auto")
    assert str(error.value) == (
        "model.runtime = openvino, but openvino is not installed: pip install 'tagger[openvino]'"
    )
    assert choose(LITE0, "auto", "auto") == ("onnxruntime", "int8")


def test_openvino_bf16_shares_the_fp32_artefact_and_is_refused_before_any_export(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    artefacts = data_dir() / "artefacts"
    if cpu_has_bf16():
        load_classifier("efficientnet_lite0", data_dir(), runtime="openvino", precision="fp32")
        before = sorted(artefacts.iterdir())
        bf16 = load_classifier(
            "efficientnet_lite0", data_dir(), runtime="openvino", precision="bf16"
        )
        assert bf16.classify(pixels("coral_parrot.jpg"))[0][0].label == "macaw"
        assert sorted(artefacts.iterdir()) == before  # no second copy of the same graph
    monkeypatch.setattr("tagger.inference.runtimes.cpu_has_bf16", lambda: False)
    fresh = data_dir().parent / "elsewhere"
    with pytest.raises(RuntimeUnavailable) as error:
        load_classifier("efficientnet_lite0", fresh, runtime="openvino", precision="bf16")
    assert str(error.value) == (
        "model.precision = bf16, but this CPU has no bf16 support; use fp32 or int8"
    )
    assert not fresh.exists()  # refused before a minute of exporting, not after


def test_int8_without_nncf_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default model's int8 is shipped: NNCF is needed only to quantise another."""
    monkeypatch.setitem(sys.modules, "nncf", None)  # as if it were not installed
    assert choose(LITE0, "auto", "auto") == ("openvino", "int8")
    assert choose(LITE0, "onnxruntime", "int8") == ("onnxruntime", "int8")
    resnet = replace(spec_for("resnet18"), int8_default_on=("openvino", "onnxruntime"))
    for runtime, extra in (("openvino", "openvino-int8"), ("onnxruntime", "onnx-int8")):
        with pytest.raises(RuntimeUnavailable) as error:
            choose(resnet, runtime, "int8")
        assert str(error.value) == (
            f"model.precision = int8 on {runtime} needs NNCF to quantise the model:"
            f" pip install 'tagger[{extra}]'"
        )
        assert choose(resnet, runtime, "auto").precision == "fp32"


def test_a_failed_export_says_why_and_leaves_nothing_behind(tmp_path: Path) -> None:
    wrong = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(3, 3)}, wrong)
    # What a killed export leaves: an old temporary folder beside the artefact's place.
    spec, digest = spec_for("resnet18"), hashlib.sha256(wrong.read_bytes()).hexdigest()
    target = artefact_dir(tmp_path, spec, digest, choose(spec, "onnxruntime", "auto"))
    orphan = target.parent / f".{target.name}.abc123"
    orphan.mkdir(parents=True)
    os.utime(orphan, (0, 0))
    with pytest.raises(WeightsError) as error:
        load_classifier("resnet18", tmp_path, wrong, runtime="onnxruntime")
    assert str(error.value).startswith("could not export resnet18 for onnxruntime:")
    assert "does not fit resnet18" in str(error.value) and "\n" not in str(error.value)
    assert list((tmp_path / "artefacts").iterdir()) == []


def test_artefacts_are_keyed_by_weights_runtime_and_precision() -> None:
    names = {
        artefact_dir(Path("/d"), LITE0, digest, choose(LITE0, runtime, precision)).name
        for digest in ("a" * 64, "b" * 64)
        for runtime, precision in [
            ("onnxruntime", "int8"),
            ("onnxruntime", "fp32"),
            ("openvino", "int8"),
        ]
    }
    assert len(names) == 6


def test_model_prepare_builds_the_artefact_before_any_scan(
    tagger: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    weights, _ = checked_weights(LITE0, data_dir(), None)
    monkeypatch.setenv("TAGGER_MODEL__RUNTIME", "onnxruntime")
    monkeypatch.setenv("TAGGER_MODEL__PRECISION", "fp32")
    monkeypatch.setenv("TAGGER_MODEL__WEIGHTS_PATH", str(weights))  # named: not the shipped
    result = tagger("model", "prepare")
    assert result.code == 0, result.err
    assert result.out == (
        "efficientnet_lite0: ready on OnnxRuntimeClassifier, batches of 4"
        " (model.runtime = onnxruntime, model.precision = fp32)\n"
    )
    assert list(
        (data_dir() / "artefacts").glob(f"efficientnet_lite0-*-onnxruntime-fp32-v{ARTEFACT_FORMAT}")
    )
