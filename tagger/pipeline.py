"""The one place that wires the stages together, in the order the work flows.

    paths (walk or watch) -> stat -> skip unchanged -> SHA-256 -> skip known content
      -> decode (thread pool) -> batch -> classify -> store (writer thread)

`tagger scan` feeds it a folder walk; `tagger watch` feeds it finished files as they come.
The main thread does the cheap, ordered part (stat, hash, dedup); decoding runs in a pool
(Pillow releases the GIL) while a second thread runs the model, so the two overlap.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from tagger.batching import END, EndOfInput, batches
from tagger.config import Settings
from tagger.decode import Geometry, decode
from tagger.errors import BadImage, SkipFile
from tagger.hashing import hash_file, stat_file
from tagger.records import Decoded, Failure, FileInfo, Hashed, Outcome, Summary
from tagger.runtimes import Classifier
from tagger.store import Link, Seen, Store, StoreWriter, Tagged

log = logging.getLogger(__name__)

Report = Callable[[str, Outcome], None]


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        classifier: Classifier,
        report: Report | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._classifier = classifier
        self._report = report
        self._summary = Summary()
        self._lock = threading.Lock()

    def run(self, paths: Iterable[Path], stop: threading.Event | None = None) -> Summary:
        """Tag every path that is new or changed; returns when all of it is stored."""
        stop = stop or threading.Event()
        self._summary = Summary()
        workers = self._settings.scan.decode_workers
        # Bounds the images decoded but not yet classified, whatever the size of the input.
        in_flight = threading.BoundedSemaphore(2 * self._settings.batch.size + workers)
        decoded: queue.Queue[Decoded | Failure | EndOfInput] = queue.Queue()
        with (
            StoreWriter(self._store) as writer,
            ThreadPoolExecutor(workers, thread_name_prefix="tagger-decode") as pool,
        ):
            inference = _Worker(stop, self._classify_loop, decoded, in_flight, writer, stop)
            try:
                self._feed(paths, pool, decoded, in_flight, writer, stop, inference)
                pool.shutdown(wait=True)
            finally:
                decoded.put(END)
                inference.join()
            inference.check()
        return self._summary

    def _feed(
        self,
        paths: Iterable[Path],
        pool: ThreadPoolExecutor,
        decoded: queue.Queue[Decoded | Failure | EndOfInput],
        in_flight: threading.BoundedSemaphore,
        writer: StoreWriter,
        stop: threading.Event,
        inference: _Worker,
    ) -> None:
        """Stat, skip unchanged, hash, skip known content; hand the rest to the decoders."""
        model = self._classifier.id
        seen_this_run: set[str] = set()
        geometry, max_pixels = self._classifier.spec.geometry, self._settings.scan.max_pixels
        for path in paths:
            if stop.is_set():
                break
            inference.check()
            writer.check()
            try:
                file = stat_file(str(path))
                state = self._store.file_state(file.path)
                if (
                    state
                    and (state.size, state.mtime_ns) == (file.size, file.mtime_ns)
                    and state.image
                    and state.image.current(model)
                ):
                    writer.put(Seen(file))
                    self._done(file.path, Outcome.UNCHANGED)
                    continue
                hashed = hash_file(file)
            except SkipFile as skip:
                self._fail(writer, Failure(FileInfo(str(path), 0, 0), skip.reason))
                continue
            known = self._store.image_state(hashed.sha256)
            if hashed.sha256 in seen_this_run or (known is not None and known.current(model)):
                writer.put(Link(hashed.file, hashed.sha256))
                self._done(file.path, Outcome.DUPLICATE)
                continue
            seen_this_run.add(hashed.sha256)
            while not in_flight.acquire(timeout=0.5):
                inference.check()
            future = pool.submit(_decode_or_fail, hashed, geometry, max_pixels)
            future.add_done_callback(lambda done: decoded.put(done.result()))

    def _classify_loop(
        self,
        decoded: queue.Queue[Decoded | Failure | EndOfInput],
        in_flight: threading.BoundedSemaphore,
        writer: StoreWriter,
        stop: threading.Event,
    ) -> None:
        """Batch decoded images, run the model, and pass results and failures to the writer."""
        settings = self._settings.batch
        batch: list[Decoded | Failure]
        for batch in batches(decoded, settings.size, settings.max_wait):
            images = [item for item in batch if isinstance(item, Decoded)]
            for failure in (item for item in batch if isinstance(item, Failure)):
                self._fail(writer, failure)
            if images and not stop.is_set():
                tags = self._classifier.classify(np.stack([image.pixels for image in images]))
                for image, image_tags in zip(images, tags, strict=True):
                    writer.put(Tagged(image, image_tags, self._classifier.id))
                    self._done(image.hashed.file.path, Outcome.NEW)
            for _ in batch:
                in_flight.release()

    def _fail(self, writer: StoreWriter, failure: Failure) -> None:
        log.warning("skipped %s: %s", failure.file.path, failure.reason)
        writer.put(failure)
        self._done(failure.file.path, Outcome.FAILED)

    def _done(self, path: str, outcome: Outcome) -> None:
        with self._lock:
            self._summary.add(outcome)
        if self._report is not None:
            self._report(path, outcome)


def _decode_or_fail(hashed: Hashed, geometry: Geometry, max_pixels: int) -> Decoded | Failure:
    try:
        return decode(hashed, geometry, max_pixels)
    except BadImage as bad:
        return Failure(hashed.file, bad.reason, sha256=hashed.sha256)


class _Worker(threading.Thread):
    """A stage thread whose exception is re-raised in the caller by `check()`."""

    def __init__(self, stop: threading.Event, target: Callable[..., None], *args: object) -> None:
        super().__init__(name="tagger-inference", daemon=True)
        self._halt, self._target_fn, self._args = stop, target, args
        self._error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self._target_fn(*self._args)
        except BaseException as exc:
            self._error = exc
            self._halt.set()

    def check(self) -> None:
        if self._error is not None:
            raise self._error
