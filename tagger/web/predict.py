"""One model for the pipeline and for the people waiting on the web page.

`POST /predict` and uploads ask for predictions here. Requests that arrive together are
classified as one batch (whatever is queued when the model frees up, up to its batch size),
and that batch goes before the pipeline's next one: a person never waits behind a rescan's
backlog, only behind the one batch that is running.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tagger.inference.base import TOP_K, Analysis, Classifier
from tagger.inference.specs import ModelSpec
from tagger.labels.hierarchy import LabelRules
from tagger.pipeline.batching import END, EndOfInput, batches
from tagger.records import ModelId, Tag

# (who asked: "web" or "pipeline", images in the batch, seconds the forward pass took)
Observer = Callable[[str, int, float], None]


_RUNTIMES = {
    "TorchClassifier": "torch",
    "OnnxRuntimeClassifier": "onnxruntime",
    "OpenVinoClassifier": "openvino",
}


@dataclass(frozen=True)
class _Request:
    pixels: npt.NDArray[np.uint8]
    top_k: int
    future: Future[list[Tag]]


class SharedClassifier:
    """A `Classifier` for the pipeline that also takes urgent requests from the web."""

    def __init__(self, inner: Classifier, observe: Observer | None = None) -> None:
        self._inner = inner
        self._observe = observe
        self._cond = threading.Condition()
        # Batches the runtime runs well at once (OpenVINO: 2, see its `lanes`); one each
        # for the other runtimes, whose threads would only contend.
        self._lanes = max(1, int(getattr(inner, "lanes", 1)))
        self._busy = 0
        self._urgent = 0  # web batches waiting for the model
        self._requests: queue.Queue[_Request | EndOfInput] = queue.Queue()
        self._threads = [
            threading.Thread(target=self._serve, name=f"tagger-predict-{n}", daemon=True)
            for n in range(self._lanes)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def spec(self) -> ModelSpec:
        return self._inner.spec

    @property
    def id(self) -> ModelId:
        return self._inner.id

    @property
    def batch_size(self) -> int:
        return self._inner.batch_size

    @property
    def label_rules(self) -> LabelRules:
        return self._inner.label_rules

    @property
    def runtime(self) -> str:
        """What runs the model, for the status page: torch, onnxruntime or openvino."""
        kind = type(self._inner).__name__
        return _RUNTIMES.get(kind, kind)

    def classify(self, pixels: npt.NDArray[np.uint8], top_k: int = TOP_K) -> list[list[Tag]]:
        return self.analyse(pixels, top_k).tags

    def analyse(self, pixels: npt.NDArray[np.uint8], top_k: int = TOP_K) -> Analysis:
        """The pipeline's way in: waits while a web batch runs or waits."""
        with self._turn(urgent=False):
            return self._run("pipeline", pixels, top_k)

    def predict(self, pixels: npt.NDArray[np.uint8], top_k: int = 3) -> Future[list[Tag]]:
        """The `top_k` model classes (no derived labels) of one HxWx3 image, best first."""
        future: Future[list[Tag]] = Future()
        if not self._threads[0].is_alive():
            future.set_exception(RuntimeError("the model is shutting down"))
        else:
            self._requests.put(_Request(pixels, top_k, future))
        return future

    def close(self) -> None:
        for _ in self._threads:
            self._requests.put(END)
        for thread in self._threads:
            thread.join(timeout=10)  # a batch in flight finishes; nothing waits on it longer

    def _serve(self) -> None:
        batch: list[_Request]
        for batch in batches(self._requests, self._inner.batch_size, max_wait=0.0):
            wanted = max(request.top_k for request in batch)
            try:
                with self._turn(urgent=True):
                    tags = self._run("web", np.stack([r.pixels for r in batch]), wanted).tags
            except Exception as exc:  # each caller gets the error; the server goes on
                for request in batch:
                    if not request.future.done():
                        request.future.set_exception(exc)
                continue
            for request, image_tags in zip(batch, tags, strict=True):
                direct = [tag for tag in image_tags if not tag.derived]
                if not request.future.done():  # a request given up (its client went away)
                    request.future.set_result(direct[: request.top_k])

    def _run(self, who: str, pixels: npt.NDArray[np.uint8], top_k: int) -> Analysis:
        started = time.perf_counter()
        result = self._inner.analyse(pixels, top_k)
        if self._observe is not None:
            self._observe(who, len(pixels), time.perf_counter() - started)
        return result

    @contextmanager
    def _turn(self, urgent: bool) -> Iterator[None]:
        """Take one of the model's lanes; urgent (web) turns go before the pipeline's."""
        with self._cond:
            self._urgent += urgent
            try:
                while self._busy >= self._lanes or (not urgent and self._urgent):
                    self._cond.wait()
            finally:
                self._urgent -= urgent
            self._busy += 1
        try:
            yield
        finally:
            with self._cond:
                self._busy -= 1
                self._cond.notify_all()
