"""Inference runtimes: torch, ONNX Runtime or OpenVINO, in fp32, bf16 or int8.

Only the torch runtime imports torch. The others load an exported artefact: the one
shipped in the package (`tagger/models/`, made by scripts/export_bundled.py) for the
default model, else one that a child process (`python -m tagger.inference.export`, torch
extra) exported from the weights once into `<data_dir>/artefacts/`. So a plain install
needs no torch at all, and a long-lived `tagger watch` never has it in memory. What the
runtimes share is in base.py.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import queue
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, get_args

import numpy as np
import numpy.typing as npt

from tagger.errors import RuntimeUnavailable, WeightsError
from tagger.inference.base import (
    BEST_BATCH,
    Classifier,
    FromOutputs,
    Outputs,
    Precision,
    cores,
    in_fixed_batches,
)
from tagger.inference.specs import ModelSpec, checked_weights, installed_models_dir, spec_for
from tagger.labels.classes import imagenet_labels
from tagger.labels.hierarchy import LabelRules
from tagger.records import ModelId

if TYPE_CHECKING:
    from tagger.inference.torch_model import TorchClassifier

log = logging.getLogger(__name__)

RuntimeName = Literal["torch", "onnxruntime", "openvino"]
RUNTIMES: tuple[RuntimeName, ...] = get_args(RuntimeName)
# Fastest first, as measured in docs/benchmarks.md; `auto` takes the first one installed.
_BY_SPEED: tuple[RuntimeName, ...] = ("openvino", "onnxruntime", "torch")
SUPPORTED: dict[RuntimeName, tuple[Precision, ...]] = {
    "torch": ("fp32", "bf16"),
    "onnxruntime": ("fp32", "int8"),
    "openvino": ("fp32", "bf16", "int8"),
}
_EXTRA = {"torch": "tagger[torch]", "onnxruntime": "tagger[onnx]", "openvino": "tagger[openvino]"}
# Bump when the exported graph's inputs, outputs, layout or quantisation change.
# 2: OpenVINO int8 quantised with NNCF instead of converted from ONNX Runtime's QDQ graph.
# 3: a second output, `features` (the pooled features the classifier reads); ONNX Runtime
#    int8 quantised with NNCF instead of onnxruntime.quantization.
ARTEFACT_FORMAT = 3


class Choice(NamedTuple):
    runtime: RuntimeName
    precision: Precision


def installed(module: str) -> bool:
    """Whether a runtime's (or a tool's) package is importable, without importing it."""
    if module in sys.modules:  # None there means imports of it are blocked
        return sys.modules[module] is not None
    return importlib.util.find_spec(module) is not None


def bundled(spec: ModelSpec, runtime: str, precision: str) -> Path | None:
    """The artefact shipped in the package for this model, runtime and precision, if any.

    `tagger/models/<model>/manifest.json` names a folder per `runtime-precision`, and the
    weights and artefact format they were exported from; a stale one is not used."""
    root = Path(str(resources.files("tagger").joinpath("models", spec.name)))
    try:
        manifest = json.loads((root / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if (runtime, precision) == ("openvino", "bf16"):  # a compile hint on the fp32 graph
        precision = "fp32"
    folder = manifest.get("artefacts", {}).get(f"{runtime}-{precision}")
    current = manifest.get("format") == ARTEFACT_FORMAT
    if folder is None or not current or manifest.get("weights_sha256") != spec.sha256_prefix:
        return None
    found = root / str(folder)
    return found if found.is_dir() else None  # an image may leave out what it cannot run


def can_run(runtime: RuntimeName, precision: str, spec: ModelSpec | None = None) -> bool:
    """Whether the runtime, and what its export at this precision needs, are installed.

    int8 is quantised by NNCF (for either runtime), which only the export child imports;
    not needed where the package ships the int8 artefact of `spec`."""
    if not installed(runtime):
        return False
    shipped = spec is not None and bundled(spec, runtime, precision) is not None
    return shipped or precision != "int8" or installed("nncf")


def choose(spec: ModelSpec, runtime: str, precision: str) -> Choice:
    """Resolve `auto` and refuse what cannot run here, with a one-line reason."""
    if runtime == "auto":
        candidates = [r for r in _BY_SPEED if precision == "auto" or precision in SUPPORTED[r]]
        found = next((r for r in candidates if can_run(r, precision, spec)), None)
        if found is None:
            raise RuntimeUnavailable(
                f"no installed runtime supports model.precision = {precision}:"
                f" pip install 'tagger[openvino]'"
            )
        chosen: RuntimeName = found
    elif runtime in RUNTIMES:
        chosen = runtime
        if not installed(chosen):
            raise RuntimeUnavailable(
                f"model.runtime = {runtime}, but {runtime} is not installed:"
                f" pip install '{_EXTRA[chosen]}'"
            )
    else:
        raise RuntimeUnavailable(f"unknown runtime {runtime!r}; choose auto or one of {RUNTIMES}")
    if precision == "auto":
        int8 = chosen in spec.int8_default_on and can_run(chosen, "int8", spec)
        return Choice(chosen, "int8" if int8 else "fp32")
    if precision not in SUPPORTED[chosen]:
        able = [r for r in RUNTIMES if precision in SUPPORTED[r]]
        raise RuntimeUnavailable(
            f"model.precision = {precision} is not supported by model.runtime = {chosen};"
            f" use {' or '.join(able)}"
        )
    if not can_run(chosen, precision, spec):
        raise RuntimeUnavailable(
            f"model.precision = {precision} on {chosen} needs NNCF to quantise the model:"
            f" pip install 'tagger[{'openvino-int8' if chosen == 'openvino' else 'onnx-int8'}]'"
        )
    if chosen == "openvino" and precision == "bf16" and not cpu_has_bf16():
        raise RuntimeUnavailable(
            "model.precision = bf16, but this CPU has no bf16 support; use fp32 or int8"
        )
    return Choice(chosen, precision)


def cpu_has_bf16() -> bool:
    """Whether OpenVINO can run bf16 on this CPU (AVX-512 BF16 or AMX)."""
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def artefact_dir(data_dir: Path, spec: ModelSpec, weights_sha256: str, choice: Choice) -> Path:
    """Where the compiled model lives: one folder per weights, runtime, precision, format.

    OpenVINO's bf16 is a hint for compiling the fp32 graph, so it uses the fp32 folder."""
    precision = "fp32" if choice == Choice("openvino", "bf16") else choice.precision
    key = f"{spec.name}-{weights_sha256[:16]}-{choice.runtime}-{precision}"
    return data_dir / "artefacts" / f"{key}-v{ARTEFACT_FORMAT}"


def needs_torch(spec: ModelSpec, choice: Choice) -> RuntimeUnavailable:
    return RuntimeUnavailable(
        f"{spec.name} on {choice.runtime} {choice.precision} must be exported from its"
        f" weights once, which needs torch: pip install 'tagger[torch]'"
    )


def prepare(spec: ModelSpec, weights: Path, choice: Choice, target: Path) -> None:
    """Export and quantise in a child process, so this one never imports torch.

    The child writes into a temporary folder and renames it into place, so an interrupted
    export leaves no half-written artefact behind to be loaded later.
    """
    if not installed("torch"):
        raise needs_torch(spec, choice)
    log.warning(
        "preparing %s for %s %s (once; about a minute)", spec.name, choice.runtime, choice.precision
    )
    command = [sys.executable, "-m", "tagger.inference.export", spec.name, str(weights)]
    command += [choice.runtime, choice.precision, str(target)]
    # OpenVINO reads ONNX: reuse an exported fp32 graph if there is one. Not for int8:
    # OpenVINO's int8 is quantised by NNCF from fp32, not ONNX Runtime's QDQ graph.
    onnx = target.parent / target.name.replace("-openvino-", "-onnxruntime-") / "model.onnx"
    if choice.runtime == "openvino" and choice.precision != "int8" and onnx.is_file():
        command.append(str(onnx))
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not target.is_dir():
        lines = (result.stderr or result.stdout or "no output").strip().splitlines()
        raise WeightsError(f"could not export {spec.name} for {choice.runtime}: {lines[-1]}")


def load_classifier(
    name: str,
    data_dir: Path,
    weights_path: Path | None = None,
    threads: int = 0,
    runtime: str = "auto",
    precision: str = "auto",
    label_rules: LabelRules | None = None,
    batch_size: int = 0,
) -> Classifier:
    """The model ready to classify, on the runtime and precision the settings ask for.

    ONNX Runtime and OpenVINO compile for batches of exactly `batch_size` images (0: the
    best for the precision chosen, BEST_BATCH).
    """
    classifier = _load(name, data_dir, weights_path, threads, runtime, precision, batch_size)
    classifier.label_rules = label_rules or LabelRules()
    return classifier


def _load(
    name: str,
    data_dir: Path,
    weights_path: Path | None,
    threads: int,
    runtime: str,
    precision: str,
    batch_size: int,
) -> TorchClassifier | OnnxRuntimeClassifier | OpenVinoClassifier:
    spec = spec_for(name)
    choice = choose(spec, runtime, precision)
    batch_size = batch_size or BEST_BATCH[choice.precision]
    if choice.runtime == "torch":
        from tagger.inference.torch_model import TorchClassifier

        return TorchClassifier.load(
            name, data_dir, weights_path, threads, choice.precision, batch_size
        )
    shipped = bundled(spec, *choice) if weights_path is None else None
    if shipped is not None:
        folder, digest = shipped, spec.sha256_prefix
    else:
        try:
            weights, digest = checked_weights(spec, data_dir, weights_path)
        except WeightsError:
            if not installed("torch"):  # no weights, and no way to use them anyway
                raise needs_torch(spec, choice) from None
            raise
        folder = artefact_dir(data_dir, spec, digest, choice)
        # One exported into the installation, as the Docker image's build does.
        baked = artefact_dir(installed_models_dir().parent, spec, digest, choice)
        if not folder.is_dir() and baked.is_dir():
            folder = baked
        if not folder.is_dir():
            prepare(spec, weights, choice, folder)
    model_id = ModelId(spec.name, digest)
    if choice.runtime == "onnxruntime":
        return OnnxRuntimeClassifier(spec, model_id, folder, threads, batch_size)
    return OpenVinoClassifier(spec, model_id, folder, threads, choice.precision, batch_size)


class _Exported(FromOutputs):
    """What both exported runtimes share: a model compiled for `batch_size` images, fed in
    fixed batches by `logits`, and the post-processing every runtime shares."""

    def __init__(self, spec: ModelSpec, model_id: ModelId, batch_size: int) -> None:
        self.spec, self.id, self.labels = spec, model_id, imagenet_labels()
        self.label_rules = LabelRules()  # the `[labels]` settings; load_classifier sets them
        self.batch_size = batch_size

    def _run(self, batch: npt.NDArray[np.float32], count: int) -> Outputs:
        """The outputs of one full batch, `count` of whose images are real."""
        raise NotImplementedError

    def outputs(self, pixels: npt.NDArray[np.uint8]) -> Outputs:
        return in_fixed_batches(self._run, pixels, self.spec, self.batch_size)


class OnnxRuntimeClassifier(_Exported):
    """An exported ONNX graph (fp32, or int8 with QDQ nodes) on ONNX Runtime's CPU provider."""

    def __init__(
        self, spec: ModelSpec, model_id: ModelId, folder: Path, threads: int, batch_size: int
    ) -> None:
        import onnxruntime as ort

        super().__init__(spec, model_id, batch_size)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or cores()
        options.add_free_dimension_override_by_name("batch", batch_size)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        path = folder / "model.onnx"
        try:
            self._session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise WeightsError(f"cannot load {path} ({exc}); delete {folder} to rebuild") from None
        log.info("loaded %s on onnxruntime from %s", spec.name, folder)

    def _run(self, batch: npt.NDArray[np.float32], count: int) -> Outputs:
        logits, features = self._session.run(["logits", "features"], {"pixels": batch})
        return logits, features


class OpenVinoClassifier(_Exported):
    """An OpenVINO IR (fp32 or int8) compiled for the CPU; bf16 where the CPU has it."""

    def __init__(
        self,
        spec: ModelSpec,
        model_id: ModelId,
        folder: Path,
        threads: int,
        precision: Precision,
        batch_size: int,
    ) -> None:
        import openvino as ov

        core = ov.Core()
        threads = threads or cores()
        # One single-threaded stream per core, each on its share of the batch: nothing waits
        # at a barrier for a thread the decoders have preempted (see docs/benchmarks.md).
        # As many streams as share the batch evenly, so the batch stays the size asked for.
        streams = max(s for s in range(1, min(threads, batch_size) + 1) if batch_size % s == 0)
        self._share = batch_size // streams
        super().__init__(spec, model_id, batch_size)
        config: dict[str, Any] = {
            # OpenVINO would silently run fp32 models in bf16 on CPUs that have it.
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
            "PERFORMANCE_HINT": "THROUGHPUT" if streams > 1 else "LATENCY",
            "NUM_STREAMS": streams,
            "INFERENCE_NUM_THREADS": threads,
        }
        # An IR (model.xml) where one was made, else the fp32 ONNX graph, which OpenVINO
        # reads directly: the shipped fp32 artefact serves both runtimes.
        path = folder / "model.xml" if (folder / "model.xml").is_file() else folder / "model.onnx"
        try:
            model = core.read_model(path)
            model.reshape([self._share, 3, spec.geometry.crop, spec.geometry.crop])
            compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:
            raise WeightsError(f"cannot load {path} ({exc}); delete {folder} to rebuild") from None
        # Two batches may run at once (`lanes`, used by the web page's model sharing): the
        # second one's requests wait in OpenVINO's queue, so a stream that finishes first
        # takes the next share instead of idling at the first batch's barrier.
        self.lanes = 2 if streams > 1 else 1
        self._idle: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for _ in range(streams * self.lanes):
            self._idle.put(compiled.create_infer_request())
        log.info("loaded %s on openvino from %s", spec.name, folder)

    def _run(self, batch: npt.NDArray[np.float32], count: int) -> Outputs:
        share = self._share
        # A lone photo wakes one stream, not all. At most `lanes` callers at once (the
        # caller's promise), so the pool always has the requests asked for.
        busy = [self._idle.get() for _ in range(-(-count // share))]
        try:
            for i, request in enumerate(busy):
                request.start_async({0: batch[i * share : (i + 1) * share]})
            for request in busy:
                request.wait()
            return (
                np.concatenate([np.array(r.get_output_tensor(0).data) for r in busy]),
                np.concatenate([np.array(r.get_output_tensor(1).data) for r in busy]),
            )
        finally:
            for request in busy:
                self._idle.put(request)
